/* Spans on the wire (agent/trace_encode.c): OTLP/JSON and Zipkin v2 JSON field by field; the
 * "tracing" config section; the workers' span rings (proxy/trace_ring.c). */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "agent/config.h"
#include "agent/trace_encode.h"
#include "proxy/trace-int.h"
#include "tests/unit/unit.h"

static struct mesh_span client_span(void)
{
    struct mesh_span s = {
        .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
        .span_id = "00f067aa0ba902b7",
        .parent_id = "",
        .kind = MESH_SPAN_CLIENT,
        .status = 200,
        .server_port = 80,
        .version = 11,
        .start_ns = 1700000000123456789ULL,
        .end_ns = 1700000000124456789ULL,
        .service = "web.shop",
        .method = "GET",
        .server_address = "api",
        .target = "/items?id=\"7\"",
        .user_agent = "curl/8.0",
        .flags = "-",
    };
    return s;
}

static struct mesh_span server_span(void)
{
    struct mesh_span s = client_span();
    memcpy(s.span_id, "b7ad6b7169203331", 17);
    memcpy(s.parent_id, "00f067aa0ba902b7", 17);
    s.kind = MESH_SPAN_SERVER;
    s.tls = true;
    s.status = 503;
    s.server_port = 8080;
    memcpy(s.service, "api.shop", 9);
    memcpy(s.flags, "UF,URX", 7);
    memcpy(s.peer_id, "spiffe://t/ns/shop/sa/web", 26);
    return s;
}

static json_t *encode(int (*fn)(const struct mesh_span *, size_t, struct mesh_buf *),
                      const struct mesh_span *s, size_t n)
{
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    assert_int_equal(fn(s, n, &b), 0);
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        fail_msg("not JSON: %s in %s", err.text, b.data);
    mesh_buf_done(&b);
    return j;
}

/* The value of OTLP attribute `key` (an AnyValue object), or NULL. */
static json_t *otlp_attr(json_t *span, const char *key)
{
    size_t i;
    json_t *kv;
    json_array_foreach(json_object_get(span, "attributes"), i, kv)
    {
        if (strcmp(json_string_value(json_object_get(kv, "key")), key) == 0)
            return json_object_get(kv, "value");
    }
    return NULL;
}

static const char *otlp_str(json_t *span, const char *key)
{
    json_t *v = otlp_attr(span, key);
    return v ? json_string_value(json_object_get(v, "stringValue")) : NULL;
}

static const char *otlp_int(json_t *span, const char *key)
{
    json_t *v = otlp_attr(span, key);
    /* int64 in proto3 JSON: a decimal string. */
    return v ? json_string_value(json_object_get(v, "intValue")) : NULL;
}

