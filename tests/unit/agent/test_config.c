/* agent.json validation: each bad input must be refused with its own, precise message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "agent/config.h"
#include "tests/unit/unit.h"

struct bad_case {
    const char *json;
    const char *expect; /* a substring of one of the messages */
};

/* Dozens of mistakes an operator makes, each with the message it must get. */
static const struct bad_case bad_cases[] = {
    {"[]", "$: expected an object, got an array"},
    {"{\"nod\": {}}", "$.nod: unknown key 'nod' (did you mean 'node'?)"},
    {"{\"node\": {\"nmae\": \"a\"}}", "$.node.nmae: unknown key 'nmae' (did you mean 'name'?)"},
    {"{\"node\": {\"name\": 5}}",
     "$.node.name: expected a node name (lowercase DNS subdomain), got 5"},
    {"{\"node\": {\"name\": \"Web_1\"}}",
     "only lowercase letters, digits, '-' and '.' are allowed"},
    {"{\"node\": {\"name\": \"-a\"}}", "must start and end with a letter or digit"},
    {"{\"node\": {\"name\": \"\"}}", "$.node.name: expected a node name (lowercase DNS subdomain), "
                                     "got \"\": must be 1 to 253 characters"},
    {"{\"node\": {\"zone\": \"a b\"}}", "$.node.zone: expected a zone name"},
    {"{\"node\": {\"address\": \"host.example\"}}",
     "$.node.address: expected the IP address other hosts reach this node at, got "
     "\"host.example\": not an IPv4 or IPv6 address"},
    {"{\"node\": []}", "$.node: expected an object, got an array"},
    {"{\"trust_domain\": \"Mesh.Local\"}", "$.trust_domain: expected a SPIFFE trust domain"},
    {"{\"trust_domain\": \"\"}", "must be 1 to 255 characters"},
    {"{\"state_dir\": \"var/lib\"}",
     "$.state_dir: expected a directory path, got \"var/lib\": must be an absolute path"},
    {"{\"state_dir\": null}", "$.state_dir: expected a directory path, got null"},
    {"{\"state_dir\": \"\"}", "$.state_dir: expected a directory path, got \"\""},
    {"{\"log\": {\"level\": \"verbose\"}}", "$.log.level: expected one of \"error\", \"warning\", "
                                            "\"notice\", \"info\", \"debug\", got \"verbose\""},
    {"{\"log\": {\"level\": \"debgu\"}}", "(did you mean \"debug\"?)"},
    {"{\"log\": {\"format\": \"xml\"}}",
     "$.log.format: expected one of \"auto\", \"text\", \"json\", \"journal\", got \"xml\""},
    {"{\"log\": {\"format\": \"jsno\"}}", "did you mean \"json\"?"},
    {"{\"log\": {\"colour\": true}}", "$.log.colour: unknown key 'colour'"},
    {"{\"admin\": {\"listen\": \"localhost:15000\"}}",
     "$.admin.listen: expected an address like \"127.0.0.1:15000\" or "
     "\"unix:/run/mesh-agent/admin.sock\", got \"localhost:15000\": the host must be an IPv4 or "
     "IPv6 address (names are not resolved)"},
    {"{\"admin\": {\"listen\": \"127.0.0.1:99999\"}}", "the port must be a number from 0 to 65535"},
    {"{\"admin\": {\"listen\": \"127.0.0.1\"}}",
     "expected 'IP:port', '[IPv6]:port' or 'unix:/path'"},
    {"{\"admin\": {\"listen\": \"unix:relative.sock\"}}", "a unix socket path must be absolute"},
    {"{\"admin\": {\"listen\": \"[127.0.0.1]:1\"}}", "brackets are for IPv6 addresses"},
    {"{\"admin\": {\"port\": 15000}}", "$.admin.port: unknown key 'port'"},
    {"{\"listeners\": {\"inbound\": \"unix:/tmp/x.sock\"}}",
     "$.listeners.inbound: expected an address like \"0.0.0.0:15008\", got \"unix:/tmp/x.sock\": a "
     "unix socket is not possible here"},
    {"{\"listeners\": {\"outbound\": \"127.0.0.1:1\"}}",
     "unknown key 'outbound' (did you mean 'outbound_http'?)"},
    {"{\"admin\": {\"listen\": \"127.0.0.1:15001\"}}",
     "admin.listen and listeners.outbound_http are both '127.0.0.1:15001'"},
    {"{\"registries\": {}}", "$.registries: expected an array of registries, got an object"},
    {"{\"registries\": [{}]}", "$.registries[0].type: required key is missing (expected a string)"},
    {"{\"registries\": [{\"type\": \"statc\"}]}",
     "$.registries[0].type: unknown registry type \"statc\" (did you mean \"static\"?)"},
    {"{\"registries\": [{\"type\": \"etcd\"}]}",
     "unknown registry type \"etcd\"; known types: \"static\""},
    {"{\"registries\": [{\"type\": \"static\", \"directroy\": \"/x\"}]}",
     "$.registries[0].directroy: unknown key 'directroy' (did you mean 'directory'?)"},
    {"{\"registries\": [{\"type\": \"static\", \"directory\": \"x\"}]}",
     "$.registries[0].directory: expected a directory path, got \"x\": must be an absolute path"},
    {"{\"registries\": [{\"type\": \"static\", \"poll_interval\": 10}]}",
     "$.registries[0].poll_interval: expected a duration such as \"5s\", \"250ms\" or \"1m30s\", "
     "got 10"},
    {"{\"registries\": [{\"type\": \"static\", \"poll_interval\": \"10 s\"}]}", "got \"10 s\""},
    {"{\"registries\": [{\"type\": \"static\", \"poll_interval\": \"2h\"}]}",
     "$.registries[0].poll_interval: expected a duration from 0s to 1h, got \"2h\""},
    {"{\"registries\": [{\"type\": \"static\", \"name\": \"Files\"}]}",
     "$.registries[0].name: expected a registry name (DNS label), got \"Files\""},
    {"{\"registries\": [{\"type\": \"static\", \"merge\": \"yes\"}]}",
     "$.registries[0].merge: expected true or false, got \"yes\""},
    {"{\"registries\": [{\"type\": \"static\", \"namespace\": \"a.b\"}]}",
     "$.registries[0].namespace: expected a namespace (DNS label)"},
    {"{\"registries\": [{\"type\": \"static\"}, {\"type\": \"static\"}]}",
     "$.registries[1].name: registry name 'static' is already used by registries[0]"},
    {"{\"registries\": [1]}", "$.registries[0]: expected an object, got 1"},
    {"{\"readiness\": {\"registry_sync_timeout\": \"-1s\"}}",
     "$.readiness.registry_sync_timeout: expected a duration"},
    {"{\"readiness\": {\"registry_sync_timeout\": \"5d\"}}", "got \"5d\""},
    {"{\"shutdown\": {\"drain_timeout\": true}}",
     "$.shutdown.drain_timeout: expected a duration such as \"5s\", \"250ms\" or \"1m30s\", got "
     "true"},
    {"{\"shutdown\": {\"drain\": \"5s\"}}", "unknown key 'drain' (did you mean 'drain_timeout'?)"},
    /* The responder as its own upstream: through the wildcard, loopback or the same address. */
    {"{\"dns_responder\": {\"listen\": \"0.0.0.0:5300\", \"upstreams\": [\"127.0.0.1:5300\"]}}",
     "$.dns_responder.upstreams[0]: '127.0.0.1:5300' reaches the responder's own listen address"},
    {"{\"dns_responder\": {\"listen\": \"[::]:53\", \"upstreams\": [\"10.1.1.1\", \"::1\"]}}",
     "$.dns_responder.upstreams[1]: '::1' reaches the responder's own listen address"},
    {"{\"dns_responder\": {\"listen\": \"127.0.0.1:53\", \"upstreams\": [\"0.0.0.0\"]}}",
     "$.dns_responder.upstreams[0]: '0.0.0.0' reaches the responder's own listen address"},
    /* An address must outlive the answers clients cache before another service gets it. */
    {"{\"dns_responder\": {\"keep\": \"0s\"}}",
     "$.dns_responder.keep: must be at least the ttl (30s) plus 1m"},
    {"{\"dns_responder\": {\"keep\": \"1h\", \"ttl\": \"1h\"}}",
     "$.dns_responder.keep: must be at least the ttl (3600s) plus 1m"},
    {"{\"dns\": {\"servers\": [\"127.0.0.1:5353\", \"ns1.example\"]}}",
     "$.dns.servers[1]: 'ns1.example' must be an IP address, \"ip:port\" or \"[ipv6]:port\""},
    {"{\"dns\": {\"servers\": [\"127.0.0.1:0\"]}}", "$.dns.servers[0]: '127.0.0.1:0' must be"},
    {"{\"dns\": {\"servers\": \"127.0.0.1\"}}",
     "$.dns.servers: expected a list of name servers, \"ip\" or \"ip:port\", got \"127.0.0.1\""},
    {"{\"dns\": {\"timeout\": \"1m\"}}", "$.dns.timeout: expected a duration from 100ms to 30s"},
    {"{\"dns\": {\"server\": []}}", "$.dns.server: unknown key 'server' (did you mean 'servers'?)"},
    /* HTTP/2 limits (docs/http2.md). */
    {"{\"proxy\": {\"http\": {\"http2_max_concurrent_streams\": 0}}}",
     "$.proxy.http.http2_max_concurrent_streams: expected an integer from 1 to 10000, got 0"},
    {"{\"proxy\": {\"http\": {\"http2_max_header_list_size\": 100}}}",
     "$.proxy.http.http2_max_header_list_size: expected an integer from 1024 to 1048576"},
    {"{\"proxy\": {\"http\": {\"http2_reset_window\": \"1h\"}}}",
     "$.proxy.http.http2_reset_window: expected a duration from 100ms to 10m"},
    {"{\"node\": {\"name\": \"a\"}, \"node\": {}}", "<test>:1:"},
    {"{\"node\": ", "<test>:1:9: invalid JSON"},
    {"", "invalid JSON"},
    {"{\"a\": 1} x", "invalid JSON"},
};

