#define MESH_LOG_MODULE "agent"

/* The agent's data plane: what it hands the proxy, and when (coalesced). */
#include <stdint.h>

#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/ctl_report.h"
#include "agent/local_health.h"
#include "agent/resources.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/macros.h"
#include "proxy/proxy.h"

/* Hands the proxy what the agent knows now: catalog, local services, policies. */
void mesh_agent__flush(struct mesh_agent *a)
{
    if (!a->proxy || a->state == AGENT_STOPPING)
        return;
    a->update_pending = false;
    uv_timer_stop(&a->update_timer);
    size_t n = 0;
    for (size_t i = 0; i < a->n_slots; i++)
        n += a->slots[i]->n_locals;
    const struct mesh_local_service **locals = mesh_calloc(n ? n : 1, sizeof(*locals));
    if (!locals) {
        mesh_log_error("out of memory updating the data plane");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < a->n_slots; i++) {
        for (size_t j = 0; j < a->slots[i]->n_locals; j++)
            locals[k++] = &a->slots[i]->locals[j];
    }
    if (a->certs)
        mesh_certs_set_locals(a->certs, locals, k);
    for (size_t i = 0; i < a->n_slots; i++) {
        if (!a->slots[i]->stopping)
            mesh_registry_local_services(a->slots[i]->r, locals, k);
    }
    struct mesh_proxy_inputs in = {
        .catalog = a->catalog,
        .locals = locals,
        .n_locals = k,
        .resources = a->resources ? mesh_resources_view(a->resources) : NULL,
        .node_zone = a->cfg->node.zone,
        .http_listener = a->cfg->outbound_http_addr,
        .tls = mesh_certs_material(a->certs),
        .mtls_listener = a->cfg->inbound_addr,
        .members = &a->members,
        .members_version = a->members_version,
    };
    struct mesh_proxy_capture capture;
    if (a->cfg->capture.enabled) {
        mesh_agent__capture_inputs(a, &capture);
        in.capture = &capture;
    }
    uint64_t t0 = uv_hrtime();
    mesh_proxy_update(a->proxy, &in);
    if (in.capture)
        mesh_agent__capture_inputs_done(&capture);
    a->update_cost_ns = uv_hrtime() - t0;
    a->update_done_ms = uv_now(a->loop);
    mesh_local_health_set(a->local_health, locals, k);
    mesh_free(locals);
    mesh_agent__capture_update(a);
    mesh_ctl_report_kick(a->report); /* the mesh's registry hears of a change at once */
}

struct mesh_http_options mesh_agent__http_options(const struct mesh_agent_http_config *h)
{
    return (struct mesh_http_options){
        .header_timeout_ms = h->header_timeout_ms,
        .idle_timeout_ms = h->idle_timeout_ms,
        .limits = {.max_head = (size_t)h->max_header_bytes,
                   .max_headers = (size_t)h->max_headers,
                   .max_uri = (size_t)h->max_uri_length},
        .path = {.normalize = h->normalize_path,
                 .merge_slashes = h->merge_slashes,
                 .escaped_slashes = h->escaped_slashes},
        .path_given = true,
        .h2_max_concurrent_streams = (uint32_t)h->h2_max_concurrent_streams,
        .h2_max_header_list = (uint32_t)h->h2_max_header_list_size,
        .h2_max_resets = (uint32_t)h->h2_max_resets,
        .h2_reset_window_ms = h->h2_reset_window_ms,
    };
}

static void on_update_timer(uv_timer_t *t)
{
    mesh_agent__flush(t->data);
}

/*
 * Many changes in a burst (a registry's full sync) make one snapshot. A snapshot is built
 * whole, so its cost grows with the catalog: the next one waits until 24 times the last
 * build's time has passed since it (at most 2 s), which keeps builds to a twenty-fifth of
 * the loop while a registry streams changes, so that the admin API and the watchdog rarely
 * wait behind one (bench/k8s-churn) — with 100,000 endpoints under steady churn the data
 * plane then follows within a second or two, as Istio's debounce does — and costs a small
 * catalog nothing (a 1 ms build: 24 ms).
 */
void mesh_agent__schedule(struct mesh_agent *a)
{
    if (a->update_pending || a->state == AGENT_STOPPING)
        return;
    a->update_pending = true;
    uint64_t gap_ms = MESH_MIN(24 * a->update_cost_ns / 1000000, 2000);
    uint64_t since = uv_now(a->loop) - a->update_done_ms;
    uv_timer_start(&a->update_timer, on_update_timer, since < gap_ms ? gap_ms - since : 0, 0);
}
