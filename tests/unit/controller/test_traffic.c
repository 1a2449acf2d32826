/*
 * The traffic in agents' reports (controller/traffic.c) and the service graph built from
 * it (controller/graph.c): strict checks naming the field, rates from the newest and
 * oldest kept report, the caller's count preferred, counters that restart.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "controller/traffic.h"
#include "tests/unit/unit.h"

static json_t *http_edge(const char *rep, const char *src, const char *dst, int req, int err,
                         int ms)
{
    json_t *b = json_array();
    for (int k = 0; k < MESH_CTL_TRAFFIC_BUCKETS; k++)
        json_array_append_new(b, json_integer(k == 3 ? req : 0)); /* 5 to 10 ms */
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:o}", "reporter", rep, "protocol", "http",
        "source_namespace", strcmp(src, "unknown") == 0 ? "unknown" : "shop", "source_workload",
        src, "destination_namespace", "shop", "destination_service", dst, "requests", req, "errors",
        err, "duration_us", (json_int_t)req * ms * 1000, "duration_buckets", b);
}

static json_t *services(const char *name)
{
    return json_pack("[{s:s, s:s, s:s}]", "namespace", "shop", "name", name, "health", "healthy");
}

/* Checks and keeps one report of node at t_ms. */
static void report(struct mesh_ctl_traffic *t, const char *node, const char *svc, uint64_t t_ms,
                   json_t *traffic)
{
    struct mesh_ctl_edge *edges;
    size_t n;
    char why[300] = "";
    bool ok = mesh_ctl_traffic_check(traffic, &edges, &n, why, sizeof(why));
    if (!ok)
        fail_msg("refused: %s", why);
    json_t *s = services(svc);
    assert_int_equal(mesh_ctl_traffic_note(t, node, edges, n, s, t_ms), 0);
    json_decref(s);
    json_decref(traffic);
}

static json_t *find(json_t *g, const char *what, const char *key, const char *value,
                    const char *key2, const char *value2)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(g, what), i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, key)), value) == 0 &&
            (!key2 || strcmp(json_string_value(json_object_get(o, key2)), value2) == 0))
            return o;
    }
    return NULL;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        fail_msg("no '%s'", k);
    return json_number_value(v);
}

static void test_graph_of_three_services(void **state)
{
    (void)state;
    struct mesh_ctl_traffic t;
    mesh_ctl_traffic_init(&t);
    /* web (host-a) -> api (host-b) -> db (host-c), both proxies counting each call. */
    report(&t, "host-a", "web", 1000,
           json_pack("[o]", http_edge("source", "web", "api", 100, 0, 6)));
    report(&t, "host-b", "api", 1000,
           json_pack("[o, o]", http_edge("destination", "web", "api", 100, 0, 5),
                     http_edge("source", "api", "db", 0, 0, 0)));
    report(&t, "host-c", "db", 1000,
           json_pack("[o]", http_edge("destination", "api", "db", 0, 0, 0)));
    /* An edge from outside the mesh: only its callee counts it. */
    report(&t, "host-a", "web", 6000,
           json_pack("[o, o]", http_edge("source", "web", "api", 350, 0, 6),
                     http_edge("destination", "unknown", "web", 40, 0, 1)));
    report(&t, "host-a", "web", 11000,
           json_pack("[o, o]", http_edge("source", "web", "api", 600, 0, 6),
                     http_edge("destination", "unknown", "web", 80, 0, 1)));
    report(&t, "host-b", "api", 11000,
           json_pack("[o, o]", http_edge("destination", "web", "api", 590, 0, 5),
                     http_edge("source", "api", "db", 200, 50, 8)));
    report(&t, "host-c", "db", 11000,
           json_pack("[o]", http_edge("destination", "api", "db", 150, 0, 7)));

    json_t *g = mesh_ctl_graph(&t, 11500, 3000, 60000);
    assert_non_null(g);
    assert_int_equal(json_array_size(json_object_get(g, "nodes")), 4);
    assert_int_equal(json_array_size(json_object_get(g, "edges")), 3);
    json_t *web = find(g, "nodes", "id", "shop/web", NULL, NULL);
    assert_non_null(web);
    assert_true(json_is_true(json_object_get(web, "in_mesh")));
    assert_string_equal(json_string_value(json_object_get(web, "health")), "healthy");
    assert_string_equal(json_string_value(json_array_get(json_object_get(web, "agents"), 0)),
                        "host-a");
    json_t *outside = find(g, "nodes", "id", "unknown/unknown", NULL, NULL);
    assert_non_null(outside);
    assert_true(json_is_false(json_object_get(outside, "in_mesh")));

    json_t *e = find(g, "edges", "source", "shop/web", "destination", "shop/api");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "reporter")), "source");
    assert_true(fabs(num(e, "requests_per_s") - 50.0) < 1e-9); /* 500 in 10 s */
    assert_true(num(e, "error_ratio") == 0);
    assert_true(fabs(num(e, "latency_ms_mean") - 6.0) < 1e-9);
    double p99 = num(e, "latency_ms_p99");
    assert_true(p99 > 5 && p99 <= 10);
    e = find(g, "edges", "source", "shop/api", "destination", "shop/db");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "reporter")), "source");
    assert_true(fabs(num(e, "requests_per_s") - 20.0) < 1e-9);
    assert_true(fabs(num(e, "errors_per_s") - 5.0) < 1e-9);
    assert_true(fabs(num(e, "error_ratio") - 0.25) < 1e-9);
    e = find(g, "edges", "source", "unknown/unknown", "destination", "shop/web");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "reporter")), "destination");
    assert_true(fabs(num(e, "requests_per_s") - 8.0) < 1e-9);
    /* A service's golden signals: the edges into it. */
    json_t *db = find(g, "nodes", "id", "shop/db", NULL, NULL);
    assert_true(fabs(num(db, "requests_per_s") - 20.0) < 1e-9);
    assert_true(fabs(num(db, "error_ratio") - 0.25) < 1e-9);
    json_decref(g);

    /* host-d's agent restarted: its counters start again; what it counted since counts. */
    report(&t, "host-d", "cache", 12000,
           json_pack("[o]", http_edge("source", "cache", "db", 1000, 0, 8)));
    report(&t, "host-d", "cache", 22000,
           json_pack("[o]", http_edge("source", "cache", "db", 30, 0, 8)));
    g = mesh_ctl_graph(&t, 22000, 3000, 60000);
    e = find(g, "edges", "source", "shop/cache", "destination", "shop/db");
    assert_non_null(e);
    assert_true(fabs(num(e, "requests_per_s") - 3.0) < 1e-9);
    /* The others have not reported for 11 s: their edges are not fresh, their services stay. */
    assert_null(find(g, "edges", "source", "shop/web", "destination", "shop/api"));
    assert_non_null(find(g, "nodes", "id", "shop/web", NULL, NULL));
    json_decref(g);
    /* Gone for longer than offline: its services leave the graph; a reset forgets it. */
    g = mesh_ctl_graph(&t, 90000, 3000, 60000);
    assert_int_equal(json_array_size(json_object_get(g, "nodes")), 0);
    json_decref(g);
    mesh_ctl_traffic_forget(&t, "host-a");
    mesh_ctl_traffic_forget(&t, "nobody");
    mesh_ctl_traffic_done(&t);
}

