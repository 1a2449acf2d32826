/* The traffic per edge that agents report to the controller, summed from the istio_*
 * series: codes, flags and versions of one edge add up; errors are 5xx, no answer and
 * local refusals; names that are no DNS label become "unknown"; the cap on edges holds. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "proxy/istio-int.h"
#include "tests/unit/unit.h"

#define SRC "source_workload=\"web\",source_workload_namespace=\"shop\",source_principal=\"x\""
#define DST(svc)                                                                                   \
    "destination_workload=\"" svc "\",destination_workload_namespace=\"shop\","                    \
    "destination_principal=\"unknown\",destination_version=\"v1\","                                \
    "destination_service=\"" svc ".shop\",destination_service_name=\"" svc "\","                   \
    "destination_service_namespace=\"shop\""

static struct mesh_istio_series *http(struct mesh_istio_table *t, const char *reporter,
                                      const char *dst, int code, const char *flags)
{
    char l[MESH_ISTIO_LABELS_MAX];
    int n = snprintf(l, sizeof(l),
                     "reporter=\"%s\",%s,%s,request_protocol=\"http\",response_code=\"%d\","
                     "grpc_response_status=\"\",response_flags=\"%s\","
                     "connection_security_policy=\"unknown\"",
                     reporter, SRC, dst, code, flags);
    return mesh_istio_series(t, false, l, (size_t)n);
}

static json_t *edge(json_t *a, const char *reporter, const char *proto, const char *dst)
{
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "reporter")), reporter) == 0 &&
            strcmp(json_string_value(json_object_get(e, "protocol")), proto) == 0 &&
            strcmp(json_string_value(json_object_get(e, "destination_service")), dst) == 0)
            return e;
    }
    return NULL;
}

static long long get(json_t *e, const char *k)
{
    return (long long)json_integer_value(json_object_get(e, k));
}

static void test_series_sum_into_edges(void **state)
{
    (void)state;
    struct mesh_istio_table t;
    assert_int_equal(mesh_istio_table_init(&t, 0), 0);
    for (int i = 0; i < 7; i++)
        mesh_istio_record_http(http(&t, "source", DST("api"), 200, "-"), 2000, 1, 1);
    mesh_istio_record_http(http(&t, "source", DST("api"), 404, "-"), 1000, 1, 1);
    mesh_istio_record_http(http(&t, "source", DST("api"), 503, "-"), 1000, 1, 1);
    mesh_istio_record_http(http(&t, "source", DST("api"), 503, "UH"), 1000, 1, 1);
    mesh_istio_record_http(http(&t, "source", DST("api"), 200, "DI"), 1000, 1, 1);
    mesh_istio_record_http(http(&t, "source", DST("api"), 403, "RL"), 1000, 1, 1);
    mesh_istio_record_http(http(&t, "destination", DST("api"), 0, "DC"), 1000, 1, 1);
    struct mesh_istio_series *tcp = mesh_istio_series(
        &t, true,
        "reporter=\"source\"," SRC "," DST("db") ",request_protocol=\"tcp\",response_flags=\"-\"",
        strlen("reporter=\"source\"," SRC "," DST("db") ",request_protocol=\"tcp\","
                                                        "response_flags=\"-\""));
    assert_non_null(tcp);
    atomic_store(&tcp->opened, 3);
    atomic_store(&tcp->sent, 100);

    json_t *a = mesh_istio_traffic(&t, 256);
    assert_non_null(a);
    assert_int_equal(json_array_size(a), 3);
    json_t *e = edge(a, "source", "http", "api");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "source_workload")), "web");
    assert_string_equal(json_string_value(json_object_get(e, "source_namespace")), "shop");
    assert_string_equal(json_string_value(json_object_get(e, "destination_namespace")), "shop");
    assert_int_equal(get(e, "requests"), 12);
    assert_int_equal(get(e, "errors"), 3); /* the two 503 and the rate-limited one */
    assert_int_equal(get(e, "duration_us"), 7 * 2000 + 5 * 1000);
    json_t *b = json_object_get(e, "duration_buckets");
    assert_int_equal(json_array_size(b), MESH_ISTIO_BUCKETS + 1);
    assert_int_equal(json_integer_value(json_array_get(b, 1)), 5); /* <= 1 ms */
    assert_int_equal(json_integer_value(json_array_get(b, 2)), 7); /* <= 5 ms */
    e = edge(a, "destination", "http", "api");
    assert_non_null(e);
    assert_int_equal(get(e, "requests"), 1);
    assert_int_equal(get(e, "errors"), 1); /* no answer at all */
    e = edge(a, "source", "tcp", "db");
    assert_non_null(e);
    assert_int_equal(get(e, "connections_opened"), 3);
    assert_int_equal(get(e, "bytes_sent"), 100);
    assert_null(json_object_get(e, "requests"));
    json_decref(a);
    mesh_istio_table_done(&t);
}

