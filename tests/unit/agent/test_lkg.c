/* The last-known-good catalog: what is written (in 64 KB pieces) reads back the same. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/lkg.h"
#include "catalog/catalog.h"
#include "common/atom.h"
#include "common/cfg.h"
#include "tests/unit/unit.h"

static struct mesh_catalog *new_catalog(void)
{
    struct mesh_catalog *c;
    assert_int_equal(mesh_catalog_new(&c), 0);
    struct mesh_catalog_source src[] = {{"files", "static", true, 0},
                                        {"k8s", "kubernetes", true, 1}};
    assert_int_equal(mesh_catalog_set_sources(c, src, 2), 0);
    return c;
}

/* 40 services of 100 endpoints in each source: some 300 KB of JSON. */
static void fill(struct mesh_catalog *c)
{
    static struct mesh_endpoint eps[100];
    for (int s = 0; s < 40; s++) {
        for (int e = 0; e < 100; e++) {
            char ip[32], zone[16];
            struct mesh_endpoint *ep = &eps[e];
            *ep = (struct mesh_endpoint){.weight = (uint32_t)(e % 3 + 1),
                                         .health = e % 7   ? MESH_EP_HEALTHY
                                                   : e % 2 ? MESH_EP_SERVING | MESH_EP_TERMINATING
                                                           : 0,
                                         .mesh_port = (uint16_t)(e % 2 ? 15008 : 0)};
            snprintf(ip, sizeof(ip), e % 5 ? "10.%d.0.%d" : "fd00::%x:%x", s, e + 1);
            assert_int_equal(mesh_ipport_from_ip(ip, (uint16_t)(8000 + e), &ep->addr), 0);
            snprintf(zone, sizeof(zone), "zone-%d", e % 3);
            ep->zone = mesh_atom(zone);
            ep->node = e % 4 ? mesh_atom("node-a") : NULL;
            if (e % 10 == 0)
                assert_int_equal(mesh_labels_set(&ep->labels, "version", "v2"), 0);
        }
        char name[32];
        snprintf(name, sizeof(name), "svc-%d", s);
        /* Some services run as another service account than their name. */
        struct mesh_service_update u = {"shop",
                                        name,
                                        MESH_PROTO_HTTP,
                                        eps,
                                        100,
                                        false,
                                        s % 3 ? NULL : "spiffe://mesh.local/ns/shop/sa/payments"};
        assert_int_equal(mesh_catalog_update(c, s % 2 ? "k8s" : "files", &u), 1);
        if (s % 4 == 0)
            assert_int_equal(mesh_catalog_update(c, "k8s", &u), 1); /* both report it */
        for (int e = 0; e < 100; e++)
            mesh_endpoint_done(&eps[e]);
    }
}

static void same_views(const struct mesh_catalog *a, const struct mesh_catalog *b)
{
    struct mesh_catalog_capture *ca, *cb;
    assert_int_equal(mesh_catalog_capture(a, &ca), 0);
    assert_int_equal(mesh_catalog_capture(b, &cb), 0);
    assert_int_equal(ca->n_views, cb->n_views);
    for (size_t i = 0; i < ca->n_views; i++) {
        const struct mesh_catalog_capture_view *x = &ca->views[i], *y = &cb->views[i];
        assert_string_equal(x->key, y->key);
        assert_int_equal(x->source, y->source);
        assert_int_equal(x->protocol, y->protocol);
        assert_true(!x->identity == !y->identity);
        if (x->identity)
            assert_string_equal(x->identity, y->identity);
        assert_int_equal(x->n_endpoints, y->n_endpoints);
        for (size_t k = 0; k < x->n_endpoints; k++)
            assert_true(mesh_endpoint_equal(&x->endpoints[k], &y->endpoints[k]));
    }
    mesh_catalog_capture_free(ca);
    mesh_catalog_capture_free(cb);
}

static void closed(void *data)
{
    *(int *)data = 1;
}