static void refused(const char *text, const char *expect)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    if (!doc)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    struct mesh_ctl_edge *edges = (void *)1;
    size_t n = 9;
    char why[300] = "";
    assert_false(mesh_ctl_traffic_check(doc, &edges, &n, why, sizeof(why)));
    assert_null(edges);
    assert_int_equal(n, 0);
    if (!strstr(why, expect))
        fail_msg("%s: '%s' does not say '%s'", text, why, expect);
    json_decref(doc);
}

#define NAMES                                                                                      \
    "\"source_namespace\": \"shop\", \"source_workload\": \"web\", "                               \
    "\"destination_namespace\": \"shop\", \"destination_service\": \"api\""
#define TCP "{\"reporter\": \"source\", \"protocol\": \"tcp\", " NAMES
#define TCP_COUNTS                                                                                 \
    ", \"connections_opened\": 1, \"connections_closed\": 1, \"bytes_sent\": 1, "                  \
    "\"bytes_received\": 1"

static void test_checks_name_the_field(void **state)
{
    (void)state;
    struct mesh_ctl_edge *edges;
    size_t n;
    char why[300];
    /* None (an older agent), or an empty list: fine. */
    assert_true(mesh_ctl_traffic_check(NULL, &edges, &n, why, sizeof(why)));
    assert_null(edges);
    json_t *empty = json_array();
    assert_true(mesh_ctl_traffic_check(empty, &edges, &n, why, sizeof(why)));
    json_decref(empty);
    json_t *ok = json_loads("[" TCP TCP_COUNTS "}]", 0, NULL);
    assert_true(mesh_ctl_traffic_check(ok, &edges, &n, why, sizeof(why)));
    assert_int_equal(n, 1);
    assert_true(edges[0].tcp);
    mesh_free(edges);
    json_decref(ok);

    refused("{}", "traffic: expected an array");
    refused("[1]", "traffic[0]: expected an object");
    refused("[{\"reporter\": \"me\"}]", "traffic[0]: reporter: expected");
    refused("[{\"reporter\": \"source\", \"protocol\": \"udp\"}]", "traffic[0]: protocol:");
    refused("[" TCP TCP_COUNTS "}, " TCP TCP_COUNTS ", \"x\": 1}]",
            "traffic[1]: unknown key 'x' for protocol tcp");
    refused("[" TCP TCP_COUNTS "}, " TCP TCP_COUNTS "}]",
            "traffic[1]: the same edge as an earlier entry");
    refused("[" TCP ", \"connections_opened\": -1}]", "traffic[0]: connections_opened: expected");
    refused("[" TCP TCP_COUNTS ", \"requests\": 1}]", "unknown key 'requests' for protocol tcp");
    refused("[{\"reporter\": \"source\", \"protocol\": \"http\", \"source_namespace\": \"Shop\"}]",
            "traffic[0]: source_namespace: expected a DNS label");
    refused("[{\"reporter\": \"source\", \"protocol\": \"http\", " NAMES
            ", \"requests\": 1, \"errors\": 2, \"duration_us\": 0}]",
            "traffic[0]: errors: more than requests");
    refused("[{\"reporter\": \"source\", \"protocol\": \"http\", " NAMES
            ", \"requests\": 1, \"errors\": 0, \"duration_us\": 0, \"duration_buckets\": [1]}]",
            "traffic[0]: duration_buckets: expected an array of 20 counts");
    refused("[{\"reporter\": \"source\", \"protocol\": \"http\", " NAMES
            ", \"requests\": 1.5, \"errors\": 0, \"duration_us\": 0}]",
            "traffic[0]: requests: expected a count");
    /* At most MESH_CTL_TRAFFIC_EDGES_MAX edges. */
    json_t *many = json_array();
    for (int i = 0; i <= MESH_CTL_TRAFFIC_EDGES_MAX; i++)
        json_array_append_new(many, json_integer(i));
    assert_false(mesh_ctl_traffic_check(many, &edges, &n, why, sizeof(why)));
    assert_non_null(strstr(why, "traffic: 257 edges, at most 256"));
    json_decref(many);
}

