/* Balancers, zone awareness, panic mode, retries' exclusion and outlier ejection. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "proxy/proxy-int.h"
#include "tests/unit/unit.h"

struct fixture {
    struct mesh_proxy_shared sh;
    struct mesh_dest_state *ds;
    struct mesh_dest_policy policy;
    struct snap_dest d;
    struct mesh_lb_state lb;
    uint64_t rng;
};

static struct fixture *make(int lb, const unsigned *weights, const char *const *zones, size_t n)
{
    struct fixture *f = mesh_calloc(1, sizeof(*f));
    f->rng = 0x1234567;
    f->ds = mesh_calloc(1, sizeof(*f->ds) + 8);
    atomic_init(&f->ds->refs, 1);
    strcpy(f->ds->key, "ns/svc");
    mesh_dest_policy_defaults(&f->policy);
    f->d.policy = &f->policy;
    f->policy.lb = lb;
    f->d.key = mesh_strdup("ns/svc");
    f->d.state = f->ds;
    f->d.eps = mesh_calloc(n, sizeof(*f->d.eps));
    f->d.n = n;
    for (size_t i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.0.%zu", i + 1);
        mesh_ipport_from_ip(ip, 80, &f->d.eps[i].addr);
        f->d.eps[i].weight = weights ? weights[i] : 1;
        f->d.eps[i].health = MESH_EP_READY | MESH_EP_SERVING;
        f->d.eps[i].local_zone = zones && zones[i] && strcmp(zones[i], "a") == 0;
        struct mesh_ep_state *st = mesh_calloc(1, sizeof(*st) + 8);
        atomic_init(&st->refs, 1);
        atomic_init(&st->hc_healthy, 1);
        st->dest = f->ds;
        atomic_fetch_add(&f->ds->refs, 1);
        f->d.eps[i].state = st;
    }
    f->d.zone_aware = zones != NULL;
    if (lb == MESH_LB_RING_HASH)
        assert_int_equal(mesh_ring_build(&f->d), 0);
    f->lb.dest = &f->d;
    return f;
}

static void destroy(struct fixture *f)
{
    mesh_lb_state_done(&f->lb);
    for (size_t i = 0; i < f->d.n; i++)
        mesh_ep_state_unref(f->d.eps[i].state);
    mesh_free(f->d.eps);
    mesh_free(f->d.ring);
    mesh_free(f->d.key);
    mesh_dest_policy_done(&f->policy);
    mesh_dest_state_unref(f->ds);
    mesh_free(f);
}

static int pick(struct fixture *f, uint64_t client)
{
    return mesh_lb_pick(&f->lb, &f->sh, client, NULL, 0, &f->rng);
}

static void bump(struct fixture *f)
{
    atomic_fetch_add(&f->sh.health_epoch, 1);
}

static void test_smooth_round_robin(void **state)
{
    (void)state;
    static const unsigned w[] = {5, 1, 1};
    struct fixture *f = make(MESH_LB_ROUND_ROBIN, w, NULL, 3);
    char seq[8] = {0};
    for (int i = 0; i < 7; i++)
        seq[i] = (char)('a' + pick(f, 0));
    assert_string_equal(seq, "aabacaa"); /* smooth: the light ones are spread out */
    int count[3] = {0};
    for (int i = 0; i < 7000; i++)
        count[pick(f, 0)]++;
    assert_int_equal(count[0], 5000);
    assert_int_equal(count[1], 1000);
    assert_int_equal(count[2], 1000);
    destroy(f);
}

static void test_random_weighted(void **state)
{
    (void)state;
    static const unsigned w[] = {3, 1};
    struct fixture *f = make(MESH_LB_RANDOM, w, NULL, 2);
    int count[2] = {0};
    for (int i = 0; i < 20000; i++)
        count[pick(f, 0)]++;
    /* 75 % +- 2 % */
    assert_in_range(count[0], 14600, 15400);
    destroy(f);
}

