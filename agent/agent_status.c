#define MESH_LOG_MODULE "agent"

/* What the agent says about itself: /v1/status, /v1/local, /v1/identity, /metrics. */
#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/ctl_watch.h"
#include "agent/hosts.h"
#include "agent/lkg.h"
#include "agent/registries.h"
#include "agent/trace_export.h"
#include "common/macros.h"
#include "common/prom.h"
#include "mesh-version.h"
#include "proxy/proxy.h"

const struct mesh_catalog *mesh_agent_catalog(const struct mesh_agent *a)
{
    return a->catalog;
}

const struct mesh_agent_config *mesh_agent_config(const struct mesh_agent *a)
{
    return a->cfg;
}

static json_t *time_or_null(double t)
{
    char when[32];
    if (t <= 0)
        return json_null();
    mesh_agent__format_time(t, when, sizeof(when));
    return json_string(when);
}

json_t *mesh_agent_status_json(const struct mesh_agent *a)
{
    char line[512];
    mesh_agent__status_line(a, line, sizeof(line));
    json_t *regs = json_array();
    for (size_t i = 0; regs && i < a->n_slots; i++) {
        const struct slot *s = a->slots[i];
        struct mesh_catalog_source_stats st = {0};
        mesh_catalog_source_stats(a->catalog, s->rc->name, &st);
        json_t *o =
            json_pack("{s:s, s:s, s:b, s:b, s:o, s:I, s:I, s:I, s:I, s:o}", "name", s->rc->name,
                      "type", s->rc->type, "merge", s->rc->merge, "synced", s->synced, "last_sync",
                      time_or_null(s->last_sync), "syncs", (json_int_t)s->syncs, "errors",
                      (json_int_t)s->errors, "services", (json_int_t)st.services, "endpoints",
                      (json_int_t)st.endpoints, "last_error",
                      s->last_error ? json_string(s->last_error) : json_null());
        if (o)
            mesh_registry_status(s->r, o);
        json_array_append_new(regs, o);
    }
    json_t *reload = json_pack(
        "{s:I, s:I, s:o, s:o, s:o}", "succeeded", (json_int_t)a->reloads_ok, "failed",
        (json_int_t)a->reloads_failed, "last_result",
        a->reloads_ok + a->reloads_failed == 0 ? json_null()
                                               : json_string(a->last_reload_ok ? "ok" : "failed"),
        "last_time", time_or_null(a->last_reload_time), "last_error",
        a->last_reload_error ? json_string(a->last_reload_error) : json_null());
    json_t *st = json_pack(
        "{s:s, s:s, s:s, s:b, s:s, s:o, s:f, s:o, s:o, s:i}", "version", MESH_VERSION, "commit",
        MESH_GIT_COMMIT, "node", a->cfg->node.name, "ready", a->state == AGENT_READY, "status",
        line, "config_file", a->config_path ? json_string(a->config_path) : json_null(),
        "uptime_seconds", mesh_agent__now() - a->start_time, "reload", reload, "registries", regs,
        "catalog_services", (int)mesh_catalog_count(a->catalog));
    if (st && a->hosts)
        json_object_set_new(st, "dns", mesh_hosts_status(a->hosts));
    return st;
}

json_t *mesh_agent_local_json(const struct mesh_agent *a)
{
    json_t *list = json_array();
    char addr[MESH_ADDR_STRLEN];
    for (size_t i = 0; list && i < a->n_slots; i++) {
        const struct slot *s = a->slots[i];
        for (size_t k = 0; k < s->n_locals; k++) {
            const struct mesh_local_service *ls = &s->locals[k];
            json_t *ups = json_array();
            for (size_t u = 0; ups && u < ls->n_upstreams; u++) {
                const struct mesh_upstream *up = &ls->upstreams[u];
                json_array_append_new(ups,
                                      json_pack("{s:s, s:s, s:s, s:s}", "service", up->service,
                                                "namespace", up->namespace, "bind",
                                                mesh_addr_format(&up->bind, addr, sizeof(addr)),
                                                "protocol", mesh_protocol_names[up->protocol]));
            }
            json_t *o = json_pack(
                "{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "name", ls->name, "namespace", ls->namespace,
                "protocol", mesh_protocol_names[ls->protocol], "address",
                mesh_addr_format(&ls->addr, addr, sizeof(addr)), "registry", s->rc->name, "source",
                ls->source ? ls->source : "", "upstreams", ups ? ups : json_array());
            if (o && ls->identity)
                json_object_set_new(o, "identity", json_string(ls->identity));
            json_array_append_new(list, o);
        }
    }
    return list;
}

json_t *mesh_agent_identity_json(const struct mesh_agent *a)
{
    if (!a->certs)
        return json_pack("{s:s}", "mode", "none");
    json_t *st = mesh_certs_status(a->certs);
    if (st && a->watch)
        json_object_set_new(st, "controller", mesh_ctl_watch_status(a->watch));
    return st;
}

json_t *mesh_agent_proxy_json(const struct mesh_agent *a)
{
    if (!a->proxy)
        return json_pack("{s:s}", "state", "stopped");
    return mesh_proxy_status(a->proxy);
}