static void test_a_node_keeps_its_own_side(void **state)
{
    (void)state;
    /* "unknown" as source is the node itself, in namespace "unknown" only: another
     * namespace's "unknown" workload is no one the node can speak for. */
    json_t *spoof = http_edge("source", "unknown", "ledger", 1, 1, 1);
    json_object_set_new(spoof, "source_namespace", json_string("shop"));
    json_t *traffic = json_pack("[o, o, o, o, o, o]", http_edge("source", "web", "api", 1, 0, 1),
                                http_edge("source", "unknown", "api", 1, 0, 1),
                                http_edge("destination", "api", "web", 1, 0, 1),
                                http_edge("source", "billing", "ledger", 1, 0, 1),
                                http_edge("destination", "billing", "ledger", 1, 0, 1), spoof);
    struct mesh_ctl_edge *edges;
    size_t n;
    char why[300];
    assert_true(mesh_ctl_traffic_check(traffic, &edges, &n, why, sizeof(why)));
    json_t *local = services("web");
    assert_int_equal(mesh_ctl_traffic_own(edges, n, local), 3);
    assert_string_equal(edges[0].src_wl, "web");
    assert_string_equal(edges[1].src_wl, "unknown");
    assert_string_equal(edges[2].dst_svc, "web");
    assert_true(edges[2].by_destination);
    mesh_free(edges);
    json_decref(local);
    json_decref(traffic);
}

/* Rate of the one edge web -> api in the graph of host-a at now_ms. */
static double web_api_rate(struct mesh_ctl_traffic *t, uint64_t now_ms, const char *k)
{
    json_t *g = mesh_ctl_graph(t, now_ms, 60000, 60000);
    assert_non_null(g);
    json_t *e = find(g, "edges", "source", "shop/web", "destination", "shop/api");
    double r = e ? num(e, k) : -1;
    json_decref(g);
    return r;
}

/* An edge absent from the oldest kept sample (a local service briefly gone, the agent's
 * cap choosing other edges) is not new: its rate comes from the oldest sample that has it,
 * not from its whole count since the agent started. */
static void test_an_edge_missing_from_the_oldest_sample(void **state)
{
    (void)state;
    struct mesh_ctl_traffic t;
    mesh_ctl_traffic_init(&t);
    report(&t, "host-a", "web", 0, json_pack("[o]", http_edge("source", "web", "api", 1000, 0, 1)));
    report(&t, "host-a", "web", 10000, json_array());
    report(&t, "host-a", "web", 20000,
           json_pack("[o]", http_edge("source", "web", "api", 1010, 0, 1)));
    assert_true(fabs(web_api_rate(&t, 20000, "requests_per_s") - 0.5) < 1e-9);
    /* Absent from the oldest two: 10 in 10 s from the first that has it... */
    mesh_ctl_traffic_forget(&t, "host-a");
    report(&t, "host-a", "web", 0, json_array());
    report(&t, "host-a", "web", 10000,
           json_pack("[o]", http_edge("source", "web", "api", 1000, 0, 1)));
    report(&t, "host-a", "web", 20000,
           json_pack("[o]", http_edge("source", "web", "api", 1010, 0, 1)));
    assert_true(fabs(web_api_rate(&t, 20000, "requests_per_s") - 1.0) < 1e-9);
    /* ...and no rate when only the newest has it. */
    mesh_ctl_traffic_forget(&t, "host-a");
    report(&t, "host-a", "web", 0, json_array());
    report(&t, "host-a", "web", 10000,
           json_pack("[o]", http_edge("source", "web", "api", 5000, 0, 1)));
    assert_true(web_api_rate(&t, 10000, "requests_per_s") < 0);
    mesh_ctl_traffic_done(&t);
}

