/*
 * Internals of the data plane, shared by its files.
 *
 * Threads: the main loop builds immutable snapshots (listeners, destinations, endpoints,
 * policies) and hands them to N worker threads through per-worker command queues. Each
 * worker has its own libuv loop and SO_REUSEPORT listeners, and splices connections with
 * no lock on the path. What must be shared and mutable lives in reference-counted state
 * objects that survive snapshots: per destination (counters, active connections) and per
 * endpoint (active connections, outlier ejection, active health), all atomics.
 */
#ifndef MESH_PROXY_INT_H
#define MESH_PROXY_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "agent/service.h"
#include "common/addr.h"
#include "common/hmap.h"
#include "proxy/policy.h"
#include "proxy/proxy.h"

/* ---- shared state ---- */

struct mesh_dest_state {
    atomic_int refs;
    atomic_int active;  /* open connections, every worker */
    atomic_int ejected; /* endpoints ejected now */
    atomic_ullong conns_total;
    atomic_ullong bytes_to_upstream;
    atomic_ullong bytes_to_downstream;
    atomic_ullong connect_failures;
    atomic_ullong retries;
    atomic_ullong ejections;
    atomic_ullong breaker_refusals;
    atomic_ullong no_endpoint;
    atomic_ullong drained; /* closed at a drain deadline */
    atomic_ullong idle_timeouts;
    char key[];
};

struct mesh_ep_state {
    atomic_int refs;
    atomic_int active;
    atomic_int consecutive_failures;
    atomic_llong ejected_until;   /* loop ms (uv_now clock); 0: not ejected */
    atomic_int ejections;         /* times ejected in a row: the ejection time doubles */
    atomic_int hc_healthy;        /* active health check verdict; 1 until a check says no */
    struct mesh_dest_state *dest; /* a reference */
    /* Main loop only: */
    int hc_successes;
    int hc_failures;
    bool hc_probing;
    uint64_t returned_at; /* when the last ejection ended */
    char key[];           /* "dest key|ip:port" */
};

/* The process-wide knobs and counters every thread reads. */
struct mesh_proxy_shared {
    atomic_ullong health_epoch; /* bumped whenever any endpoint's eligibility changes */
    atomic_int active_total;
    atomic_ullong refused_total; /* over proxy.max_connections */
    atomic_ullong accepted_total;
    atomic_int max_connections;
    size_t buffer_size;
    size_t high_water;
    size_t low_water;
};

/* ---- snapshots ---- */

enum { MESH_LISTENER_OUTBOUND, MESH_LISTENER_INBOUND };

struct snap_endpoint {
    struct mesh_addr addr;
    uint32_t weight;
    unsigned health; /* MESH_EP_* from the catalog */
    bool local_zone;
    struct mesh_ep_state *state; /* a reference */
};

struct ring_point {
    uint64_t hash;
    uint32_t ep;
};

struct snap_dest {
    char *key; /* "ns/name", or "inbound:ns/name" for a local workload */
    size_t index;
    struct mesh_dest_state *state; /* a reference */
    struct mesh_dest_policy policy;
    struct snap_endpoint *eps; /* sorted by address */
    size_t n;
    bool zone_aware; /* the policy wants it, and this node's and endpoints' zones are known */
    struct ring_point *ring;
    size_t n_ring;
};

struct snap_listener {
    char *key; /* the bind address, formatted */
    struct mesh_addr addr;
    int kind;
    char *description; /* "shop/web -> shop/api" */
    struct snap_dest *dest;
};

struct mesh_proxy_snapshot {
    atomic_int refs;
    uint64_t version;
    struct snap_listener *listeners;
    size_t n_listeners;
    struct mesh_hmap listener_index; /* key -> struct snap_listener */
    struct snap_dest *dests;
    size_t n_dests;
    struct mesh_hmap dest_index; /* key -> struct snap_dest */
};

void mesh_snapshot_ref(struct mesh_proxy_snapshot *s);
void mesh_snapshot_unref(struct mesh_proxy_snapshot *s);
struct snap_listener *mesh_snapshot_listener(const struct mesh_proxy_snapshot *s, const char *key);
struct snap_dest *mesh_snapshot_dest(const struct mesh_proxy_snapshot *s, const char *key);
/* The endpoint of d at addr (binary search), or NULL. */
struct snap_endpoint *mesh_snapshot_find_ep(const struct snap_dest *d, const struct mesh_addr *a);
int mesh_addr_cmp(const struct mesh_addr *a, const struct mesh_addr *b);

/* Builds the consistent-hash ring of d (main loop, at snapshot build). */
int mesh_ring_build(struct snap_dest *d);
uint64_t mesh_hash_client(const struct mesh_addr *client);

void mesh_dest_state_unref(struct mesh_dest_state *s);
void mesh_ep_state_unref(struct mesh_ep_state *s);

/* ---- endpoint eligibility (any thread) ---- */

/* May this endpoint take new connections (catalog, active health, ejection)? */
static inline bool mesh_ep_eligible(const struct snap_endpoint *ep)
{
    return (ep->health & MESH_EP_READY) && !(ep->health & MESH_EP_TERMINATING) &&
           atomic_load_explicit(&ep->state->hc_healthy, memory_order_relaxed) &&
           atomic_load_explicit(&ep->state->ejected_until, memory_order_relaxed) == 0;
}

/* Outlier detection (any thread): a connect to ep failed / succeeded at loop time now. */
void mesh_outlier_failure(struct mesh_proxy_shared *sh, const struct snap_dest *d,
                          const struct snap_endpoint *ep, uint64_t now);
void mesh_outlier_success(const struct snap_endpoint *ep);

/* ---- load balancing (worker threads) ---- */

struct mesh_lb_state;

/* Per worker, per destination of the worker's current snapshot. */
struct mesh_lb_state {
    const struct snap_dest *dest;
    uint64_t epoch;
    bool valid;
    uint32_t *cand; /* eligible endpoint indexes */
    size_t n_cand;
    bool *is_cand;    /* by endpoint index */
    int64_t *current; /* smooth weighted round robin, by endpoint index */
    uint64_t *cum;    /* prefix sums of candidate weights (random) */
    uint64_t total_weight;
};

void mesh_lb_state_done(struct mesh_lb_state *lb);

/*
 * Picks an endpoint of lb->dest for a new connection, not one of the `n_tried` indexes in
 * `tried`. Returns its index, or -1 when none is left. rng is the worker's generator.
 */
int mesh_lb_pick(struct mesh_lb_state *lb, struct mesh_proxy_shared *sh, uint64_t client_hash,
                 const uint32_t *tried, size_t n_tried, uint64_t *rng);

/* The algorithms, one file each, over lb->cand (non-empty). */
int mesh_lb_round_robin(struct mesh_lb_state *lb, const uint32_t *tried, size_t n_tried);
int mesh_lb_least_request(struct mesh_lb_state *lb, const uint32_t *tried, size_t n_tried,
                          uint64_t *rng);
int mesh_lb_random(struct mesh_lb_state *lb, const uint32_t *tried, size_t n_tried, uint64_t *rng);
int mesh_lb_ring_hash(struct mesh_lb_state *lb, uint64_t client_hash, const uint32_t *tried,
                      size_t n_tried);

bool mesh_lb_was_tried(uint32_t ep, const uint32_t *tried, size_t n_tried);
uint64_t mesh_rng_next(uint64_t *state);

#endif
