/*
 * The services' virtual IPs (catalog/vip.h): stable first choices, lookups both ways,
 * addresses kept for a while after a service leaves, the saved file read back, and bad
 * files refused whole with every problem named.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "catalog/vip.h"
#include "common/buf.h"
#include "tests/unit/unit.h"

static struct mesh_vip_table *table(const char *v4, const char *v6, uint64_t keep)
{
    struct mesh_vip_options o = {.v4_range = v4, .v6_range = v6, .keep_ms = keep};
    struct mesh_vip_table *t = NULL;
    assert_int_equal(mesh_vip_table_new(&o, &t), 0);
    return t;
}

static void text(const struct mesh_ipport *ip, char *out)
{
    inet_ntop(ip->family, ip->ip, out, INET6_ADDRSTRLEN);
}

static void test_ranges(void **state)
{
    (void)state;
    assert_null(mesh_vip_check_range("240.240.0.0/16", AF_INET));
    assert_null(mesh_vip_check_range("2001:2::/48", AF_INET6));
    assert_non_null(mesh_vip_check_range("240.240.0.1/16", AF_INET));
    assert_non_null(mesh_vip_check_range("240.240.0.0/31", AF_INET));
    assert_non_null(mesh_vip_check_range("240.240.0.0", AF_INET));
    assert_non_null(mesh_vip_check_range("2001:2::/48", AF_INET));
    assert_non_null(mesh_vip_check_range("10.0.0.0/x", AF_INET));
    struct mesh_vip_options o = {.v4_range = "1.2.3.4/8"};
    struct mesh_vip_table *t = NULL;
    assert_int_equal(mesh_vip_table_new(&o, &t), -EINVAL);
}

static void test_sync_and_lookups(void **state)
{
    (void)state;
    struct mesh_vip_table *t = table(NULL, NULL, 1000);
    const char *keys[] = {"shop/api", "shop/web", "default/db"};
    assert_int_equal(mesh_vip_sync(t, keys, 3, 100), 1);
    assert_int_equal(mesh_vip_sync(t, keys, 3, 200), 0);
    assert_int_equal(mesh_vip_count(t), 3);
    struct mesh_vip_pair p[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mesh_vip_lookup_service(t, keys[i], &p[i]), 0);
        assert_int_equal(p[i].v4.family, AF_INET);
        assert_int_equal(p[i].v6.family, AF_INET6);
        assert_true(mesh_vip_in_range(t, &p[i].v4));
        assert_true(mesh_vip_in_range(t, &p[i].v6));
        char key[64];
        assert_int_equal(mesh_vip_lookup_addr(t, &p[i].v4, key, sizeof(key)), 0);
        assert_string_equal(key, keys[i]);
        assert_int_equal(mesh_vip_lookup_addr(t, &p[i].v6, key, sizeof(key)), 0);
        assert_string_equal(key, keys[i]);
        assert_int_equal(mesh_vip_lookup_addr(t, &p[i].v4, key, 3), -ENOSPC);
    }
    assert_true(memcmp(&p[0].v4, &p[1].v4, sizeof(p[0].v4)) != 0);
    char a[INET6_ADDRSTRLEN];
    text(&p[0].v4, a);
    assert_int_equal(strncmp(a, "240.240.", 8), 0);
    text(&p[0].v6, a);
    assert_int_equal(strncmp(a, "2001:2::", 8), 0);
    struct mesh_vip_pair none;
    assert_int_equal(mesh_vip_lookup_service(t, "shop/nope", &none), -ENOENT);
    struct mesh_ipport other;
    mesh_ipport_from_ip("10.0.0.1", 0, &other);
    char key[64];
    assert_int_equal(mesh_vip_lookup_addr(t, &other, key, sizeof(key)), -ENOENT);
    assert_false(mesh_vip_in_range(t, &other));

    /* The same services in a new table get the same first choices. */
    struct mesh_vip_table *t2 = table(NULL, NULL, 1000);
    const char *rev[] = {"default/db", "shop/web", "shop/api"};
    assert_int_equal(mesh_vip_sync(t2, rev, 3, 100), 1);
    struct mesh_vip_pair q;
    assert_int_equal(mesh_vip_lookup_service(t2, "shop/api", &q), 0);
    assert_memory_equal(&q, &p[0], sizeof(q));
    mesh_vip_table_free(t2);

    /* A service that leaves keeps its addresses for keep_ms, then loses them. */
    assert_int_equal(mesh_vip_sync(t, keys, 2, 1000), 1);
    assert_int_equal(mesh_vip_lookup_service(t, "default/db", &q), 0);
    assert_int_equal(mesh_vip_sync(t, keys, 3, 1500), 1); /* back: the same addresses */
    assert_int_equal(mesh_vip_lookup_service(t, "default/db", &q), 0);
    assert_memory_equal(&q, &p[2], sizeof(q));
    assert_int_equal(mesh_vip_sync(t, keys, 2, 2000), 1);
    assert_int_equal(mesh_vip_sync(t, keys, 2, 2999), 0);
    assert_int_equal(mesh_vip_lookup_service(t, "default/db", &q), 0);
    assert_int_equal(mesh_vip_sync(t, keys, 2, 3000), 1);
    assert_int_equal(mesh_vip_lookup_service(t, "default/db", &q), -ENOENT);
    assert_int_equal(mesh_vip_lookup_addr(t, &p[2].v4, key, sizeof(key)), -ENOENT);
    mesh_vip_table_free(t);
}

