/* Spans as OTLP/JSON and Zipkin v2 JSON (agent/trace_encode.h). */
#include "agent/trace_encode.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "mesh-version.h"

#define MAX_ATTRS 16

struct attr {
    const char *key;
    const char *s; /* NULL: an integer */
    long long i;
};

/* What both formats say of one span: its name, attributes and whether it failed. */
struct view {
    const char *name;
    struct attr a[MAX_ATTRS];
    size_t n;
    bool error;
    char url[512];
    char path[256];
    char code[8];
};

static void add_s(struct view *v, const char *key, const char *s)
{
    if (v->n < MAX_ATTRS && s && s[0])
        v->a[v->n++] = (struct attr){.key = key, .s = s};
}

static void add_i(struct view *v, const char *key, long long i)
{
    if (v->n < MAX_ATTRS)
        v->a[v->n++] = (struct attr){.key = key, .i = i};
}

/* The methods semantic conventions know; another is "_OTHER" with the original beside it. */
static bool known_method(const char *m)
{
    static const char *const known[] = {"GET",     "HEAD",    "POST",  "PUT",   "DELETE",
                                        "CONNECT", "OPTIONS", "TRACE", "PATCH", NULL};
    for (int i = 0; known[i]; i++) {
        if (strcmp(m, known[i]) == 0)
            return true;
    }
    return false;
}

static void view(const struct mesh_span *s, struct view *v)
{
    bool server = s->kind == MESH_SPAN_SERVER;
    bool known = known_method(s->method);
    v->n = 0;
    /* Span name: "{method}" (no route template is known), "HTTP" for an unknown method. */
    v->name = known ? s->method : "HTTP";
    add_s(v, "http.request.method", known ? s->method : "_OTHER");
    if (!known)
        add_s(v, "http.request.method_original", s->method);
    const char *scheme = server && s->tls ? "https" : "http";
    add_s(v, "server.address", s->server_address);
    if (s->server_port)
        add_i(v, "server.port", s->server_port);
    if (server)
        add_s(v, "url.scheme", scheme); /* a client's is in url.full */
    if (server) {
        const char *q = strchr(s->target, '?');
        size_t plen = q ? (size_t)(q - s->target) : strlen(s->target);
        snprintf(v->path, sizeof(v->path), "%.*s", (int)plen, s->target);
        add_s(v, "url.path", v->path);
        if (q)
            add_s(v, "url.query", q + 1);
    } else {
        /* An IPv6 address goes back into brackets; port 80 is the scheme's own. */
        bool v6 = strchr(s->server_address, ':') != NULL;
        char port[8] = "";
        if (s->server_port != 80)
            snprintf(port, sizeof(port), ":%u", (unsigned)s->server_port);
        snprintf(v->url, sizeof(v->url), "%s://%s%s%s%s%s", scheme, v6 ? "[" : "",
                 s->server_address, v6 ? "]" : "", port, s->target);
        add_s(v, "url.full", v->url);
    }
    /* network.protocol.name is "http" unless said otherwise: not sent. */
    add_s(v, "network.protocol.version", s->version == 10 ? "1.0" : s->version == 20 ? "2" : "1.1");
    if (server) /* Recommended on server spans, opt-in on client spans. */
        add_s(v, "user_agent.original", s->user_agent);
    if (s->status)
        add_i(v, "http.response.status_code", s->status);
    /* Server spans fail on 5xx, client spans on 4xx too; no response at all fails both.
     * error.type: the status code, or Envoy's flags saying why nothing came. */
    v->error = !s->status || s->status >= (server ? 500 : 400);
    if (v->error) {
        if (s->status) {
            snprintf(v->code, sizeof(v->code), "%u", (unsigned)s->status);
            add_s(v, "error.type", v->code);
        } else {
            add_s(v, "error.type", strcmp(s->flags, "-") ? s->flags : "_OTHER");
        }
    }
    if (strcmp(s->flags, "-"))
        add_s(v, "mesh.response_flags", s->flags);
    add_s(v, server ? "mesh.source.principal" : "mesh.peer.principal", s->peer_id);
}

/* A JSON string of s, each byte over 0x7f as '?': the span's fields are printable ASCII
 * (proxy/trace_record.c), and a field that is not must not make the batch invalid UTF-8,
 * which a collector rejects whole. */
static void str(struct mesh_buf *b, const char *s)
{
    size_t len = strlen(s), i = 0;
    while (i < len && (unsigned char)s[i] < 0x80)
        i++;
    char *copy = i < len ? mesh_strndup(s, len) : NULL;
    if (copy) {
        for (; i < len; i++)
            copy[i] = (unsigned char)copy[i] < 0x80 ? copy[i] : '?';
        s = copy;
    } else if (i < len) {
        len = i; /* no memory: the ASCII start alone */
    }
    mesh_buf_append_json_str(b, s, len);
    mesh_free(copy);
}

/* Decimal digits of v; what printf would write, without its cost per span. */
static void u64(struct mesh_buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do
        tmp[--i] = (char)('0' + v % 10);
    while (v /= 10);
    mesh_buf_append(b, tmp + i, sizeof(tmp) - i);
}

static void lit(struct mesh_buf *b, const char *s)
{
    mesh_buf_append_str(b, s);
}

/* ---- OTLP/JSON ---- */

