/* Snapshots reuse what did not change: a change to one service rebuilds one service. */
#include <stdio.h>

#include "catalog/catalog.h"
#include "proxy/proxy-int.h"
#include "tests/unit/unit.h"

struct fixture {
    struct mesh_catalog *catalog;
    struct mesh_state_regs regs;
    struct mesh_dest_policy defaults;
    struct mesh_proxy_inputs in;
    struct want_listener shared; /* the outbound HTTP listener: every service gets a dest */
};

static void set(struct fixture *f, const char *name, const char *const *ips, size_t n)
{
    struct mesh_endpoint eps[4] = {0};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mesh_ipport_from_ip(ips[i], 80, &eps[i].addr), 0);
        eps[i].weight = 1;
        eps[i].health = MESH_EP_HEALTHY;
    }
    struct mesh_service_update u = {"default", name, MESH_PROTO_HTTP, eps, n, false, NULL};
    assert_true(mesh_catalog_update(f->catalog, "files", &u) >= 0);
}

static struct fixture *make(void)
{
    struct fixture *f = mesh_calloc(1, sizeof(*f));
    assert_int_equal(mesh_catalog_new(&f->catalog), 0);
    struct mesh_catalog_source src = {"files", "static", true, 0};
    assert_int_equal(mesh_catalog_set_sources(f->catalog, &src, 1), 0);
    mesh_hmap_init(&f->regs.dests);
    assert_int_equal(mesh_dest_policy_defaults(&f->defaults), 0);
    f->in = (struct mesh_proxy_inputs){.catalog = f->catalog, .node_zone = ""};
    f->shared.kind = MESH_LISTENER_HTTP_SHARED;
    f->shared.http = true;
    snprintf(f->shared.key, sizeof(f->shared.key), "127.0.0.1:15001");
    assert_int_equal(mesh_addr_parse(f->shared.key, &f->shared.addr, NULL), 0);
    return f;
}

static struct mesh_proxy_snapshot *build(struct fixture *f, uint64_t gen,
                                         const struct mesh_proxy_snapshot *prev)
{
    struct mesh_proxy_snapshot *s = NULL;
    assert_int_equal(
        mesh_snapshot_build(&f->regs, gen, &f->defaults, &f->in, gen, prev, &f->shared, 1, &s), 0);
    return s;
}

static void destroy(struct fixture *f)
{
    mesh_state_regs_done(&f->regs);
    mesh_dest_policy_done(&f->defaults);
    mesh_catalog_free(f->catalog);
    mesh_free(f);
}

static void test_unchanged_destinations_are_reused(void **state)
{
    (void)state;
    struct fixture *f = make();
    set(f, "a", (const char *const[]){"10.0.0.1", "10.0.0.2"}, 2);
    set(f, "b", (const char *const[]){"10.0.1.1"}, 1);
    struct mesh_proxy_snapshot *s1 = build(f, 1, NULL);
    const struct snap_dest *a1 = mesh_snapshot_dest(s1, "default/a");
    const struct snap_dest *b1 = mesh_snapshot_dest(s1, "default/b");
    assert_non_null(a1);
    assert_non_null(b1);
    assert_int_equal(a1->n, 2);

    /* Nothing changed: every endpoint block is the previous one. */
    struct mesh_proxy_snapshot *s2 = build(f, 1, s1);
    const struct snap_dest *a2 = mesh_snapshot_dest(s2, "default/a");
    assert_ptr_equal(a2->block, a1->block);
    assert_ptr_equal(mesh_snapshot_dest(s2, "default/b")->block, b1->block);

    /* One service changes: it alone is rebuilt, and its kept endpoint keeps its state. */
    set(f, "a", (const char *const[]){"10.0.0.2", "10.0.0.3"}, 2);
    struct mesh_proxy_snapshot *s3 = build(f, 1, s2);
    const struct snap_dest *a3 = mesh_snapshot_dest(s3, "default/a");
    assert_ptr_not_equal(a3->block, a2->block);
    assert_ptr_equal(mesh_snapshot_dest(s3, "default/b")->block, b1->block);
    assert_int_equal(a3->n, 2);
    assert_ptr_equal(a3->eps[0].state, a2->eps[1].state); /* 10.0.0.2 */
    assert_ptr_not_equal(a3->eps[1].state, a2->eps[0].state);

    /* Another input of the endpoints changed (here: its generation): all are rebuilt. */
    struct mesh_proxy_snapshot *s4 = build(f, 2, s3);
    assert_ptr_not_equal(mesh_snapshot_dest(s4, "default/b")->block, b1->block);
    assert_ptr_equal(mesh_snapshot_dest(s4, "default/a")->eps[0].state, a3->eps[0].state);

    mesh_snapshot_unref(s1);
    mesh_snapshot_unref(s2);
    mesh_snapshot_unref(s3);
    mesh_snapshot_unref(s4);
    destroy(f);
}

/* Every endpoint terminating but still serving (a rollout's old pods draining before a new
 * one is ready): the serving ones take traffic rather than none; a ready one, when there is
 * one, keeps it alone. */
static void test_all_terminating_but_serving_take_traffic(void **state)
{
    (void)state;
    struct fixture *f = make();
    struct mesh_endpoint eps[3] = {0};
    const char *ips[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
    const unsigned health[] = {MESH_EP_SERVING | MESH_EP_TERMINATING,
                               MESH_EP_SERVING | MESH_EP_TERMINATING, MESH_EP_TERMINATING};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(mesh_ipport_from_ip(ips[i], 80, &eps[i].addr), 0);
        eps[i].weight = 1;
        eps[i].health = (uint8_t)health[i];
    }
    struct mesh_service_update u = {"default", "web", MESH_PROTO_HTTP, eps, 3, false, NULL};
    assert_true(mesh_catalog_update(f->catalog, "files", &u) >= 0);
    struct mesh_proxy_snapshot *s1 = build(f, 1, NULL);
    const struct snap_dest *d = mesh_snapshot_dest(s1, "default/web");
    assert_int_equal(d->n, 3);
    assert_true(mesh_ep_eligible(&d->eps[0]));
    assert_true(mesh_ep_eligible(&d->eps[1]));
    assert_false(mesh_ep_eligible(&d->eps[2])); /* not serving: never */

    eps[2].health = MESH_EP_HEALTHY; /* a new pod is ready: it alone takes new traffic */
    assert_true(mesh_catalog_update(f->catalog, "files", &u) >= 0);
    struct mesh_proxy_snapshot *s2 = build(f, 1, s1);
    d = mesh_snapshot_dest(s2, "default/web");
    assert_false(mesh_ep_eligible(&d->eps[0]));
    assert_false(mesh_ep_eligible(&d->eps[1]));
    assert_true(mesh_ep_eligible(&d->eps[2]));
    mesh_snapshot_unref(s1);
    mesh_snapshot_unref(s2);
    destroy(f);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_unchanged_destinations_are_reused),
        UNIT_TEST(test_all_terminating_but_serving_take_traffic),
    };
    return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
