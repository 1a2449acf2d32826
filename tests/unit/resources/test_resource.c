/* Policy resource files: shapes, every mistake's message, conflicts. */
#include <errno.h>
#include <stdio.h>

#include "resources/resource.h"
#include "tests/unit/unit.h"

static const struct {
    const char *json;
    const char *expect;
} bad[] = {
    {"{}", "r.json: $.kind: required key is missing"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\"}", "$.spec: required key is missing"},
    {"{\"kind\": \"DestPolicy\", \"name\": \"a\", \"spec\": {}}",
     "$.kind: expected one of \"DestinationPolicy\", \"Route\", \"AuthorizationPolicy\", got "
     "\"DestPolicy\""},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"A\", \"spec\": {}}",
     "$.name: expected a resource name, got \"A\""},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": []}",
     "$.spec: expected an object, got an array"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"load_balancer\": "
     "\"fastest\"}}",
     "$.spec.load_balancer: expected one of \"round_robin\", \"least_request\", \"random\", "
     "\"ring_hash\", got \"fastest\""},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"load_balancer\": \"randm\"}}",
     "(did you mean \"random\"?)"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"conect_timeout\": \"1s\"}}",
     "$.spec.conect_timeout: unknown key 'conect_timeout' (did you mean 'connect_timeout'?)"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"connect_timeout\": \"1ms\"}}",
     "$.spec.connect_timeout: expected a duration from 10ms to 10m, got \"1ms\""},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"connect_retries\": 11}}",
     "$.spec.connect_retries: expected an integer from 0 to 10, got 11"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"max_connections\": -1}}",
     "$.spec.max_connections: expected an integer from 0 to 10000000, got -1"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"health_check\": "
     "{\"interval\": \"1s\", \"timeout\": \"2s\"}}}",
     "$.spec.health_check: timeout must be shorter than interval"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"health_check\": "
     "{\"healthy_threshold\": 0}}}",
     "$.spec.health_check.healthy_threshold: expected an integer from 1 to 100, got 0"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"outlier_detection\": "
     "{\"base_ejection_time\": \"1m\", \"max_ejection_time\": \"30s\"}}}",
     "$.spec.outlier_detection: max_ejection_time must not be shorter than base_ejection_time"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"outlier_detection\": "
     "{\"max_ejection_percent\": 101}}}",
     "got 101"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"zone_aware\": "
     "{\"min_healthy_percent\": \"70\"}}}",
     "$.spec.zone_aware.min_healthy_percent: expected an integer from 0 to 100, got \"70\""},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"service\": \"Bad\"}}",
     "$.spec.service: expected a service name, got \"Bad\""},
    {"{\"resources\": {}}", "$.resources: expected an array of resources"},
    {"{\"resources\": [], \"kind\": \"DestinationPolicy\"}",
     "a file holds one resource or {\"resources\": [...]}, not both"},
    {"{\"resources\": [{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {}}, "
     "{\"kind\": \"DestinationPolicy\", \"name\": \"b\", \"spec\": {\"idle_timeout\": 5}}]}",
     "$.resources[1].spec.idle_timeout: expected a duration"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"namespace\": \"x_y\", \"spec\": {}}",
     "$.namespace: expected a namespace, got \"x_y\""},
};

static void test_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mesh_cfg_errors errors = {0};
        struct mesh_resource_file *f = NULL;
        int r = mesh_resource_file_parse("r.json", bad[i].json, strlen(bad[i].json), &errors, &f);
        char *msg = mesh_cfg_errors_join(&errors);
        if (r == 0)
            fail_msg("case %zu accepted: %s", i, bad[i].json);
        if (!msg || !strstr(msg, bad[i].expect))
            fail_msg("case %zu: %s\n  expected: %s\n  got: %s", i, bad[i].json, bad[i].expect,
                     msg ? msg : "(none)");
        mesh_free(msg);
        mesh_cfg_errors_done(&errors);
        mesh_resource_file_unref(f);
    }
}

#define ROUTE(spec) "{\"kind\": \"Route\", \"name\": \"api\", \"spec\": " spec "}"
#define RULE(rule) ROUTE("{\"rules\": [" rule "]}")
#define TO_API "\"destinations\": [{\"service\": \"api\"}]"