static void test_names_and_cap(void **state)
{
    (void)state;
    struct mesh_istio_table t;
    assert_int_equal(mesh_istio_table_init(&t, 0), 0);
    /* A caller's account from its certificate may be anything: not a DNS label, unknown. */
    static const char odd[] =
        "reporter=\"destination\",source_workload=\"Web_1\\\"x\",source_workload_namespace="
        "\"shop\",destination_service_name=\"api\",destination_service_namespace=\"shop\","
        "response_code=\"200\",response_flags=\"-\"";
    mesh_istio_record_http(mesh_istio_series(&t, false, odd, sizeof(odd) - 1), 1, 0, 0);
    for (int i = 0; i < 5; i++) {
        char svc[16];
        snprintf(svc, sizeof(svc), "svc%d", i);
        char dst[600];
        snprintf(dst, sizeof(dst),
                 "destination_service_name=\"%s\",destination_service_namespace=\"shop\"", svc);
        mesh_istio_record_http(http(&t, "source", dst, 200, "-"), 1, 0, 0);
    }
    json_t *a = mesh_istio_traffic(&t, 3);
    assert_int_equal(json_array_size(a), 3);
    json_decref(a);
    a = mesh_istio_traffic(&t, 100);
    assert_int_equal(json_array_size(a), 6);
    json_t *e = edge(a, "destination", "http", "api");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "source_workload")), "unknown");
    json_decref(a);
    mesh_istio_table_done(&t);
}

/* jansson's allocations, the Nth of them failing (only that one: the others succeed). */
static json_malloc_t real_malloc;
static long until_fail;

static void *fail_one_malloc(size_t size)
{
    return until_fail-- == 0 ? NULL : real_malloc(size);
}

/* When a part of an edge cannot be built, the traffic is left out of the report (NULL),
 * never sent with a hole ("duration_buckets": null) that the controller refuses, report
 * and all. */
static void test_no_edge_with_a_hole(void **state)
{
    (void)state;
    struct mesh_istio_table t;
    json_free_t real_free;
    json_get_alloc_funcs(&real_malloc, &real_free);
    assert_int_equal(mesh_istio_table_init(&t, 0), 0);
    mesh_istio_record_http(http(&t, "source", DST("api"), 200, "-"), 1000, 1, 1);
    bool done = false;
    for (long n = 0; !done; n++) {
        until_fail = n;
        json_set_alloc_funcs(fail_one_malloc, real_free);
        json_t *a = mesh_istio_traffic(&t, 256);
        json_set_alloc_funcs(real_malloc, real_free);
        done = until_fail >= 0; /* nothing failed: every allocation was tried */
        size_t i;
        json_t *e;
        json_array_foreach(a, i, e)
        {
            json_t *b = json_object_get(e, "duration_buckets");
            if (!json_is_array(b) || json_array_size(b) != MESH_ISTIO_BUCKETS + 1)
                fail_msg("allocation %ld failed: an edge without its duration_buckets", n);
        }
        json_decref(a);
    }
    mesh_istio_table_done(&t);
}

struct grower {
    struct mesh_istio_table *t;
    atomic_bool done;
};

/* A worker thread making new label sets: the table grows its slots under its lock. */
static void *grow_table(void *arg)
{
    struct grower *g = arg;
    for (int i = 0; i < 3000; i++) {
        char dst[128];
        snprintf(dst, sizeof(dst),
                 "destination_service_name=\"s%d\",destination_service_namespace=\"shop\"", i);
        mesh_istio_record_http(http(g->t, "source", dst, 200, "-"), 1, 0, 0);
    }
    atomic_store(&g->done, true);
    return NULL;
}

/* The report's edges are read on the main loop while workers add series (and grow the
 * table): no access to the table outside its lock (a data race under TSan otherwise). */
static void test_traffic_while_the_table_grows(void **state)
{
    (void)state;
    struct mesh_istio_table t;
    assert_int_equal(mesh_istio_table_init(&t, 10000), 0);
    struct grower g = {.t = &t};
    atomic_init(&g.done, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, grow_table, &g), 0);
    size_t reads = 0;
    do {
        json_t *a = mesh_istio_traffic(&t, 4000);
        assert_non_null(a);
        json_decref(a);
        reads++;
    } while (!atomic_load(&g.done));
    pthread_join(th, NULL);
    json_t *a = mesh_istio_traffic(&t, 4000);
    assert_int_equal(json_array_size(a), 3000);
    json_decref(a);
    assert_true(reads > 0);
    mesh_istio_table_done(&t);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_series_sum_into_edges),
        UNIT_TEST(test_names_and_cap),
        UNIT_TEST(test_no_edge_with_a_hole),
        UNIT_TEST(test_traffic_while_the_table_grows),
    };
    return cmocka_run_group_tests_name("istio_edges", tests, NULL, NULL);
}
