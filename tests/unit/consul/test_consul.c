/* The Consul adapter's pure parts: settings and environment, and the answer decoders. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "registry-adapters/consul/consul-int.h"
#include "tests/unit/unit.h"

/* ---- the environment, as a table ---- */

static const char *const *env_table;

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; env_table && env_table[i]; i += 2) {
        if (strcmp(env_table[i], name) == 0)
            return env_table[i + 1];
    }
    return NULL;
}

static int resolve(const char *config_json, const char *const *env, struct mesh_consul_conn *conn,
                   char **ret_errors)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_cfg_ctx ctx;
    struct mesh_consul_config cfg;
    json_t *j = json_loads(config_json, 0, NULL);
    assert_non_null(j);
    mesh_cfg_ctx_init(&ctx, "agent.json", &errors);
    assert_int_equal(mesh_cfg_defaults(&mesh_consul__schema, &cfg), 0);
    int r = mesh_cfg_decode(&ctx, &mesh_consul__schema, j, &cfg);
    json_decref(j);
    env_table = env;
    if (r == 0)
        r = mesh_consul__resolve(&cfg, fake_getenv, conn, &errors);
    mesh_cfg_free(&mesh_consul__schema, &cfg);
    *ret_errors = mesh_cfg_errors_join(&errors);
    mesh_cfg_errors_done(&errors);
    return r;
}