static char *parse_errors(const char *json)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    int r = mesh_agent_config_parse("<test>", json, strlen(json), &errors, &cfg);
    char *joined = mesh_cfg_errors_join(&errors);
    mesh_cfg_errors_done(&errors);
    if (r == 0) {
        mesh_agent_config_unref(cfg);
        mesh_free(joined);
        return NULL;
    }
    return joined ? joined : mesh_strdup("(no message)");
}

static void test_each_bad_input_has_its_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        char *msg = parse_errors(bad_cases[i].json);
        if (!msg)
            fail_msg("case %zu accepted: %s", i, bad_cases[i].json);
        if (!strstr(msg, bad_cases[i].expect))
            fail_msg("case %zu: %s\n  expected: %s\n  got: %s", i, bad_cases[i].json,
                     bad_cases[i].expect, msg);
        mesh_free(msg);
    }
}

static void test_five_mistakes_are_all_reported(void **state)
{
    (void)state;
    const char *json = "{\n"
                       "  \"node\": {\"name\": \"Bad_Name\"},\n"
                       "  \"trust_domian\": \"mesh.local\",\n"
                       "  \"admin\": {\"listen\": \"127.0.0.1:70000\"},\n"
                       "  \"log\": {\"level\": \"loud\"},\n"
                       "  \"registries\": [{\"type\": \"static\", \"directory\": 7}]\n"
                       "}";
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    assert_int_equal(mesh_agent_config_parse("agent.json", json, strlen(json), &errors, &cfg),
                     -EINVAL);
    assert_int_equal(errors.n, 5);
    char *all = mesh_cfg_errors_join(&errors);
    assert_contains(all, "agent.json: $.node.name:");
    assert_contains(all, "agent.json: $.trust_domian: unknown key 'trust_domian' (did you mean "
                         "'trust_domain'?)");
    assert_contains(all, "agent.json: $.admin.listen:");
    assert_contains(all, "agent.json: $.log.level:");
    assert_contains(all, "agent.json: $.registries[0].directory:");
    mesh_free(all);
    mesh_cfg_errors_done(&errors);
}

