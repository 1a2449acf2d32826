/* The Istio series table: series made on first sight only, the cap, its overflow counter,
 * label escaping and parts. */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "proxy/istio-int.h"
#include "tests/unit/unit.h"

static void test_cap_counts_overflow(void **state)
{
    (void)state;
    struct mesh_istio_table t;
    assert_int_equal(mesh_istio_table_init(&t, 3), 0);
    char labels[64];
    struct mesh_istio_series *first = NULL;
    for (int i = 0; i < 5; i++) {
        int n = snprintf(labels, sizeof(labels), "response_code=\"%d\"", 200 + i);
        struct mesh_istio_series *s = mesh_istio_series(&t, false, labels, (size_t)n);
        if (i < 3)
            assert_non_null(s);
        else
            assert_null(s); /* past the cap: counted as dropped, no series */
        if (i == 0)
            first = s;
    }
    assert_int_equal(t.n, 3);
    assert_int_equal(atomic_load(&t.dropped), 2);
    /* A label set already seen still finds its series at the cap. */
    assert_ptr_equal(mesh_istio_series(&t, false, "response_code=\"200\"", 19), first);
    /* The same labels as TCP are another series: refused too. */
    assert_null(mesh_istio_series(&t, true, "response_code=\"200\"", 19));
    assert_int_equal(atomic_load(&t.dropped), 3);
    mesh_istio_record_http(first, 2500, 10, 20); /* 2.5 ms: the le="5" bucket */
    struct mesh_buf b;
    mesh_buf_init(&b, 1 << 20);
    mesh_istio_metrics(&t, &b);
    assert_non_null(strstr(b.data, "istio_requests_total{response_code=\"200\"} 1\n"));
    assert_non_null(strstr(b.data,
                           "istio_request_duration_milliseconds_bucket{response_code=\"200\","
                           "le=\"1\"} 0\n"));
    assert_non_null(strstr(b.data,
                           "istio_request_duration_milliseconds_bucket{response_code=\"200\","
                           "le=\"5\"} 1\n"));
    assert_non_null(strstr(b.data, "istio_request_duration_milliseconds_sum{response_code=\"200\"} "
                                   "2.5\n"));
    assert_non_null(strstr(b.data, "mesh_metrics_series_dropped_total 3\n"));
    assert_non_null(strstr(b.data, "mesh_metrics_series 3\n"));
    /* Nothing seen, nothing shown: no TCP series exist. */
    assert_null(strstr(b.data, "istio_tcp_sent_bytes_total{"));
    mesh_buf_done(&b);
    mesh_istio_table_done(&t);
}

static void test_many_series_grow_the_table(void **state)
{
    (void)state;
    struct mesh_istio_table t;
    assert_int_equal(mesh_istio_table_init(&t, 0), 0);
    assert_int_equal(atomic_load(&t.max), MESH_ISTIO_MAX_SERIES_DEFAULT);
    char labels[64];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2000; i++) {
            int n = snprintf(labels, sizeof(labels), "x=\"%d\"", i);
            struct mesh_istio_series *s = mesh_istio_series(&t, true, labels, (size_t)n);
            assert_non_null(s);
            assert_memory_equal(s->labels, labels, (size_t)n);
        }
    }
    assert_int_equal(t.n, 2000);
    mesh_istio_table_done(&t);
}

static void test_label_parts(void **state)
{
    (void)state;
    char *p = mesh_istio_peer_part("spiffe://td/ns/shop/sa/web");
    assert_string_equal(p, "source_workload=\"web\",source_workload_namespace=\"shop\","
                           "source_principal=\"spiffe://td/ns/shop/sa/web\"");
    mesh_free(p);
    /* The node, or no certificate: unknown. Quotes are escaped. */
    p = mesh_istio_peer_part("spiffe://td/node/a\"b");
    assert_string_equal(p, "source_workload=\"unknown\",source_workload_namespace=\"unknown\","
                           "source_principal=\"spiffe://td/node/a\\\"b\"");
    mesh_free(p);
    p = mesh_istio_dest_part("shop/api", "shop/api{track=x,version=v2}", NULL);
    assert_string_equal(p, "destination_workload=\"api\",destination_workload_namespace=\"shop\","
                           "destination_principal=\"unknown\",destination_version=\"v2\","
                           "destination_service=\"api.shop\",destination_service_name=\"api\","
                           "destination_service_namespace=\"shop\"");
    mesh_free(p);
    p = mesh_istio_dest_part("inbound:shop/api:8080", NULL, "spiffe://td/ns/shop/sa/api");
    assert_non_null(strstr(p, "destination_workload=\"api\",destination_workload_namespace="
                              "\"shop\",destination_principal=\"spiffe://td/ns/shop/sa/api\","
                              "destination_version=\"unknown\""));
    mesh_free(p);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_cap_counts_overflow),
        UNIT_TEST(test_many_series_grow_the_table),
        UNIT_TEST(test_label_parts),
    };
    return cmocka_run_group_tests_name("istio_stats", tests, NULL, NULL);
}
