/*
 * The span exporter (docs/tracing.md): takes the spans the data plane's workers recorded
 * (mesh_proxy_take_spans) and sends them in batches to an OTLP/HTTP endpoint (JSON) and/or a
 * Zipkin v2 endpoint, with libcurl on the main loop (common/http_client.h).
 *
 * Each endpoint has its own bounded queue (tracing.queue_size spans): a span that finds it
 * full is dropped and counted, never kept in more memory. A batch leaves when it is full
 * (batch_size) or its oldest span waited flush_interval. A batch the collector could not take
 * (no connection, a timeout, 429, 502, 503, 504) is sent again after a backoff (doubling, up
 * to max_backoff, with jitter) and given up, counted as failed, after MESH_TRACE_GIVE_UP_MS;
 * one refused for good (another status) is counted as failed at once.
 *
 * Main loop only.
 */
#ifndef MESH_AGENT_TRACE_EXPORT_H
#define MESH_AGENT_TRACE_EXPORT_H

#include <uv.h>

#include "agent/config_tracing.h"
#include "common/buf.h"
#include "proxy/proxy.h"

#define MESH_TRACE_GIVE_UP_MS 300000

struct mesh_trace_exporter;

/*
 * Starts exporting what `proxy` records, as `cfg` says (copied). Both must stay until
 * mesh_trace_exporter_free. Returns 0, -ENOMEM, or -EINVAL when cfg names no endpoint.
 */
int mesh_trace_exporter_new(uv_loop_t *loop, struct mesh_proxy *proxy,
                            const struct mesh_agent_tracing_config *cfg,
                            struct mesh_trace_exporter **ret);
/* Stops at once: requests in flight are cancelled, queued spans dropped; the memory is freed
 * once the handles closed. NULL is fine. */
void mesh_trace_exporter_free(struct mesh_trace_exporter *e);
/* The mesh_trace_* metric families. */
void mesh_trace_exporter_metrics(struct mesh_trace_exporter *e, struct mesh_buf *b);

#endif