static const struct {
    const char *json;
    const char *expect;
} bad_routes[] = {
    {ROUTE("{}"), "$.spec.rules: required key is missing"},
    {ROUTE("{\"rules\": {}}"), "$.spec.rules: expected an array"},
    {RULE("{}"), "$.spec.rules[0]: a rule needs exactly one of"},
    {RULE("{\"name\": \"Main_1\", " TO_API "}"), "$.spec.rules[0].name: expected a rule name"},
    {RULE("{\"name\": 3, " TO_API "}"), "$.spec.rules[0].name: expected a rule name, got 3"},
    {RULE("{\"name\": \"a\", " TO_API "}, {" TO_API "}, {\"name\": \"a\", " TO_API "}"),
     "$.spec: rules[0] and rules[2] are both named 'a'"},
    {RULE("{" TO_API ", \"direct_response\": {}}"), "a rule needs exactly one of"},
    {RULE("{\"destinations\": []}"), "$.spec.rules[0].destinations: expected at least one"},
    {RULE("{\"destinations\": [{\"service\": \"api\", \"weight\": 0}]}"),
     "the destinations' weights add up to 0"},
    {RULE("{\"destinations\": [{\"weight\": 1}]}"),
     "$.spec.rules[0].destinations[0].service: required key is missing"},
    {RULE("{\"destinations\": [{\"service\": \"api\", \"weight\": -1}]}"),
     "destinations[0].weight: expected an integer from 0 to 1000000"},
    {RULE("{\"destinations\": [{\"service\": \"api\", \"subset\": {\"version\": 2}}]}"),
     "destinations[0].subset"},
    {RULE("{\"match\": [{\"path\": {\"prefx\": \"/a\"}}], " TO_API "}"),
     "$.spec.rules[0].match[0].path.prefx: unknown match 'prefx' (did you mean 'prefix'?)"},
    {RULE("{\"match\": [{\"path\": {\"exact\": \"a\"}}], " TO_API "}"),
     "$.spec.rules[0].match[0].path: a path starts with '/'"},
    {RULE("{\"match\": [{\"path\": {\"regex\": \"(\"}}], " TO_API "}"),
     "invalid regular expression \"(\""},
    {RULE("{\"match\": [{\"path\": {\"exact\": \"/a\", \"prefix\": \"/b\"}}], " TO_API "}"),
     "expected one of {\"exact\": ...}"},
    {RULE("{\"match\": [{\"methods\": [\"get\"]}], " TO_API "}"),
     "match[0].methods[0]: expected a method like \"GET\""},
    {RULE("{\"match\": [{\"headers\": {\"x y\": {\"exact\": \"1\"}}}], " TO_API "}"),
     "match[0].headers[\"x y\"]: 'x y' is not a valid header name"},
    {RULE("{\"match\": [{\"headers\": {\"x-a\": {\"present\": false}}}], " TO_API "}"),
     "match[0].headers.x-a.present: expected true"},
    {RULE("{\"match\": [{\"query\": {\"v\": {\"exact\": 2}}}], " TO_API "}"),
     "match[0].query.v.exact: expected a string, got 2"},
    {RULE("{\"match\": [{\"host\": \"a\"}], " TO_API "}"), "match[0].host: expected one of"},
    {RULE("{\"match\": [{\"hosts\": {\"exact\": \"a\"}}], " TO_API "}"),
     "unknown key 'hosts' (did you mean 'host'?)"},
    {RULE("{\"redirect\": {\"status\": 200}}"), "redirect.status: expected an integer from 301"},
    {RULE("{\"redirect\": {\"status\": 305}}"), "status must be 301, 302, 303, 307 or 308"},
    {RULE("{\"redirect\": {\"path\": \"/a\", \"prefix\": \"/b\"}}"), "not both"},
    {RULE("{\"redirect\": {\"scheme\": \"ftp\"}}"), "redirect.scheme: expected http or https"},
    {RULE("{\"direct_response\": {\"status\": 99}}"),
     "direct_response.status: expected an integer"},
    {RULE("{\"rewrite\": {\"prefix\": \"/v2\"}, " TO_API "}"),
     "\"rewrite\" needs every match to have a path prefix"},
    {RULE("{\"rewrite\": {\"prefix\": \"v2\"}, " TO_API "}"), "expected {\"prefix\": \"/new\"}"},
    {RULE("{\"request_headers\": {\"set\": {\"x-a\": \"a\\nb\"}}, " TO_API "}"),
     "request_headers.set.x-a: expected a header value"},
    {RULE("{\"response_headers\": {\"remove\": [\"bad header\"]}, " TO_API "}"),
     "response_headers.remove[0]: expected a header name"},
    {RULE("{\"timeout\": \"forever\", " TO_API "}"),
     "$.spec.rules[0].timeout: expected a duration"},
    {RULE("{\"retries\": {\"attempts\": 11}, " TO_API "}"),
     "retries.attempts: expected an integer from 0 to 10, got 11"},
    {RULE("{\"retries\": {\"retry_on\": [\"5xxx\"]}, " TO_API "}"),
     "retries.retry_on[0]: expected one of \"connect-failure\", \"reset\", \"5xx\", "
     "\"gateway-error\", \"retriable-status\" (did you mean \"5xx\"?)"},
    {RULE("{\"retries\": {\"retry_on\": [\"retriable-status\"]}, " TO_API "}"),
     "\"retriable-status\" needs \"statuses\""},
    {RULE("{\"retries\": {\"statuses\": [600]}, " TO_API "}"),
     "retries.statuses[0]: expected a status from 100 to 599"},
    {RULE("{\"retries\": {\"backoff_base\": \"1s\", \"backoff_max\": \"10ms\"}, " TO_API "}"),
     "backoff_max must not be shorter than backoff_base"},
    {RULE("{\"fault\": {\"abort\": {\"status\": 100}}, " TO_API "}"),
     "fault.abort.status: expected an integer from 200 to 599"},
    {RULE("{\"fault\": {\"delay\": {\"percent\": 101}}, " TO_API "}"),
     "fault.delay.percent: expected an integer from 0 to 100"},
    {RULE("{\"rate_limit\": {\"burst\": 5}, " TO_API "}"),
     "rate_limit.requests_per_second: required key is missing"},
    {RULE("{\"rate_limit\": {\"requests_per_second\": 0}, " TO_API "}"),
     "rate_limit.requests_per_second: expected an integer from 1"},
    {"{\"kind\": \"AuthorizationPolicy\", \"name\": \"a\", \"spec\": {}}",
     "$.spec: a policy needs \"allow\" or \"deny\" rules"},
    {"{\"kind\": \"AuthorizationPolicy\", \"name\": \"a\", \"spec\": {\"allow\": "
     "[{\"principals\": [\"alice\"]}]}}",
     "$.spec.allow[0].principals[0]: expected a SPIFFE ID"},
    {"{\"kind\": \"AuthorizationPolicy\", \"name\": \"a\", \"spec\": {\"deny\": "
     "[{\"match\": [{\"path\": {\"prefix\": \"x\"}}]}]}}",
     "$.spec.deny[0].match[0].path: a path starts with '/'"},
    {"{\"kind\": \"AuthorizationPolicy\", \"name\": \"a\", \"spec\": {\"deny\": "
     "[{\"match\": [{\"path\": {\"prefix\": \"/a\", \"ignore_case\": 1}}]}]}}",
     "$.spec.deny[0].match[0].path.ignore_case: expected true or false"},
    {"{\"kind\": \"AuthorizationPolicy\", \"name\": \"a\", \"spec\": {\"deny\": "
     "[{\"match\": [{\"path\": {\"ignore_case\": true}}]}]}}",
     "$.spec.deny[0].match[0].path: expected one of"},
    {"{\"kind\": \"AuthorizationPolicy\", \"name\": \"a\", \"spec\": {\"deny\": {}}}",
     "$.spec.deny: expected an array of at most 1000 rules"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"health_check\": "
     "{\"expected_statuses\": \"200-100\"}}}",
     "$.spec.health_check.expected_statuses: expected statuses like"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"health_check\": "
     "{\"http_path\": \"health\"}}}",
     "$.spec.health_check.http_path: expected a path like \"/healthz\""},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"connection_pool\": "
     "{\"max_idle\": -1}}}",
     "$.spec.connection_pool.max_idle: expected an integer from 0"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\", \"spec\": {\"max_requests\": \"5\"}}",
     "$.spec.max_requests: expected an integer"},
};

