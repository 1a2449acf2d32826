/*
 * The controller's guards that need no server: the per-client slowing of credential
 * guessing (controller/auth_limit.h), the addresses a node may report
 * (controller/addresses.h), and the client keys both count by (common/http_clients.h).
 */
#include <stdio.h>

#include <jansson.h>

#include "common/addr.h"
#include "common/http_clients.h"
#include "controller/addresses.h"
#include "controller/auth_limit.h"
#include "tests/unit/unit.h"

static void test_auth_limit_backs_off_and_forgets(void **state)
{
    (void)state;
    struct mesh_auth_limit l;
    mesh_auth_limit_init(&l);
    uint64_t now = 1000000;
    for (int i = 0; i < MESH_AUTH_FREE_FAILURES; i++) {
        assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.1", now), 0);
        mesh_auth_limit_failed(&l, "192.0.2.1", now);
    }
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.1", now), 0);
    /* Past the free ones: 1 s, then 2 s, 4 s... */
    mesh_auth_limit_failed(&l, "192.0.2.1", now);
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.1", now), 1);
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.2", now), 0); /* another client */
    now += 1000;
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.1", now), 0);
    mesh_auth_limit_failed(&l, "192.0.2.1", now);
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.1", now), 2);
    for (int i = 0; i < 30; i++)
        mesh_auth_limit_failed(&l, "192.0.2.1", now);
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.1", now), MESH_AUTH_MAX_BLOCK_S);
    /* A success clears the client. */
    mesh_auth_limit_passed(&l, "192.0.2.1");
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.1", now), 0);
    /* Quiet for long enough: forgotten, the free failures are back. */
    for (int i = 0; i < MESH_AUTH_FREE_FAILURES + 1; i++)
        mesh_auth_limit_failed(&l, "192.0.2.3", now);
    assert_true(mesh_auth_limit_wait(&l, "192.0.2.3", now) > 0);
    now += (uint64_t)MESH_AUTH_FORGET_S * 1000;
    mesh_auth_limit_failed(&l, "192.0.2.3", now);
    assert_int_equal(mesh_auth_limit_wait(&l, "192.0.2.3", now), 0);
    mesh_auth_limit_done(&l);
}

static void test_auth_limit_is_bounded(void **state)
{
    (void)state;
    struct mesh_auth_limit l;
    mesh_auth_limit_init(&l);
    char key[32];
    for (int i = 0; i < MESH_AUTH_MAX_CLIENTS + 100; i++) {
        snprintf(key, sizeof(key), "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        mesh_auth_limit_failed(&l, key, 1000);
    }
    assert_true(l.clients.n <= MESH_AUTH_MAX_CLIENTS + 1);
    /* Newcomers beyond the bound share one entry: together they are slowed. */
    for (int i = 0; i < 10; i++)
        mesh_auth_limit_failed(&l, "203.0.113.9", 1000);
    assert_true(mesh_auth_limit_wait(&l, "203.0.113.77", 1000) > 0);
    mesh_auth_limit_done(&l);
}

static bool allow(const char *list, const char *ip)
{
    json_t *l = json_loads(list, JSON_DECODE_ANY, NULL);
    struct mesh_ipport p;
    assert_int_equal(mesh_ipport_from_ip(ip, 0, &p), 0);
    bool r = mesh_ctl_addresses_allow(l, &p);
    json_decref(l);
    return r;
}

static bool valid(const char *list)
{
    json_t *l = json_loads(list, JSON_DECODE_ANY, NULL);
    char err[200];
    bool r = mesh_ctl_addresses_valid(l, err, sizeof(err));
    json_decref(l);
    return r;
}

static void test_addresses(void **state)
{
    (void)state;
    assert_true(valid("[\"10.0.0.5\", \"10.1.0.0/24\", \"2001:db8::/32\", \"0.0.0.0/0\"]"));
    assert_false(valid("[\"10.0.0.0/33\"]"));
    assert_false(valid("[\"10.0.0.0/\"]"));
    assert_false(valid("[\"10.0.0.0/-1\"]"));
    assert_false(valid("[\"host.example\"]"));
    assert_false(valid("[5]"));
    assert_false(valid("\"10.0.0.1\""));
    assert_true(allow("[\"10.1.0.0/24\"]", "10.1.0.255"));
    assert_false(allow("[\"10.1.0.0/24\"]", "10.1.1.0"));
    assert_true(allow("[\"10.1.0.0/23\"]", "10.1.1.7"));
    assert_true(allow("[\"10.0.0.5\"]", "10.0.0.5"));
    assert_false(allow("[\"10.0.0.5\"]", "10.0.0.6"));
    assert_true(allow("[\"2001:db8::/32\"]", "2001:db8:ffff::1"));
    assert_false(allow("[\"2001:db8::/32\"]", "2001:db9::1"));
    assert_false(allow("[\"0.0.0.0/0\"]", "::1")); /* families do not mix */
    assert_false(allow("[]", "10.0.0.5"));
    /* A peer connecting over IPv6 with a mapped IPv4 address is that IPv4 address. */
    struct mesh_addr a;
    struct mesh_ipport p, want;
    assert_int_equal(mesh_addr_from_ip("::ffff:192.0.2.7", 1234, &a), 0);
    assert_int_equal(mesh_ctl_peer_ip(&a, &p), 0);
    assert_int_equal(mesh_ipport_from_ip("192.0.2.7", 0, &want), 0);
    assert_true(mesh_ipport_equal(&p, &want));
}

static void test_client_keys(void **state)
{
    (void)state;
    struct mesh_addr a;
    char key[MESH_HTTP_CLIENT_KEYLEN];
    assert_int_equal(mesh_addr_from_ip("192.0.2.7", 1, &a), 0);
    mesh_http_client_key(&a, key);
    assert_string_equal(key, "192.0.2.7");
    assert_int_equal(mesh_addr_from_ip("2001:db8:1:2:3:4:5:6", 1, &a), 0);
    mesh_http_client_key(&a, key);
    assert_string_equal(key, "2001:db8:1:2::/64");
    assert_int_equal(mesh_addr_from_ip("::ffff:192.0.2.7", 1, &a), 0);
    mesh_http_client_key(&a, key);
    assert_string_equal(key, "192.0.2.7");
    assert_int_equal(mesh_addr_parse("unix:/run/x.sock", &a, NULL), 0);
    mesh_http_client_key(&a, key);
    assert_string_equal(key, "unix");
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_auth_limit_backs_off_and_forgets),
        UNIT_TEST(test_auth_limit_is_bounded),
        UNIT_TEST(test_addresses),
        UNIT_TEST(test_client_keys),
    };
    return cmocka_run_group_tests_name("controller guards", tests, NULL, NULL);
}
