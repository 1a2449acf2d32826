/* The static registry's service-file parser. */
#include <errno.h>
#include <stdio.h>

#include "registry-adapters/static/service_file-int.h"
#include "tests/unit/unit.h"

static char *errors_of(const char *json)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_service_file *f = NULL;
    int r = mesh_service_file_parse("svc.json", json, strlen(json), &errors, &f);
    char *joined = mesh_cfg_errors_join(&errors);
    mesh_cfg_errors_done(&errors);
    mesh_service_file_free(f);
    if (r == 0) {
        mesh_free(joined);
        return NULL;
    }
    return joined ? joined : mesh_strdup("(no message)");
}

static const struct {
    const char *json;
    const char *expect;
} bad[] = {
    {"{}", "svc.json: $: expected a \"service\" object or a \"services\" array"},
    {"{\"service\": {\"name\": \"a\", \"port\": 1}, \"services\": []}",
     "use either \"service\" or \"services\", not both"},
    {"{\"service\": {\"port\": 80}}", "$.service.name: required key is missing"},
    {"{\"service\": {\"name\": \"A\", \"port\": 80}}",
     "$.service.name: expected a service name (DNS label), got \"A\""},
    {"{\"service\": {\"name\": \"a\"}}",
     "$.service: a service needs 'port' (it runs on this host) or 'endpoints'"},
    {"{\"service\": {\"name\": \"a\", \"port\": 80, \"endpoints\": [{\"address\": \"10.0.0.1\", "
     "\"port\": 1}]}}",
     "not both"},
    {"{\"service\": {\"name\": \"a\", \"port\": 0}}",
     "$.service.port: expected an integer from 1 to 65535, got 0"},
    {"{\"service\": {\"name\": \"a\", \"port\": 65536}}", "got 65536"},
    {"{\"service\": {\"name\": \"a\", \"port\": \"80\"}}",
     "$.service.port: expected an integer from 1 to 65535, got \"80\""},
    {"{\"service\": {\"name\": \"a\", \"port\": 8.5}}", "got 8.5"},
    {"{\"service\": {\"name\": \"a\", \"port\": 80, \"protocol\": \"htp\"}}",
     "$.service.protocol: expected one of \"tcp\", \"http\", \"http2\", \"grpc\", got \"htp\" (did "
     "you mean \"http\"?)"},
    {"{\"service\": {\"name\": \"a\", \"port\": 80, \"adress\": \"1.2.3.4\"}}",
     "$.service.adress: unknown key 'adress' (did you mean 'address'?)"},
    {"{\"service\": {\"name\": \"a\", \"port\": 80, \"address\": \"::ffff:zz\"}}",
     "$.service.address: expected the IP address the workload listens on"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"port\": 80}]}}",
     "$.service.endpoints[0].address: required key is missing"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"db_1.local\", \"port\": "
     "80}]}}",
     "$.service.endpoints[0].address: expected an IPv4 or IPv6 address or a host name, got "
     "\"db_1.local\": not an IPv4 or IPv6 address nor a host name"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.1.2.300\", \"port\": "
     "80}]}}",
     "$.service.endpoints[0].address: expected an IPv4 or IPv6 address or a host name, got "
     "\"10.1.2.300\": not an IPv4 or IPv6 address nor a host name"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"db.local\", \"host\": "
     "\"db.local\", \"port\": 80}]}}",
     "$.service.endpoints[0]: 'host' goes with an IP address; a host name goes in 'address'"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\"}]}}",
     "$.service.endpoints[0].port: required key is missing"},
    /* The node rule is the agent's node.name rule (common/names.h). */
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80, "
     "\"node\": \"node-\"}]}}",
     "$.service.endpoints[0].node: expected a node name, got \"node-\": must start and end with a "
     "letter or digit"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80, "
     "\"weight\": 0}]}}",
     "$.service.endpoints[0].weight: expected an integer from 1 to 10000, got 0"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80, "
     "\"health\": \"sick\"}]}}",
     "$.service.endpoints[0].health: expected one of \"healthy\", \"unhealthy\", \"draining\""},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80, "
     "\"labels\": {\"-x\": \"a\"}}]}}",
     "$.service.endpoints[0].labels[\"-x\"]: invalid label key '-x'"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80, "
     "\"labels\": {\"v\": 2}}]}}",
     "$.service.endpoints[0].labels.v: expected a string label value, got 2"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80, "
     "\"labels\": {\"v\": \"a b\"}}]}}",
     "invalid label value \"a b\""},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": {}}}",
     "$.service.endpoints: expected an array of objects, got an object"},
    {"{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80}], "
     "\"upstreams\": [{\"service\": \"b\", \"bind_port\": 9000}]}}",
     "'upstreams' belong to a service that runs on this host"},
    {"{\"service\": {\"name\": \"a\", \"port\": 80, \"upstreams\": [{\"bind_port\": 9000}]}}",
     "$.service.upstreams[0].service: required key is missing"},
    {"{\"service\": {\"name\": \"a\", \"port\": 80, \"upstreams\": [{\"service\": \"b\"}]}}",
     "$.service.upstreams[0].bind_port: required key is missing"},
    {"{\"service\": {\"name\": \"a\", \"port\": 80, \"upstreams\": [{\"service\": \"b\", "
     "\"bind_port\": 9000}, {\"service\": \"c\", \"bind_port\": 9000}]}}",
     "$.service.upstreams[1]: bind address 127.0.0.1 port 9000 is already used by upstreams[0]"},
    {"{\"services\": [{\"name\": \"a\", \"port\": 80}, {\"name\": \"b\"}]}",
     "$.services[1]: a service needs 'port'"},
    {"{\"services\": {}}", "$.services: expected an array of objects"},
    {"{\"service\": {\"name\": \"a\", \"name\": \"b\", \"port\": 1}}", "svc.json:1:"},
    {"{\"service\": ", "invalid JSON"},
};