static void test_bad_routes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_routes) / sizeof(bad_routes[0]); i++) {
        struct mesh_cfg_errors errors = {0};
        struct mesh_resource_file *f = NULL;
        const char *json = bad_routes[i].json;
        int r = mesh_resource_file_parse("r.json", json, strlen(json), &errors, &f);
        char *msg = mesh_cfg_errors_join(&errors);
        if (r == 0)
            fail_msg("route case %zu accepted: %s", i, json);
        if (!msg || !strstr(msg, bad_routes[i].expect))
            fail_msg("route case %zu: %s\n  expected: %s\n  got: %s", i, json, bad_routes[i].expect,
                     msg ? msg : "(none)");
        mesh_free(msg);
        mesh_cfg_errors_done(&errors);
        mesh_resource_file_unref(f);
    }
}

static struct mesh_resource_file *parse_ok(const char *json)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_resource_file *f = NULL;
    int r = mesh_resource_file_parse("r.json", json, strlen(json), &errors, &f);
    if (r != 0) {
        char *msg = mesh_cfg_errors_join(&errors);
        fail_msg("refused: %s", msg);
    }
    return f;
}

static void test_defaults_and_values(void **state)
{
    (void)state;
    struct mesh_resource_file *f = parse_ok(
        "{\"kind\": \"DestinationPolicy\", \"name\": \"api\", \"namespace\": \"shop\", \"spec\": "
        "{\"load_balancer\": \"ring_hash\", \"health_check\": {\"interval\": \"2s\"}, "
        "\"outlier_detection\": {\"enabled\": false}}}");
    assert_int_equal(f->n, 1);
    const struct mesh_dest_policy *p = f->v[0].spec;
    assert_string_equal(f->v[0].namespace, "shop");
    assert_int_equal(p->lb, MESH_LB_RING_HASH);
    assert_true(p->health_check.enabled);
    assert_int_equal(p->health_check.interval_ms, 2000);
    assert_int_equal(p->health_check.timeout_ms, 1000);
    assert_int_equal(p->health_check.unhealthy_threshold, 3);
    assert_false(p->outlier.enabled);
    assert_int_equal(p->connect_timeout_ms, 5000);
    assert_int_equal(p->connect_retries, 2);
    assert_true(p->zone_aware.enabled);
    assert_int_equal(p->zone_aware.min_healthy_percent, 70);
    mesh_resource_file_unref(f);

    struct mesh_dest_policy d;
    assert_int_equal(mesh_dest_policy_defaults(&d), 0);
    assert_false(d.health_check.enabled);
    assert_true(d.outlier.enabled);
    assert_int_equal(d.outlier.consecutive_failures, 5);
    assert_int_equal(d.drain_timeout_ms, 60000);
    /* A black hole costs a try at most 5 s; below half the endpoints eligible, all of the
     * ready ones take traffic (as Envoy's healthy_panic_threshold). */
    assert_int_equal(d.per_try_timeout_ms, 5000);
    assert_int_equal(d.healthy_panic_threshold, 50);
    mesh_dest_policy_done(&d);

    /* The retry budget does not starve retries at low concurrency. */
    struct mesh_route_rule r;
    assert_int_equal(mesh_route_rule_defaults(&r), 0);
    assert_int_equal(r.retries.budget_percent, 20);
    assert_int_equal(r.retries.min_retry_concurrency, 32);
    assert_int_equal(r.per_try_timeout_ms, 0); /* none of its own: the destination's */
    mesh_route_rule_done(&r);
}

