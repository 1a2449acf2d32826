/* The "capture" section of agent.json (agent/config_capture.c): defaults, each bad value
 * with its message, and which directions fail closed. */
#include <stdio.h>
#include <string.h>

#include "agent/capture_cli.h"
#include "agent/config.h"
#include "tests/unit/unit.h"

static struct mesh_agent_config *parse(const char *json, char **ret_errors)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    int r = mesh_agent_config_parse("<test>", json, strlen(json), &errors, &cfg);
    *ret_errors = r == 0 ? NULL : mesh_cfg_errors_join(&errors);
    mesh_cfg_errors_done(&errors);
    return r == 0 ? cfg : NULL;
}

static void test_defaults_off(void **state)
{
    (void)state;
    char *err;
    struct mesh_agent_config *c = parse("{}", &err);
    assert_non_null(c);
    assert_false(c->capture.enabled);
    assert_string_equal(c->capture.table, "mesh_agent");
    assert_int_equal(c->capture.outbound.listen_port, 15002);
    assert_int_equal(c->capture.inbound.listen_port, 15006);
    assert_int_equal(c->capture.inbound.mode, MESH_CAPTURE_STRICT);
    assert_int_equal(c->capture.outbound.unknown, MESH_CAPTURE_PASSTHROUGH);
    /* Off: a stop removes whatever is there. */
    assert_int_equal(mesh_agent_capture_open_parts(&c->capture), MESH_CAPTURE_ALL);
    mesh_agent_config_unref(c);
}

static void test_fail_modes(void **state)
{
    (void)state;
    char *err;
    struct mesh_agent_config *c =
        parse("{\"capture\": {\"enabled\": true, \"inbound\": {\"ports\": [8080]}}}", &err);
    assert_non_null(c);
    /* Strict inbound fails closed; outbound fails open. */
    assert_true(mesh_agent_capture_fail_closed(&c->capture, true));
    assert_false(mesh_agent_capture_fail_closed(&c->capture, false));
    assert_int_equal(mesh_agent_capture_open_parts(&c->capture), MESH_CAPTURE_OUTBOUND);
    struct mesh_agent_capture_scratch scratch;
    struct mesh_capture_spec s;
    mesh_agent_capture_spec(c, 995, NULL, 0, &s, &scratch);
    assert_true(s.inbound && s.outbound && !s.outbound_all);
    assert_int_equal(s.n_exclude_uids, 1);
    assert_int_equal(s.exclude_uids[0], 995);
    assert_int_equal(s.n_include_cidrs, 0);
    mesh_agent_config_unref(c);
    c = parse("{\"capture\": {\"enabled\": true, \"inbound\": {\"ports\": [8080], \"mode\": "
              "\"permissive\"}, \"outbound\": {\"fail\": \"closed\"}}}",
              &err);
    assert_non_null(c);
    assert_int_equal(mesh_agent_capture_open_parts(&c->capture), MESH_CAPTURE_INBOUND);
    assert_string_equal(mesh_agent_capture_parts_name(MESH_CAPTURE_ALL & ~MESH_CAPTURE_INBOUND),
                        "outbound");
    mesh_agent_config_unref(c);
}

