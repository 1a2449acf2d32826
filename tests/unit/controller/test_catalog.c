/*
 * The registry's catalog, kept up to date service by service (controller/catalog_doc.c):
 * an agent that applies the answer "since N" to what it had at N holds exactly the catalog
 * a full fetch gives, from every N it could hold, through reports, changes, leaves, lease
 * lapses and expiries; and the full catalog is the one a registry that saw only the last
 * reports builds.
 */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>
#include <uv.h>

#include "controller/catalog-int.h"
#include "tests/unit/unit.h"

#define HISTORY_MAX 40

struct history {
    uint64_t index[HISTORY_MAX];
    json_t *state[HISTORY_MAX]; /* "ns/name" -> service, as an agent holds it */
    size_t n;
};

static json_t *fetch(struct mesh_ctl_catalog *c, uint64_t since)
{
    const char *text = NULL;
    size_t len = 0;
    assert_int_equal(mesh_ctl__catalog_text(c, since, &text, &len), 0);
    json_t *doc = json_loadb(text, len, 0, NULL);
    assert_non_null(doc);
    return doc;
}

/* What an agent does with an answer (registry-adapters/controller). */
static void apply(json_t *state, const json_t *doc)
{
    size_t i;
    json_t *v;
    if (json_is_true(json_object_get(doc, "full")))
        json_object_clear(state);
    json_array_foreach(json_object_get(doc, "services"), i, v)
    {
        char key[200];
        snprintf(key, sizeof(key), "%s/%s", json_string_value(json_object_get(v, "namespace")),
                 json_string_value(json_object_get(v, "name")));
        json_object_set(state, key, v);
    }
    json_array_foreach(json_object_get(doc, "removed"), i, v)
    {
        json_object_del(state, json_string_value(v));
    }
}

static json_t *full_state(struct mesh_ctl_catalog *c)
{
    json_t *doc = fetch(c, 0), *state = json_object();
    assert_true(json_is_true(json_object_get(doc, "full")));
    apply(state, doc);
    json_decref(doc);
    return state;
}

/* From every index an agent held, the delta leads to the full catalog; then the current
 * index and its catalog join the history. */
static void check_and_note(struct mesh_ctl_catalog *c, struct history *h)
{
    json_t *full = full_state(c);
    for (size_t k = 0; k < h->n; k++) {
        json_t *state = json_deep_copy(h->state[k]), *doc = fetch(c, h->index[k]);
        assert_int_equal(json_integer_value(json_object_get(doc, "index")),
                         (json_int_t)mesh_ctl_catalog_index(c));
        apply(state, doc);
        if (!json_equal(state, full)) {
            char *a = json_dumps(state, JSON_SORT_KEYS), *b = json_dumps(full, JSON_SORT_KEYS);
            fail_msg("since %llu: %s\nfull: %s", (unsigned long long)h->index[k], a, b);
        }
        json_decref(state);
        json_decref(doc);
    }
    /* Up to date: an empty delta. */
    json_t *doc = fetch(c, mesh_ctl_catalog_index(c));
    assert_int_equal(json_array_size(json_object_get(doc, "services")), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "removed")), 0);
    json_decref(doc);
    if (h->n == HISTORY_MAX) {
        json_decref(h->state[0]);
        memmove(h->index, h->index + 1, sizeof(h->index[0]) * (HISTORY_MAX - 1));
        memmove(h->state, h->state + 1, sizeof(h->state[0]) * (HISTORY_MAX - 1));
        h->n--;
    }
    h->index[h->n] = mesh_ctl_catalog_index(c);
    h->state[h->n++] = full;
}

static void history_done(struct history *h)
{
    for (size_t k = 0; k < h->n; k++)
        json_decref(h->state[k]);
    h->n = 0;
}