static void test_defaults(void **state)
{
    (void)state;
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    const char *json = "{\"node\": {\"name\": \"vm-1\"}}";
    assert_int_equal(mesh_agent_config_parse("x", json, strlen(json), &errors, &cfg), 0);
    assert_string_equal(cfg->node.name, "vm-1");
    assert_string_equal(cfg->trust_domain, "mesh.local");
    assert_string_equal(cfg->state_dir, "/var/lib/mesh-agent");
    assert_string_equal(cfg->admin.listen, "127.0.0.1:15000");
    assert_string_equal(cfg->listeners.outbound_http, "127.0.0.1:15001");
    assert_string_equal(cfg->listeners.inbound, "0.0.0.0:15008");
    assert_int_equal(cfg->readiness.registry_sync_timeout_ms, 10000);
    assert_int_equal(cfg->shutdown.drain_timeout_ms, 15000);
    assert_int_equal(mesh_agent_config_log_level(cfg), MESH_LOG_INFO);
    /* Without "registries", the static registry on services.d. */
    assert_int_equal(cfg->registries.n, 1);
    assert_string_equal(cfg->registries.v[0].type, "static");
    assert_string_equal(cfg->registries.v[0].name, "files");
    assert_true(cfg->registries.v[0].merge);
    assert_int_equal(mesh_addr_port(&cfg->admin_addr), 15000);
    /* Host names in endpoints: the system's resolver setup, 2 s per try. */
    assert_int_equal(cfg->dns.servers.n, 0);
    assert_int_equal(cfg->dns.timeout_ms, 2000);
    assert_int_equal(cfg->proxy.http.h2_max_concurrent_streams, 100);
    assert_int_equal(cfg->proxy.http.h2_max_header_list_size, 65536);
    assert_int_equal(cfg->proxy.http.h2_max_resets, 100);
    assert_int_equal(cfg->proxy.http.h2_reset_window_ms, 1000);
    mesh_agent_config_unref(cfg);
    json = "{\"dns\": {\"servers\": [\"127.0.0.1:5353\", \"[::1]:53\", \"10.0.0.2\"], "
           "\"timeout\": \"500ms\"}}";
    assert_int_equal(mesh_agent_config_parse("x", json, strlen(json), &errors, &cfg), 0);
    assert_int_equal(cfg->dns.servers.n, 3);
    assert_string_equal(cfg->dns.servers.v[1], "[::1]:53");
    assert_int_equal(cfg->dns.timeout_ms, 500);
    mesh_agent_config_unref(cfg);
}