static const struct {
    const char *json;
    const char *expect;
} bad[] = {
    {"{\"capture\": {\"enabled\": true, \"outbound\": {\"enabled\": false}}}",
     "$.capture: enabled, but captures nothing"},
    {"{\"capture\": {\"table\": \"a b\"}}", "$.capture.table:"},
    {"{\"capture\": {\"enabled\": true, \"outbound\": {\"listen_port\": 15001}}}",
     "$.capture.outbound.listen_port: 15001 is also the port of listeners.outbound_http "
     "('127.0.0.1:15001')"},
    {"{\"capture\": {\"enabled\": true, \"dns\": true}}",
     "$.capture.dns: captures DNS, but dns_responder.enabled is false"},
    {"{\"capture\": {\"enabled\": true, \"dns\": true}, \"dns_responder\": {\"enabled\": true, "
     "\"listen\": \"10.1.2.3:53\"}}",
     "$.capture.dns: captures DNS, but dns_responder.listen is not on 127.0.0.1 or 0.0.0.0"},
    {"{\"capture\": {\"outbound\": {\"include_cidrs\": [\"240.240.0.0/40\"]}}}",
     "$.capture.outbound.include_cidrs[0]: '240.240.0.0/40' has a prefix length out of range"},
    {"{\"capture\": {\"outbound\": {\"exclude_cidrs\": [\"x\"]}}}",
     "$.capture.outbound.exclude_cidrs[0]: 'x' is not an address or CIDR"},
    {"{\"capture\": {\"inbound\": {\"ports\": [0]}}}",
     "$.capture.inbound.ports[0]: expected ports (1 to 65535), got 0"},
    {"{\"capture\": {\"inbound\": {\"ports\": [80, 80]}}}",
     "$.capture.inbound.ports[1]: 80 is listed twice"},
    {"{\"capture\": {\"inbound\": {\"ports\": \"80\"}}}",
     "$.capture.inbound.ports: expected a list"},
    {"{\"capture\": {\"outbound\": {\"exclude_uids\": [-1]}}}",
     "$.capture.outbound.exclude_uids[0]: expected user IDs"},
    {"{\"capture\": {\"enabled\": true, \"inbound\": {\"ports\": [15002]}}}",
     "inbound.ports[0] is 15002, a capture listener's own port"},
    {"{\"capture\": {\"enabled\": true, \"inbound\": {\"ports\": [80], \"listen_port\": 15002}}}",
     "outbound.listen_port and inbound.listen_port are both 15002"},
    {"{\"capture\": {\"inbound\": {\"mode\": \"loose\"}}}", "$.capture.inbound.mode:"},
    {"{\"capture\": {\"pods\": {\"cidrs\": [\"10.244.0.0/16 } accept\"]}}}",
     "$.capture.pods.cidrs[0]: '10.244.0.0/16 } accept' has a prefix length out of range"},
    {"{\"capture\": {\"pods\": {\"interfaces\": [\"eth0\\\" accept\"]}}}",
     "$.capture.pods.interfaces[0]: 'eth0\" accept' may hold only letters"},
    {"{\"capture\": {\"pods\": {\"interfaces\": [\"*\"]}}}",
     "$.capture.pods.interfaces[0]: '*' may have one '*' only"},
    {"{\"capture\": {\"enabled\": true, \"inbound\": {\"ports\": [80]}, \"outbound\": "
     "{\"enabled\": false}, \"pods\": {\"cidrs\": [\"10.244.1.0/24\"]}}}",
     "$.capture.pods: pods' traffic goes to the outbound capture listener, but "
     "outbound.enabled is false"},
    {"{\"capture\": {\"outbound\": {\"mode\": \"some\"}}}", "$.capture.outbound.mode:"},
    {"{\"capture\": {\"outbound\": {\"unknown_destination\": \"drop\"}}}",
     "$.capture.outbound.unknown_destination:"},
};

/* More than MESH_AGENT_CAPTURE_LIST_MAX CIDRs would overflow the spec's scratch array. */
static void test_too_many_cidrs(void **state)
{
    (void)state;
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    mesh_buf_append_str(&b,
                        "{\"capture\": {\"enabled\": true, \"outbound\": {\"include_cidrs\": [");
    for (int i = 0; i <= MESH_AGENT_CAPTURE_LIST_MAX; i++)
        mesh_buf_appendf(&b, "%s\"10.%d.0.0/16\"", i ? ", " : "", i);
    mesh_buf_append_str(&b, "]}}}");
    char *err = NULL;
    struct mesh_agent_config *c = parse(b.data, &err);
    assert_null(c);
    assert_non_null(err);
    assert_contains(err, "$.capture.outbound.include_cidrs: at most 64");
    mesh_free(err);
    mesh_buf_done(&b);
}

/* Kubernetes node mode: the pods' CIDRs and interfaces reach the spec. */
static void test_pods(void **state)
{
    (void)state;
    char *err;
    struct mesh_agent_config *c =
        parse("{\"capture\": {\"enabled\": true, \"pods\": {\"cidrs\": [\"10.244.1.0/24\"], "
              "\"interfaces\": [\"cali*\", \"cni0\"]}}}",
              &err);
    assert_non_null(c);
    struct mesh_agent_capture_scratch scratch;
    struct mesh_capture_spec s;
    mesh_agent_capture_spec(c, 995, NULL, 0, &s, &scratch);
    assert_int_equal(s.n_pod_cidrs, 1);
    assert_string_equal(s.pod_cidrs[0], "10.244.1.0/24");
    assert_int_equal(s.n_pod_interfaces, 2);
    assert_string_equal(s.pod_interfaces[1], "cni0");
    assert_int_equal(s.pods_exclude_port, mesh_addr_port(&c->inbound_addr));
    mesh_agent_config_unref(c);
}

static void test_bad_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        struct mesh_agent_config *c = parse(bad[i].json, &err);
        if (c)
            fail_msg("case %zu accepted: %s", i, bad[i].json);
        if (!err || !strstr(err, bad[i].expect))
            fail_msg("case %zu: %s\n  expected: %s\n  got: %s", i, bad[i].json, bad[i].expect,
                     err ? err : "(none)");
        mesh_free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_defaults_off),   UNIT_TEST(test_fail_modes), UNIT_TEST(test_bad_values),
        UNIT_TEST(test_too_many_cidrs), UNIT_TEST(test_pods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
