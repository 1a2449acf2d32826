#include "resources/policy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/names.h"

const char *const mesh_lb_names[] = {"round_robin", "least_request", "random", "ring_hash", NULL};

static const char *check_path(const char *s)
{
    if (s[0] != '/')
        return "must start with '/'";
    for (; *s; s++) {
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return "no spaces or control characters";
    }
    return NULL;
}

/* "200-399" or "204": the statuses an HTTP health check accepts. */
static int decode_status_range(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_health_check_policy *h =
        container_of((int *)field, struct mesh_health_check_policy, expected_min);
    int lo = 0, hi = 0, used = 0;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    if (sscanf(s, "%3d-%3d%n", &lo, &hi, &used) == 2 && s[used] == '\0') {
        /* a range */
    } else if (sscanf(s, "%3d%n", &lo, &used) == 1 && s[used] == '\0') {
        hi = lo;
    } else {
        lo = 0;
    }
    if (lo < 100 || hi > 599 || lo > hi) {
        mesh_cfg_error(ctx, "expected statuses like \"200-399\" or \"204\"");
        return -EINVAL;
    }
    h->expected_min = lo;
    h->expected_max = hi;
    return 0;
}

#define H(m) MESH_CFG_FIELD(struct mesh_health_check_policy, m)

static const struct mesh_cfg_field health_fields[] = {
    {.key = "interval",
     .type = MESH_CFG_DURATION,
     H(interval_ms),
     .def = "5s",
     .min = 100,
     .max = 3600000},
    {.key = "timeout",
     .type = MESH_CFG_DURATION,
     H(timeout_ms),
     .def = "1s",
     .min = 10,
     .max = 600000},
    {.key = "healthy_threshold",
     .type = MESH_CFG_INT,
     H(healthy_threshold),
     .def_int = 2,
     .min = 1,
     .max = 100},
    {.key = "unhealthy_threshold",
     .type = MESH_CFG_INT,
     H(unhealthy_threshold),
     .def_int = 3,
     .min = 1,
     .max = 100},
    {.key = "http_path",
     .type = MESH_CFG_STRING,
     H(http_path),
     .expect = "a path like \"/healthz\"",
     .check = check_path},
    {.key = "expected_statuses",
     .type = MESH_CFG_CUSTOM,
     H(expected_min),
     .decode = decode_status_range},
    {0},
};

static void check_health(struct mesh_cfg_ctx *ctx, void *obj)
{
    struct mesh_health_check_policy *h = obj;
    h->enabled = true; /* present means on */
    if (!h->expected_min) {
        h->expected_min = 200;
        h->expected_max = 399;
    }
    if (h->timeout_ms >= h->interval_ms)
        mesh_cfg_error(ctx, "timeout must be shorter than interval");
}

static const struct mesh_cfg_schema health_schema = {
    .size = sizeof(struct mesh_health_check_policy),
    .fields = health_fields,
    .check = check_health,
};

#define O(m) MESH_CFG_FIELD(struct mesh_outlier_policy, m)

static const struct mesh_cfg_field outlier_fields[] = {
    {.key = "enabled", .type = MESH_CFG_BOOL, O(enabled), .def_int = 1},
    {.key = "consecutive_failures",
     .type = MESH_CFG_INT,
     O(consecutive_failures),
     .def_int = 5,
     .min = 1,
     .max = 1000},
    {.key = "base_ejection_time",
     .type = MESH_CFG_DURATION,
     O(base_ejection_ms),
     .def = "30s",
     .min = 100,
     .max = 86400000},
    {.key = "max_ejection_time",
     .type = MESH_CFG_DURATION,
     O(max_ejection_ms),
     .def = "5m",
     .min = 100,
     .max = 86400000},
    {.key = "max_ejection_percent",
     .type = MESH_CFG_INT,
     O(max_ejection_percent),
     .def_int = 50,
     .min = 0,
     .max = 100},
    {.key = "consecutive_5xx",
     .type = MESH_CFG_INT,
     O(consecutive_5xx),
     .def_int = 5,
     .min = 0,
     .max = 1000},
    {.key = "consecutive_gateway_errors",
     .type = MESH_CFG_INT,
     O(consecutive_gateway_errors),
     .def_int = 0,
     .min = 0,
     .max = 1000},
    {0},
};

static void check_outlier(struct mesh_cfg_ctx *ctx, void *obj)
{
    struct mesh_outlier_policy *o = obj;
    if (o->max_ejection_ms < o->base_ejection_ms)
        mesh_cfg_error(ctx, "max_ejection_time must not be shorter than base_ejection_time");
}

static const struct mesh_cfg_schema outlier_schema = {
    .size = sizeof(struct mesh_outlier_policy),
    .fields = outlier_fields,
    .check = check_outlier,
};

