/*
 * Istio's standard metrics (docs/metrics.md): one series per label set actually seen,
 * in a table shared by the workers, with a cap on the number of series.
 *
 * Label sets are built from parts precomputed at snapshot build (the destination of a
 * snap_dest, the local side of a snap_listener) and per connection (the caller's identity
 * on the inbound side): a request only appends its response code and flags and looks the
 * set up.
 */
#ifndef MESH_ISTIO_INT_H
#define MESH_ISTIO_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/report_traffic.h"

/* Envoy's default histogram bounds, which Istio's histograms use (then +Inf). */
/* The histogram of durations is the one agents report (common/report_traffic.h). */
#define MESH_ISTIO_BUCKETS MESH_REPORT_TRAFFIC_BOUNDS
extern const double mesh_istio_bounds[MESH_ISTIO_BUCKETS];

#define MESH_ISTIO_MAX_SERIES_DEFAULT 10000
#define MESH_ISTIO_LABELS_MAX 2048 /* a label set longer than this is cut to "overflow" */

struct mesh_istio_hist {
    atomic_ullong b[MESH_ISTIO_BUCKETS + 1];
    atomic_ullong sum; /* in the unit of the bounds, times 1000 for the duration (us) */
};

/* One label set: HTTP (requests, duration, sizes) or TCP (bytes, connections). */
struct mesh_istio_series {
    struct mesh_istio_series *next; /* in its hash slot */
    uint64_t hash;
    bool tcp;
    atomic_ullong requests;
    struct mesh_istio_hist duration, req_bytes, res_bytes;
    atomic_ullong sent, received, opened, closed;
    size_t len;
    char labels[]; /* `a="x",b="y"`, values escaped */
};

struct mesh_istio_table {
    /* Set by a successful init, before any thread sees the table, and never changed until
     * done: the readers' test for a table that exists (slots itself changes under the lock
     * when it grows, on worker threads). */
    bool ready;
    pthread_mutex_t lock;
    struct mesh_istio_series **slots;
    size_t n_slots, n;
    atomic_size_t max;     /* series at most; new label sets beyond it are dropped */
    atomic_ullong dropped; /* observations of label sets refused by the cap */
};

/* Returns 0 or -ENOMEM. max: the cap (0: the default). */
int mesh_istio_table_init(struct mesh_istio_table *t, size_t max);
void mesh_istio_table_done(struct mesh_istio_table *t);
void mesh_istio_table_set_max(struct mesh_istio_table *t, size_t max);
/* The series of labels[0..len), made when new (any thread). NULL: the cap is reached (the
 * observation is counted in `dropped`) or out of memory. */
struct mesh_istio_series *mesh_istio_series(struct mesh_istio_table *t, bool tcp,
                                            const char *labels, size_t len);
/* A finished HTTP request: its duration (us) and body sizes. */
void mesh_istio_record_http(struct mesh_istio_series *s, uint64_t duration_us, uint64_t req_bytes,
                            uint64_t res_bytes);
/* The istio_* families and mesh_metrics_series_* of /metrics. */
void mesh_istio_metrics(struct mesh_istio_table *t, struct mesh_buf *b);

/* The traffic per edge, summed from the series (istio_edges.c): mesh_proxy_traffic. */
json_t *mesh_istio_traffic(struct mesh_istio_table *t, size_t max_edges);

/* ---- label parts (istio_labels.c), malloc'd strings; NULL: out of memory ---- */

/* Appends value to b, escaped for a label value; "unknown" when NULL or empty. */
void mesh_istio_append_value(struct mesh_buf *b, const char *value);
/* `source_workload=..,source_workload_namespace=..,source_principal=..` of a local service
 * (ns and name NULL: the node, "unknown"), principal its SPIFFE ID or NULL. */
char *mesh_istio_source_part(const char *ns, const char *name, const char *principal);
/* The same from a caller's verified SPIFFE ID (".../ns/<ns>/sa/<sa>"), or NULL (plain). */
char *mesh_istio_peer_part(const char *spiffe_id);
/* The destination_* labels of a service "ns/name" (or "inbound:ns/name[:port]"), its
 * subset key ("ns/name{k=v,...}", for the version) and principal. */
char *mesh_istio_dest_part(const char *service, const char *subset_key, const char *principal);

#endif