static int conflicts;

static void on_conflict(void *data, const char *file, const char *message)
{
    (void)data;
    (void)file;
    conflicts++;
    assert_non_null(strstr(message, "ignoring"));
}

static void test_view_conflicts(void **state)
{
    (void)state;
    struct mesh_resource_file *a = parse_ok(
        "{\"resources\": [{\"kind\": \"DestinationPolicy\", \"name\": \"api\", \"spec\": "
        "{\"load_balancer\": \"random\"}}, {\"kind\": \"DestinationPolicy\", \"name\": \"api2\", "
        "\"spec\": {\"service\": \"api\"}}]}");
    struct mesh_resource_file *b =
        parse_ok("{\"kind\": \"DestinationPolicy\", \"name\": \"api\", \"spec\": {}}");
    struct mesh_resource_view v;
    mesh_resource_view_init(&v);
    conflicts = 0;
    assert_int_equal(mesh_resource_view_add(&v, "a.json", a, on_conflict, NULL), 0);
    assert_int_equal(mesh_resource_view_add(&v, "b.json", b, on_conflict, NULL), 0);
    /* api2 targets api, which has a policy; b.json repeats api. */
    assert_int_equal(conflicts, 2);
    const struct mesh_dest_policy *p = mesh_resource_view_policy(&v, "default", "api");
    assert_non_null(p);
    assert_int_equal(p->lb, MESH_LB_RANDOM);
    assert_null(mesh_resource_view_policy(&v, "other", "api"));
    mesh_resource_file_unref(a);
    mesh_resource_file_unref(b);
    /* The view holds its own references: still valid. */
    assert_int_equal(mesh_resource_view_policy(&v, "default", "api")->lb, MESH_LB_RANDOM);
    mesh_resource_view_done(&v);
}

