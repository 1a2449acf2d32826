/* A try of an HTTP request: the failure mark of a remote agent, the retry budget, the
 * per-try deadline. */
#include <stdio.h>

#include "common/http_parse.h"
#include "proxy/http_try-int.h"
#include "tests/unit/unit.h"

static int parse(const char *text, struct mesh_http_header *h, struct mesh_http_response *res)
{
    struct mesh_http_limits lim = {.max_head = 8192, .max_headers = 16, .max_uri = 1024};
    return mesh_http_parse_response(text, strlen(text), &lim, h, res);
}

static void test_mark_is_taken_out_and_believed_from_agents_only(void **state)
{
    (void)state;
    struct mesh_http_header h[17];
    struct mesh_http_response res;
    static const char head[] = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n"
                               "X-Mesh-Upstream-Failure: connect-failure\r\nx-other: 1\r\n\r\n";
    assert_true(parse(head, h, &res) > 0);
    assert_int_equal(res.num_headers, 3);
    assert_int_equal(mesh_http_take_mark(&res, true), MESH_HTTP_MARK_CONNECT);
    /* Gone from what the client gets; the others kept, in order. */
    assert_int_equal(res.num_headers, 2);
    assert_null(mesh_http_find_header(res.headers, res.num_headers, MESH_HTTP_FAILURE_HEADER));
    assert_non_null(mesh_http_find_header(res.headers, res.num_headers, "x-other"));
    /* From a plain upstream (a workload could forge it): removed, not believed. */
    assert_true(parse(head, h, &res) > 0);
    assert_int_equal(mesh_http_take_mark(&res, false), MESH_HTTP_MARK_NONE);
    assert_int_equal(res.num_headers, 2);
    /* Only on 5xx; "reset" is its own kind; anything else is nothing. */
    static const char ok[] = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
                             "x-mesh-upstream-failure: connect-failure\r\n\r\n";
    assert_true(parse(ok, h, &res) > 0);
    assert_int_equal(mesh_http_take_mark(&res, true), MESH_HTTP_MARK_NONE);
    assert_int_equal(res.num_headers, 1);
    static const char reset[] = "HTTP/1.1 503 X\r\nx-mesh-upstream-failure: reset\r\n\r\n";
    assert_true(parse(reset, h, &res) > 0);
    assert_int_equal(mesh_http_take_mark(&res, true), MESH_HTTP_MARK_RESET);
    static const char odd[] = "HTTP/1.1 503 X\r\nx-mesh-upstream-failure: maybe\r\n\r\n";
    assert_true(parse(odd, h, &res) > 0);
    assert_int_equal(mesh_http_take_mark(&res, true), MESH_HTTP_MARK_NONE);
    assert_int_equal(res.num_headers, 0);
}

static void test_mark_for_flags(void **state)
{
    (void)state;
    assert_null(mesh_http_mark_for(0));
    assert_null(mesh_http_mark_for(RF_UPSTREAM_TIMEOUT | RF_PROTOCOL_ERROR));
    assert_string_equal(mesh_http_mark_for(RF_CONNECT_FAILURE | RF_RETRIES_EXCEEDED),
                        "x-mesh-upstream-failure: connect-failure\r\n");
    assert_string_equal(mesh_http_mark_for(RF_NO_HEALTHY),
                        "x-mesh-upstream-failure: connect-failure\r\n");
    /* A reset on any try: the workload may have had it. */
    assert_string_equal(mesh_http_mark_for(RF_CONNECT_FAILURE | RF_UPSTREAM_RESET),
                        "x-mesh-upstream-failure: reset\r\n");
}

static void test_retry_budget(void **state)
{
    (void)state;
    struct mesh_route_rule rule;
    assert_int_equal(mesh_route_rule_defaults(&rule), 0);
    struct http_req q = {.rr = &rule};
    struct mesh_http_stats st = {0};
    /* Low concurrency: 16 requests, 15 of them retrying (a backend killed under them). */
    atomic_store(&st.active, 16);
    atomic_store(&st.retrying, 15);
    assert_true(mesh_http_retry_budget_allows(&q, &st));
    atomic_store(&st.retrying, 32);
    assert_false(mesh_http_retry_budget_allows(&q, &st)); /* the floor: 32 */
    /* High concurrency: budget_percent of the active requests. */
    atomic_store(&st.active, 1000);
    atomic_store(&st.retrying, 199);
    assert_true(mesh_http_retry_budget_allows(&q, &st));
    atomic_store(&st.retrying, 200);
    assert_false(mesh_http_retry_budget_allows(&q, &st));
    mesh_route_rule_done(&rule);
}

static void test_per_try_deadline(void **state)
{
    (void)state;
    struct mesh_route_rule rule;
    struct mesh_dest_policy pol;
    assert_int_equal(mesh_route_rule_defaults(&rule), 0);
    assert_int_equal(mesh_dest_policy_defaults(&pol), 0);
    struct snap_dest d = {.policy = &pol};
    struct http_req q = {.rr = &rule, .dest = &d, .try_start = 1000};
    bool soft = false;
    /* The destination's default, soft. */
    assert_int_equal(mesh_http_try_deadline(&q, &soft), 6000);
    assert_true(soft);
    /* The rule's own, hard. */
    rule.per_try_timeout_ms = 250;
    assert_int_equal(mesh_http_try_deadline(&q, &soft), 1250);
    assert_false(soft);
    /* None at all. */
    rule.per_try_timeout_ms = 0;
    pol.per_try_timeout_ms = 0;
    assert_int_equal(mesh_http_try_deadline(&q, &soft), 0);
    mesh_dest_policy_done(&pol);
    mesh_route_rule_done(&rule);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_mark_is_taken_out_and_believed_from_agents_only),
        UNIT_TEST(test_mark_for_flags),
        UNIT_TEST(test_retry_budget),
        UNIT_TEST(test_per_try_deadline),
    };
    return cmocka_run_group_tests_name("http_try", tests, NULL, NULL);
}
