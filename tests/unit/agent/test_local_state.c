/* The last-known-good local services: encode, parse back, refuse a rotten file. */
#include <errno.h>
#include <string.h>

#include "agent/local_state.h"
#include "common/alloc.h"
#include "tests/unit/unit.h"

static const char GOOD[] =
    "{\"version\":1,\"registries\":[{\"registry\":\"k8s\",\"services\":[]},{\"registry\":"
    "\"files\",\"services\":[{\"name\":\"web\",\"namespace\":\"shop\",\"protocol\":\"http\","
    "\"address\":\"[::1]:8080\",\"inbound\":\"0.0.0.0:15006\",\"source\":\"web.json\","
    "\"identity\":\"spiffe://mesh.local/ns/shop/sa/web\",\"labels\":{\"version\":\"v2\","
    "\"app.kubernetes.io/part-of\":\"shop\"},\"upstreams\":[{\"service\":\"api\","
    "\"namespace\":\"shop\",\"bind\":\"127.0.0.1:19001\",\"protocol\":\"tcp\"}]}]}]}";

static void test_round_trip(void **state)
{
    (void)state;
    struct mesh_cfg_errors errors = {0};
    struct mesh_local_service *v = NULL, *w = NULL;
    size_t n = 0, m = 0;
    assert_int_equal(mesh_local_state_parse("x", GOOD, strlen(GOOD), "files", &errors, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].name, "web");
    assert_string_equal(v[0].identity, "spiffe://mesh.local/ns/shop/sa/web");
    assert_int_equal(v[0].protocol, MESH_PROTO_HTTP);
    assert_int_equal(mesh_addr_port(&v[0].inbound), 15006);
    assert_int_equal(v[0].n_upstreams, 1);
    assert_int_equal(mesh_addr_port(&v[0].upstreams[0].bind), 19001);
    /* Another registry's entry restores nothing for this one. */
    assert_int_equal(mesh_local_state_parse("x", GOOD, strlen(GOOD), "k8s", &errors, &w, &m), 0);
    assert_int_equal(m, 0);
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    struct mesh_local_state_entry e = {"files", v, n};
    mesh_local_state_encode(&e, 1, &b);
    assert_int_equal(b.err, 0);
    assert_int_equal(mesh_local_state_parse("y", b.data, b.len, "files", &errors, &w, &m), 0);
    assert_int_equal(m, 1);
    assert_string_equal(w[0].upstreams[0].service, "api");
    assert_string_equal(mesh_labels_get(&w[0].labels, "version"), "v2");
    assert_string_equal(mesh_labels_get(&w[0].labels, "app.kubernetes.io/part-of"), "shop");
    assert_int_equal(w[0].labels.n, 2);
    assert_true(mesh_addr_equal(&w[0].addr, &v[0].addr));
    mesh_buf_done(&b);
    mesh_local_state_free(v, n);
    mesh_local_state_free(w, m);
    assert_int_equal(errors.n, 0);
}

static void test_rotten_file_restores_nothing(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"version\":2,\"registries\":[]}",
        "{\"version\":1,\"registries\":[{\"registry\":\"files\",\"services\":[{\"name\":\"a\","
        "\"namespace\":\"b\",\"address\":\"unix:/x\"}]}]}",
        "{\"version\":1,\"registries\":[{\"registry\":\"files\",\"services\":[{\"name\":\"a\","
        "\"namespace\":\"b\",\"address\":\"10.0.0.1:1\",\"upstreams\":[{\"service\":\"c\","
        "\"namespace\":\"b\",\"bind\":\"nowhere\"}]}]}]}",
        "{\"version\":1,\"registries\":[{\"registry\":\"files\",\"services\":[{\"name\":\"a\","
        "\"namespace\":\"b\",\"address\":\"10.0.0.1:1\",\"identity\":\"http://x\"}]}]}",
        "{\"version\":1,\"registries\":[{\"registry\":\"files\",\"services\":[{\"name\":\"a\","
        "\"namespace\":\"b\",\"address\":\"10.0.0.1:1\",\"labels\":{\"bad key!\":\"x\"}}]}]}",
        /* Port 0 is no address: this file says "" for none (the fuzzer found it). */
        "{\"version\":1,\"registries\":[{\"registry\":\"files\",\"services\":[{\"name\":\"a\","
        "\"namespace\":\"b\",\"address\":\"127.0.0.1:0\"}]}]}",
        "{\"version\":1",
    };
    for (size_t i = 0; i < MESH_ARRAY_SIZE(bad); i++) {
        struct mesh_cfg_errors errors = {0};
        struct mesh_local_service *v = NULL;
        size_t n = 0;
        assert_int_equal(
            mesh_local_state_parse("bad.json", bad[i], strlen(bad[i]), "files", &errors, &v, &n),
            -EINVAL);
        assert_null(v);
        assert_true(errors.n > 0);
        assert_contains(errors.v[0], "bad.json");
        mesh_cfg_errors_done(&errors);
    }
}

static void test_allocation_failures(void **state)
{
    (void)state;
    for (long k = 0;; k++) {
        struct mesh_cfg_errors errors = {0};
        struct mesh_local_service *v = NULL;
        size_t n = 0;
        mesh_alloc_fail_after(k);
        int r = mesh_local_state_parse("x", GOOD, strlen(GOOD), "files", &errors, &v, &n);
        mesh_alloc_fail_after(-1);
        mesh_local_state_free(v, n);
        mesh_cfg_errors_done(&errors);
        if (r == 0)
            break;
        assert_true(r == -ENOMEM || r == -EINVAL);
    }
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_round_trip),
        UNIT_TEST(test_rotten_file_restores_nothing),
        UNIT_TEST(test_allocation_failures),
    };
    return cmocka_run_group_tests_name("local_state", tests, NULL, NULL);
}
