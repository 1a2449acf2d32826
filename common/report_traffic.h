/*
 * The wire format of the traffic in an agent's report to the controller (its service
 * graph, docs/controller.md#console): the constants both sides must agree on. The agent's
 * proxy writes it (proxy/istio_edges.c, agent/ctl_report.h), the controller reads it
 * (controller/traffic.c); neither may include the other (docs/modules.md), so they meet
 * here.
 *
 * Each edge of an HTTP report carries "duration_buckets": MESH_REPORT_TRAFFIC_BUCKETS
 * counts, one per bound of MESH_REPORT_TRAFFIC_BOUNDS_MS (Istio's duration histogram,
 * Envoy's default bounds, in milliseconds) and the last for +Inf, not cumulative.
 */
#ifndef MESH_COMMON_REPORT_TRAFFIC_H
#define MESH_COMMON_REPORT_TRAFFIC_H

/* Edges in one report at most (the controller refuses more: 400). */
#define MESH_REPORT_TRAFFIC_EDGES_MAX 256

/* The bounds of the duration histogram, in ms: an initializer list. */
#define MESH_REPORT_TRAFFIC_BOUNDS_MS                                                              \
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,   \
        1800000, 3600000
#define MESH_REPORT_TRAFFIC_BOUNDS 19
_Static_assert(sizeof((double[]){MESH_REPORT_TRAFFIC_BOUNDS_MS}) ==
                   MESH_REPORT_TRAFFIC_BOUNDS * sizeof(double),
               "MESH_REPORT_TRAFFIC_BOUNDS counts MESH_REPORT_TRAFFIC_BOUNDS_MS");
/* Its buckets: one per bound and +Inf. */
#define MESH_REPORT_TRAFFIC_BUCKETS (MESH_REPORT_TRAFFIC_BOUNDS + 1)

#endif