static void test_empty_registries_means_none(void **state)
{
    (void)state;
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    const char *json = "{\"node\": {\"name\": \"a\"}, \"registries\": []}";
    assert_int_equal(mesh_agent_config_parse("x", json, strlen(json), &errors, &cfg), 0);
    assert_int_equal(cfg->registries.n, 0);
    mesh_agent_config_unref(cfg);
}

static void test_encode_round_trip(void **state)
{
    (void)state;
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL, *again = NULL;
    const char *json = "{\"node\": {\"name\": \"a\", \"zone\": \"z1\"}, \"log\": {\"level\": "
                       "\"debug\"}, \"registries\": [{\"type\": \"static\", \"name\": \"f\", "
                       "\"directory\": \"/srv\", \"poll_interval\": \"1m30s\", \"merge\": false}]}";
    assert_int_equal(mesh_agent_config_parse("x", json, strlen(json), &errors, &cfg), 0);
    json_t *enc = mesh_agent_config_to_json(cfg);
    assert_non_null(enc);
    assert_string_equal(json_string_value(json_object_get(json_object_get(enc, "log"), "level")),
                        "debug");
    json_t *reg = json_array_get(json_object_get(enc, "registries"), 0);
    assert_string_equal(json_string_value(json_object_get(reg, "poll_interval")), "1m30s");
    assert_string_equal(json_string_value(json_object_get(reg, "directory")), "/srv");
    char *s = json_dumps(enc, 0);
    assert_int_equal(mesh_agent_config_parse("y", s, strlen(s), &errors, &again), 0);
    assert_true(mesh_registry_config_equal(&cfg->registries.v[0], &again->registries.v[0]));
    mesh_free(s);
    json_decref(enc);
    mesh_agent_config_unref(cfg);
    mesh_agent_config_unref(again);
}

