#define MESH_LOG_MODULE "agent"

/*
 * Readiness: READY=1 (once) and /readyz say that what they promise is in place:
 *
 *   - every registry synced (or readiness.registry_sync_timeout passed: then with the
 *     last-known-good catalog or what is known), and the resources read;
 *   - with mTLS on (identity.mode other than "none"): a certificate for the node and for
 *     every local service, and the data plane built with them (their SNI routes);
 *   - every listener bound (a listener that cannot bind keeps the agent not ready, and is
 *     retried);
 *   - every data-plane worker running the snapshot built from all that.
 *
 * Until then STATUS= says what is awaited. After READY=1, /readyz turns false while a
 * listener cannot bind or a certificate in use has expired.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/resources.h"
#include "common/log.h"
#include "proxy/proxy.h"
#include "proxy/tls.h"

static size_t count_synced(const struct mesh_agent *a)
{
    size_t n = 0;
    for (size_t i = 0; i < a->n_slots; i++)
        n += a->slots[i]->synced;
    return n;
}

static bool registries_in(const struct mesh_agent *a)
{
    bool resources_in = !a->resources || mesh_resources_scanned(a->resources);
    return a->sync_timed_out || (count_synced(a) == a->n_slots && resources_in);
}

/* Whether this host's services all have their certificate in `m`; else names one. */
static bool certificates_in(const struct mesh_agent *a, char *why, size_t n)
{
    const struct mesh_tls_material *m = mesh_certs_material(a->certs);
    if (!m || !m->n) {
        snprintf(why, n, "waiting for the node's certificate (identity.mode \"%s\")",
                 mesh_identity_mode_names[a->cfg->identity.mode]);
        return false;
    }
    for (size_t i = 0; i < a->n_slots; i++) {
        for (size_t k = 0; k < a->slots[i]->n_locals; k++) {
            const struct mesh_local_service *l = &a->slots[i]->locals[k];
            if (!mesh_tls_find(m, l->namespace, l->name)) {
                snprintf(why, n, "waiting for the certificate of '%s/%s'", l->namespace, l->name);
                return false;
            }
        }
    }
    return true;
}

/* What readiness promises beyond the registries; false with why when one is missing. */
static bool in_place(const struct mesh_agent *a, char *why, size_t n)
{
    if (a->certs && !certificates_in(a, why, n))
        return false;
    if (a->update_pending) {
        snprintf(why, n, "waiting for the data plane to be built");
        return false;
    }
    if (a->proxy && mesh_proxy_listener_problem(a->proxy, why, n))
        return false;
    if (a->proxy && !mesh_proxy_in_effect(a->proxy)) {
        snprintf(why, n, "waiting for the data plane's workers to take their configuration");
        return false;
    }
    return true;
}

void mesh_agent__status_line(const struct mesh_agent *a, char *out, size_t n)
{
    size_t k;
    if (a->state == AGENT_STOPPING) {
        snprintf(out, n, "stopping");
        return;
    }
    if (a->state != AGENT_READY) {
        if (registries_in(a)) {
            char why[400];
            if (!in_place(a, why, sizeof(why)))
                snprintf(out, n, "starting: %s", why);
            else
                snprintf(out, n, "starting");
            return;
        }
        k = (size_t)snprintf(out, n, "starting: waiting for registries:");
        for (size_t i = 0; i < a->n_slots && k < n; i++) {
            if (!a->slots[i]->synced)
                k += (size_t)snprintf(out + k, n - k, " %s", a->slots[i]->rc->name);
        }
        return;
    }
    k = (size_t)snprintf(out, n, "ready: %zu services from %zu registries (%zu synced)",
                         mesh_catalog_count(a->catalog), a->n_slots, count_synced(a));
    if (k < n && a->reloads_ok + a->reloads_failed > 0) {
        char when[32];
        mesh_agent__format_time(a->last_reload_time, when, sizeof(when));
        if (a->last_reload_ok)
            snprintf(out + k, n - k, "; config reloaded at %s", when);
        else
            snprintf(out + k, n - k,
                     "; reload FAILED at %s, running the previous config (see the log or "
                     "/v1/status)",
                     when);
    }
}

static void update_status(struct mesh_agent *a)
{
    char line[512];
    mesh_agent__status_line(a, line, sizeof(line));
    mesh_notify_status(line);
}

void mesh_agent__maybe_ready(struct mesh_agent *a)
{
    if (a->state != AGENT_STARTING)
        return;
    if (!registries_in(a)) {
        update_status(a);
        return;
    }
    /* Listeners and routes for what is known now must be up before READY=1. */
    if (a->update_pending || !a->ready_flushed) {
        a->ready_flushed = true;
        mesh_agent__flush(a);
    }
    char why[400];
    if (!in_place(a, why, sizeof(why))) {
        update_status(a); /* the workers, the certificates or a listener call again */
        return;
    }
    a->state = AGENT_READY;
    uv_timer_stop(&a->sync_timer);
    char line[512];
    mesh_agent__status_line(a, line, sizeof(line));
    mesh_log_id(MESH_LOG_INFO, MESH_MSGID_READY, NULL, "%s", line);
    mesh_notify_ready(line);
}

void mesh_agent__on_proxy_changed(void *data)
{
    struct mesh_agent *a = data;
    if (a->state == AGENT_STOPPING)
        return;
    if (a->proxy && mesh_proxy_needs_update(a->proxy))
        mesh_agent__schedule(a); /* a listener bound where it moved to takes over */
    mesh_agent__maybe_ready(a);
}

void mesh_agent__on_sync_timeout(uv_timer_t *t)
{
    struct mesh_agent *a = t->data;
    char waiting[256] = "";
    size_t k = 0;
    for (size_t i = 0; i < a->n_slots && k < sizeof(waiting); i++) {
        if (!a->slots[i]->synced)
            k += (size_t)snprintf(waiting + k, sizeof(waiting) - k, " '%s'", a->slots[i]->rc->name);
    }
    mesh_log_warn("registries not synced after %" PRIu64 " ms:%s; ready with %s",
                  a->cfg->readiness.registry_sync_timeout_ms, waiting,
                  a->lkg_loaded > 0 ? "the last-known-good catalog" : "what is known so far");
    a->sync_timed_out = true;
    mesh_agent__maybe_ready(a);
}

bool mesh_agent_is_ready(const struct mesh_agent *a, char *why, size_t n)
{
    if (a->state != AGENT_READY) {
        mesh_agent__status_line(a, why, n);
        return false;
    }
    if (mesh_certs_expired(a->certs)) {
        snprintf(why, n, "a certificate in use has expired");
        return false;
    }
    if (a->proxy && mesh_proxy_listener_problem(a->proxy, why, n))
        return false;
    return true;
}
