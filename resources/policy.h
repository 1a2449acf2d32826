/*
 * Destination policy: how connections to one service are balanced, timed out, retried,
 * limited and health-checked. A resource {"kind": "DestinationPolicy", "name", "namespace",
 * "spec"}; services without one use the defaults. See docs/resources.md.
 */
#ifndef MESH_POLICY_H
#define MESH_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/cfg.h"
#include "resources/route.h"

enum mesh_lb_kind {
    MESH_LB_ROUND_ROBIN,   /* smooth weighted round robin */
    MESH_LB_LEAST_REQUEST, /* power of two choices on active connections */
    MESH_LB_RANDOM,        /* weighted random */
    MESH_LB_RING_HASH,     /* consistent hashing on the client address */
};

extern const char *const mesh_lb_names[];

struct mesh_health_check_policy {
    bool enabled; /* set when the key is present */
    uint64_t interval_ms;
    uint64_t timeout_ms;
    int healthy_threshold;
    int unhealthy_threshold;
    char *http_path;  /* NULL: a TCP connect check; else GET this path */
    int expected_min; /* an HTTP check passes on a status in [min, max] */
    int expected_max;
};

struct mesh_outlier_policy {
    bool enabled;
    int consecutive_failures;
    uint64_t base_ejection_ms;
    uint64_t max_ejection_ms;
    int max_ejection_percent;
    int consecutive_5xx;            /* HTTP: 5xx responses in a row; 0: not counted */
    int consecutive_gateway_errors; /* HTTP: 502/503/504 in a row; 0: not counted */
};

struct mesh_zone_policy {
    bool enabled;
    int min_healthy_percent;
};

struct mesh_pool_policy {
    int max_idle;             /* idle upstream connections kept per endpoint and worker */
    uint64_t idle_timeout_ms; /* an idle upstream connection is closed after it */
};

struct mesh_dest_policy {
    char *service; /* NULL: the resource name */
    int lb;        /* enum mesh_lb_kind */
    int min_ring_size;
    struct mesh_zone_policy zone_aware;
    uint64_t connect_timeout_ms;
    /* HTTP: each try's connect and response head, when the route rule sets no
     * per_try_timeout; 0: none. */
    uint64_t per_try_timeout_ms;
    uint64_t idle_timeout_ms;
    int connect_retries;
    int max_connections; /* 0: no limit */
    /* Below this share of eligible endpoints (of those ready), balance over every ready one
     * (Envoy's healthy_panic_threshold). */
    int healthy_panic_threshold;
    uint64_t drain_timeout_ms;
    struct mesh_health_check_policy health_check;
    struct mesh_outlier_policy outlier;
    /* HTTP only: */
    int max_requests;         /* in flight at once, every worker; 0: no limit */
    int max_pending_requests; /* waiting for an upstream connection; 0: no limit */
    struct mesh_pool_policy pool;
    struct mesh_rate_limit_policy rate_limit;
};

/* The "spec" of a DestinationPolicy. */
extern const struct mesh_cfg_schema mesh_dest_policy_schema;

/* Fills the defaults (what a service without a policy gets). Returns 0 or -ENOMEM. */
int mesh_dest_policy_defaults(struct mesh_dest_policy *p);
void mesh_dest_policy_done(struct mesh_dest_policy *p);

#endif
