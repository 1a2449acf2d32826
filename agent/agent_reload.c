#define MESH_LOG_MODULE "agent"

/* Reload (SIGHUP): a new config replaces the running one only when all of it can be set up. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/admin.h"
#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/ctl_report.h"
#include "agent/ctl_watch.h"
#include "agent/notify.h"
#include "agent/resources.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/macros.h"
#include "proxy/proxy.h"

static void reload_failed(struct mesh_agent *a, const char *why)
{
    a->reloads_failed++;
    a->last_reload_ok = false;
    a->last_reload_time = mesh_agent__now();
    mesh_free(a->last_reload_error);
    a->last_reload_error = mesh_strdup(why);
    mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_RELOAD_FAILED, NULL,
                "reload failed, keeping the previous config: %s", why);
}

/*
 * Whether a listener the new config moves (the shared outbound HTTP one, the inbound mTLS
 * one) cannot be bound where it goes: the reload then fails and the old one keeps
 * serving. (A service's upstream listener that cannot move keeps serving where it was:
 * see proxy/listeners.h.)
 */
static bool listeners_busy(const struct mesh_agent *a, const struct mesh_agent_config *next,
                           char *why, size_t n)
{
    static const char *const keys[] = {"listeners.outbound_http", "listeners.inbound"};
    const struct mesh_addr *now[] = {&a->cfg->outbound_http_addr, &a->cfg->inbound_addr};
    const struct mesh_addr *then[] = {&next->outbound_http_addr, &next->inbound_addr};
    bool used[] = {true, next->identity.mode != MESH_IDENTITY_NONE};
    bool bound[] = {true, a->cfg->identity.mode != MESH_IDENTITY_NONE};
    for (size_t i = 0; i < MESH_ARRAY_SIZE(keys); i++) {
        if (!used[i] || !mesh_addr_port(then[i]) || (bound[i] && mesh_addr_equal(now[i], then[i])))
            continue;
        int r = mesh_proxy_can_listen(then[i]);
        if (r < 0) {
            char addr[MESH_ADDR_STRLEN];
            snprintf(why, n, "cannot listen on %s for %s: %s",
                     mesh_addr_format(then[i], addr, sizeof(addr)), keys[i], strerror(-r));
            return true;
        }
    }
    return false;
}