static void test_least_request(void **state)
{
    (void)state;
    struct fixture *f = make(MESH_LB_LEAST_REQUEST, NULL, NULL, 4);
    /* Endpoint 2 carries a load: two choices should almost never pick it. */
    atomic_store(&f->d.eps[2].state->active, 100);
    int count[4] = {0};
    for (int i = 0; i < 4000; i++)
        count[pick(f, 0)]++;
    /* Chosen only when both choices land on it: about 1/16. */
    assert_true(count[2] < 400);
    /* Simulated: every pick opens a connection; loads stay even. */
    atomic_store(&f->d.eps[2].state->active, 0);
    for (int i = 0; i < 4000; i++)
        atomic_fetch_add(&f->d.eps[pick(f, 0)].state->active, 1);
    for (int i = 0; i < 4; i++) {
        int a = atomic_load(&f->d.eps[i].state->active);
        assert_in_range(a, 900, 1100);
    }
    destroy(f);
}

static void test_ring_hash(void **state)
{
    (void)state;
    struct fixture *f = make(MESH_LB_RING_HASH, NULL, NULL, 4);
    int count[4] = {0};
    int first[1000];
    for (uint64_t c = 0; c < 1000; c++) {
        struct mesh_addr a;
        char ip[32];
        snprintf(ip, sizeof(ip), "192.168.%u.%u", (unsigned)(c / 250), (unsigned)(c % 250));
        mesh_addr_from_ip(ip, 1, &a);
        uint64_t h = mesh_hash_client(&a);
        first[c] = pick(f, h);
        assert_int_equal(pick(f, h), first[c]); /* the same client, the same endpoint */
        count[first[c]]++;
    }
    for (int i = 0; i < 4; i++)
        assert_in_range(count[i], 150, 350); /* spread */
    /* Endpoint 1 ejected: only its clients move. */
    atomic_store(&f->d.eps[1].state->ejected_until, 1);
    bump(f);
    int moved = 0;
    for (uint64_t c = 0; c < 1000; c++) {
        struct mesh_addr a;
        char ip[32];
        snprintf(ip, sizeof(ip), "192.168.%u.%u", (unsigned)(c / 250), (unsigned)(c % 250));
        mesh_addr_from_ip(ip, 1, &a);
        int ep = pick(f, mesh_hash_client(&a));
        assert_int_not_equal(ep, 1);
        if (first[c] != 1)
            assert_int_equal(ep, first[c]);
        else
            moved++;
    }
    assert_int_equal(moved, count[1]);
    destroy(f);
}

static void test_tried_are_skipped(void **state)
{
    (void)state;
    for (int lb = MESH_LB_ROUND_ROBIN; lb <= MESH_LB_RING_HASH; lb++) {
        struct fixture *f = make(lb, NULL, NULL, 3);
        uint32_t tried[2] = {0, 2};
        for (int i = 0; i < 50; i++)
            assert_int_equal(mesh_lb_pick(&f->lb, &f->sh, (uint64_t)i * 7919, tried, 2, &f->rng),
                             1);
        uint32_t all[3] = {0, 1, 2};
        assert_int_equal(mesh_lb_pick(&f->lb, &f->sh, 5, all, 3, &f->rng), -1);
        destroy(f);
    }
}

static void test_eligibility_and_panic(void **state)
{
    (void)state;
    struct fixture *f = make(MESH_LB_ROUND_ROBIN, NULL, NULL, 3);
    f->d.eps[0].health = 0;                    /* not ready */
    f->d.eps[1].health |= MESH_EP_TERMINATING; /* draining */
    for (int i = 0; i < 10; i++)
        assert_int_equal(pick(f, 0), 2);
    atomic_store(&f->d.eps[2].state->hc_healthy, 0); /* failing checks */
    bump(f);
    /* Nothing eligible: ready endpoints are used anyway (panic), never a draining one. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(pick(f, 0), 2);
    f->d.eps[2].health = 0;
    bump(f);
    assert_int_equal(pick(f, 0), -1);
    destroy(f);
}

static void test_panic_threshold(void **state)
{
    (void)state;
    struct fixture *f = make(MESH_LB_ROUND_ROBIN, NULL, NULL, 4);
    /* 2 of 4 eligible: 50 % is not below the threshold; only those two. */
    atomic_store(&f->d.eps[0].state->hc_healthy, 0);
    atomic_store(&f->d.eps[1].state->ejected_until, 1);
    bump(f);
    for (int i = 0; i < 20; i++)
        assert_true(pick(f, 0) >= 2);
    /* 1 of 4 (25 %): every ready endpoint shares the load rather than the last one. */
    atomic_store(&f->d.eps[2].state->ejected_until, 1);
    bump(f);
    int count[4] = {0};
    for (int i = 0; i < 400; i++)
        count[pick(f, 0)]++;
    for (int i = 0; i < 4; i++)
        assert_int_equal(count[i], 100);
    /* 0: the threshold off, the one eligible endpoint takes everything. */
    f->policy.healthy_panic_threshold = 0;
    bump(f);
    for (int i = 0; i < 20; i++)
        assert_int_equal(pick(f, 0), 3);
    destroy(f);
}

