/*
 * The traffic between services, from the agents' reports, and the service graph built
 * from it (GET /v1/graph, the console's picture of the mesh).
 *
 * Each report may carry "traffic": the agent's edges (reporter, protocol, source workload,
 * destination service) with counters cumulative since its proxy started (see
 * mesh_proxy_traffic in proxy/proxy.h). The controller checks them strictly
 * (mesh_ctl_traffic_check: a bad report is refused whole, 400) and keeps the last
 * MESH_CTL_TRAFFIC_SAMPLES reports of each node: rates are the differences between the
 * newest and the oldest of them, per second. A report without "traffic" (an older agent)
 * is accepted and shows no edges. Memory is bounded: at most MESH_CTL_TRAFFIC_EDGES_MAX
 * edges per report, MESH_CTL_TRAFFIC_SAMPLES reports per node (480 bytes an edge: 740 KB per node
 * at the cap, 30 KB for ten edges), at most edges_max edges kept across all nodes (a report
 * beyond it keeps its services, not its edges), and a node's samples are dropped when it
 * leaves, goes offline or is reset.
 *
 * Main loop only.
 */
#ifndef MESH_CONTROLLER_TRAFFIC_H
#define MESH_CONTROLLER_TRAFFIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/hmap.h"
#include "common/report_traffic.h"

#define MESH_CTL_TRAFFIC_EDGES_MAX MESH_REPORT_TRAFFIC_EDGES_MAX
#define MESH_CTL_TRAFFIC_SAMPLES 6
/* Edges kept across all nodes and samples at most (the default of edges_max): 128 MB. */
#define MESH_CTL_TRAFFIC_TOTAL_EDGES_MAX (1u << 18)
/* Istio's duration histogram (Envoy's default bounds, in ms) and its +Inf bucket. */
#define MESH_CTL_TRAFFIC_BUCKETS MESH_REPORT_TRAFFIC_BUCKETS
extern const double mesh_ctl_traffic_bounds[MESH_CTL_TRAFFIC_BUCKETS - 1];

enum {
    MESH_CTL_TC_REQUESTS,
    MESH_CTL_TC_ERRORS,
    MESH_CTL_TC_DURATION_US,
    MESH_CTL_TC_OPENED,
    MESH_CTL_TC_CLOSED,
    MESH_CTL_TC_SENT,
    MESH_CTL_TC_RECEIVED,
    MESH_CTL_TC_N
};

/* One edge of one report. */
struct mesh_ctl_edge {
    bool tcp;
    bool by_destination; /* reported by the destination's proxy, else by the source's */
    char src_ns[64], src_wl[64], dst_ns[64], dst_svc[64];
    uint64_t c[MESH_CTL_TC_N];
    uint64_t buckets[MESH_CTL_TRAFFIC_BUCKETS];
};

struct mesh_ctl_sample {
    uint64_t t_ms; /* loop time of the report */
    struct mesh_ctl_edge *edges;
    size_t n;
};

/* A node's last reports (a ring) and its services. */
struct mesh_ctl_node_traffic {
    struct mesh_ctl_sample s[MESH_CTL_TRAFFIC_SAMPLES];
    size_t n, next;   /* samples held; where the next goes */
    json_t *services; /* its last reported services (for the graph's nodes) */
    uint64_t seen_ms; /* its last report */
    char node[];
};

struct mesh_ctl_traffic {
    struct mesh_hmap nodes; /* node name -> struct mesh_ctl_node_traffic */
    size_t edges;           /* edges kept, all samples of all nodes */
    size_t edges_max;       /* the cap on edges (MESH_CTL_TRAFFIC_TOTAL_EDGES_MAX) */
};

void mesh_ctl_traffic_init(struct mesh_ctl_traffic *t);
void mesh_ctl_traffic_done(struct mesh_ctl_traffic *t);
/*
 * Checks a report's "traffic" (NULL: none, fine) and decodes it: true with *ret_edges
 * (caller frees with mesh_free; NULL when none) and *ret_n, or false with why (naming the
 * field: "traffic[2].errors: ...").
 */
bool mesh_ctl_traffic_check(const json_t *traffic, struct mesh_ctl_edge **ret_edges, size_t *ret_n,
                            char *why, size_t why_size);
/*
 * Keeps only the edges of the node's own side (compacting edges): a node counts the calls
 * its proxy made for its local services (reporter "source": the source workload is one of
 * `services`, or "unknown" in namespace "unknown", the node itself) and the calls into them
 * ("destination": the
 * destination service is one of them). Another node's edges, which an enrolled node could
 * invent, are left out. Returns how many stay.
 */
size_t mesh_ctl_traffic_own(struct mesh_ctl_edge *edges, size_t n, const json_t *services);
/* Keeps a node's report: its edges (taken, may be NULL) and services (a reference is
 * taken) at loop time now_ms. Returns 0; 1 when the edges were left out (freed, the sample
 * kept empty) because keeping them would pass edges_max; or -ENOMEM (edges freed). */
int mesh_ctl_traffic_note(struct mesh_ctl_traffic *t, const char *node, struct mesh_ctl_edge *edges,
                          size_t n, json_t *services, uint64_t now_ms);
/* Forgets a node's traffic (it left, went offline, or was reset). Unknown nodes: nothing. */
void mesh_ctl_traffic_forget(struct mesh_ctl_traffic *t, const char *node);
/*
 * The service graph at loop time now_ms (graph.c): services of nodes heard of within
 * offline_ms and the edges between them, with rates from the nodes that reported within
 * fresh_ms. NULL: out of memory. The shape is in docs/controller.md#console.
 */
json_t *mesh_ctl_graph(const struct mesh_ctl_traffic *t, uint64_t now_ms, uint64_t fresh_ms,
                       uint64_t offline_ms);

#endif
