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

#include "catalog/service.h"
#include "common/addr.h"
#include "common/hmap.h"
#include "common/http_parse.h"
#include "proxy/istio-int.h"
#include "proxy/proxy.h"
#include "proxy/tls.h"
#include "proxy/trace-int.h"
#include "resources/policy.h"
#include "resources/resource.h"

/* ---- shared state ---- */

/* Request duration histogram bounds, in milliseconds (then +Inf). */
#define MESH_HTTP_BUCKETS 13
extern const unsigned mesh_http_bucket_ms[MESH_HTTP_BUCKETS];

/* HTTP counters of a destination or a route rule, and its token bucket. */
struct mesh_http_stats {
    atomic_ullong requests[6]; /* by status class: [1] 1xx .. [5] 5xx, [0] no response */
    atomic_ullong duration[MESH_HTTP_BUCKETS + 1];
    atomic_ullong duration_us_sum;
    atomic_ullong retries;
    atomic_ullong timeouts;
    atomic_ullong fault_aborts;
    atomic_ullong fault_delays;
    atomic_ullong rate_limited;
    atomic_ullong overflows; /* refused by max_requests / max_pending_requests */
    atomic_int active;       /* requests in flight */
    atomic_int pending;      /* waiting for an upstream connection */
    atomic_int retrying;     /* retries in flight (the retry budget) */
    /* Token bucket (rate limits): a spin lock held for a few instructions. */
    atomic_flag bucket_lock;
    double tokens;
    uint64_t bucket_ms; /* loop ms of the last refill; 0: full */
};

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
    atomic_ullong authz_denied; /* connections or requests refused by AuthorizationPolicy */
    /* Made at the first request: most services of a large catalog never see one here. */
    struct mesh_http_stats *_Atomic http;
    /* Main loop only: the states of its endpoints, sorted by address (one reference each;
     * a service's subsets share them). */
    struct mesh_ep_state **eps;
    size_t n_eps;
    atomic_bool sweep;         /* one of them is left to the registry alone: eps is worth a look */
    bool ejections_remembered; /* one of them was ejected and that is not yet forgotten */
    char key[];
};

/* 72 bytes (a malloc chunk of 80): there is one per endpoint, two while all of them move. */
struct mesh_ep_state {
    atomic_llong ejected_until;   /* loop ms (uv_now clock); 0: not ejected */
    struct mesh_dest_state *dest; /* a reference */
    atomic_int refs;
    atomic_int active;
    atomic_int consecutive_failures;
    atomic_int consecutive_5xx;
    atomic_int consecutive_gateway;
    atomic_int ejections;  /* times ejected in a row: the ejection time doubles */
    atomic_int hc_healthy; /* active health check verdict; 1 until a check says no */
    /* Main loop only: */
    uint32_t returned_at_s; /* when the last ejection ended, loop seconds; 0: never */
    uint8_t hc_successes;   /* in a row, up to the threshold (at most 100) */
    uint8_t hc_failures;
    struct mesh_ipport addr;
    bool hc_probing;
};

/* The process-wide knobs and counters every thread reads. */
struct mesh_proxy_shared {
    struct mesh_http_options http; /* set before the workers start */
    int access_log_fd;             /* a file dup2()ed over on reload; -1: none */
    atomic_bool access_log_on;
    atomic_ullong health_epoch; /* bumped whenever any endpoint's eligibility changes */
    atomic_int active_total;
    atomic_ullong refused_total; /* over proxy.max_connections */
    /* HTTP/2 from clients (h2_session.c): connections, streams, GOAWAY(ENHANCE_YOUR_CALM). */
    atomic_ullong h2_connections, h2_streams, h2_calm;
    /* mTLS handshakes [inbound, outbound] by result, and inbound refusals by authorization. */
    atomic_ullong tls_ok[2];
    atomic_ullong tls_failed[2];
    atomic_ullong tls_resumed[2];
    atomic_ullong authz_denied_tcp;
    atomic_ullong health_queries; /* other agents' health queries answered (health_serve.c) */
    atomic_ullong accepted_total;
    /* Transparent capture: outbound [to a mesh service, passed through, refused], inbound
     * plaintext [accepted (permissive), refused (strict)]. */
    atomic_ullong capture_out[3];
    atomic_ullong capture_in_plain[2];
    /* Captured calls to a mesh service from a pod of this node (capture.pods): its caller
     * named by its identity, or not known (no pod of this node at that address). */
    atomic_ullong capture_pod_callers[2];
    /* Of the named ones (with mTLS): upstream mTLS presents [the pod's identity, the node's]
     * (the agent holds no certificate for the pod's). */
    atomic_ullong capture_pod_identity[2];
    atomic_int max_connections;
    size_t buffer_size;
    size_t high_water;
    size_t low_water;
    uv_async_t *applied;           /* a worker took a snapshot (set before the workers start) */
    struct mesh_istio_table istio; /* Istio's standard metrics (istio_stats.c) */
    /* Spans (trace_ring.c). */
    struct mesh_trace_shared trace;
};