static uint32_t next_random(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

/* A node's report: some of 5 services, each on one or two ports, with a version. */
static json_t *random_services(uint32_t *seed)
{
    static const char *const names[] = {"api", "web", "db", "cache", "queue"};
    static const char *const healths[] = {"healthy", "unhealthy", "draining"};
    json_t *list = json_array();
    for (size_t k = 0; k < 5; k++) {
        unsigned pick = next_random(seed) % 4; /* 0: absent, 1-2: one port, 3: two */
        for (unsigned p = 0; pick && p < (pick == 3 ? 2u : 1u); p++) {
            char id[200];
            snprintf(id, sizeof(id), "spiffe://t.mesh/ns/shop/sa/%s", names[k]);
            json_array_append_new(
                list, json_pack("{s:s, s:s, s:s, s:i, s:{s:s}, s:s, s:s}", "namespace", "shop",
                                "name", names[k], "protocol", "http", "port", 8000 + (int)p,
                                "labels", "version", next_random(seed) % 2 ? "v1" : "v2",
                                "identity", id, "health", healths[next_random(seed) % 3]));
        }
    }
    return list;
}

static struct mesh_ctl_catalog *new_catalog(uv_loop_t *loop, uint64_t grace, uint64_t expiry)
{
    struct mesh_ctl_catalog_options o = {.trust_domain = "t.mesh",
                                         .report_interval_ms = 5000,
                                         .grace_ms = grace,
                                         .expiry_ms = expiry};
    struct mesh_ctl_catalog *c = NULL;
    assert_int_equal(mesh_ctl_catalog_new(loop, &o, &c), 0);
    return c;
}

static void close_catalog(uv_loop_t *loop, struct mesh_ctl_catalog *c)
{
    mesh_ctl_catalog_free(c);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_deltas_from_any_index_reach_the_full_catalog(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct mesh_ctl_catalog *c = new_catalog(&loop, 600000, 1200000);
    struct history h = {0};
    json_t *last = json_object(); /* node -> its last report, or absent once it left */
    uint32_t seed = 7;
    check_and_note(c, &h);
    for (int step = 0; step < 300; step++) {
        char node[16], addr[32];
        unsigned n = next_random(&seed) % 8, op = next_random(&seed) % 10;
        snprintf(node, sizeof(node), "node-%u", n);
        snprintf(addr, sizeof(addr), "10.0.0.%u", n + 1);
        if (op == 0) {
            mesh_ctl_catalog_leave(c, node);
            json_object_del(last, node);
        } else if (op == 1 && json_object_get(last, node)) {
            uint64_t before = mesh_ctl_catalog_index(c); /* the same again: a renewal */
            assert_int_equal(
                mesh_ctl_catalog_report(c, node, addr, 15008, NULL, json_object_get(last, node)),
                0);
            assert_int_equal(mesh_ctl_catalog_index(c), before);
        } else {
            json_t *services = random_services(&seed);
            const char *zone = op == 2 ? "zone-b" : NULL;
            assert_int_equal(mesh_ctl_catalog_report(c, node, addr, 15008, zone, services), 0);
            if (zone)
                json_object_del(last, node); /* its renewal needs the zone: not repeated */
            else
                json_object_set(last, node, services);
            json_decref(services);
        }
        /* Sometimes several changes before an agent asks. */
        if (next_random(&seed) % 3)
            check_and_note(c, &h);
    }
    check_and_note(c, &h);
    /* The same catalog from a registry that saw only the last reports. */
    struct mesh_ctl_catalog *fresh = new_catalog(&loop, 600000, 1200000);
    const char *node;
    json_t *services;
    json_object_foreach(last, node, services)
    {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%d", atoi(node + 5) + 1);
        assert_int_equal(mesh_ctl_catalog_report(fresh, node, addr, 15008, NULL, services), 0);
    }
    for (unsigned n = 0; n < 8; n++) {
        char other[16];
        snprintf(other, sizeof(other), "node-%u", n);
        if (!json_object_get(last, other))
            mesh_ctl_catalog_leave(c, other); /* both keep the nodes in `last` only */
    }
    check_and_note(c, &h);
    json_t *a = full_state(c), *b = full_state(fresh);
    assert_true(json_object_size(a) > 0);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    json_decref(last);
    history_done(&h);
    mesh_ctl_catalog_free(fresh);
    close_catalog(&loop, c);
}

static uint64_t lapsed(const struct mesh_ctl_catalog *c)
{
    uint64_t eps, n, parked, changes;
    mesh_ctl_catalog_stats(c, &eps, &n, &parked, &changes);
    return n;
}

static void test_lapses_and_expiries_reach_every_agent(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct mesh_ctl_catalog *c = new_catalog(&loop, 20, 400);
    struct history h = {0};
    uint32_t seed = 11;
    json_t *sa = random_services(&seed), *sb = random_services(&seed);
    check_and_note(c, &h);
    assert_int_equal(mesh_ctl_catalog_report(c, "b", "10.0.0.2", 15008, NULL, sb), 0);
    check_and_note(c, &h);
    assert_int_equal(mesh_ctl_catalog_report(c, "a", "10.0.0.1", 15008, "z", sa), 0);
    check_and_note(c, &h);
    while (lapsed(c) < 2)
        uv_run(&loop, UV_RUN_ONCE); /* the lease timer judges them */
    check_and_note(c, &h);
    json_t *full = fetch(c, 0);
    size_t i;
    json_t *svc;
    json_array_foreach(json_object_get(full, "services"), i, svc)
    {
        size_t j;
        json_t *ep;
        json_array_foreach(json_object_get(svc, "endpoints"), j, ep)
        {
            assert_string_equal(json_string_value(json_object_get(ep, "health")), "unhealthy");
        }
    }
    json_decref(full);
    /* a reports again (healthy where it says so); b expires. */
    assert_int_equal(mesh_ctl_catalog_report(c, "a", "10.0.0.1", 15008, "z", sa), 0);
    check_and_note(c, &h);
    while (mesh_hmap_get(&c->nodes, "b"))
        uv_run(&loop, UV_RUN_ONCE);
    check_and_note(c, &h);
    while (mesh_hmap_get(&c->nodes, "a"))
        uv_run(&loop, UV_RUN_ONCE);
    check_and_note(c, &h);
    full = fetch(c, 0);
    assert_int_equal(json_array_size(json_object_get(full, "services")), 0);
    json_decref(full);
    json_decref(sa);
    json_decref(sb);
    history_done(&h);
    close_catalog(&loop, c);
}

/* A change of one node in a large mesh answers with that node's services only. */
static void test_a_delta_holds_what_changed(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct mesh_ctl_catalog *c = new_catalog(&loop, 600000, 1200000);
    for (int n = 0; n < 200; n++) {
        char node[16], id[100], name[32];
        snprintf(node, sizeof(node), "n-%d", n);
        snprintf(name, sizeof(name), "svc-%d", n);
        snprintf(id, sizeof(id), "spiffe://t.mesh/ns/shop/sa/%s", name);
        json_t *s = json_pack("[{s:s, s:s, s:i, s:s}]", "namespace", "shop", "name", name, "port",
                              80, "identity", id);
        assert_int_equal(mesh_ctl_catalog_report(c, node, "10.0.0.1", 0, NULL, s), 0);
        json_decref(s);
    }
    json_t *doc = fetch(c, 0);
    assert_int_equal(json_array_size(json_object_get(doc, "services")), 200);
    json_decref(doc);
    uint64_t at = mesh_ctl_catalog_index(c);
    mesh_ctl_catalog_leave(c, "n-7");
    doc = fetch(c, at);
    assert_false(json_is_true(json_object_get(doc, "full")));
    assert_int_equal(json_array_size(json_object_get(doc, "services")), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "removed")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "removed"), 0)),
                        "shop/svc-7");
    json_decref(doc);
    /* An index from another history (or none) gets the whole catalog. */
    doc = fetch(c, mesh_ctl_catalog_index(c) + 1000);
    assert_true(json_is_true(json_object_get(doc, "full")));
    assert_int_equal(json_array_size(json_object_get(doc, "services")), 199);
    json_decref(doc);
    close_catalog(&loop, c);
}

