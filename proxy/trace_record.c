#define MESH_LOG_MODULE "trace"

/*
 * The worker side of tracing (proxy/trace-int.h): each request's trace context and sampling
 * decision, and the span of a sampled request once it is over.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "proxy/http_proxy-int.h"

static void hex(char *out, uint64_t v, int digits)
{
    static const char d[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = d[v & 15];
}

static bool is_hex(const char *s, size_t n, bool nonzero)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
        any |= s[i] != '0';
    }
    return !nonzero || any;
}

/* W3C Trace Context: "00-<trace 32>-<parent 16>-<flags 2>", the version not ff. */
static bool traceparent_valid(const struct mesh_http_header *h)
{
    const char *v = h->value;
    if (h->value_len < 55 || (h->value_len > 55 && v[55] != '-'))
        return false;
    return is_hex(v, 2, false) && memcmp(v, "ff", 2) != 0 && v[2] == '-' &&
           is_hex(v + 3, 32, true) && v[35] == '-' && is_hex(v + 36, 16, true) && v[52] == '-' &&
           is_hex(v + 53, 2, false) && (memcmp(v, "00", 2) != 0 || h->value_len == 55);
}

static int hex_digit(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

void mesh_trace_begin(struct http_conn *c, const struct mesh_http_request *r)
{
    struct http_req *q = &c->req;
    struct mesh_trace_shared *t = &c->w->shared->trace;
    uint64_t *rng = &c->w->rng;
    bool on = atomic_load_explicit(&t->on, memory_order_acquire);
    const struct mesh_http_header *in =
        mesh_http_find_header(r->headers, r->num_headers, "traceparent");
    char *tp = q->traceparent;
    if (in && traceparent_valid(in)) {
        /* Parent-based: the caller's decision holds (the flags go on as they came). */
        memcpy(tp, in->value, 55);
        tp[0] = tp[1] = '0';
        memcpy(q->parent_id, in->value + 36, 16);
        q->parent_id[16] = '\0';
        q->sampled = hex_digit(in->value[54]) & 1;
    } else {
        /* A new trace: the ratio decides, from the trace id's low half as OpenTelemetry's
         * TraceIdRatioBased does. With tracing off the flag stays "sampled", as before. */
        uint64_t lo = mesh_rng_next(rng);
        memcpy(tp, "00-", 3);
        hex(tp + 3, mesh_rng_next(rng), 16);
        hex(tp + 19, lo, 16);
        q->parent_id[0] = '\0';
        q->sampled = !on || (lo >> 11) < atomic_load_explicit(&t->threshold, memory_order_relaxed);
        memcpy(tp + 52, q->sampled ? "-01" : "-00", 3);
    }
    tp[35] = '-';
    hex(tp + 36, mesh_rng_next(rng) | 1, 16);
    tp[55] = '\0';
    memcpy(q->trace_id, tp + 3, 32);
    q->trace_id[32] = '\0';
    q->sampled = q->sampled && on;
    q->user_agent[0] = '\0';
    if (q->sampled) {
        const struct mesh_http_header *ua =
            mesh_http_find_header(r->headers, r->num_headers, "user-agent");
        if (ua) {
            size_t n =
                ua->value_len < sizeof(q->user_agent) ? ua->value_len : sizeof(q->user_agent) - 1;
            memcpy(q->user_agent, ua->value, n);
            q->user_agent[n] = '\0';
        }
    }
}

/* Copies at most size - 1 bytes of s[0..len) and a NUL; bytes other than printable ASCII
 * become '?', so that what is exported is valid UTF-8 whatever came in. */
static void put(char *dst, size_t size, const char *s, size_t len)
{
    if (len >= size)
        len = size - 1;
    for (size_t i = 0; i < len; i++)
        dst[i] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f ? '?' : s[i];
    dst[len] = '\0';
}

/* "host:port", "[v6]:port", "[v6]" or "host": the host (an IPv6 address without its
 * brackets) in s->server_address, the port apart. */
static void put_authority(struct mesh_span *s, const char *a, bool tls)
{
    size_t len = strlen(a), host_len = len;
    unsigned port = tls ? 443 : 80;
    const char *colon = strrchr(a, ':'), *bracket = a[0] == '[' ? strchr(a, ']') : NULL;
    if (colon && (a[0] != '[' || (bracket && colon > bracket))) {
        unsigned v = 0;
        const char *p = colon + 1;
        for (; *p >= '0' && *p <= '9' && v <= 65535; p++)
            v = v * 10 + (unsigned)(*p - '0');
        if (!*p && p > colon + 1 && v > 0 && v <= 65535) {
            host_len = (size_t)(colon - a);
            port = v;
        }
    }
    if (bracket && (size_t)(bracket - a) < host_len) /* "[v6]": the address alone */
        put(s->server_address, sizeof(s->server_address), a + 1, (size_t)(bracket - a) - 1);
    else
        put(s->server_address, sizeof(s->server_address), a, host_len);
    s->server_port = (uint16_t)port;
}

void mesh_trace_http_request(struct http_conn *c, uint64_t duration_us)
{
    struct http_req *q = &c->req;
    struct mesh_trace_shared *t = &c->w->shared->trace;
    if (!q->sampled || !q->traceparent[0] || !atomic_load_explicit(&t->on, memory_order_relaxed))
        return;
    struct mesh_trace_ring *ring = t->rings[c->w->index];
    size_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
    if (head - tail >= MESH_TRACE_RING) {
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        return;
    }
    struct mesh_span *s = &ring->spans[head % MESH_TRACE_RING];
    const struct snap_listener *l = c->listener;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s->end_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    s->start_ns = s->end_ns - duration_us * 1000u;
    memcpy(s->trace_id, q->traceparent + 3, 32);
    s->trace_id[32] = '\0';
    memcpy(s->span_id, q->traceparent + 36, 16);
    s->span_id[16] = '\0';
    memcpy(s->parent_id, q->parent_id, sizeof(s->parent_id));
    s->kind = l && l->istio_inbound ? MESH_SPAN_SERVER : MESH_SPAN_CLIENT;
    s->tls = c->peer_identity != NULL;
    s->status = (uint16_t)(q->status > 0 && q->status < 1000 ? q->status : 0);
    s->version = c->stream ? 20 : (uint8_t)q->version; /* a stream's text is HTTP/1.1 */
    const char *svc = l && l->trace_service ? l->trace_service : t->node;
    put(s->service, sizeof(s->service), svc, strlen(svc));
    const char *meta = q->meta.data ? q->meta.data : "";
    bool have_meta = q->meta.len > q->path_off && q->path_off;
    put(s->method, sizeof(s->method), meta, have_meta ? q->method_len : 0);
    put_authority(s, have_meta ? meta + q->authority_off : "", s->tls);
    put(s->target, sizeof(s->target), have_meta ? meta + q->path_off : "",
        have_meta ? q->meta.len - q->path_off : 0);
    put(s->user_agent, sizeof(s->user_agent), q->user_agent, strlen(q->user_agent));
    mesh_http_flags_format(q->flags, s->flags, sizeof(s->flags));
    const char *peer = c->peer_identity ? c->peer_identity : "";
    put(s->peer_id, sizeof(s->peer_id), peer, strlen(peer));
    atomic_store_explicit(&ring->head, head + 1, memory_order_release);
    /* The fill grows one at a time: it meets the half mark once per filling. */
    if (head + 1 - tail == MESH_TRACE_RING / 2 && t->wake)
        uv_async_send(t->wake);
}

int mesh_trace_snapshot_names(struct mesh_proxy_snapshot *s, const struct want_listener *wl,
                              size_t n)
{
    for (size_t i = 0; i < n && i < s->n_listeners; i++) {
        const struct mesh_local_service *who = wl[i].local ? wl[i].local : wl[i].from;
        if (!who)
            continue;
        /* Istio's service.name for a workload: "<service>.<namespace>". */
        size_t len = strlen(who->name) + strlen(who->namespace) + 2;
        char *name = mesh_malloc(len);
        if (!name)
            return -ENOMEM;
        snprintf(name, len, "%s.%s", who->name, who->namespace);
        s->listeners[i].trace_service = name;
    }
    return 0;
}