static void test_bad_files(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *msg = errors_of(bad[i].json);
        if (!msg)
            fail_msg("case %zu accepted: %s", i, bad[i].json);
        if (!strstr(msg, bad[i].expect))
            fail_msg("case %zu: %s\n  expected: %s\n  got: %s", i, bad[i].json, bad[i].expect, msg);
        mesh_free(msg);
    }
}

/* A name as an endpoint's address: kept as the name (lowercased), resolved by the agent. */
static void test_host_name_endpoint(void **state)
{
    (void)state;
    const char *json = "{\"service\": {\"name\": \"a\", \"endpoints\": [{\"address\": "
                       "\"DB.Example.COM.\", \"port\": 5432, \"labels\": {\"v\": \"1\"}}, "
                       "{\"address\": \"10.0.0.1\", \"host\": \"db.example.com\", \"port\": 1}]}}";
    struct mesh_cfg_errors errors = {0};
    struct mesh_service_file *f = NULL;
    assert_int_equal(mesh_service_file_parse("x", json, strlen(json), &errors, &f), 0);
    const struct mesh_endpoint_config *e = f->all[0]->endpoints.items;
    struct mesh_endpoint out, ip;
    assert_int_equal(mesh_endpoint_from_config(&e[0], &out), 0);
    assert_true(mesh_endpoint_unresolved(&out));
    assert_string_equal(out.host, "db.example.com");
    assert_int_equal(out.addr.port, 5432);
    assert_string_equal(mesh_labels_get(&out.labels, "v"), "1");
    /* An address with the name it came from (as the last-known-good file has it). */
    assert_int_equal(mesh_endpoint_from_config(&e[1], &ip), 0);
    assert_false(mesh_endpoint_unresolved(&ip));
    assert_ptr_equal(ip.host, out.host); /* one atom per name */
    struct mesh_buf b;
    mesh_buf_init(&b, 4096);
    mesh_endpoint_write_json(&b, &out);
    mesh_endpoint_write_json(&b, &ip);
    assert_string_equal(b.data, "{\"address\":\"db.example.com\",\"port\":5432,\"labels\":{\"v\":"
                                "\"1\"}}{\"address\":\"10.0.0.1\",\"host\":\"db.example.com\","
                                "\"port\":1}");
    mesh_buf_done(&b);
    mesh_endpoint_done(&out);
    mesh_endpoint_done(&ip);
    mesh_service_file_free(f);
}

