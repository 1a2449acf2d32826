/*
 * The mesh's registry: every node's local services, from its reports, as one catalog that
 * agents watch with blocking queries.
 *
 * A node's services are kept under a lease: a node that stops reporting for `grace_ms` has
 * its endpoints marked unhealthy, and after `expiry_ms` they are removed; a node that says
 * it leaves (a clean stop) has them removed at once. Every change (a service, a label, a
 * health, an address, a lapse) bumps the index; GET /v1/catalog?index=N&wait=30s answers at
 * once when N is not the current index, else on the next change or after `wait`, as
 * Consul's blocking queries do. The index starts at the wall clock in milliseconds at each
 * start, so it never goes back across restarts; for one report interval after a start the
 * queries of agents that knew a catalog wait (the nodes have not reported yet), so that
 * they do not take an empty catalog for the truth.
 *
 * Main loop only.
 */
#ifndef MESH_CONTROLLER_CATALOG_H
#define MESH_CONTROLLER_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/http_server.h"

#define MESH_CTL_CATALOG_SERVICES_MAX 256 /* local services one node may report */

struct mesh_ctl_catalog_options {
    const char *trust_domain;    /* borrowed: outlives the catalog */
    uint64_t report_interval_ms; /* told to agents in each answer to a report */
    uint64_t grace_ms;           /* no report for this long: its endpoints are unhealthy */
    uint64_t expiry_ms;          /* and for this long: removed */
};

struct mesh_ctl_catalog;

int mesh_ctl_catalog_new(uv_loop_t *loop, const struct mesh_ctl_catalog_options *o,
                         struct mesh_ctl_catalog **ret);
/*
 * Checks the "services" of a report by `node` (NULL: none), whose node record allows the
 * identities `patterns` (a JSON array of SPIFFE ID patterns, or NULL). Returns true, or false
 * with why in err ("services[2].labels: ...").
 */
bool mesh_ctl_catalog_check(const struct mesh_ctl_catalog *c, const char *node,
                            const json_t *patterns, json_t *services, char *err, size_t err_size);
/*
 * Takes a checked report of `node`: its mesh address (an IP it owns), mTLS port (0: none),
 * zone ("" or NULL: none) and services (borrowed; copied). Renews its lease. Returns 0 or
 * -ENOMEM.
 */
int mesh_ctl_catalog_report(struct mesh_ctl_catalog *c, const char *node, const char *address,
                            int inbound_port, const char *zone, const json_t *services);
/* The node stopped cleanly, or was reset: its services go at once. */
void mesh_ctl_catalog_leave(struct mesh_ctl_catalog *c, const char *node);
/* GET /v1/catalog[?index=N&wait=D]: {"index", "services": [...]}, at once or later. */
void mesh_ctl_catalog_get(struct mesh_ctl_catalog *c, struct mesh_http_exchange *ex,
                          const char *query, size_t query_len);
uint64_t mesh_ctl_catalog_index(const struct mesh_ctl_catalog *c);
uint64_t mesh_ctl_catalog_report_interval(const struct mesh_ctl_catalog *c);
/* Counters for /metrics: services, endpoints, nodes lapsed, queries parked, changes. */
void mesh_ctl_catalog_stats(const struct mesh_ctl_catalog *c, uint64_t *ret_endpoints,
                            uint64_t *ret_lapsed, uint64_t *ret_parked, uint64_t *ret_changes);
/* Answers every parked query now (a stop). */
void mesh_ctl_catalog_wake(struct mesh_ctl_catalog *c);
/* Answers parked queries and closes its timers; freed once they closed. NULL is fine. */
void mesh_ctl_catalog_free(struct mesh_ctl_catalog *c);

#endif