static void test_otlp(void **state)
{
    (void)state;
    struct mesh_span s[3] = {client_span(), server_span(), client_span()};
    memcpy(s[2].span_id, "1111111111111111", 17);
    json_t *j = encode(mesh_trace_encode_otlp, s, 3);
    json_t *rs = json_object_get(j, "resourceSpans");
    /* One resourceSpans per service.name: web.shop (two spans), api.shop (one). */
    assert_int_equal(json_array_size(rs), 2);
    json_t *r0 = json_array_get(rs, 0), *r1 = json_array_get(rs, 1);
    json_t *res = json_array_get(json_object_get(json_object_get(r0, "resource"), "attributes"), 0);
    assert_string_equal(json_string_value(json_object_get(res, "key")), "service.name");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(res, "value"), "stringValue")),
        "web.shop");
    json_t *ss = json_array_get(json_object_get(r0, "scopeSpans"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")),
                        "mesh-agent");
    json_t *spans = json_object_get(ss, "spans");
    assert_int_equal(json_array_size(spans), 2);
    json_t *c = json_array_get(spans, 0);
    assert_string_equal(json_string_value(json_object_get(c, "traceId")),
                        "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(c, "spanId")), "00f067aa0ba902b7");
    assert_null(json_object_get(c, "parentSpanId")); /* a root */
    assert_string_equal(json_string_value(json_object_get(c, "name")), "GET");
    assert_int_equal(json_integer_value(json_object_get(c, "kind")), 3);
    assert_string_equal(json_string_value(json_object_get(c, "startTimeUnixNano")),
                        "1700000000123456789");
    assert_string_equal(json_string_value(json_object_get(c, "endTimeUnixNano")),
                        "1700000000124456789");
    assert_string_equal(otlp_str(c, "http.request.method"), "GET");
    assert_string_equal(otlp_str(c, "server.address"), "api");
    assert_string_equal(otlp_int(c, "server.port"), "80");
    assert_string_equal(otlp_str(c, "url.full"), "http://api/items?id=\"7\"");
    assert_string_equal(otlp_int(c, "http.response.status_code"), "200");
    assert_string_equal(otlp_str(c, "network.protocol.version"), "1.1");
    assert_null(otlp_attr(c, "user_agent.original")); /* opt-in on client spans */
    assert_null(otlp_attr(c, "url.scheme"));          /* in url.full */
    assert_null(otlp_attr(c, "error.type"));
    assert_null(json_object_get(c, "status")); /* unset */
    /* The server span: its parent, the path and query apart, a 503 is an error. */
    json_t *sv = json_array_get(
        json_object_get(json_array_get(json_object_get(r1, "scopeSpans"), 0), "spans"), 0);
    assert_string_equal(json_string_value(json_object_get(sv, "parentSpanId")), "00f067aa0ba902b7");
    assert_int_equal(json_integer_value(json_object_get(sv, "kind")), 2);
    assert_string_equal(otlp_str(sv, "url.path"), "/items");
    assert_string_equal(otlp_str(sv, "url.query"), "id=\"7\"");
    assert_string_equal(otlp_str(sv, "url.scheme"), "https");
    assert_string_equal(otlp_str(sv, "user_agent.original"), "curl/8.0");
    assert_null(otlp_attr(sv, "url.full"));
    assert_string_equal(otlp_str(sv, "error.type"), "503");
    assert_string_equal(otlp_str(sv, "mesh.response_flags"), "UF,URX");
    assert_string_equal(otlp_str(sv, "mesh.source.principal"), "spiffe://t/ns/shop/sa/web");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sv, "status"), "code")), 2);
    json_decref(j);
}