static void test_route_values(void **state)
{
    (void)state;
    struct mesh_resource_file *f = parse_ok(
        "{\"kind\": \"Route\", \"name\": \"api-canary\", \"namespace\": \"shop\", \"spec\": {"
        "\"service\": \"api\", \"rules\": ["
        "{\"name\": \"v1-api\", \"match\": [{\"path\": {\"prefix\": \"/v1/\"}, \"methods\": "
        "[\"GET\", \"HEAD\"], "
        "\"headers\": {\"X-User\": {\"regex\": \"^a.*\"}, \"x-b\": {\"regex\": \"^a\", "
        "\"ignore_case\": true}, \"x-c\": {\"ignore_case\": true, \"exact\": \"Token-1\"}}, "
        "\"query\": {\"debug\": {\"present\": "
        "true}}}], \"rewrite\": {\"prefix\": \"/\"}, \"destinations\": [{\"service\": \"api\", "
        "\"subset\": {\"version\": \"v1\"}, \"weight\": 90}, {\"service\": \"api\", \"subset\": "
        "{\"version\": \"v2\"}, \"weight\": 10}], \"retries\": {\"retry_on\": [\"5xx\", "
        "\"connect-failure\"]}, \"timeout\": \"2s\", \"rate_limit\": {\"requests_per_second\": "
        "10}},"
        "{\"redirect\": {\"prefix\": \"/new\", \"status\": 301}},"
        "{\"direct_response\": {\"status\": 404, \"body\": \"gone\"}, "
        "\"fault\": {\"abort\": {\"percent\": 50}}}]}}");
    assert_int_equal(f->n, 1);
    assert_int_equal(f->v[0].kind, MESH_RESOURCE_ROUTE);
    const struct mesh_route *r = f->v[0].spec;
    assert_string_equal(r->service, "api");
    assert_int_equal(r->n_rules, 3);
    const struct mesh_route_rule *a = &r->rules[0];
    assert_string_equal(a->name, "v1-api");
    assert_null(r->rules[1].name); /* unnamed: its position names it */
    assert_int_equal(a->n_matches, 1);
    assert_int_equal(a->matches[0].path.kind, MESH_MATCH_PREFIX);
    assert_true(mesh_string_match(&a->matches[0].path, "/v1/x", 5));
    assert_false(mesh_string_match(&a->matches[0].path, "/v2/x", 5));
    assert_int_equal(a->matches[0].methods.n, 2);
    assert_string_equal(a->matches[0].headers[0].name, "x-user");
    assert_true(mesh_string_match(&a->matches[0].headers[0].match, "abc", 3));
    assert_false(mesh_string_match(&a->matches[0].headers[0].match, "bac", 3));
    assert_false(mesh_string_match(&a->matches[0].headers[0].match, "Abc", 3));
    assert_true(mesh_string_match(&a->matches[0].headers[1].match, "ABC", 3));
    assert_true(mesh_string_match(&a->matches[0].headers[2].match, "tOkEn-1", 7));
    assert_false(mesh_string_match(&a->matches[0].headers[2].match, "token-", 6));
    assert_int_equal(a->matches[0].query[0].match.kind, MESH_MATCH_PRESENT);
    assert_string_equal(a->rewrite_prefix, "/");
    assert_int_equal(a->n_dests, 2);
    assert_int_equal(a->dests[0].weight, 90);
    assert_string_equal(mesh_labels_get(&a->dests[1].subset, "version"), "v2");
    assert_int_equal(a->retries.attempts, 2);
    assert_int_equal(a->retries.on, MESH_RETRY_5XX | MESH_RETRY_CONNECT_FAILURE);
    assert_int_equal(a->timeout_ms, 2000);
    assert_true(a->rate_limit.enabled);
    assert_true(a->rate_limit.burst == 10);
    assert_true(r->rules[1].has_redirect);
    assert_int_equal(r->rules[1].redirect_status, 301);
    assert_string_equal(r->rules[1].redirect_prefix, "/new");
    assert_true(r->rules[2].has_direct);
    assert_string_equal(r->rules[2].direct_body, "gone");
    assert_true(r->rules[2].fault.has_abort);
    assert_int_equal(r->rules[2].fault.abort_status, 503);
    assert_int_equal(r->rules[2].timeout_ms, 15000);

    struct mesh_resource_view v;
    mesh_resource_view_init(&v);
    conflicts = 0;
    assert_int_equal(mesh_resource_view_add(&v, "a.json", f, on_conflict, NULL), 0);
    assert_ptr_equal(mesh_resource_view_route(&v, "shop", "api"), r);
    assert_null(mesh_resource_view_route(&v, "shop", "api-canary"));
    assert_null(mesh_resource_view_policy(&v, "shop", "api"));
    mesh_resource_view_done(&v);
    mesh_resource_file_unref(f);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_bad),
        UNIT_TEST(test_defaults_and_values),
        UNIT_TEST(test_view_conflicts),
        UNIT_TEST(test_bad_routes),
        UNIT_TEST(test_route_values),
    };
    return cmocka_run_group_tests_name("resource", tests, NULL, NULL);
}