/* ---- snapshots ---- */

enum {
    MESH_LISTENER_OUTBOUND,
    MESH_LISTENER_INBOUND,
    MESH_LISTENER_HTTP_SHARED,
    MESH_LISTENER_MTLS,        /* the inbound mTLS port: SNI picks a local service */
    MESH_LISTENER_SNI,         /* not bound: what the mTLS port leads to for one local service */
    MESH_LISTENER_CAPTURE_OUT, /* outbound capture: the original destination picks (capture.c) */
    MESH_LISTENER_CAPTURE_IN,  /* inbound capture: the original port picks a local workload */
    MESH_LISTENER_CAPTURED,    /* not bound: what a captured connection leads to */
};

/* Listeners that are routes, not sockets. */
#define MESH_LISTENER_UNBOUND(kind)                                                                \
    ((kind) == MESH_LISTENER_SNI || (kind) == MESH_LISTENER_CAPTURED)

struct snap_endpoint {
    struct mesh_ipport addr;
    uint16_t mesh_port; /* its host's agent takes mTLS there: connect to it, not to addr */
    uint8_t health;     /* MESH_EP_* from the catalog */
    bool local_zone;
    uint32_t weight;
    struct mesh_ep_state *state; /* a reference */
};

struct ring_point {
    uint64_t hash;
    uint32_t ep;
};

/*
 * A destination's endpoints, shared by consecutive snapshots while what they are built
 * from stays the same (the catalog's service, and the inputs counted by `inputs_gen`): a
 * change to one service rebuilds one service. Any thread may drop the last reference; it
 * holds one on each endpoint state.
 */
struct snap_eps {
    atomic_int refs;
    uint64_t service_id; /* the mesh_service they were built from; 0: a local workload */
    uint64_t inputs_gen;
    bool zones; /* some endpoint's zone is known */
    size_t n;
    struct snap_endpoint v[];
};

struct snap_dest {
    char *key;     /* "ns/name", "ns/name{k=v,...}" for a subset, "inbound:ns/name" */
    char *service; /* "ns/name" of the service */
    size_t index;
    struct mesh_dest_state *state;         /* a reference */
    const struct mesh_dest_policy *policy; /* in a resource file the snapshot holds, or its own */
    struct snap_eps *block;                /* owns eps (NULL in tests that build dests by hand) */
    struct snap_endpoint *eps;             /* sorted by address */
    size_t n;
    bool zone_aware; /* the policy wants it, and this node's and endpoints' zones are known */
    bool http;       /* HTTP requests go to it (metrics) */
    char *sni;       /* "<service>.<namespace>": what mTLS calls name */
    char *peer_id;   /* the SPIFFE ID its agents must present */
    struct ring_point *ring;
    size_t n_ring;
    char *istio; /* its destination_* labels (istio_snapshot.c) */
};

/* A route rule as the workers use it: its destinations resolved. */
struct snap_rule {
    const struct mesh_route_rule *rule; /* borrowed from a resource file the snapshot holds */
    struct snap_dest **dests;           /* by rule->dests index */
    uint64_t total_weight;
    struct mesh_dest_state *state; /* "route:ns/route#i" counters and bucket (a reference) */
};

/* An HTTP service the proxy can route to: its route, or straight to it. */
struct snap_vhost {
    char *key; /* "ns/name" */
    char *namespace;
    char *name;
    char *route_name;       /* the Route resource's name, or NULL */
    struct snap_dest *dest; /* the service itself */
    struct snap_rule *rules;
    size_t n_rules;
    bool inbound;                   /* a local workload: no routes; authorization applies */
    const struct mesh_authz *authz; /* inbound: its AuthorizationPolicy, or NULL */
};

