/* Policy resource files: shapes, every mistake's message, conflicts. */
#include <errno.h>
#include <stdio.h>

#include "proxy/resource.h"
#include "tests/unit/unit.h"

static const struct {
    const char *json;
    const char *expect;
} bad[] = {
    {"{}", "r.json: $.kind: required key is missing"},
    {"{\"kind\": \"DestinationPolicy\", \"name\": \"a\"}", "$.spec: required key is missing"},
    {"{\"kind\": \"DestPolicy\", \"name\": \"a\", \"spec\": {}}",
     "$.kind: expected one of \"DestinationPolicy\", got \"DestPolicy\""},
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
    mesh_dest_policy_done(&d);
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

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_bad),
        UNIT_TEST(test_defaults_and_values),
        UNIT_TEST(test_view_conflicts),
    };
    return cmocka_run_group_tests_name("resource", tests, NULL, NULL);
}