/* A change that could not be noted (out of memory) is not lost: the next answer indexes
 * every node again. */
static void test_out_of_memory_loses_no_change(void **state)
{
    (void)state;
    for (long fail = 0; fail < 40; fail++) {
        uv_loop_t loop;
        assert_int_equal(uv_loop_init(&loop), 0);
        struct mesh_ctl_catalog *c = new_catalog(&loop, 600000, 1200000);
        struct history h = {0};
        uint32_t seed = 3;
        json_t *s1 = random_services(&seed), *s2 = random_services(&seed);
        assert_int_equal(mesh_ctl_catalog_report(c, "a", "10.0.0.1", 15008, NULL, s1), 0);
        check_and_note(c, &h);
        mesh_alloc_fail_after(fail);
        int r = mesh_ctl_catalog_report(c, "a", "10.0.0.1", 15008, NULL, s2);
        mesh_alloc_fail_after(-1);
        if (r == 0) /* taken: the answers show it */
            check_and_note(c, &h);
        /* Either way, b's report now is seen together with whatever a has. */
        assert_int_equal(mesh_ctl_catalog_report(c, "b", "10.0.0.2", 15008, NULL, s1), 0);
        check_and_note(c, &h);
        json_t *full = full_state(c);
        struct mesh_ctl_catalog *fresh = new_catalog(&loop, 600000, 1200000);
        assert_int_equal(
            mesh_ctl_catalog_report(fresh, "a", "10.0.0.1", 15008, NULL, r == 0 ? s2 : s1), 0);
        assert_int_equal(mesh_ctl_catalog_report(fresh, "b", "10.0.0.2", 15008, NULL, s1), 0);
        json_t *want = full_state(fresh);
        assert_true(json_equal(full, want));
        json_decref(full);
        json_decref(want);
        json_decref(s1);
        json_decref(s2);
        history_done(&h);
        mesh_ctl_catalog_free(fresh);
        close_catalog(&loop, c);
    }
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_deltas_from_any_index_reach_the_full_catalog),
        UNIT_TEST(test_lapses_and_expiries_reach_every_agent),
        UNIT_TEST(test_a_delta_holds_what_changed),
        UNIT_TEST(test_out_of_memory_loses_no_change),
    };
    return cmocka_run_group_tests_name("controller catalog", tests, NULL, NULL);
}