static void test_retry_leaves_the_failed_endpoint(void **state)
{
    (void)state;
    for (int lb = MESH_LB_ROUND_ROBIN; lb <= MESH_LB_RING_HASH; lb++) {
        /* Zone-aware with one endpoint in this node's zone: its retry goes to another zone
         * (before: back to the one that failed). */
        static const char *const zones[] = {"a", "b", "b"};
        struct fixture *f = make(lb, NULL, zones, 3);
        uint32_t tried[2] = {0};
        assert_int_equal(mesh_lb_pick(&f->lb, &f->sh, 7, NULL, 0, &f->rng), 0);
        for (int i = 0; i < 20; i++) {
            int ep = mesh_lb_pick(&f->lb, &f->sh, (uint64_t)i * 7919, tried, 1, &f->rng);
            assert_true(ep == 1 || ep == 2);
            tried[1] = (uint32_t)ep;
            ep = mesh_lb_pick(&f->lb, &f->sh, (uint64_t)i * 7919, tried, 2, &f->rng);
            assert_int_equal(ep, 3 - (int)tried[1]);
        }
        destroy(f);
        /* Of two, one ejected and the other failed: the ejected one rather than the failed
         * one again; and once both were tried, none is left to pick. */
        f = make(lb, NULL, NULL, 2);
        atomic_store(&f->d.eps[1].state->ejected_until, 1);
        bump(f);
        uint32_t failed[2] = {0, 1};
        assert_int_equal(mesh_lb_pick(&f->lb, &f->sh, 3, NULL, 0, &f->rng), 0);
        assert_int_equal(mesh_lb_pick(&f->lb, &f->sh, 3, failed, 1, &f->rng), 1);
        assert_int_equal(mesh_lb_pick(&f->lb, &f->sh, 3, failed, 2, &f->rng), -1);
        /* Never a draining one, nor one the registry says is not ready. */
        f->d.eps[1].health |= MESH_EP_TERMINATING;
        bump(f);
        assert_int_equal(mesh_lb_pick(&f->lb, &f->sh, 3, failed, 1, &f->rng), -1);
        destroy(f);
    }
}

static void test_least_request_two_endpoints(void **state)
{
    (void)state;
    /* Two endpoints, one holding requests that do not come back (a stopped process): the
     * two choices are always both, so it gets no more until the other has as many. */
    struct fixture *f = make(MESH_LB_LEAST_REQUEST, NULL, NULL, 2);
    atomic_store(&f->d.eps[1].state->active, 3);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(pick(f, 0), 0);
    destroy(f);
}

static void test_zone_aware(void **state)
{
    (void)state;
    static const char *const zones[] = {"a", "a", "a", "b", "b"};
    struct fixture *f = make(MESH_LB_ROUND_ROBIN, NULL, zones, 5);
    f->policy.zone_aware.min_healthy_percent = 60;
    for (int i = 0; i < 30; i++)
        assert_true(pick(f, 0) < 3);                    /* local zone only */
    atomic_store(&f->d.eps[0].state->ejected_until, 1); /* 2 of 3 healthy: 66 % >= 60 % */
    bump(f);
    for (int i = 0; i < 30; i++) {
        int ep = pick(f, 0);
        assert_true(ep == 1 || ep == 2);
    }
    atomic_store(&f->d.eps[1].state->ejected_until, 1); /* 33 %: fail over to all zones */
    bump(f);
    int other = 0;
    for (int i = 0; i < 30; i++) {
        int ep = pick(f, 0);
        assert_true(ep >= 2);
        other += ep >= 3;
    }
    assert_int_equal(other, 20);
    destroy(f);
}