static void test_local_service(void **state)
{
    (void)state;
    const char *json = "{\"service\": {\"name\": \"web\", \"namespace\": \"shop\", \"port\": "
                       "8080, \"protocol\": \"http\", \"labels\": {\"team\": \"a\"}, "
                       "\"upstreams\": [{\"service\": \"api\", \"bind_port\": 9001}, {\"service\": "
                       "\"db\", \"namespace\": \"data\", \"bind_port\": 9002, \"bind_address\": "
                       "\"::1\", \"protocol\": \"tcp\"}]}}";
    struct mesh_cfg_errors errors = {0};
    struct mesh_service_file *f = NULL;
    assert_int_equal(mesh_service_file_parse("x", json, strlen(json), &errors, &f), 0);
    assert_int_equal(f->n, 1);
    const struct mesh_service_config *s = f->all[0];
    assert_string_equal(s->name, "web");
    assert_string_equal(s->namespace, "shop");
    assert_int_equal(s->port, 8080);
    assert_string_equal(s->address, "127.0.0.1");
    assert_int_equal(s->protocol, MESH_PROTO_HTTP);
    assert_int_equal(s->upstreams.n, 2);
    const struct mesh_upstream_config *u = s->upstreams.items;
    assert_string_equal(u[0].service, "api");
    assert_null(u[0].namespace);
    assert_string_equal(u[0].bind_address, "127.0.0.1");
    assert_string_equal(u[1].bind_address, "::1");
    assert_string_equal(mesh_labels_get(&s->labels, "team"), "a");
    mesh_service_file_free(f);
}

static void test_remote_services_list(void **state)
{
    (void)state;
    const char *json = "{\"services\": [{\"name\": \"a\", \"endpoints\": [{\"address\": "
                       "\"10.0.0.1\", \"port\": 80, \"weight\": 5, \"zone\": \"z1\", \"health\": "
                       "\"draining\"}]}, {\"name\": \"b\", \"endpoints\": [{\"address\": "
                       "\"fd00::1\", \"port\": 443}]}]}";
    struct mesh_cfg_errors errors = {0};
    struct mesh_service_file *f = NULL;
    assert_int_equal(mesh_service_file_parse("x", json, strlen(json), &errors, &f), 0);
    assert_int_equal(f->n, 2);
    const struct mesh_endpoint_config *e = f->all[0]->endpoints.items;
    struct mesh_endpoint out;
    assert_int_equal(mesh_endpoint_from_config(e, &out), 0);
    assert_int_equal(out.weight, 5);
    assert_int_equal(out.health, MESH_EP_SERVING | MESH_EP_TERMINATING);
    assert_string_equal(out.zone, "z1");
    assert_int_equal(out.addr.port, 80);
    mesh_endpoint_done(&out);
    mesh_service_file_free(f);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    const char *json = "{\"services\": [{\"name\": \"a\", \"port\": 80, \"upstreams\": "
                       "[{\"service\": \"b\", \"bind_port\": 1}]}, {\"name\": \"b\", "
                       "\"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80, \"labels\": "
                       "{\"k\": \"v\"}}]}]}";
    for (long n = 0; n < 300; n++) {
        struct mesh_cfg_errors errors = {0};
        struct mesh_service_file *f = NULL;
        mesh_alloc_fail_after(n);
        int r = mesh_service_file_parse("x", json, strlen(json), &errors, &f);
        mesh_alloc_fail_after(-1);
        mesh_cfg_errors_done(&errors);
        mesh_service_file_free(f);
        if (r == 0)
            return;
    }
    fail_msg("never succeeded");
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_bad_files),           UNIT_TEST(test_host_name_endpoint),
        UNIT_TEST(test_local_service),       UNIT_TEST(test_remote_services_list),
        UNIT_TEST(test_allocation_failures),
    };
    return cmocka_run_group_tests_name("service_file", tests, NULL, NULL);
}