struct snap_listener {
    char *key; /* the bind address, formatted */
    struct mesh_addr addr;
    int kind;
    bool http;
    char *description; /* "shop/web -> shop/api" */
    struct snap_dest *dest;
    struct snap_vhost *vhost; /* http and not the shared listener */
    /* Who calls through it over mTLS (borrowed from the snapshot's material): the local
     * service, or the node on the shared listener; NULL without material. */
    const struct mesh_tls_identity *tls_as;
    const struct mesh_authz *authz; /* inbound and SNI: the service's AuthorizationPolicy */
    /* Istio labels of the local side: inbound, the destination_* of its workload; else the
     * source_* of the service (or node) calling through it. */
    char *istio;
    bool istio_inbound;
    char *trace_service; /* service.name of its spans; NULL: the node's (trace_record.c) */
};

/* A caller of captured connections named by its address: a pod of this node. */
struct snap_capture_source {
    /* What its upstream mTLS presents: the certificate the snapshot's material holds for its
     * SPIFFE ID (a local service's of the same account), or NULL: the node's. */
    const struct mesh_tls_identity *as;
    char id[]; /* its SPIFFE ID */
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
    struct snap_vhost *vhosts;
    size_t n_vhosts;
    struct mesh_hmap vhost_index;      /* "ns/name" -> struct snap_vhost */
    struct mesh_hmap vhost_names;      /* "name" -> the vhost in "default", or else a unique one */
    struct mesh_resource_file **files; /* references: routes and policies point into them */
    size_t n_files;
    struct mesh_tls_material *tls;          /* a reference, or NULL: no mTLS */
    struct mesh_dest_policy inbound_policy; /* the defaults as a local workload needs them */
    /* Transparent capture (capture_build.c): original destination "ip:port", or "vip:ip",
     * -> the CAPTURED listener of its service (keys owned). */
    struct mesh_hmap capture_index;
    /* caller IP -> struct snap_capture_source (keys and values owned) */
    struct mesh_hmap capture_sources;
    bool capture_refuse_unknown;
    bool capture_pods; /* pods are captured: callers are named by capture_sources */
    bool capture_permissive;
    struct mesh_dest_state *passthrough; /* counters of passed-through connections (a reference) */
};

/* The shared state that outlives snapshots, by key (main loop). Endpoint states hang off
 * their service's state: 100,000 endpoints cost no map of their own. */
struct mesh_state_regs {
    struct mesh_hmap dests; /* key -> struct mesh_dest_state (one reference) */
};

/* The state for key, made when new; returns a new reference or NULL. */
struct mesh_dest_state *mesh_state_dest(struct mesh_state_regs *r, const char *key);
/* Drops the registry's references (snapshots may still hold theirs). */
void mesh_state_regs_done(struct mesh_state_regs *r);

/* A listener the local services (or the agent config) ask for. */
struct want_listener {
    char key[MESH_ADDR_STRLEN];
    struct mesh_addr addr;
    int kind;
    bool http;
    char description[300];
    char ns[64];
    char name[64];
    const struct mesh_local_service *local; /* inbound: its workload */
    const struct mesh_local_service *from;  /* outbound: the service calling */
};

/* Collects the wanted listeners; the shared HTTP one first; the first claim of an address
 * wins. Returns 0 or -ENOMEM (*ret is the caller's either way). */
int mesh_want_listeners(const struct mesh_proxy_inputs *in, struct want_listener **ret,
                        size_t *ret_n);
/* capture_build.c: appends the capture listeners `in` asks for (bound ones, and a CAPTURED
 * route per catalog service and local workload port). Returns 0 or -ENOMEM. */
int mesh_capture_want(const struct mesh_proxy_inputs *in, struct want_listener **v, size_t *cap,
                      size_t *n);
/* Fills s->capture_index once its listeners are linked. Returns 0 or -ENOMEM. */
int mesh_capture_index(struct mesh_proxy_snapshot *s, struct mesh_state_regs *regs,
                       const struct mesh_proxy_inputs *in);
void mesh_capture_index_done(struct mesh_proxy_snapshot *s);
/* The identity in s's material a captured caller whose SPIFFE ID is `id`
 * calls as: the certificate of a local service of that ID (never the node's); NULL: none. */
const struct mesh_tls_identity *mesh_capture_source_as(const struct mesh_proxy_snapshot *s,
                                                       const char *id);
/* capture_accept.c: the capture counters of /metrics. */
void mesh_capture_metrics(struct mesh_proxy_shared *sh, struct mesh_buf *b);

/* istio_snapshot.c: the Istio label parts of s's listeners (wl[i] made listener i) and
 * destinations. Returns 0 or -ENOMEM. */