static void test_write_and_load_round_trip(void **state)
{
    (void)state;
    char dir[] = "/tmp/mesh-lkg-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/%s", dir, MESH_LKG_FILE);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct mesh_catalog *c = new_catalog(), *back = new_catalog();
    fill(c);
    struct mesh_lkg *l;
    assert_int_equal(mesh_lkg_new(&loop, path, &l), 0);
    mesh_lkg_schedule(l, c);
    assert_int_equal(mesh_lkg_flush(l), 0);
    uint64_t writes, failures;
    mesh_lkg_stats(l, &writes, &failures);
    assert_int_equal(writes, 1);
    assert_int_equal(failures, 0);
    int done = 0;
    mesh_lkg_close(l, closed, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(done, 1);

    struct mesh_cfg_errors errors = {0};
    assert_true(mesh_lkg_load(path, back, &errors) > 0);
    assert_int_equal(mesh_cfg_error_count(&errors), 0);
    mesh_cfg_errors_done(&errors);
    same_views(c, back);

    mesh_catalog_free(c);
    mesh_catalog_free(back);
    assert_int_equal(uv_loop_close(&loop), 0);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/*
 * A registry may hand the catalog names the mesh's rules refuse (Consul node names may
 * have upper case or '_'): the last-known-good file written from it must load back whole,
 * so such a name is not kept (common/names.h).
 */
static void test_names_a_registry_gives_load_back(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(), *back = new_catalog();
    const char *nodes[] = {"Node-1", "node_2", "node-3", "-x"};
    const char *zones[] = {"zone a", "zone-b", "", "z"};
    struct mesh_endpoint eps[4];
    for (int i = 0; i < 4; i++) {
        char ip[32];
        eps[i] = (struct mesh_endpoint){.weight = 1, .health = MESH_EP_HEALTHY};
        snprintf(ip, sizeof(ip), "10.0.0.%d", i + 1);
        assert_int_equal(mesh_ipport_from_ip(ip, 80, &eps[i].addr), 0);
        eps[i].node = mesh_atom(nodes[i]);
        eps[i].zone = zones[i][0] ? mesh_atom(zones[i]) : NULL;
    }
    struct mesh_service_update u = {"shop", "api", MESH_PROTO_HTTP, eps, 4, false, NULL};
    assert_int_equal(mesh_catalog_update(c, "files", &u), 1);
    for (int i = 0; i < 4; i++)
        mesh_endpoint_done(&eps[i]);
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    mesh_lkg_encode(c, &b);
    assert_int_equal(b.err, 0);
    struct mesh_cfg_errors errors = {0};
    int r = mesh_lkg_load_buffer("catalog.json", b.data, b.len, back, &errors);
    if (errors.n)
        fail_msg("%s", errors.v[0]);
    assert_int_equal(r, 1);
    mesh_cfg_errors_done(&errors);
    same_views(c, back);
    const struct mesh_service *svc = mesh_catalog_get(back, "shop", "api");
    assert_non_null(svc);
    assert_int_equal(svc->n_endpoints, 4);
    assert_null(svc->endpoints[0].node); /* "Node-1" */
    assert_null(svc->endpoints[1].node); /* "node_2" */
    assert_string_equal(svc->endpoints[2].node, "node-3");
    assert_null(svc->endpoints[3].node); /* "-x" */
    mesh_buf_done(&b);
    mesh_catalog_free(c);
    mesh_catalog_free(back);
}

/*
 * A write that fails (the state dir cannot take the file) is tried again with backoff, with
 * no new change to the catalog: once the dir is back, the file is written.
 */
static void test_failed_write_is_retried_when_the_disk_frees_up(void **state)
{
    (void)state;
    char dir[] = "/tmp/mesh-lkg-XXXXXX", sub[256], path[300];
    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof(sub), "%s/state", dir);
    snprintf(path, sizeof(path), "%s/%s", sub, MESH_LKG_FILE);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct mesh_catalog *c = new_catalog();
    fill(c);
    struct mesh_lkg *l;
    assert_int_equal(mesh_lkg_new(&loop, path, &l), 0);
    mesh_lkg_schedule(l, c); /* the state dir does not exist: the write fails */
    uint64_t writes = 0, failures = 0;
    while (failures == 0) {
        uv_run(&loop, UV_RUN_ONCE);
        mesh_lkg_stats(l, &writes, &failures);
    }
    assert_int_equal(writes, 0);
    assert_int_equal(mkdir(sub, 0700), 0); /* the disk frees up; the catalog does not change */
    uint64_t t0 = uv_now(&loop);
    while (writes == 0 && uv_now(&loop) - t0 < 20000) {
        uv_run(&loop, UV_RUN_ONCE);
        mesh_lkg_stats(l, &writes, &failures);
    }
    assert_int_equal(writes, 1);
    assert_int_equal(access(path, R_OK), 0);
    int done = 0;
    mesh_lkg_close(l, closed, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(done, 1);
    struct mesh_catalog *back = new_catalog();
    struct mesh_cfg_errors errors = {0};
    assert_true(mesh_lkg_load(path, back, &errors) > 0);
    mesh_cfg_errors_done(&errors);
    same_views(c, back);
    mesh_catalog_free(c);
    mesh_catalog_free(back);
    assert_int_equal(uv_loop_close(&loop), 0);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_write_and_load_round_trip),
        UNIT_TEST(test_names_a_registry_gives_load_back),
        UNIT_TEST(test_failed_write_is_retried_when_the_disk_frees_up),
    };
    return cmocka_run_group_tests_name("lkg", tests, NULL, NULL);
}
