/*
 * One try of an HTTP request (http_forward.c): its per-try deadline, its place in the
 * in-flight count of its endpoint (what least_request compares), the retry budget, and the
 * mark a remote agent puts on a failure that never reached its workload.
 */
#ifndef MESH_HTTP_TRY_H
#define MESH_HTTP_TRY_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/http_proxy-int.h"

/*
 * The response header by which an agent says that a call over mTLS failed on its side
 * before reaching its workload (as Envoy's x-envoy-overloaded): "connect-failure" (nothing
 * reached it: safe to retry anything elsewhere) or "reset" (it may have been processed).
 * Stripped from every upstream response; believed only from an agent over mTLS.
 */
#define MESH_HTTP_FAILURE_HEADER "x-mesh-upstream-failure"

enum mesh_http_marked {
    MESH_HTTP_MARK_NONE,
    MESH_HTTP_MARK_CONNECT, /* the remote agent could not reach its workload */
    MESH_HTTP_MARK_RESET,   /* its workload closed or reset before a response */
};

/* A try of q begins on endpoint e at loop time now: counted in flight on e. */
void mesh_http_try_begin(struct http_req *q, const struct snap_endpoint *e, uint64_t now);
/* The try is over (answered, failed, or given up): no longer in flight. Idempotent. */
void mesh_http_try_end(struct http_req *q);

/*
 * When the current try must have its response head: its start plus the rule's
 * per_try_timeout, or the destination's per_try_timeout when the rule sets none; 0: never.
 * *ret_soft is set when the destination's default applies: a try over it that cannot be
 * retried waits on for the route's timeout instead of failing (a slow answer still beats
 * none), having counted against its endpoint.
 */
uint64_t mesh_http_try_deadline(const struct http_req *q, bool *ret_soft);

/*
 * Whether the retry budget of q's destination has room for one more retry in flight:
 * budget_percent of its active requests, and never fewer than min_retry_concurrency (as
 * Envoy's retry budget).
 */
bool mesh_http_retry_budget_allows(const struct http_req *q, const struct mesh_http_stats *st);

/*
 * Takes the failure mark out of res (it never reaches the client) and returns it;
 * from_agent: the upstream is an agent over mTLS, the only one believed.
 */
enum mesh_http_marked mesh_http_take_mark(struct mesh_http_response *res, bool from_agent);

/* The header line (with CRLF) an agent adds to its own answer of a failed call over mTLS
 * with response flags `flags`, or NULL when the failure is not one to mark. */
const char *mesh_http_mark_for(unsigned flags);

#endif