void mesh_agent_metrics(const struct mesh_agent *a, struct mesh_buf *b)
{
    double now = mesh_agent__now();
    mesh_prom_family(b, "mesh_agent_build_info", "gauge", "Version and commit of this agent.");
    mesh_prom_sample(b, "mesh_agent_build_info",
                     (struct mesh_prom_label[]){
                         {"version", MESH_VERSION}, {"commit", MESH_GIT_COMMIT}, {NULL, NULL}},
                     1);
    mesh_prom_family(b, "mesh_agent_start_time_seconds", "gauge",
                     "When the agent started, in seconds since the epoch.");
    mesh_prom_sample(b, "mesh_agent_start_time_seconds", NULL, a->start_time);
    mesh_prom_family(b, "mesh_agent_uptime_seconds", "gauge", "Seconds since the agent started.");
    mesh_prom_sample(b, "mesh_agent_uptime_seconds", NULL, now - a->start_time);
    mesh_prom_family(b, "mesh_agent_ready", "gauge", "1 when the agent is ready.");
    mesh_prom_sample(b, "mesh_agent_ready", NULL, a->state == AGENT_READY);

    mesh_prom_family(b, "mesh_agent_config_reloads_total", "counter",
                     "Config reloads (SIGHUP) by result.");
    mesh_prom_sample(b, "mesh_agent_config_reloads_total",
                     (struct mesh_prom_label[]){{"result", "success"}, {NULL, NULL}},
                     (double)a->reloads_ok);
    mesh_prom_sample(b, "mesh_agent_config_reloads_total",
                     (struct mesh_prom_label[]){{"result", "failure"}, {NULL, NULL}},
                     (double)a->reloads_failed);
    mesh_prom_family(b, "mesh_agent_config_last_reload_successful", "gauge",
                     "0 when the last reload failed and the previous config still runs.");
    mesh_prom_sample(b, "mesh_agent_config_last_reload_successful", NULL,
                     a->reloads_ok + a->reloads_failed == 0 || a->last_reload_ok);

    mesh_catalog_metrics(a->catalog, b);
    mesh_agent__dns_metrics(a, b);
    mesh_prom_family(b, "mesh_agent_snapshot_build_seconds", "gauge",
                     "What building the last proxy snapshot took on the main loop.");
    mesh_prom_sample(b, "mesh_agent_snapshot_build_seconds", NULL, (double)a->update_cost_ns / 1e9);

    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"mesh_catalog_registry_services", "gauge", "Services a registry reports."},
        {"mesh_catalog_registry_endpoints", "gauge", "Endpoints a registry reports."},
        {"mesh_registry_synced", "gauge", "1 once a registry completed a full sync."},
        {"mesh_registry_syncs_total", "counter", "Full syncs a registry completed."},
        {"mesh_registry_sync_errors_total", "counter",
         "Problems a registry reported (its last good state is kept)."},
        {"mesh_registry_last_sync_timestamp_seconds", "gauge",
         "When a registry last completed a full sync, in seconds since the epoch."},
    };
    for (size_t f = 0; f < MESH_ARRAY_SIZE(fam); f++) {
        mesh_prom_family(b, fam[f].name, fam[f].type, fam[f].help);
        for (size_t i = 0; i < a->n_slots; i++) {
            const struct slot *s = a->slots[i];
            struct mesh_catalog_source_stats st = {0};
            mesh_catalog_source_stats(a->catalog, s->rc->name, &st);
            double v[] = {(double)st.services, (double)st.endpoints, s->synced,
                          (double)s->syncs,    (double)s->errors,    s->last_sync};
            struct mesh_prom_label l[] = {{"registry", s->rc->name}, {"type", s->rc->type}, {0}};
            mesh_prom_sample(b, fam[f].name, l, v[f]);
        }
    }
    struct mesh_registry *regs[MESH_AGENT_REGISTRIES_MAX];
    for (size_t i = 0; i < a->n_slots; i++)
        regs[i] = a->slots[i]->r;
    mesh_registries_metrics(regs, a->n_slots, b);

    if (a->lkg) {
        uint64_t writes, failures;
        mesh_lkg_stats(a->lkg, &writes, &failures);
        mesh_prom_family(b, "mesh_agent_state_writes_total", "counter",
                         "Writes of the last-known-good catalog, by result.");
        mesh_prom_sample(b, "mesh_agent_state_writes_total",
                         (struct mesh_prom_label[]){{"result", "success"}, {NULL, NULL}},
                         (double)writes);
        mesh_prom_sample(b, "mesh_agent_state_writes_total",
                         (struct mesh_prom_label[]){{"result", "failure"}, {NULL, NULL}},
                         (double)failures);
    }
    if (a->hosts)
        mesh_hosts_metrics(a->hosts, b);
    if (a->proxy)
        mesh_proxy_metrics(a->proxy, b);
    mesh_trace_exporter_metrics(a->tracer, b);
    mesh_certs_metrics(a->certs, b);
    mesh_prom_family(b, "mesh_agent_watchdog_pings_total", "counter",
                     "Watchdog keep-alives sent to the service manager.");
    mesh_prom_sample(b, "mesh_agent_watchdog_pings_total", NULL, (double)a->notify.pings);
}