#define Z(m) MESH_CFG_FIELD(struct mesh_zone_policy, m)

static const struct mesh_cfg_field zone_fields[] = {
    {.key = "enabled", .type = MESH_CFG_BOOL, Z(enabled), .def_int = 1},
    {.key = "min_healthy_percent",
     .type = MESH_CFG_INT,
     Z(min_healthy_percent),
     .def_int = 70,
     .min = 0,
     .max = 100},
    {0},
};

static const struct mesh_cfg_schema zone_schema = {
    .size = sizeof(struct mesh_zone_policy),
    .fields = zone_fields,
};

#define PO(m) MESH_CFG_FIELD(struct mesh_pool_policy, m)

static const struct mesh_cfg_field pool_fields[] = {
    {.key = "max_idle",
     .type = MESH_CFG_INT,
     PO(max_idle),
     .def_int = 1024,
     .min = 0,
     .max = 100000},
    {.key = "idle_timeout",
     .type = MESH_CFG_DURATION,
     PO(idle_timeout_ms),
     .def = "30s",
     .min = 100,
     .max = 86400000},
    {0},
};

static const struct mesh_cfg_schema pool_schema = {
    .size = sizeof(struct mesh_pool_policy),
    .fields = pool_fields,
};

#define P(m) MESH_CFG_FIELD(struct mesh_dest_policy, m)

static const struct mesh_cfg_field policy_fields[] = {
    {.key = "service",
     .type = MESH_CFG_STRING,
     P(service),
     .expect = "a service name",
     .check = mesh_name_check_dns_label},
    {.key = "load_balancer",
     .type = MESH_CFG_ENUM,
     P(lb),
     .choices = mesh_lb_names,
     .def = "round_robin"},
    {.key = "min_ring_size",
     .type = MESH_CFG_INT,
     P(min_ring_size),
     .def_int = 1024,
     .min = 16,
     .max = 1 << 20},
    {.key = "zone_aware", .type = MESH_CFG_OBJECT, P(zone_aware), .schema = &zone_schema},
    {.key = "connect_timeout",
     .type = MESH_CFG_DURATION,
     P(connect_timeout_ms),
     .def = "5s",
     .min = 10,
     .max = 600000},
    {.key = "per_try_timeout",
     .type = MESH_CFG_DURATION,
     P(per_try_timeout_ms),
     .def = "5s",
     .max = 600000},
    {.key = "idle_timeout",
     .type = MESH_CFG_DURATION,
     P(idle_timeout_ms),
     .def = "1h",
     .min = 100,
     .max = 604800000},
    {.key = "connect_retries",
     .type = MESH_CFG_INT,
     P(connect_retries),
     .def_int = 2,
     .min = 0,
     .max = 10},
    {.key = "max_connections",
     .type = MESH_CFG_INT,
     P(max_connections),
     .def_int = 0,
     .min = 0,
     .max = 10000000},
    {.key = "healthy_panic_threshold",
     .type = MESH_CFG_INT,
     P(healthy_panic_threshold),
     .def_int = 50,
     .min = 0,
     .max = 100},
    {.key = "drain_timeout",
     .type = MESH_CFG_DURATION,
     P(drain_timeout_ms),
     .def = "1m",
     .min = 0,
     .max = 86400000},
    {.key = "health_check", .type = MESH_CFG_OBJECT, P(health_check), .schema = &health_schema},
    {.key = "outlier_detection", .type = MESH_CFG_OBJECT, P(outlier), .schema = &outlier_schema},
    {.key = "max_requests",
     .type = MESH_CFG_INT,
     P(max_requests),
     .def_int = 0,
     .min = 0,
     .max = 10000000},
    {.key = "max_pending_requests",
     .type = MESH_CFG_INT,
     P(max_pending_requests),
     .def_int = 0,
     .min = 0,
     .max = 10000000},
    {.key = "connection_pool", .type = MESH_CFG_OBJECT, P(pool), .schema = &pool_schema},
    {.key = "rate_limit", .type = MESH_CFG_CUSTOM, P(rate_limit), .decode = mesh_rate_limit_decode},
    {0},
};

const struct mesh_cfg_schema mesh_dest_policy_schema = {
    .size = sizeof(struct mesh_dest_policy),
    .fields = policy_fields,
};

int mesh_dest_policy_defaults(struct mesh_dest_policy *p)
{
    int r = mesh_cfg_defaults(&mesh_dest_policy_schema, p);
    /* Defaults for the nested objects are their own tables'; a present health_check turns on. */
    p->health_check.enabled = false;
    p->health_check.expected_min = 200;
    p->health_check.expected_max = 399;
    return r;
}

void mesh_dest_policy_done(struct mesh_dest_policy *p)
{
    mesh_cfg_free(&mesh_dest_policy_schema, p);
}