static void test_otlp_statuses(void **state)
{
    (void)state;
    struct mesh_span s = client_span();
    /* A client span fails on a 4xx; no response names the flags; an unknown method. */
    s.status = 404;
    json_t *j = encode(mesh_trace_encode_otlp, &s, 1);
    json_t *sp = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(j, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    assert_string_equal(otlp_str(sp, "error.type"), "404");
    json_decref(j);
    s.status = 0;
    memcpy(s.flags, "UF", 3);
    memcpy(s.method, "PURGE", 6);
    s.server_port = 8080;
    j = encode(mesh_trace_encode_otlp, &s, 1);
    sp = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(j, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    assert_string_equal(otlp_str(sp, "error.type"), "UF");
    assert_null(otlp_attr(sp, "http.response.status_code"));
    assert_string_equal(otlp_str(sp, "http.request.method"), "_OTHER");
    assert_string_equal(otlp_str(sp, "http.request.method_original"), "PURGE");
    assert_string_equal(json_string_value(json_object_get(sp, "name")), "HTTP");
    assert_string_equal(otlp_str(sp, "url.full"), "http://api:8080/items?id=\"7\"");
    json_decref(j);
    /* An IPv6 server.address is bare; url.full puts it back in brackets. */
    memcpy(s.server_address, "::1", 4);
    j = encode(mesh_trace_encode_otlp, &s, 1);
    sp = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(j, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    assert_string_equal(otlp_str(sp, "url.full"), "http://[::1]:8080/items?id=\"7\"");
    json_decref(j);
    /* No span: an empty request, still valid. */
    j = encode(mesh_trace_encode_otlp, NULL, 0);
    assert_int_equal(json_array_size(json_object_get(j, "resourceSpans")), 0);
    json_decref(j);
}

static void test_zipkin(void **state)
{
    (void)state;
    struct mesh_span s[2] = {client_span(), server_span()};
    s[1].end_ns = s[1].start_ns + 10; /* under a microsecond */
    json_t *j = encode(mesh_trace_encode_zipkin, s, 2);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 2);
    json_t *c = json_array_get(j, 0), *sv = json_array_get(j, 1);
    assert_string_equal(json_string_value(json_object_get(c, "traceId")),
                        "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(c, "id")), "00f067aa0ba902b7");
    assert_null(json_object_get(c, "parentId"));
    assert_string_equal(json_string_value(json_object_get(c, "kind")), "CLIENT");
    /* Microseconds: the start cut, not rounded; the duration from the cut ends. */
    assert_int_equal(json_integer_value(json_object_get(c, "timestamp")), 1700000000123456LL);
    assert_int_equal(json_integer_value(json_object_get(c, "duration")), 1000);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(c, "localEndpoint"), "serviceName")),
        "web.shop");
    json_t *remote = json_object_get(c, "remoteEndpoint");
    assert_string_equal(json_string_value(json_object_get(remote, "serviceName")), "api");
    assert_int_equal(json_integer_value(json_object_get(remote, "port")), 80);
    json_t *tags = json_object_get(c, "tags");
    const char *k;
    json_t *v;
    json_object_foreach(tags, k, v)
    {
        if (!json_is_string(v))
            fail_msg("tag %s is not a string", k);
    }
    assert_string_equal(json_string_value(json_object_get(tags, "http.response.status_code")),
                        "200");
    assert_null(json_object_get(tags, "error"));
    assert_string_equal(json_string_value(json_object_get(sv, "parentId")), "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(sv, "kind")), "SERVER");
    assert_int_equal(json_integer_value(json_object_get(sv, "duration")), 1);
    assert_null(json_object_get(sv, "remoteEndpoint"));
    tags = json_object_get(sv, "tags");
    assert_string_equal(json_string_value(json_object_get(tags, "error")), "503");
    assert_string_equal(json_string_value(json_object_get(tags, "otel.status_code")), "ERROR");
    json_decref(j);
}

static struct mesh_agent_config *parse(const char *json, char **ret_errors)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    int r = mesh_agent_config_parse("<test>", json, strlen(json), &errors, &cfg);
    *ret_errors = r == 0 ? NULL : mesh_cfg_errors_join(&errors);
    mesh_cfg_errors_done(&errors);
    return r == 0 ? cfg : NULL;
}

