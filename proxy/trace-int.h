/*
 * Spans inside the data plane (proxy/trace.h): the state the workers share with the main loop
 * (trace_ring.c) and the worker side (trace_record.c).
 *
 * Each worker owns one single-producer, single-consumer ring of MESH_TRACE_RING spans: the
 * worker writes a span in place and publishes it by moving `head` (release); the main loop
 * reads up to `head` (acquire) and frees the slots by moving `tail`. No lock, no allocation on
 * the data path; a full ring drops the span and counts it.
 */
#ifndef MESH_PROXY_TRACE_INT_H
#define MESH_PROXY_TRACE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "proxy/trace.h"

struct mesh_trace_ring {
    _Alignas(64) atomic_size_t head; /* the worker's */
    _Alignas(64) atomic_size_t tail; /* the main loop's */
    struct mesh_span spans[MESH_TRACE_RING];
};

struct mesh_trace_shared {
    atomic_bool on;
    /* A new trace is sampled when the top 53 bits of its id's low half are below this:
     * ratio * 2^53. */
    atomic_ullong threshold;
    struct mesh_trace_ring **rings; /* one per worker, made at the first mesh_trace__set */
    int n_rings;
    atomic_ullong dropped;
    uv_async_t *wake; /* sent when a ring gets half full (set before the workers start) */
    char node[96];    /* service.name where no local service calls (the shared listener) */
};

/* Returns 0 or -ENOMEM. */
int mesh_trace__init(struct mesh_trace_shared *t, int n_workers);
void mesh_trace__done(struct mesh_trace_shared *t);
/* Main loop. `node` names the spans of the node's own calls. Returns 0 or -ENOMEM. */
int mesh_trace__set(struct mesh_trace_shared *t, bool on, double ratio, const char *node);
size_t mesh_trace__take(struct mesh_trace_shared *t, struct mesh_span *out, size_t max);

struct http_conn;
struct mesh_http_request;
struct mesh_proxy_snapshot;
struct want_listener;

/*
 * Worker: the request's trace context from its traceparent (continued when valid, else a new
 * trace), its sampling decision and the traceparent the upstream gets (c->req.traceparent,
 * with this hop's span id).
 */
void mesh_trace_begin(struct http_conn *c, const struct mesh_http_request *r);
/* Worker: records c's finished request as a span when it was sampled and tracing is on. */
void mesh_trace_http_request(struct http_conn *c, uint64_t duration_us);
/* Main loop, at build: the service.name of each listener's spans (wl[i] made listener i). */
int mesh_trace_snapshot_names(struct mesh_proxy_snapshot *s, const struct want_listener *wl,
                              size_t n);

#endif
