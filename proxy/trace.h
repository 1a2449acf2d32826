/*
 * Spans of the HTTP data plane (docs/tracing.md): one per request an agent answers, a CLIENT
 * span on the caller's side (outbound listeners, capture) and a SERVER span on the callee's
 * (the inbound mTLS listener). The workers record them into a bounded queue of their own
 * (a full one drops the span and counts it); the main loop takes them with
 * mesh_proxy_take_spans and exports them (agent/trace_export.h).
 *
 * Sampling is parent-based: a request with a valid W3C traceparent is recorded when its
 * sampled flag is set; a new trace is sampled with the configured ratio, and its flag says so
 * to the next hops.
 */
#ifndef MESH_PROXY_TRACE_H
#define MESH_PROXY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mesh_proxy;

enum mesh_span_kind { MESH_SPAN_SERVER = 2, MESH_SPAN_CLIENT = 3 }; /* OTLP's SpanKind values */

/* One finished span; strings are NUL-terminated and cut to their field's size. */
struct mesh_span {
    char trace_id[33];  /* 32 lower-case hex digits */
    char span_id[17];   /* 16 */
    char parent_id[17]; /* 16, or "" for a root span */
    uint8_t kind;       /* enum mesh_span_kind */
    bool tls;           /* the request came over mTLS (url.scheme "https") */
    uint16_t status;    /* the HTTP status sent; 0: none was */
    uint16_t server_port;
    uint8_t version;           /* 10, 11 or 20: HTTP/1.0, 1.1 or 2 */
    uint64_t start_ns, end_ns; /* Unix time */
    char service[96];          /* service.name: the local service, or the node */
    char method[16];
    char server_address[96]; /* from Host (or the absolute target), without the port */
    char target[256];        /* path and query as routed */
    char user_agent[96];
    char flags[40];    /* Envoy's response flags, "-" for none */
    char peer_id[128]; /* the caller's SPIFFE ID over mTLS, else "" */
};

/* The queue each worker records into, in spans (the exporter's own queue is separate). */
#define MESH_TRACE_RING 1024

/*
 * Turns recording on (ratio in [0, 1]: the share of new traces sampled) or off; `node` names
 * the spans of the node's own calls (the first one given stays). Main loop; the workers see
 * it at their next request. Returns 0 or -ENOMEM (the queues could not be
 * made; recording stays off).
 */
int mesh_proxy_set_tracing(struct mesh_proxy *p, bool on, double ratio, const char *node);
/*
 * Takes up to `max` recorded spans into out[], oldest first per worker. Main loop. Returns how
 * many were taken.
 */
size_t mesh_proxy_take_spans(struct mesh_proxy *p, struct mesh_span *out, size_t max);
/*
 * cb(data) runs on the loop when a worker's queue is half full, so that it is emptied before
 * it fills; NULL: no call. Main loop.
 */
void mesh_proxy_on_spans(struct mesh_proxy *p, void (*cb)(void *data), void *data);
/* Spans the workers dropped because their queue was full, since the start. */
uint64_t mesh_proxy_spans_dropped(const struct mesh_proxy *p);

#endif