int mesh_istio_snapshot_labels(struct mesh_proxy_snapshot *s, const struct mesh_proxy_inputs *in,
                               const struct want_listener *wl, size_t n);

/* istio_tcp.c: the series of a TCP connection through l to d; peer_id: the caller's SPIFFE
 * ID over mTLS, else NULL. NULL: none (no labels, the cap, out of memory). */
struct mesh_istio_series *mesh_istio_tcp_series(struct mesh_proxy_shared *sh,
                                                const struct snap_listener *l,
                                                const struct snap_dest *d, const char *peer_id);
/* The series of s with response_flags (Envoy's: UH, UF, UO) in place of "-": where a TCP
 * connection that never reached an upstream is counted. NULL: past the cap, or no "-". */
struct mesh_istio_series *mesh_istio_tcp_flagged(struct mesh_proxy_shared *sh,
                                                 const struct mesh_istio_series *s,
                                                 const char *flags);

/* Builds a snapshot. `defaults` is the policy of services without one; it must outlive the
 * snapshot. Returns 0 or -ENOMEM. */
int mesh_snapshot_build(struct mesh_state_regs *regs, uint64_t version,
                        const struct mesh_dest_policy *defaults, const struct mesh_proxy_inputs *in,
                        uint64_t inputs_gen, const struct mesh_proxy_snapshot *prev,
                        const struct want_listener *wl, size_t n, struct mesh_proxy_snapshot **ret);
void mesh_snap_eps_unref(struct snap_eps *e);
/* The vhost for a Host header value, on the shared listener; NULL when none. */
struct snap_vhost *mesh_snapshot_vhost_by_host(const struct mesh_proxy_snapshot *s,
                                               const char *host, size_t len);

void mesh_snapshot_ref(struct mesh_proxy_snapshot *s);
void mesh_snapshot_unref(struct mesh_proxy_snapshot *s);
struct snap_listener *mesh_snapshot_listener(const struct mesh_proxy_snapshot *s, const char *key);
/* The local service an inbound mTLS SNI names: the instance "<port>.<service>.<namespace>",
 * else the service "<service>.<namespace>" (its first instance); or NULL. */
struct snap_listener *mesh_snapshot_sni_listener(const struct mesh_proxy_snapshot *s,
                                                 const char *sni);
struct snap_dest *mesh_snapshot_dest(const struct mesh_proxy_snapshot *s, const char *key);
/* The endpoint of d at addr (binary search), or NULL. */
struct snap_endpoint *mesh_snapshot_find_ep(const struct snap_dest *d, const struct mesh_ipport *a);
/* Where to connect for e: its host agent's mTLS port when `mtls` and it has one, else e. */
void mesh_ep_sockaddr(const struct snap_endpoint *e, bool mtls, struct mesh_addr *ret);

/* Builds the consistent-hash ring of d (main loop, at snapshot build). */
int mesh_ring_build(struct snap_dest *d);
uint64_t mesh_hash_client(const struct mesh_addr *client);

void mesh_dest_state_unref(struct mesh_dest_state *s);
/* s's HTTP statistics, made when first needed (any thread); never NULL: out of memory, a
 * shared sink takes the counts. */
struct mesh_http_stats *mesh_dest_http(struct mesh_dest_state *s);
/* The same for reading: NULL when no request has been counted yet. */
const struct mesh_http_stats *mesh_dest_http_if_any(const struct mesh_dest_state *s);
void mesh_ep_state_unref(struct mesh_ep_state *s);
/* How many times an endpoint state was left to the registry alone (any thread): a sweep
 * has work when this moved. */
uint64_t mesh_ep_states_released(void);

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
/* An HTTP response from ep: 5xx and gateway errors in a row count toward ejection. */
void mesh_outlier_http_status(struct mesh_proxy_shared *sh, const struct snap_dest *d,
                              const struct snap_endpoint *ep, uint64_t now, int status);

/* Takes a token from the bucket of st (any thread); false when empty. *retry_after_s says
 * when the next token is due. */
bool mesh_bucket_take(struct mesh_http_stats *st, const struct mesh_rate_limit_policy *p,
                      uint64_t now, unsigned *retry_after_s);
/* The HTTP families of /metrics. */
void mesh_http_metrics(const struct mesh_proxy_snapshot *s, struct mesh_buf *b);
/* Records a finished request in st. */
void mesh_http_stats_record(struct mesh_http_stats *st, int status, uint64_t duration_us);

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
