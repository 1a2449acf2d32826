/*
 * The "tracing" section of agent.json: where spans are exported and how many are kept
 * (docs/tracing.md). Decoded by the schema in agent/config_tracing.c. Off unless an endpoint
 * is given.
 */
#ifndef MESH_AGENT_CONFIG_TRACING_H
#define MESH_AGENT_CONFIG_TRACING_H

#include <stdbool.h>
#include <stdint.h>

#include "common/cfg.h"

/* A share in [0, 1]; absent: 1. */
struct mesh_agent_ratio {
    bool given;
    double v;
};

struct mesh_agent_tracing_config {
    char *otlp_endpoint;   /* "" none: an OTLP/HTTP traces URL (JSON), like .../v1/traces */
    char *zipkin_endpoint; /* "" none: a Zipkin v2 spans URL, like .../api/v2/spans */
    struct mesh_agent_ratio sampling_ratio; /* of new traces; a caller's decision is kept */
    int queue_size;                         /* spans waiting per endpoint, at most */
    int batch_size;                         /* spans per request, at most */
    uint64_t flush_interval_ms;             /* a partial batch waits that long at most */
    uint64_t timeout_ms;                    /* one export request */
    uint64_t max_backoff_ms;                /* between retries of a batch, at most */
};

extern const struct mesh_cfg_schema mesh_agent__tracing_schema;

/* Whether spans are recorded and exported: an endpoint is set. */
bool mesh_agent_tracing_on(const struct mesh_agent_tracing_config *c);
double mesh_agent_tracing_ratio(const struct mesh_agent_tracing_config *c);

#endif