static int do_reload(struct mesh_agent *a)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *next = NULL;
    struct slot **slots = NULL;
    struct mesh_admin *admin = NULL;
    size_t n = 0;
    int *taken = NULL; /* per new slot: the old position it was kept from, or -1 (new) */
    int r = mesh_agent_config_load(a->config_path, &errors, &next);
    if (r < 0) {
        mesh_agent__log_errors(&errors);
        char *joined = mesh_cfg_errors_join(&errors);
        char summary[256];
        snprintf(summary, sizeof(summary), "%zu error(s) in %s", mesh_cfg_error_count(&errors),
                 a->config_path ? a->config_path : "the embedded defaults");
        reload_failed(a, joined ? joined : summary);
        mesh_free(joined);
        mesh_cfg_errors_done(&errors);
        return r;
    }
    mesh_cfg_errors_done(&errors);
    if (strcmp(next->state_dir, a->cfg->state_dir) != 0 ||
        strcmp(next->node.name, a->cfg->node.name) != 0) {
        reload_failed(a, "state_dir and node.name cannot change on reload; restart the agent to "
                         "change them");
        mesh_agent_config_unref(next);
        return -EINVAL;
    }
    if (next->proxy.workers != a->cfg->proxy.workers ||
        next->proxy.buffer_size != a->cfg->proxy.buffer_size ||
        memcmp(&next->proxy.http, &a->cfg->proxy.http, sizeof(next->proxy.http)) != 0) {
        reload_failed(a, "proxy.workers, proxy.buffer_size and proxy.http cannot change on "
                         "reload; restart the agent to change them");
        mesh_agent_config_unref(next);
        return -EINVAL;
    }
    char busy[512];
    if (listeners_busy(a, next, busy, sizeof(busy))) {
        reload_failed(a, busy);
        mesh_agent_config_unref(next);
        return -EADDRINUSE;
    }
    if (strcmp(next->proxy.access_log, a->cfg->proxy.access_log) != 0 &&
        (r = mesh_proxy_set_access_log(a->proxy, next->proxy.access_log)) < 0) {
        char why[512];
        snprintf(why, sizeof(why), "cannot open the access log '%s': %s", next->proxy.access_log,
                 strerror(-r));
        reload_failed(a, why);
        mesh_agent_config_unref(next);
        return -EINVAL;
    }
    struct mesh_certs *certs = NULL;
    struct mesh_ctl_watch *watch = NULL;
    bool new_identity = !mesh_agent__identity_equal(next, a->cfg);
    if (new_identity && (mesh_agent__make_certs(a, next, &certs) < 0 ||
                         mesh_agent__make_watch(a, next, certs, &watch) < 0)) {
        mesh_certs_free(certs);
        reload_failed(a, "cannot set up identity with the new identity settings (see the log)");
        mesh_agent_config_unref(next);
        return -EINVAL;
    }
    if (!mesh_addr_equal(&next->admin_addr, &a->cfg->admin_addr)) {
        r = mesh_admin_start(a->loop, &next->admin_addr, a, &admin);
        if (r < 0) {
            char why[256];
            snprintf(why, sizeof(why), "cannot listen on %s for the admin API: %s",
                     next->admin.listen, uv_strerror(r));
            reload_failed(a, why);
            mesh_agent_config_unref(next);
            return r;
        }
    }

    slots = mesh_calloc(next->registries.n ? next->registries.n : 1, sizeof(*slots));
    taken = mesh_calloc(next->registries.n ? next->registries.n : 1, sizeof(*taken));
    if (!slots || !taken) {
        r = -ENOMEM;
        goto fail;
    }
    for (; n < next->registries.n; n++) {
        const struct mesh_registry_config *rc = &next->registries.v[n];
        int old = mesh_agent__find_slot(a, rc);
        taken[n] = -1;
        if (old >= 0 && mesh_registry_config_equal(a->slots[old]->rc, rc)) {
            slots[n] = a->slots[old];
            a->slots[old] = NULL;
            taken[n] = old;
            continue;
        }
        r = mesh_agent__slot_new(a, next, rc, &slots[n]);
        if (r < 0)
            goto fail;
        if (old >= 0)
            mesh_agent__inherit_locals(slots[n], a->slots[old]);
    }
    r = mesh_agent__set_catalog_sources(a, slots, n);
    if (r < 0)
        goto fail;

    /* Committed: nothing below fails. */
    for (size_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i])
            mesh_agent__slot_stop(a->slots[i]);
    }
    mesh_free(a->slots);
    a->slots = slots;
    a->n_slots = n;
    for (size_t i = 0; i < n; i++) {
        if (taken[i] >= 0) {
            mesh_registry_refresh(slots[i]->r);
            continue;
        }
        if (slots[i]->r->ops->start(slots[i]->r) < 0) {
            mesh_log_error("cannot start registry '%s'", slots[i]->rc->name);
            slots[i]->errors++;
        }
    }
    mesh_free(taken);
    if (admin) {
        mesh_admin_close(a->admin, 0, NULL, NULL);
        a->admin = admin;
    }
    if (new_identity) {
        mesh_ctl_report_free(a->report);
        a->report = NULL;
        if (watch && mesh_ctl_report_new(a->loop, next->identity.controller, certs,
                                         &mesh_agent__report_ops, a, &a->report) < 0)
            mesh_log_error("out of memory: no reports to the controller");
        mesh_ctl_watch_free(a->watch);
        mesh_certs_free(a->certs); /* connections keep the material they were made with */
        a->certs = certs;
        a->watch = watch;
    }
    bool resources_moved = strcmp(next->resources_dir, a->cfg->resources_dir) != 0;
    mesh_agent_config_unref(a->cfg);
    a->cfg = next;
    mesh_agent__apply_log_settings(a);
    if (resources_moved && mesh_resources_watch(a->resources, a->cfg->resources_dir, 10000) < 0)
        mesh_log_error("out of memory watching '%s'", a->cfg->resources_dir);
    else if (!resources_moved)
        mesh_resources_rescan(a->resources);
    mesh_proxy_set_max_connections(a->proxy, a->cfg->proxy.max_connections);
    mesh_agent__schedule(a);
    a->reloads_ok++;
    a->last_reload_ok = true;
    a->last_reload_time = a->last_reload_ok_time = mesh_agent__now();
    mesh_free(a->last_reload_error);
    a->last_reload_error = NULL;
    mesh_log_info("config reloaded from %s", a->config_path ? a->config_path : "defaults");
    return 0;
fail:
    /* Put back the slots we took where they were; free the ones we made. */
    for (size_t i = 0; i < n; i++) {
        if (!slots[i])
            continue;
        if (taken[i] >= 0)
            a->slots[taken[i]] = slots[i];
        else
            mesh_agent__slot_free(slots[i]);
    }
    mesh_free(slots);
    mesh_free(taken);
    if (admin)
        mesh_admin_close(admin, 0, NULL, NULL);
    mesh_ctl_watch_free(watch);
    mesh_certs_free(certs);
    reload_failed(a, strerror(-r));
    mesh_agent_config_unref(next);
    return r;
}

void mesh_agent_reload(struct mesh_agent *a)
{
    if (a->state == AGENT_STOPPING)
        return;
    mesh_log_info("reloading %s", a->config_path ? a->config_path : "the embedded defaults");
    mesh_notify_reloading();
    do_reload(a);
    char line[512];
    mesh_agent__status_line(a, line, sizeof(line));
    if (a->state == AGENT_READY)
        mesh_notify_ready(line);
    else
        mesh_notify_status(line);
}
