#define MESH_LOG_MODULE "config"

/* The "tracing" section of agent.json (agent/config_tracing.h, docs/tracing.md). */
#include "agent/config_tracing.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "common/macros.h"

#define T(m) MESH_CFG_FIELD(struct mesh_agent_tracing_config, m)

static const char *check_url(const char *s)
{
    if (!s[0])
        return NULL;
    const char *host = strncmp(s, "http://", 7) == 0    ? s + 7
                       : strncmp(s, "https://", 8) == 0 ? s + 8
                                                        : NULL;
    if (!host || !host[0] || host[0] == '/')
        return "an http:// or https:// URL with a host, or \"\" for none";
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return "a URL without spaces or control characters";
    }
    return NULL;
}

static int decode_ratio(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_agent_ratio *r = field;
    char got[64];
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0 ||
        json_number_value(v) > 1) {
        mesh_cfg_describe(v, got, sizeof(got));
        mesh_cfg_error(ctx,
                       "expected a number from 0 to 1 (the share of new traces sampled), "
                       "got %s",
                       got);
        return -EINVAL;
    }
    r->given = true;
    r->v = json_number_value(v);
    return 0;
}

static json_t *encode_ratio(const void *field)
{
    const struct mesh_agent_ratio *r = field;
    return json_real(r->given ? r->v : 1.0);
}

static void check_tracing(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_agent_tracing_config *c = obj;
    if (c->batch_size > c->queue_size) {
        size_t o = mesh_cfg_path_push_key(ctx, "batch_size");
        mesh_cfg_error(ctx, "expected at most queue_size (%d), got %d", c->queue_size,
                       c->batch_size);
        mesh_cfg_path_pop(ctx, o);
    }
}

static const struct mesh_cfg_field tracing_fields[] = {
    {.key = "otlp_endpoint",
     .type = MESH_CFG_STRING,
     T(otlp_endpoint),
     .def = "",
     .expect = "an OTLP/HTTP traces URL like \"http://collector:4318/v1/traces\", or \"\"",
     .check = check_url},
    {.key = "zipkin_endpoint",
     .type = MESH_CFG_STRING,
     T(zipkin_endpoint),
     .def = "",
     .expect = "a Zipkin URL like \"http://zipkin:9411/api/v2/spans\", or \"\"",
     .check = check_url},
    {.key = "sampling_ratio",
     .type = MESH_CFG_CUSTOM,
     T(sampling_ratio),
     .decode = decode_ratio,
     .encode = encode_ratio},
    {.key = "queue_size",
     .type = MESH_CFG_INT,
     T(queue_size),
     .def_int = 2048,
     .min = 1,
     .max = 100000,
     .expect = "a number of spans from 1 to 100000"},
    {.key = "batch_size",
     .type = MESH_CFG_INT,
     T(batch_size),
     .def_int = 512,
     .min = 1,
     .max = 10000,
     .expect = "a number of spans from 1 to 10000"},
    {.key = "flush_interval",
     .type = MESH_CFG_DURATION,
     T(flush_interval_ms),
     .def = "5s",
     .min = 10,
     .max = 300000,
     .expect = "a duration from 10ms to 5m"},
    {.key = "timeout",
     .type = MESH_CFG_DURATION,
     T(timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 300000,
     .expect = "a duration from 100ms to 5m"},
    {.key = "max_backoff",
     .type = MESH_CFG_DURATION,
     T(max_backoff_ms),
     .def = "30s",
     .min = 100,
     .max = 600000,
     .expect = "a duration from 100ms to 10m"},
    {0},
};

const struct mesh_cfg_schema mesh_agent__tracing_schema = {
    .size = sizeof(struct mesh_agent_tracing_config),
    .fields = tracing_fields,
    .check = check_tracing,
};

bool mesh_agent_tracing_on(const struct mesh_agent_tracing_config *c)
{
    return (c->otlp_endpoint && c->otlp_endpoint[0]) ||
           (c->zipkin_endpoint && c->zipkin_endpoint[0]);
}

double mesh_agent_tracing_ratio(const struct mesh_agent_tracing_config *c)
{
    return c->sampling_ratio.given ? c->sampling_ratio.v : 1.0;
}