static void test_small_range_fills(void **state)
{
    (void)state;
    /* A /30 has two usable addresses: the third service gets none, the others differ. */
    struct mesh_vip_table *t = table("10.9.0.0/30", "fd00::/126", 0);
    const char *keys[] = {"a/a", "a/b", "a/c"};
    assert_int_equal(mesh_vip_sync(t, keys, 3, 1), 1);
    int with = 0;
    for (int i = 0; i < 3; i++) {
        struct mesh_vip_pair p;
        assert_int_equal(mesh_vip_lookup_service(t, keys[i], &p), 0);
        if (p.v4.family) {
            with++;
            char a[INET6_ADDRSTRLEN];
            text(&p.v4, a);
            assert_true(strcmp(a, "10.9.0.1") == 0 || strcmp(a, "10.9.0.2") == 0);
        }
    }
    assert_int_equal(with, 2);
    mesh_vip_table_free(t);
}

static void test_full_range_fails_fast(void **state)
{
    (void)state;
    /* A /30 (two addresses) taken by two services; 300 more get no IPv4 address, and each
     * sync refuses them at once instead of probing the range again for every one. */
    struct mesh_vip_table *t = table("10.9.0.0/30", NULL, 0);
    const char *keys[302];
    char names[302][16];
    for (int i = 0; i < 302; i++) {
        snprintf(names[i], sizeof(names[i]), "a/s%d", i);
        keys[i] = names[i];
    }
    assert_int_equal(mesh_vip_sync(t, keys, 2, 1), 1);
    struct mesh_vip_stats st;
    mesh_vip_get_stats(t, &st);
    assert_int_equal(st.unassigned[0], 0);
    assert_int_equal(st.unassigned[1], 0);
    assert_int_equal(mesh_vip_sync(t, keys, 302, 2), 1);
    mesh_vip_get_stats(t, &st);
    assert_int_equal(st.unassigned[0], 300);
    assert_int_equal(st.unassigned[1], 0);
    uint64_t probes = st.probes;
    for (int k = 0; k < 3; k++)
        assert_int_equal(mesh_vip_sync(t, keys, 302, 3 + (uint64_t)k), 0);
    mesh_vip_get_stats(t, &st);
    assert_true(st.probes == probes);
    /* A release (s0 leaves) lets one more in at the next sync; then the range is full again. */
    assert_int_equal(mesh_vip_sync(t, keys + 1, 301, 10), 1);
    struct mesh_vip_pair p;
    assert_int_equal(mesh_vip_lookup_service(t, keys[0], &p), -ENOENT);
    assert_int_equal(mesh_vip_sync(t, keys + 1, 301, 11), 1);
    mesh_vip_get_stats(t, &st);
    assert_int_equal(st.unassigned[0], 299);
    assert_true(st.probes > probes);
    probes = st.probes;
    assert_int_equal(mesh_vip_sync(t, keys + 1, 301, 12), 0);
    mesh_vip_get_stats(t, &st);
    assert_true(st.probes == probes);
    mesh_vip_table_free(t);
}