/* An agent that restarted starts all its counters again; when any of an edge's counters
 * went down, all of them come from the new sample (else errors could exceed requests). */
static void test_a_restart_takes_all_counters_anew(void **state)
{
    (void)state;
    struct mesh_ctl_traffic t;
    mesh_ctl_traffic_init(&t);
    report(&t, "host-a", "web", 0,
           json_pack("[o]", http_edge("source", "web", "api", 1000, 10, 1)));
    /* After the restart: 50 requests, 40 of them errors (errors went up, requests down). */
    report(&t, "host-a", "web", 10000,
           json_pack("[o]", http_edge("source", "web", "api", 50, 40, 1)));
    assert_true(fabs(web_api_rate(&t, 10000, "requests_per_s") - 5.0) < 1e-9);
    assert_true(fabs(web_api_rate(&t, 10000, "errors_per_s") - 4.0) < 1e-9);
    assert_true(fabs(web_api_rate(&t, 10000, "error_ratio") - 0.8) < 1e-9);
    mesh_ctl_traffic_done(&t);
}

/* A report past the cap on edges kept across nodes keeps its services, not its edges; a
 * node forgotten gives its room back. */
static void test_the_cap_on_edges_kept(void **state)
{
    (void)state;
    struct mesh_ctl_traffic t;
    mesh_ctl_traffic_init(&t);
    assert_int_equal(t.edges_max, MESH_CTL_TRAFFIC_TOTAL_EDGES_MAX);
    t.edges_max = 3;
    report(&t, "host-a", "web", 0,
           json_pack("[o, o]", http_edge("source", "web", "api", 1, 0, 1),
                     http_edge("source", "web", "db", 1, 0, 1)));
    struct mesh_ctl_edge *edges;
    size_t n;
    char why[300];
    json_t *traffic = json_pack("[o, o]", http_edge("source", "cache", "api", 1, 0, 1),
                                http_edge("source", "cache", "db", 1, 0, 1));
    assert_true(mesh_ctl_traffic_check(traffic, &edges, &n, why, sizeof(why)));
    json_t *s = services("cache");
    assert_int_equal(mesh_ctl_traffic_note(&t, "host-b", edges, n, s, 0), 1);
    json_decref(traffic);
    assert_int_equal(t.edges, 2);
    json_t *g = mesh_ctl_graph(&t, 0, 60000, 60000);
    assert_non_null(find(g, "nodes", "id", "shop/cache", NULL, NULL));
    json_decref(g);
    /* host-a's next report replaces its oldest sample only when the ring is full: 4 > 3. */
    traffic = json_pack("[o, o]", http_edge("source", "web", "api", 2, 0, 1),
                        http_edge("source", "web", "db", 2, 0, 1));
    assert_true(mesh_ctl_traffic_check(traffic, &edges, &n, why, sizeof(why)));
    assert_int_equal(mesh_ctl_traffic_note(&t, "host-a", edges, n, s, 1000), 1);
    json_decref(traffic);
    mesh_ctl_traffic_forget(&t, "host-a");
    assert_int_equal(t.edges, 0);
    traffic = json_pack("[o, o]", http_edge("source", "cache", "api", 1, 0, 1),
                        http_edge("source", "cache", "db", 1, 0, 1));
    assert_true(mesh_ctl_traffic_check(traffic, &edges, &n, why, sizeof(why)));
    assert_int_equal(mesh_ctl_traffic_note(&t, "host-b", edges, n, s, 1000), 0);
    assert_int_equal(t.edges, 2);
    json_decref(traffic);
    json_decref(s);
    mesh_ctl_traffic_done(&t);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_graph_of_three_services),
        UNIT_TEST(test_checks_name_the_field),
        UNIT_TEST(test_a_node_keeps_its_own_side),
        UNIT_TEST(test_an_edge_missing_from_the_oldest_sample),
        UNIT_TEST(test_a_restart_takes_all_counters_anew),
        UNIT_TEST(test_the_cap_on_edges_kept),
    };
    return cmocka_run_group_tests_name("controller_traffic", tests, NULL, NULL);
}