static void otlp_span(struct mesh_buf *b, const struct mesh_span *s)
{
    struct view v;
    view(s, &v);
    /* Ids are hex made by the data plane: no escaping needed. */
    lit(b, "{\"traceId\":\"");
    lit(b, s->trace_id);
    lit(b, "\",\"spanId\":\"");
    lit(b, s->span_id);
    if (s->parent_id[0]) {
        lit(b, "\",\"parentSpanId\":\"");
        lit(b, s->parent_id);
    }
    lit(b, "\",\"name\":");
    str(b, v.name);
    lit(b, ",\"kind\":");
    u64(b, s->kind);
    lit(b, ",\"startTimeUnixNano\":\"");
    u64(b, s->start_ns);
    lit(b, "\",\"endTimeUnixNano\":\"");
    u64(b, s->end_ns);
    lit(b, "\",\"attributes\":[");
    for (size_t i = 0; i < v.n; i++) {
        mesh_buf_append_str(b, i ? ",{\"key\":" : "{\"key\":");
        str(b, v.a[i].key);
        if (v.a[i].s) {
            mesh_buf_append_str(b, ",\"value\":{\"stringValue\":");
            str(b, v.a[i].s);
            mesh_buf_append_str(b, "}}");
        } else {
            lit(b, ",\"value\":{\"intValue\":\"");
            u64(b, (uint64_t)v.a[i].i);
            lit(b, "\"}}");
        }
    }
    /* Status: unset unless the span failed (STATUS_CODE_ERROR = 2). */
    mesh_buf_append_str(b, v.error ? "],\"status\":{\"code\":2}}" : "]}");
}

int mesh_trace_encode_otlp(const struct mesh_span *spans, size_t n, struct mesh_buf *b)
{
    bool *done = mesh_calloc(n ? n : 1, sizeof(*done));
    if (!done)
        return -ENOMEM;
    mesh_buf_append_str(b, "{\"resourceSpans\":[");
    bool first = true;
    /* One resourceSpans per service.name, in the order services first appear. */
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        mesh_buf_append_str(b, first ? "{\"resource\":{\"attributes\":["
                                     : ",{\"resource\":{\"attributes\":[");
        first = false;
        mesh_buf_append_str(b, "{\"key\":\"service.name\",\"value\":{\"stringValue\":");
        str(b, spans[i].service);
        mesh_buf_append_str(b, "}},{\"key\":\"telemetry.sdk.name\",\"value\":{\"stringValue\":"
                               "\"mesh-agent\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":"
                               "\"mesh-agent\",\"version\":");
        str(b, MESH_VERSION);
        mesh_buf_append_str(b, "},\"spans\":[");
        bool first_span = true;
        for (size_t j = i; j < n; j++) {
            if (done[j] || strcmp(spans[j].service, spans[i].service) != 0)
                continue;
            done[j] = true;
            if (!first_span)
                mesh_buf_append(b, ",", 1);
            first_span = false;
            otlp_span(b, &spans[j]);
        }
        mesh_buf_append_str(b, "]}]}");
    }
    mesh_buf_append_str(b, "]}");
    mesh_free(done);
    return b->err;
}

/* ---- Zipkin v2 ---- */

static void zipkin_span(struct mesh_buf *b, const struct mesh_span *s)
{
    struct view v;
    view(s, &v);
    uint64_t start_us = s->start_ns / 1000, end_us = s->end_ns / 1000;
    /* Zipkin reads a duration of 0 as none: at least one microsecond. */
    uint64_t dur = end_us > start_us ? end_us - start_us : 1;
    lit(b, "{\"traceId\":\"");
    lit(b, s->trace_id);
    lit(b, "\",\"id\":\"");
    lit(b, s->span_id);
    if (s->parent_id[0]) {
        lit(b, "\",\"parentId\":\"");
        lit(b, s->parent_id);
    }
    lit(b, s->kind == MESH_SPAN_SERVER ? "\",\"kind\":\"SERVER\",\"name\":"
                                       : "\",\"kind\":\"CLIENT\",\"name\":");
    str(b, v.name);
    lit(b, ",\"timestamp\":");
    u64(b, start_us);
    lit(b, ",\"duration\":");
    u64(b, dur);
    lit(b, ",\"localEndpoint\":{\"serviceName\":");
    str(b, s->service);
    mesh_buf_append_str(b, "}");
    if (s->kind == MESH_SPAN_CLIENT && s->server_address[0]) {
        mesh_buf_append_str(b, ",\"remoteEndpoint\":{\"serviceName\":");
        str(b, s->server_address);
        lit(b, ",\"port\":");
        u64(b, s->server_port);
        lit(b, "}");
    }
    /* Tags: the same attributes, every value a string, as OpenTelemetry's Zipkin exporter
     * maps them, with otel.status_code and error for a failed span. */
    mesh_buf_append_str(b, ",\"tags\":{");
    for (size_t i = 0; i < v.n; i++) {
        if (i)
            mesh_buf_append(b, ",", 1);
        str(b, v.a[i].key);
        mesh_buf_append(b, ":", 1);
        if (v.a[i].s)
            str(b, v.a[i].s);
        else {
            lit(b, "\"");
            u64(b, (uint64_t)v.a[i].i);
            lit(b, "\"");
        }
    }
    if (v.error) {
        mesh_buf_append_str(b, v.n ? ",\"otel.status_code\":\"ERROR\",\"error\":"
                                   : "\"otel.status_code\":\"ERROR\",\"error\":");
        str(b, s->status ? v.code : (strcmp(s->flags, "-") ? s->flags : "no response"));
    }
    mesh_buf_append_str(b, "}}");
}

int mesh_trace_encode_zipkin(const struct mesh_span *spans, size_t n, struct mesh_buf *b)
{
    mesh_buf_append(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            mesh_buf_append(b, ",", 1);
        zipkin_span(b, &spans[i]);
    }
    mesh_buf_append(b, "]", 1);
    return b->err;
}