static void test_defaults_and_addresses(void **state)
{
    (void)state;
    static const struct {
        const char *config, *env_addr, *env_ssl, *want;
    } cases[] = {
        {"{}", NULL, NULL, "http://127.0.0.1:8500"},
        {"{}", "consul.service:8501", NULL, "http://consul.service:8501"},
        {"{}", "10.0.0.1", "true", "https://10.0.0.1:8500"},
        {"{\"address\": \"https://[::1]:8501/\"}", "10.0.0.1:1", NULL, "https://[::1]:8501"},
        {"{\"address\": \"[::1]\"}", NULL, NULL, "http://[::1]:8500"},
        {"{\"address\": \"127.0.0.1:1\", \"tls\": true}", NULL, "false", "https://127.0.0.1:1"},
        /* unix:///path as Consul's CLI takes it: the URL's host only names the server. */
        {"{}", "unix:///run/consul/http.sock", NULL, "http://localhost"},
        {"{\"address\": \"unix:///run/consul/http.sock\"}", "10.0.0.1:1", NULL, "http://localhost"},
        {"{\"address\": \"unix:///run/consul/https.sock\"}", NULL, "true", "https://localhost"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {"CONSUL_HTTP_ADDR", cases[i].env_addr, "CONSUL_HTTP_SSL",
                             cases[i].env_ssl, NULL};
        if (!cases[i].env_addr)
            env[0] = "unused";
        if (!cases[i].env_ssl)
            env[2] = "unused";
        struct mesh_consul_conn c;
        char *errors = NULL;
        int r = resolve(cases[i].config, env, &c, &errors);
        if (r != 0)
            fail_msg("case %zu: %s", i, errors ? errors : "?");
        assert_string_equal(c.base_url, cases[i].want);
        const char *unix_addr = strstr(cases[i].config, "unix://");
        if (!unix_addr && cases[i].env_addr && strncmp(cases[i].env_addr, "unix://", 7) == 0)
            unix_addr = cases[i].env_addr;
        if (unix_addr) {
            assert_non_null(c.unix_socket);
            assert_int_equal(strncmp(unix_addr + 7, c.unix_socket, strlen(c.unix_socket)), 0);
            assert_int_equal(strncmp(c.where, "unix:///run/consul/", 19), 0);
        } else {
            assert_null(c.unix_socket);
            assert_string_equal(c.where, c.base_url);
        }
        mesh_consul__conn_done(&c);
        mesh_free(errors);
    }
}

static void test_tls_server_name(void **state)
{
    (void)state;
    static const struct {
        const char *config, *env, *want;
    } cases[] = {
        {"{}", NULL, NULL},
        {"{}", "server.dc1.consul", "server.dc1.consul"},
        /* As Consul's CLI: a port after the name is dropped. */
        {"{}", "server.dc1.consul:8501", "server.dc1.consul"},
        {"{\"tls_server_name\": \"consul.internal\"}", "other.example", "consul.internal"},
        {"{\"tls_server_name\": \"10.0.0.1\", \"address\": \"https://127.0.0.1:8501\"}", NULL,
         "10.0.0.1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {cases[i].env ? "CONSUL_TLS_SERVER_NAME" : "unused", cases[i].env,
                             NULL};
        struct mesh_consul_conn c;
        char *errors = NULL;
        if (resolve(cases[i].config, env, &c, &errors) != 0)
            fail_msg("case %zu: %s", i, errors ? errors : "?");
        if (cases[i].want)
            assert_string_equal(c.server_name, cases[i].want);
        else
            assert_null(c.server_name);
        mesh_consul__conn_done(&c);
        mesh_free(errors);
    }
}

static void test_token_precedence(void **state)
{
    (void)state;
    char file[] = "/tmp/mesh-consul-token-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    close(fd);
    const char *both_env[] = {"CONSUL_HTTP_TOKEN", "env-token", "CONSUL_HTTP_TOKEN_FILE", file,
                              NULL};
    const char *value_env[] = {"CONSUL_HTTP_TOKEN", "env-token", NULL};
    char with_file[256];
    snprintf(with_file, sizeof(with_file), "{\"token\": \"cfg\", \"token_file\": \"%s\"}", file);
    const struct {
        const char *config;
        const char *const *env;
        const char *source;
    } cases[] = {
        {with_file, both_env, "token_file"},
        {"{\"token\": \"cfg\"}", both_env, "token"},
        {"{}", both_env, "CONSUL_HTTP_TOKEN_FILE"},
        {"{}", value_env, "CONSUL_HTTP_TOKEN"},
        {"{}", NULL, "none"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *config = cases[i].config;
        struct mesh_consul_conn c;
        char *errors = NULL;
        assert_int_equal(resolve(config, cases[i].env, &c, &errors), 0);
        assert_string_equal(c.token_source, cases[i].source);
        mesh_consul__conn_done(&c);
        mesh_free(errors);
    }
    unlink(file);
}

static void test_bad_settings(void **state)
{
    (void)state;
    static const struct {
        const char *config;
        const char *env_name, *env_value;
        const char *expect;
    } cases[] = {
        {"{\"address\": \"ftp://consul:21\"}", NULL, NULL,
         "only http://, https:// and unix:// are supported"},
        {"{\"address\": \"unix://consul.sock\"}", NULL, NULL,
         "expected an absolute path after unix://"},
        {"{}", "CONSUL_HTTP_ADDR", "unix://", "expected an absolute path after unix://"},
        {"{\"address\": \"unix:///run/a-socket-path-that-is-far-too-long-for-a-socket-address/"
         "because-sun_path-holds-only-108-bytes-with-its-terminator.sock\"}",
         NULL, NULL, "a socket path has at most 107 bytes"},
        {"{}", "CONSUL_TLS_SERVER_NAME", "bad name",
         "CONSUL_TLS_SERVER_NAME: consul TLS server name"},
        {"{\"tls_server_name\": \"a..b\"}", NULL, NULL, "expected a host name"},
        {"{\"tls_server_name\": \"-a.b\"}", NULL, NULL, "expected a host name"},
        {"{\"tls_server_name\": \"a/b:1\"}", NULL, NULL, "expected a host name"},
        {"{}", "CONSUL_HTTP_ADDR", "http://h:1/v1", "expected no path"},
        {"{}", "CONSUL_HTTP_SSL", "yes", "CONSUL_HTTP_SSL: expected true or false"},
        {"{\"token_file\": \"/nonexistent/x\"}", NULL, NULL, "cannot read '/nonexistent/x'"},
        {"{\"cert_file\": \"/etc/hostname\"}", NULL, NULL, "a client certificate needs its key"},
        {"{\"token\": \"a\\nb\"}", NULL, NULL, "must be one line"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {cases[i].env_name ? cases[i].env_name : "unused", cases[i].env_value,
                             NULL};
        struct mesh_consul_conn c;
        char *errors = NULL;
        assert_int_equal(resolve(cases[i].config, env, &c, &errors), -EINVAL);
        assert_non_null(errors);
        assert_contains(errors, cases[i].expect);
        mesh_free(errors);
    }
}

/* ---- the index and the token bucket (Consul's "Blocking Queries" page) ---- */

static void test_next_index(void **state)
{
    (void)state;
    uint64_t idx = 42;
    bool reset = true;
    static const char *const bad[] = {
        "", "abc", "-1", "12abc", " 12", "1.5", "99999999999999999999999"};
    /* Missing or not a number: an error; nothing is touched. */
    assert_int_equal(mesh_consul__next_index(NULL, 0, 100, &idx, &reset), -EINVAL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(mesh_consul__next_index(bad[i], strlen(bad[i]), 100, &idx, &reset),
                         -EINVAL);
    assert_int_equal(idx, 42);
    assert_true(reset);
    /* Forward, and unchanged. */
    assert_int_equal(mesh_consul__next_index("105", 3, 100, &idx, &reset), 0);
    assert_int_equal(idx, 105);
    assert_false(reset);
    assert_int_equal(mesh_consul__next_index("100", 3, 100, &idx, &reset), 0);
    assert_int_equal(idx, 100);
    assert_false(reset);
    /* Backwards: reset, and never below 1 (0 would not block). */
    assert_int_equal(mesh_consul__next_index("5", 1, 100, &idx, &reset), 0);
    assert_int_equal(idx, 1);
    assert_true(reset);
    assert_int_equal(mesh_consul__next_index("0", 1, 0, &idx, &reset), 0);
    assert_int_equal(idx, 1);
    assert_false(reset);
}

static void test_token_bucket(void **state)
{
    (void)state;
    struct mesh_consul_bucket b;
    const uint64_t t0 = 1000000, iv = 15000;
    mesh_consul__bucket_init(&b, t0, 2, iv);
    /* A burst of two, then one per interval. */
    assert_int_equal(mesh_consul__bucket_take(&b, t0, 2, iv), 0);
    assert_int_equal(mesh_consul__bucket_take(&b, t0 + 10, 2, iv), 0);
    assert_int_equal(mesh_consul__bucket_take(&b, t0 + 20, 2, iv), iv - 20);
    assert_int_equal(mesh_consul__bucket_take(&b, t0 + 5000, 2, iv), iv - 5000);
    assert_int_equal(mesh_consul__bucket_take(&b, t0 + iv, 2, iv), 0);
    assert_int_equal(mesh_consul__bucket_take(&b, t0 + iv, 2, iv), iv);
    /* A long quiet time fills it, but never beyond the burst. */
    uint64_t t1 = t0 + 100 * iv;
    assert_int_equal(mesh_consul__bucket_take(&b, t1, 2, iv), 0);
    assert_int_equal(mesh_consul__bucket_take(&b, t1, 2, iv), 0);
    assert_int_equal(mesh_consul__bucket_take(&b, t1, 2, iv), iv);
    /* A clock that does not move (or an earlier time) adds nothing. */
    assert_int_equal(mesh_consul__bucket_take(&b, t1 - 5, 2, iv), iv);
    /* The queries an unchanging server drives in ten minutes: 2 at once, then one at each
     * 15 s mark before the end. */
    mesh_consul__bucket_init(&b, t0, 2, iv);
    unsigned n = 0;
    for (uint64_t t = t0; t < t0 + 600000;) {
        uint64_t w = mesh_consul__bucket_take(&b, t, 2, iv);
        if (w == 0) {
            n++;
            t += 10; /* the answer comes at once */
        } else {
            t += w;
        }
    }
    assert_int_equal(n, 2 + 600000 / iv - 1);
}

/* ---- decoders ---- */

static void test_decode_services(void **state)
{
    (void)state;
    const char *json = "{\"web\": [\"v2\", \"x\"], \"db\": [], \"Bad_Name\": [\"v2\"], "
                       "\"api\": [\"v2\"]}";
    struct mesh_consul_names n = {0};
    char err[256];
    assert_int_equal(mesh_consul_decode_services(json, strlen(json), NULL, &n, err, sizeof(err)),
                     0);
    assert_int_equal(n.n, 3);
    assert_string_equal(n.v[0], "api");
    assert_string_equal(n.v[2], "web");
    assert_int_equal(n.skipped, 1);
    assert_string_equal(n.first_skipped, "Bad_Name");
    mesh_consul_names_done(&n);
    assert_int_equal(mesh_consul_decode_services(json, strlen(json), "v2", &n, err, sizeof(err)),
                     0);
    assert_int_equal(n.n, 2);
    mesh_consul_names_done(&n);
    assert_int_equal(mesh_consul_decode_services("[]", 2, NULL, &n, err, sizeof(err)), -EINVAL);
    assert_contains(err, "expected an object");
    const char *bad = "{\"web\": \"v1\"}";
    assert_int_equal(mesh_consul_decode_services(bad, strlen(bad), NULL, &n, err, sizeof(err)),
                     -EINVAL);
    assert_contains(err, "expected a list of tags for 'web'");
}

static void test_decode_health(void **state)
{
    (void)state;
    const char *json =
        "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\", \"Meta\": {\"zone\": \"z9\"}},"
        "  \"Service\": {\"Address\": \"\", \"Port\": 80, \"Weights\": {\"Passing\": 5, "
        "\"Warning\": 1}, \"Meta\": {\"mesh-port\": \"15008\", \"version\": \"v1\", "
        "\"protocol\": \"http\", \"bad key!\": \"x\"}},"
        "  \"Checks\": [{\"Status\": \"passing\"}]},"
        " {\"Node\": {\"Node\": \"n2\", \"Address\": \"10.0.0.2\"},"
        "  \"Service\": {\"Address\": \"10.0.0.20\", \"Port\": 80, \"Weights\": {\"Passing\": 1, "
        "\"Warning\": 2}}, \"Checks\": [{\"Status\": \"passing\"}, {\"Status\": \"warning\"}]},"
        " {\"Node\": {\"Node\": \"n3\", \"Address\": \"10.0.0.3\"},"
        "  \"Service\": {\"Port\": 80}, \"Checks\": [{\"Status\": \"maintenance\"}]},"
        " {\"Node\": {\"Node\": \"n4\", \"Address\": \"db.example\"},"
        "  \"Service\": {\"Port\": 80}, \"Checks\": []},"
        " {\"Node\": {\"Node\": \"n5\", \"Address\": \"10.0.0.300\"},"
        "  \"Service\": {\"Port\": 80}, \"Checks\": []},"
        " {\"Node\": {\"Node\": \"n0\", \"Address\": \"10.0.0.1\"},"
        "  \"Service\": {\"Port\": 80}, \"Checks\": []}]";
    struct mesh_consul_health_options o = {.zone_key = "zone"};
    struct mesh_consul_instances in = {0};
    char err[256];
    assert_int_equal(mesh_consul_decode_health(json, strlen(json), &o, &in, err, sizeof(err)), 0);
    /* n1 and n0 share 10.0.0.1:80: n0's entry stays (sorted first); n2 warns; n3 is in
     * maintenance; n4's address is a name, which the agent resolves; n5's is no name. */
    assert_int_equal(in.n, 2);
    assert_string_equal(in.v[0].node, "n4"); /* names (no address yet) sort first */
    assert_true(mesh_endpoint_unresolved(&in.v[0]));
    assert_string_equal(in.v[0].host, "db.example");
    assert_int_equal(in.v[0].addr.port, 80);
    assert_null(in.v[1].host);
    assert_string_equal(in.v[1].node, "n0");
    assert_int_equal(in.unhealthy, 2);
    assert_int_equal(in.skipped, 2);
    assert_int_equal(in.protocol, MESH_PROTO_HTTP);
    mesh_consul_instances_done(&in);

    o.include_warning = true;
    const char *one = json + 0; /* the same answer, warnings counted */
    assert_int_equal(mesh_consul_decode_health(one, strlen(one), &o, &in, err, sizeof(err)), 0);
    assert_int_equal(in.n, 3);
    assert_string_equal(in.v[2].node, "n2");
    assert_int_equal(in.v[2].weight, 2); /* Weights.Warning */
    mesh_consul_instances_done(&in);

    const char *first = "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\", \"Meta\": "
                        "{\"zone\": \"z9\"}}, \"Service\": {\"Port\": 80, \"Weights\": "
                        "{\"Passing\": 50000}, \"Meta\": {\"mesh-port\": \"15008\", \"version\": "
                        "\"v1\", \"bad key!\": \"x\"}}, \"Checks\": null}]";
    assert_int_equal(mesh_consul_decode_health(first, strlen(first), &o, &in, err, sizeof(err)), 0);
    assert_int_equal(in.n, 1);
    assert_int_equal(in.v[0].weight, MESH_WEIGHT_MAX);
    assert_int_equal(in.v[0].mesh_port, 15008);
    assert_string_equal(in.v[0].zone, "z9");
    assert_string_equal(mesh_labels_get(&in.v[0].labels, "version"), "v1");
    assert_null(mesh_labels_get(&in.v[0].labels, "bad key!"));
    mesh_consul_instances_done(&in);

    static const char *const bad[] = {
        "{}", "[1]", "[{\"Node\": {}, \"Service\": {}, \"Checks\": {}}]",
        "[{\"Node\": {}, \"Service\": {\"Weights\": {\"Passing\": \"1\"}}}]", "nope"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(
            mesh_consul_decode_health(bad[i], strlen(bad[i]), &o, &in, err, sizeof(err)), -EINVAL);
}

static void test_digests(void **state)
{
    (void)state;
    const uint64_t key[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    const char *a = "{\"web\": [], \"db\": [\"x\"]}", *b = "{\"db\": [], \"web\": [\"y\"]}";
    const char *c = "{\"web\": [], \"dbx\": []}";
    struct mesh_consul_names na = {0}, nb = {0}, nc = {0};
    char err[256];
    assert_int_equal(mesh_consul_decode_services(a, strlen(a), NULL, &na, err, sizeof(err)), 0);
    assert_int_equal(mesh_consul_decode_services(b, strlen(b), NULL, &nb, err, sizeof(err)), 0);
    assert_int_equal(mesh_consul_decode_services(c, strlen(c), NULL, &nc, err, sizeof(err)), 0);
    /* The same names (tags aside) are the same answer; other names are not. */
    assert_true(mesh_consul_names_digest(&na, key) == mesh_consul_names_digest(&nb, key));
    assert_true(mesh_consul_names_digest(&na, key) != mesh_consul_names_digest(&nc, key));
    const uint64_t other[2] = {1, 2};
    assert_true(mesh_consul_names_digest(&na, key) != mesh_consul_names_digest(&na, other));
    mesh_consul_names_done(&na);
    mesh_consul_names_done(&nb);
    mesh_consul_names_done(&nc);

    /* Instances: what the mesh takes from them counts, check output does not. */
    static const char *const h[] = {
        "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"version\": \"v1\"}}, \"Checks\": [{\"Status\": \"passing\", \"Output\": "
        "\"a\"}]}]",
        "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"version\": \"v1\"}}, \"Checks\": [{\"Status\": \"passing\", \"Output\": "
        "\"b\"}]}]",
        "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"version\": \"v2\"}}, \"Checks\": []}]",
        "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\"}, \"Service\": {\"Port\": 80, "
        "\"Weights\": {\"Passing\": 2}, \"Meta\": {\"version\": \"v1\"}}, \"Checks\": []}]",
        "[{\"Node\": {\"Node\": \"n2\", \"Address\": \"10.0.0.1\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"version\": \"v1\"}}, \"Checks\": []}]",
        "[]",
    };
    struct mesh_consul_health_options o = {.zone_key = "zone"};
    uint64_t d[sizeof(h) / sizeof(h[0])];
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
        struct mesh_consul_instances in = {0};
        assert_int_equal(mesh_consul_decode_health(h[i], strlen(h[i]), &o, &in, err, sizeof(err)),
                         0);
        d[i] = mesh_consul_instances_digest(&in, key);
        mesh_consul_instances_done(&in);
    }
    assert_true(d[0] == d[1]);
    for (size_t i = 2; i < sizeof(h) / sizeof(h[0]); i++) {
        for (size_t j = 1; j < i; j++)
            assert_true(d[i] != d[j]);
    }
}

static void test_decode_allocation_failures(void **state)
{
    (void)state;
    const char *json = "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\"}, \"Service\": "
                       "{\"Port\": 80, \"Meta\": {\"a\": \"b\", \"zone\": \"z\"}}, \"Checks\": "
                       "[]}, {\"Node\": {\"Node\": \"n2\", \"Address\": \"10.0.0.2\"}, "
                       "\"Service\": {\"Port\": 80}}]";
    struct mesh_consul_health_options o = {.zone_key = "zone"};
    char err[256];
    for (long n = 0; n < 500; n++) {
        struct mesh_consul_instances in = {0};
        mesh_alloc_fail_after(n);
        int r = mesh_consul_decode_health(json, strlen(json), &o, &in, err, sizeof(err));
        mesh_alloc_fail_after(-1);
        mesh_consul_instances_done(&in);
        if (r == 0)
            return;
        /* jansson reports some failed allocations while parsing as bad input. */
        assert_true(r == -ENOMEM || r == -EINVAL);
    }
    fail_msg("never succeeded");
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_defaults_and_addresses),
        UNIT_TEST(test_tls_server_name),
        UNIT_TEST(test_token_precedence),
        UNIT_TEST(test_bad_settings),
        UNIT_TEST(test_next_index),
        UNIT_TEST(test_token_bucket),
        UNIT_TEST(test_decode_services),
        UNIT_TEST(test_decode_health),
        UNIT_TEST(test_digests),
        UNIT_TEST(test_decode_allocation_failures),
    };
    return cmocka_run_group_tests_name("consul", tests, NULL, NULL);
}
