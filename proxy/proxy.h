/*
 * The data plane: L4 listeners for local services' upstreams and inbound ports, load
 * balancing, health checking, outlier ejection, circuit breaking and draining, on N worker
 * threads. The agent owns one and feeds it with what it knows; everything here is driven
 * from the agent's main loop except the workers, which run their own loops.
 *
 * Lifecycle: new -> start -> update* -> stop(drain, done) -> free.
 */
#ifndef MESH_PROXY_H
#define MESH_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "catalog/service.h"
#include "catalog/service_addr.h"
#include "catalog/view.h"
#include "common/buf.h"
#include "common/hmap.h"
#include "common/http_parse.h"
#include "common/path_normalize.h"
#include "resources/resource.h"

struct mesh_proxy;

struct mesh_http_options {
    uint64_t header_timeout_ms; /* a request head must be in within it (408) */
    uint64_t idle_timeout_ms;   /* a keep-alive client connection may idle that long */
    struct mesh_http_limits limits;
    /* How request paths are normalized before routing and authorization (docs/http.md). */
    struct mesh_path_options path;
    bool path_given; /* false: MESH_PATH_OPTIONS_DEFAULT, whatever `path` holds */
    /* HTTP/2 from clients (docs/http2.md); zero: the defaults. */
    uint32_t h2_max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t h2_max_header_list;        /* SETTINGS_MAX_HEADER_LIST_SIZE, enforced (431) */
    uint32_t h2_max_resets;             /* RST_STREAMs a client may send per window... */
    uint64_t h2_reset_window_ms;        /* ...before GOAWAY(ENHANCE_YOUR_CALM) */
};

struct mesh_proxy_options {
    int workers;         /* threads; 0: one per CPU */
    int max_connections; /* over it, new connections are refused */
    size_t buffer_size;  /* per read */
    int backlog;
    struct mesh_http_options http; /* zero: the defaults */
    const char *access_log;        /* NULL or "": none; "stdout", "stderr" or a file */
    size_t max_series; /* series of the istio_* metrics at most (telemetry.max_series); 0: 10000 */
    /* Called on the loop when the workers took a new snapshot, and when a listener that
     * had failed is bound at last (it reaches the workers with the next update if it
     * moved): what readiness looks at may have changed. May be NULL. */
    void (*changed)(void *data);
    void *changed_data;
};

/*
 * Transparent capture (docs/capture.md): the listeners nftables redirects to, and what
 * they do with what arrives there.
 */
struct mesh_vip_table;

struct mesh_proxy_capture {
    struct mesh_addr outbound;  /* 127.0.0.1:<port>; port 0: no outbound capture */
    struct mesh_addr outbound6; /* [::1]:<port> when IPv6 is captured; port 0: none */
    struct mesh_addr inbound;   /* 0.0.0.0:<port>; port 0: no inbound capture */
    struct mesh_addr inbound6;  /* [::]:<port> when IPv6 is captured; port 0: none */
    bool refuse_unknown; /* a destination that is no mesh service: refuse, else pass through */
    bool permissive;     /* inbound: plaintext from the network reaches the workload */
    /* The services' virtual IPs (catalog/vip.h), so that a call to <vip>:<port> reaches the
     * service; NULL: none (the DNS responder is off). Borrowed. */
    struct mesh_vip_table *vips;
    /* Other addresses of services (Kubernetes ClusterIP:port, catalog/service_addr.h): a
     * call to one reaches its service as a call to an endpoint does. Borrowed. */
    const struct mesh_service_addr *service_addrs;
    size_t n_service_addrs;
    /* This host's workloads by the address they call from (Kubernetes node mode: its pods),
     * so that a connection captured from one names its caller (the access log's
     * downstream_identity). Borrowed. */
    const struct mesh_workload_identity *sources;
    size_t n_sources;
    bool pods; /* the node's pods are captured (Kubernetes node mode) */
};

/* What the data plane is built from, at each update. Borrowed for the call only. */
struct mesh_proxy_inputs {
    const struct mesh_catalog *catalog;
    const struct mesh_local_service *const *locals; /* services on this host */
    size_t n_locals;
    const struct mesh_resource_view *resources; /* may be NULL */
    const char *node_zone;                      /* "" when unknown */
    struct mesh_addr http_listener;             /* the shared outbound HTTP one; port 0: none */
    struct mesh_tls_material *tls;              /* NULL: no mTLS */
    struct mesh_addr mtls_listener;             /* the inbound mTLS one (with tls) */
    /* The controller's membership: endpoint IP (as text) -> its agent's mTLS port, for
     * endpoints that do not say so themselves. May be NULL. */
    const struct mesh_hmap *members;
    uint64_t members_version;                 /* changes whenever members does */
    const struct mesh_proxy_capture *capture; /* NULL: no transparent capture */
};