static void test_save_and_load(void **state)
{
    (void)state;
    struct mesh_vip_table *t = table(NULL, NULL, 1000);
    const char *keys[] = {"shop/api", "shop/web"};
    assert_int_equal(mesh_vip_sync(t, keys, 2, 10), 1);
    assert_int_equal(mesh_vip_sync(t, keys, 1, 20), 1); /* shop/web kept, gone since 20 */
    struct mesh_buf b;
    mesh_buf_init(&b, 1 << 20);
    mesh_vip_encode(t, &b);
    assert_int_equal(b.err, 0);
    assert_contains(b.data, "\"gone_since_ms\": 20");
    struct mesh_vip_table *t2 = table(NULL, NULL, 1000);
    struct mesh_cfg_errors errors = {0};
    assert_int_equal(mesh_vip_load(t2, "vips.json", b.data, b.len, &errors), 2);
    assert_int_equal(errors.n, 0);
    for (int i = 0; i < 2; i++) {
        struct mesh_vip_pair p, q;
        assert_int_equal(mesh_vip_lookup_service(t, keys[i], &p), 0);
        assert_int_equal(mesh_vip_lookup_service(t2, keys[i], &q), 0);
        assert_memory_equal(&p, &q, sizeof(p));
    }
    /* The kept one still expires on time after the load. */
    assert_int_equal(mesh_vip_sync(t2, keys, 1, 1020), 1);
    struct mesh_vip_pair q;
    assert_int_equal(mesh_vip_lookup_service(t2, "shop/web", &q), -ENOENT);
    mesh_buf_done(&b);
    mesh_vip_table_free(t);
    mesh_vip_table_free(t2);
}

static void test_bad_files(void **state)
{
    (void)state;
    /* A document that cannot be read loads nothing (-EINVAL); a bad entry is dropped with
     * its reason and the good ones are kept (`kept`), so no service moves to another
     * address because of another's bad entry. */
    static const struct {
        const char *doc;
        const char *error;
        int kept; /* -1: the whole document refused */
    } cases[] = {
        {"{\"version\": 1, \"services\": [", "vips.json", -1},
        {"[]", "expected {\"version\": 1", -1},
        {"{\"version\": 2, \"services\": []}", "expected {\"version\": 1", -1},
        {"{\"version\": 1, \"services\": [{\"service\": \"noslash\"}]}", "$.services[0]", 0},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/b\", \"ipv4\": \"10.0.0.1\"}]}",
         "configured IPv4 range", 0},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/b\", \"ipv4\": \"240.240.0.0\"}]}",
         "configured IPv4 range", 0},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/b\", \"ipv6\": \"2001:3::1\"}]}",
         "configured IPv6 range", 0},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/b\"}, {\"service\": \"a/b\"}]}",
         "listed twice", 1},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/b\", \"ipv4\": \"240.240.0.9\"}, "
         "{\"service\": \"a/c\", \"ipv4\": \"240.240.0.9\"}]}",
         "given to two services", 1},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/b\", \"color\": 1}]}",
         "unknown key 'color'", 0},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/b\", \"gone_since_ms\": -1}]}",
         "positive integer", 0},
        {"{\"version\": 1, \"services\": [{\"service\": \"a/c\", \"ipv4\": \"10.0.0.1\"}, "
         "{\"service\": \"a/b\", \"ipv4\": \"240.240.0.9\"}]}",
         "$.services[0]", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mesh_vip_table *t = table(NULL, NULL, 1000);
        const char *keys[] = {"x/y"};
        mesh_vip_sync(t, keys, 1, 1);
        struct mesh_cfg_errors errors = {0};
        int r = mesh_vip_load(t, "vips.json", cases[i].doc, strlen(cases[i].doc), &errors);
        char *all = mesh_cfg_errors_join(&errors);
        int want = cases[i].kept < 0 ? -EINVAL : cases[i].kept;
        if (r != want || !all || !strstr(all, cases[i].error))
            fail_msg("case %zu: %d '%s', expected %d '%s'", i, r, all ? all : "", want,
                     cases[i].error);
        assert_int_equal(mesh_vip_count(t), cases[i].kept < 0 ? 0 : (size_t)cases[i].kept);
        struct mesh_vip_pair p;
        if (cases[i].kept > 0) {
            /* The first a/b kept, with its address. */
            assert_int_equal(mesh_vip_lookup_service(t, "a/b", &p), 0);
            if (strstr(cases[i].doc, "240.240.0.9")) {
                char a[INET6_ADDRSTRLEN];
                text(&p.v4, a);
                assert_string_equal(a, "240.240.0.9");
            }
        }
        mesh_free(all);
        mesh_cfg_errors_done(&errors);
        mesh_vip_table_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_ranges),
        UNIT_TEST(test_sync_and_lookups),
        UNIT_TEST(test_small_range_fills),
        UNIT_TEST(test_full_range_fails_fast),
        UNIT_TEST(test_save_and_load),
        UNIT_TEST(test_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
