#define MESH_LOG_MODULE "agent"

/* Tracing in the daemon (docs/tracing.md): the data plane records, the exporter sends. */
#include <errno.h>
#include <string.h>

#include "agent/agent-int.h"
#include "agent/trace_export.h"
#include "common/log.h"
#include "common/macros.h"
#include "proxy/trace.h"

int mesh_agent__tracing_start(struct mesh_agent *a)
{
    const struct mesh_agent_tracing_config *t = &a->cfg->tracing;
    if (!mesh_agent_tracing_on(t))
        return 0;
    int r = mesh_trace_exporter_new(a->loop, a->proxy, t, &a->tracer);
    if (r == 0)
        r = mesh_proxy_set_tracing(a->proxy, true, mesh_agent_tracing_ratio(t), a->cfg->node.name);
    if (r < 0)
        return r;
    mesh_log_info("tracing: sampling %g of new traces, exporting to%s%s%s%s",
                  mesh_agent_tracing_ratio(t), t->otlp_endpoint[0] ? " OTLP " : "",
                  t->otlp_endpoint, t->zipkin_endpoint[0] ? " Zipkin " : "", t->zipkin_endpoint);
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Whether the exporter `a` made would be the one `b` makes (the ratio is not its). */
static bool same_exporter(const struct mesh_agent_tracing_config *a,
                          const struct mesh_agent_tracing_config *b)
{
    return same_str(a->otlp_endpoint, b->otlp_endpoint) &&
           same_str(a->zipkin_endpoint, b->zipkin_endpoint) && a->queue_size == b->queue_size &&
           a->batch_size == b->batch_size && a->flush_interval_ms == b->flush_interval_ms &&
           a->timeout_ms == b->timeout_ms && a->max_backoff_ms == b->max_backoff_ms;
}

void mesh_agent__tracing_reload(struct mesh_agent *a, const struct mesh_agent_config *next)
{
    const struct mesh_agent_tracing_config *t = &next->tracing;
    if (!same_exporter(&a->cfg->tracing, t)) {
        /* A new exporter; the spans the old one still held are dropped with it. */
        mesh_trace_exporter_free(a->tracer);
        a->tracer = NULL;
        int r = mesh_agent_tracing_on(t) ? mesh_trace_exporter_new(a->loop, a->proxy, t, &a->tracer)
                                         : 0;
        if (r < 0)
            mesh_log_error("cannot start the span exporter: %s; tracing is off", strerror(-r));
        if (a->tracer)
            mesh_log_info("tracing: exporting to%s%s%s%s", t->otlp_endpoint[0] ? " OTLP " : "",
                          t->otlp_endpoint, t->zipkin_endpoint[0] ? " Zipkin " : "",
                          t->zipkin_endpoint);
    }
    /* Recording follows the exporter; the ratio applies to the next new traces. */
    if (mesh_proxy_set_tracing(a->proxy, a->tracer != NULL, mesh_agent_tracing_ratio(t),
                               next->node.name) < 0) {
        mesh_log_error("out of memory making the span queues; tracing is off");
        mesh_trace_exporter_free(a->tracer);
        a->tracer = NULL;
    }
    if (!a->tracer) {
        /* What the workers still held is not sent later, when tracing comes back. */
        struct mesh_span old[8];
        while (mesh_proxy_take_spans(a->proxy, old, MESH_ARRAY_SIZE(old)) == MESH_ARRAY_SIZE(old))
            ;
    }
}