/* Creates the proxy; nothing runs until start. Returns 0 or a negative errno. */
int mesh_proxy_new(uv_loop_t *loop, const struct mesh_proxy_options *opts, struct mesh_proxy **ret);
/* Starts the worker threads. Returns 0 or a negative errno. */
int mesh_proxy_start(struct mesh_proxy *p);
/*
 * Builds a snapshot from `in` and hands it to the workers: new connections use it at once
 * (once each worker has taken it: mesh_proxy_in_effect), connections in progress keep
 * theirs. Listeners that cannot be bound are reported (log, status, metrics, and
 * mesh_proxy_listener_problem) and retried; the others run. A listener that moves to an
 * address it cannot bind keeps serving on its old one until it can. Returns 0, or
 * -ENOMEM (the previous snapshot stays).
 */
int mesh_proxy_update(struct mesh_proxy *p, const struct mesh_proxy_inputs *in);
/*
 * Stops accepting, lets connections finish for up to drain_ms, then closes the rest, joins
 * the workers and calls done(data) on the loop. The proxy is then freed.
 */
void mesh_proxy_stop(struct mesh_proxy *p, uint64_t drain_ms, void (*done)(void *data), void *data);
/* During a stop: closes every connection now. */
void mesh_proxy_abort(struct mesh_proxy *p);

/* Changes the cap on series of the istio_* metrics (a reload; series past a lower cap stay). */
void mesh_proxy_set_max_series(struct mesh_proxy *p, size_t max);
/* Changes the cap on open connections (a reload). */
void mesh_proxy_set_max_connections(struct mesh_proxy *p, int max);
/* Points the access log somewhere else: _open then _use. Returns 0 or a negative errno. */
int mesh_proxy_set_access_log(struct mesh_proxy *p, const char *where);
/*
 * A reload in two steps: opens where the access log is to go ("" or NULL: nowhere, then
 * *ret_fd is -1; "stdout", "stderr" or a file, opened for appending). Returns 0 or a
 * negative errno. Close an fd that is not used with close().
 */
int mesh_proxy_access_log_open(const char *where, int *ret_fd);
/* Takes fd (from _open; -1 turns the access log off) and sends the next lines there. */
void mesh_proxy_access_log_use(struct mesh_proxy *p, int fd);

void mesh_proxy_metrics(struct mesh_proxy *p, struct mesh_buf *b);
json_t *mesh_proxy_status(struct mesh_proxy *p);
/* Listeners that failed to bind, for readiness and status. */
size_t mesh_proxy_listener_errors(const struct mesh_proxy *p);
/* The first listener that is wanted and not bound, described in `out`; false when none. */
bool mesh_proxy_listener_problem(const struct mesh_proxy *p, char *out, size_t n);
/* Whether a listener bound since the last update waits for one to reach the workers. */
bool mesh_proxy_needs_update(const struct mesh_proxy *p);
/* Whether every worker has taken the newest snapshot. */
bool mesh_proxy_in_effect(const struct mesh_proxy *p);
/* Whether nothing holds `a` now (it could be listened on). Returns 0 or -errno. */
int mesh_proxy_can_listen(const struct mesh_addr *a);
/* Open proxied connections right now. */
int mesh_proxy_active(const struct mesh_proxy *p);
/*
 * The traffic between services since the proxy started, from its istio_* series, for the
 * controller's service graph: a JSON array of edges (at most max_edges), each
 * {"reporter": "source"|"destination", "protocol": "http"|"tcp", "source_namespace",
 * "source_workload", "destination_namespace", "destination_service"} (DNS labels or
 * "unknown") with cumulative counters: HTTP "requests", "errors" (5xx, no answer, or a
 * local refusal), "duration_us" and "duration_buckets" (per bucket of Istio's duration
 * histogram, not cumulative, the last +Inf); TCP "connections_opened",
 * "connections_closed", "bytes_sent", "bytes_received". NULL: out of memory. Main loop.
 */
json_t *mesh_proxy_traffic(struct mesh_proxy *p, size_t max_edges);

#endif
