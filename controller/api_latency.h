/*
 * The API's latency and answers, by route, for /metrics: a histogram of the time from a
 * complete request to its answer, and a count of answers by status class. A request counts
 * under the route it matched (the path's template, never the path itself: node names, token
 * ids and resource names make no series), "other" when it matched none; a blocking query
 * (one naming an `index`) under its own route, since it waits by design. Series exist only
 * for the routes and methods seen: at most MESH_API_ROUTES x MESH_API_METHODS.
 *
 * Main loop only.
 */
#ifndef MESH_CONTROLLER_API_LATENCY_H
#define MESH_CONTROLLER_API_LATENCY_H

#include <stdint.h>

#include "common/buf.h"
#include "common/http_parse.h"

#define MESH_API_ROUTES 21
#define MESH_API_METHODS 6 /* GET, HEAD, POST, PUT, DELETE, other */
#define MESH_API_BUCKETS 15

struct mesh_api_route_stats {
    uint64_t buckets[MESH_API_BUCKETS]; /* each its own bound, not cumulative */
    uint64_t count;
    uint64_t sum_ns;
    uint64_t classes[5]; /* answers 1xx .. 5xx */
};

struct mesh_api_latency {
    struct mesh_api_route_stats s[MESH_API_ROUTES][MESH_API_METHODS];
};

/* The route label of a request: "/v1/agents/{node}/reset", "other", ... */
const char *mesh_api_route(const struct mesh_http_request *r);
/* Counts an answer with `status`, `ns` after the request was complete. */
void mesh_api_latency_observe(struct mesh_api_latency *l, const struct mesh_http_request *r,
                              int status, uint64_t ns);
/* Appends mesh_controller_http_request_duration_seconds and
 * mesh_controller_http_responses_total (Prometheus text). */
void mesh_api_latency_write(const struct mesh_api_latency *l, struct mesh_buf *b);

#endif