static void test_outlier_ejection(void **state)
{
    (void)state;
    struct fixture *f = make(MESH_LB_ROUND_ROBIN, NULL, NULL, 4);
    f->policy.outlier.consecutive_failures = 3;
    f->policy.outlier.base_ejection_ms = 1000;
    f->policy.outlier.max_ejection_ms = 3000;
    f->policy.outlier.max_ejection_percent = 50;
    struct snap_endpoint *e0 = &f->d.eps[0], *e1 = &f->d.eps[1], *e2 = &f->d.eps[2];
    mesh_outlier_failure(&f->sh, &f->d, e0, 100);
    mesh_outlier_failure(&f->sh, &f->d, e0, 100);
    mesh_outlier_success(e0); /* not in a row */
    mesh_outlier_failure(&f->sh, &f->d, e0, 100);
    mesh_outlier_failure(&f->sh, &f->d, e0, 100);
    assert_int_equal(atomic_load(&e0->state->ejected_until), 0);
    uint64_t epoch = atomic_load(&f->sh.health_epoch);
    mesh_outlier_failure(&f->sh, &f->d, e0, 100);
    assert_int_equal(atomic_load(&e0->state->ejected_until), 1100);
    assert_true(atomic_load(&f->sh.health_epoch) > epoch);
    assert_int_equal(atomic_load(&f->ds->ejected), 1);
    assert_int_equal(atomic_load(&f->ds->ejections), 1);
    for (int i = 0; i < 3; i++)
        mesh_outlier_failure(&f->sh, &f->d, e1, 200);
    assert_int_equal(atomic_load(&f->ds->ejected), 2);
    /* A third would be 75 % > 50 %: refused. */
    for (int i = 0; i < 3; i++)
        mesh_outlier_failure(&f->sh, &f->d, e2, 300);
    assert_int_equal(atomic_load(&e2->state->ejected_until), 0);
    /* The ejection time doubles per ejection in a row, up to the maximum. */
    atomic_store(&e0->state->ejected_until, 0);
    atomic_fetch_sub(&f->ds->ejected, 1);
    for (int i = 0; i < 3; i++)
        mesh_outlier_failure(&f->sh, &f->d, e0, 5000);
    assert_int_equal(atomic_load(&e0->state->ejected_until), 7000);
    atomic_store(&e0->state->ejected_until, 0);
    atomic_fetch_sub(&f->ds->ejected, 1);
    for (int i = 0; i < 3; i++)
        mesh_outlier_failure(&f->sh, &f->d, e0, 10000);
    assert_int_equal(atomic_load(&e0->state->ejected_until), 13000); /* capped at 3 s */
    destroy(f);
}

static void test_find_endpoint(void **state)
{
    (void)state;
    struct fixture *f = make(MESH_LB_ROUND_ROBIN, NULL, NULL, 9);
    for (size_t i = 0; i < 9; i++)
        assert_ptr_equal(mesh_snapshot_find_ep(&f->d, &f->d.eps[i].addr), &f->d.eps[i]);
    struct mesh_ipport other;
    mesh_ipport_from_ip("10.0.0.1", 81, &other);
    assert_null(mesh_snapshot_find_ep(&f->d, &other));
    destroy(f);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_smooth_round_robin),
        UNIT_TEST(test_random_weighted),
        UNIT_TEST(test_least_request),
        UNIT_TEST(test_ring_hash),
        UNIT_TEST(test_tried_are_skipped),
        UNIT_TEST(test_eligibility_and_panic),
        UNIT_TEST(test_zone_aware),
        UNIT_TEST(test_outlier_ejection),
        UNIT_TEST(test_find_endpoint),
        UNIT_TEST(test_panic_threshold),
        UNIT_TEST(test_retry_leaves_the_failed_endpoint),
        UNIT_TEST(test_least_request_two_endpoints),
    };
    return cmocka_run_group_tests_name("lb", tests, NULL, NULL);
}