static void test_registry_equality(void **state)
{
    (void)state;
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *a = NULL, *b = NULL;
    const char *ja = "{\"node\": {\"name\": \"a\"}, \"registries\": [{\"type\": \"static\", "
                     "\"directory\": \"/a\"}]}";
    const char *jb = "{\"node\": {\"name\": \"a\"}, \"registries\": [{\"type\": \"static\", "
                     "\"directory\": \"/b\"}]}";
    assert_int_equal(mesh_agent_config_parse("a", ja, strlen(ja), &errors, &a), 0);
    assert_int_equal(mesh_agent_config_parse("b", jb, strlen(jb), &errors, &b), 0);
    assert_false(mesh_registry_config_equal(&a->registries.v[0], &b->registries.v[0]));
    assert_true(mesh_registry_config_equal(&a->registries.v[0], &a->registries.v[0]));
    mesh_agent_config_unref(a);
    mesh_agent_config_unref(b);
}

static void test_relative_paths_follow_the_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/mesh-cfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/agent.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"node\": {\"name\": \"a\"}, \"state_dir\": \"state\", \"registries\": "
          "[{\"type\": \"static\", \"directory\": \"services.d\"}]}",
          f);
    fclose(f);
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    assert_int_equal(mesh_agent_config_load(path, &errors, &cfg), 0);
    char want[160];
    snprintf(want, sizeof(want), "%s/state", dir);
    assert_string_equal(cfg->state_dir, want);
    json_t *enc = mesh_agent_config_to_json(cfg);
    snprintf(want, sizeof(want), "%s/services.d", dir);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(enc, "registries"), 0), "directory")),
                        want);
    json_decref(enc);
    mesh_agent_config_unref(cfg);
    unlink(path);
    rmdir(dir);
}

/* Every allocation failure must end in -ENOMEM (or a clean error), never a leak or crash. */
static void test_allocation_failures(void **state)
{
    (void)state;
    const char *json = "{\"node\": {\"name\": \"a\", \"zone\": \"z\"}, \"registries\": [{\"type\": "
                       "\"static\", \"name\": \"f\", \"directory\": \"/srv\"}, {\"type\": "
                       "\"static\", \"name\": \"g\"}], \"log\": {\"level\": \"debug\"}}";
    int failures = 0;
    for (long n = 0; n < 400; n++) {
        struct mesh_cfg_errors errors = {0};
        struct mesh_agent_config *cfg = NULL;
        mesh_alloc_fail_after(n);
        int r = mesh_agent_config_parse("x", json, strlen(json), &errors, &cfg);
        mesh_alloc_fail_after(-1);
        mesh_cfg_errors_done(&errors);
        if (r == 0) {
            mesh_agent_config_unref(cfg);
            break;
        }
        failures++;
    }
    assert_true(failures > 10); /* the loop did reach deep into the parse */
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_each_bad_input_has_its_message),
        UNIT_TEST(test_five_mistakes_are_all_reported),
        UNIT_TEST(test_defaults),
        UNIT_TEST(test_empty_registries_means_none),
        UNIT_TEST(test_encode_round_trip),
        UNIT_TEST(test_registry_equality),
        UNIT_TEST(test_relative_paths_follow_the_file),
        UNIT_TEST(test_allocation_failures),
    };
    return cmocka_run_group_tests_name("agent_config", tests, NULL, NULL);
}