static void test_config(void **state)
{
    (void)state;
    char *err;
    struct mesh_agent_config *c = parse("{}", &err);
    assert_non_null(c);
    assert_false(mesh_agent_tracing_on(&c->tracing));
    assert_true(mesh_agent_tracing_ratio(&c->tracing) == 1.0);
    assert_int_equal(c->tracing.queue_size, 2048);
    assert_int_equal(c->tracing.batch_size, 512);
    assert_int_equal(c->tracing.flush_interval_ms, 5000);
    mesh_agent_config_unref(c);
    c = parse("{\"tracing\": {\"otlp_endpoint\": \"http://127.0.0.1:4318/v1/traces\", "
              "\"sampling_ratio\": 0, \"queue_size\": 10, \"batch_size\": 10}}",
              &err);
    assert_non_null(c);
    assert_true(mesh_agent_tracing_on(&c->tracing));
    assert_true(mesh_agent_tracing_ratio(&c->tracing) == 0.0);
    mesh_agent_config_unref(c);
    static const struct {
        const char *json, *expect;
    } bad[] = {
        {"{\"tracing\": {\"sampling_ratio\": 1.5}}",
         "$.tracing.sampling_ratio: expected a number from 0 to 1"},
        {"{\"tracing\": {\"sampling_ratio\": \"1\"}}", "$.tracing.sampling_ratio"},
        {"{\"tracing\": {\"otlp_endpoint\": \"collector:4318\"}}",
         "an http:// or https:// URL with a host"},
        {"{\"tracing\": {\"zipkin_endpoint\": \"http:///api\"}}", "$.tracing.zipkin_endpoint"},
        {"{\"tracing\": {\"queue_size\": 0}}", "$.tracing.queue_size"},
        {"{\"tracing\": {\"queue_size\": 100, \"batch_size\": 200}}",
         "$.tracing.batch_size: expected at most queue_size (100), got 200"},
        {"{\"tracing\": {\"flush_interval\": \"1ms\"}}", "$.tracing.flush_interval"},
        {"{\"tracing\": {\"sample\": 1}}", "$.tracing.sample"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *e = NULL;
        c = parse(bad[i].json, &e);
        if (c)
            fail_msg("case %zu accepted: %s", i, bad[i].json);
        if (!e || !strstr(e, bad[i].expect))
            fail_msg("case %zu: %s\n  expected: %s\n  got: %s", i, bad[i].json, bad[i].expect,
                     e ? e : "(none)");
        mesh_free(e);
    }
}

static void test_rings(void **state)
{
    (void)state;
    struct mesh_trace_shared t;
    assert_int_equal(mesh_trace__init(&t, 2), 0);
    assert_int_equal(mesh_trace__set(&t, true, 0.5, "host-a"), 0);
    assert_string_equal(t.node, "host-a");
    assert_int_equal(atomic_load(&t.threshold), 1ULL << 52);
    /* What a worker does: write in place, then publish. */
    for (size_t i = 0; i < 3; i++) {
        struct mesh_trace_ring *r = t.rings[i % 2];
        size_t h = atomic_load(&r->head);
        snprintf(r->spans[h % MESH_TRACE_RING].method, 16, "M%zu", i);
        atomic_store(&r->head, h + 1);
    }
    struct mesh_span out[4];
    assert_int_equal(mesh_trace__take(&t, out, 1), 1);
    assert_string_equal(out[0].method, "M0");
    assert_int_equal(mesh_trace__take(&t, out, 4), 2);
    assert_string_equal(out[0].method, "M2");
    assert_string_equal(out[1].method, "M1");
    assert_int_equal(mesh_trace__take(&t, out, 4), 0);
    mesh_trace__set(&t, false, 2, NULL);
    assert_false(atomic_load(&t.on));
    assert_int_equal(atomic_load(&t.threshold), 1ULL << 53);
    mesh_trace__done(&t);
}

/* A User-Agent is the client's bytes: invalid UTF-8 in it (a byte over 0x7f, a character cut
 * at the field's end) must not make the batch invalid JSON, which a collector drops whole. */
static void test_invalid_utf8(void **state)
{
    (void)state;
    struct mesh_span s = server_span();
    memcpy(s.user_agent, "a\xff\"b\xc3", 6);
    json_t *j = encode(mesh_trace_encode_otlp, &s, 1);
    json_t *sp = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(j, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    assert_string_equal(otlp_str(sp, "user_agent.original"), "a?\"b?");
    json_decref(j);
    s.version = 20; /* and an HTTP/2 stream's version, as OpenTelemetry writes it */
    j = encode(mesh_trace_encode_zipkin, &s, 1);
    json_t *tags = json_object_get(json_array_get(j, 0), "tags");
    assert_string_equal(json_string_value(json_object_get(tags, "user_agent.original")), "a?\"b?");
    assert_string_equal(json_string_value(json_object_get(tags, "network.protocol.version")), "2");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_otlp),   UNIT_TEST(test_otlp_statuses), UNIT_TEST(test_zipkin),
        UNIT_TEST(test_config), UNIT_TEST(test_rings),         UNIT_TEST(test_invalid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
