#define MESH_LOG_MODULE "agent"

/*
 * Reload (SIGHUP): a new config replaces the running one only when all of it can be set
 * up. do_reload runs in phases: load the new config; check that nothing it changes needs
 * a restart; prepare what the new config needs beside what runs (the access log, identity,
 * admin listener, registries), each of which can fail; then commit, which cannot. On any
 * failure what was prepared is given back and the running config is untouched.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/admin.h"
#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/ctl_report.h"
#include "agent/ctl_watch.h"
#include "agent/notify.h"
#include "agent/resources.h"
#include "common/alloc.h"
#include "common/buf.h"
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

/* What a reload prepared, until the commit takes it or reload_done gives it back. */
struct reload {
    struct mesh_agent_config *next;
    char *why;         /* why it failed, for reload_failed (NULL: strerror) */
    int access_log_fd; /* the new access log, opened; -1: unchanged or none */
    bool access_log_changed;
    bool new_identity;
    struct mesh_certs *certs;
    struct mesh_ctl_watch *watch;
    struct mesh_admin *admin; /* a listener on the new admin address */
    struct slot **slots;
    size_t n_slots;
    int *taken; /* per new slot: the old position it was kept from, or -1 (new) */
};

static int failed(struct reload *rl, int r, const char *fmt, ...) MESH_PRINTF(3, 4);

/* Notes why the reload fails (what reload_failed says). Returns r. */
static int failed(struct reload *rl, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mesh_free(rl->why);
    rl->why = mesh_vasprintf(fmt, ap);
    va_end(ap);
    return r;
}

static int load_next(struct mesh_agent *a, struct reload *rl)
{
    struct mesh_cfg_errors errors = {0};
    int r = mesh_agent_config_load(a->config_path, &errors, &rl->next);
    if (r < 0) {
        mesh_agent__log_errors(&errors);
        rl->why = mesh_cfg_errors_join(&errors);
        if (!rl->why)
            failed(rl, r, "%zu error(s) in %s", mesh_cfg_error_count(&errors),
                   a->config_path ? a->config_path : "the embedded defaults");
    }
    mesh_cfg_errors_done(&errors);
    return r;
}

/* What the new config changes that a reload cannot: only a restart applies it. */
static int check_restart(struct mesh_agent *a, struct reload *rl)
{
    char text[512];
    struct mesh_buf keys;
    mesh_buf_init_fixed(&keys, text, sizeof(text));
    int n = mesh_agent_config_restart_changes(a->cfg, rl->next, &keys);
    if (n < 0)
        return n;
    if (n > 0)
        return failed(rl, -EINVAL, "%s cannot change on reload; restart the agent to change %s",
                      keys.data, n == 1 ? "it" : "them");
    if (listeners_busy(a, rl->next, text, sizeof(text)))
        return failed(rl, -EADDRINUSE, "%s", text);
    return 0;
}

/* Opens the new access log; the proxy writes to it from the commit on. */
static int prepare_access_log(struct mesh_agent *a, struct reload *rl)
{
    const char *where = rl->next->proxy.access_log;
    rl->access_log_changed = strcmp(where, a->cfg->proxy.access_log) != 0;
    if (!rl->access_log_changed)
        return 0;
    int r = mesh_proxy_access_log_open(where, &rl->access_log_fd);
    if (r < 0)
        return failed(rl, -EINVAL, "cannot open the access log '%s': %s", where, strerror(-r));
    return 0;
}

/* A new certificate manager (and controller watch) when the identity settings changed. */
static int prepare_identity(struct mesh_agent *a, struct reload *rl)
{
    rl->new_identity = !mesh_agent__identity_equal(rl->next, a->cfg);
    if (!rl->new_identity)
        return 0;
    if (mesh_agent__make_certs(a, rl->next, &rl->certs) < 0 ||
        mesh_agent__make_watch(a, rl->next, rl->certs, &rl->watch) < 0)
        return failed(rl, -EINVAL,
                      "cannot set up identity with the new identity settings (see the log)");
    return 0;
}

/* A listener on the new admin address, when it moved. */
static int prepare_admin(struct mesh_agent *a, struct reload *rl)
{
    if (mesh_addr_equal(&rl->next->admin_addr, &a->cfg->admin_addr))
        return 0;
    int r = mesh_admin_start(a->loop, &rl->next->admin_addr, a, &rl->admin);
    if (r < 0)
        return failed(rl, r, "cannot listen on %s for the admin API: %s", rl->next->admin.listen,
                      uv_strerror(r));
    return 0;
}

/*
 * The registries of the new config: a running one whose config is the same is taken from
 * a->slots (its place there set to NULL, and noted in rl->taken); the others are made.
 * The last step that can fail: it tells the catalog its new sources.
 */
static int prepare_slots(struct mesh_agent *a, struct reload *rl)
{
    const struct mesh_agent_config *next = rl->next;
    size_t n = next->registries.n;
    rl->slots = mesh_calloc(n ? n : 1, sizeof(*rl->slots));
    rl->taken = mesh_calloc(n ? n : 1, sizeof(*rl->taken));
    if (!rl->slots || !rl->taken)
        return -ENOMEM;
    for (; rl->n_slots < n; rl->n_slots++) {
        size_t i = rl->n_slots;
        const struct mesh_registry_config *rc = &next->registries.v[i];
        int old = mesh_agent__find_slot(a, rc);
        rl->taken[i] = -1;
        if (old >= 0 && mesh_registry_config_equal(a->slots[old]->rc, rc)) {
            rl->slots[i] = a->slots[old];
            a->slots[old] = NULL;
            rl->taken[i] = old;
            continue;
        }
        int r = mesh_agent__slot_new(a, rl->next, rc, &rl->slots[i]);
        if (r < 0)
            return r;
        if (old >= 0)
            mesh_agent__inherit_locals(rl->slots[i], a->slots[old]);
    }
    return mesh_agent__set_catalog_sources(a, rl->slots, rl->n_slots);
}

/* Puts the prepared parts in place of the running ones. Cannot fail. */
static void commit(struct mesh_agent *a, struct reload *rl)
{
    for (size_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i])
            mesh_agent__slot_stop(a->slots[i]);
    }
    mesh_free(a->slots);
    a->slots = rl->slots;
    a->n_slots = rl->n_slots;
    rl->slots = NULL;
    rl->n_slots = 0;
    for (size_t i = 0; i < a->n_slots; i++) {
        struct slot *s = a->slots[i];
        if (rl->taken[i] >= 0) {
            mesh_registry_refresh(s->r);
            continue;
        }
        if (s->r->ops->start(s->r) < 0) {
            mesh_log_error("cannot start registry '%s'", s->rc->name);
            s->errors++;
        }
    }
    if (rl->access_log_changed) {
        mesh_proxy_access_log_use(a->proxy, rl->access_log_fd);
        rl->access_log_fd = -1;
    }
    if (rl->admin) {
        mesh_admin_close(a->admin, 0, NULL, NULL);
        a->admin = rl->admin;
        rl->admin = NULL;
    }
    if (rl->new_identity) {
        mesh_ctl_report_free(a->report);
        a->report = NULL;
        if (rl->watch && mesh_ctl_report_new(a->loop, a->ctl, rl->next->identity.controller,
                                             rl->certs, &mesh_agent__report_ops, a, &a->report) < 0)
            mesh_log_error("out of memory: no reports to the controller");
        mesh_ctl_watch_free(a->watch);
        mesh_certs_free(a->certs); /* connections keep the material they were made with */
        a->certs = rl->certs;
        a->watch = rl->watch;
        rl->certs = NULL;
        rl->watch = NULL;
    }
    bool resources_moved = strcmp(rl->next->resources_dir, a->cfg->resources_dir) != 0;
    mesh_agent__tracing_reload(a, rl->next);
    mesh_agent_config_unref(a->cfg);
    a->cfg = rl->next;
    rl->next = NULL;
    mesh_agent__apply_log_settings(a);
    if (resources_moved && mesh_resources_watch(a->resources, a->cfg->resources_dir, 10000) < 0)
        mesh_log_error("out of memory watching '%s'", a->cfg->resources_dir);
    else if (!resources_moved)
        mesh_resources_rescan(a->resources);
    mesh_proxy_set_max_connections(a->proxy, a->cfg->proxy.max_connections);
    mesh_proxy_set_max_series(a->proxy, (size_t)a->cfg->telemetry.max_series);
    mesh_agent__schedule(a);
    a->reloads_ok++;
    a->last_reload_ok = true;
    a->last_reload_time = a->last_reload_ok_time = mesh_agent__now();
    mesh_free(a->last_reload_error);
    a->last_reload_error = NULL;
    mesh_log_info("config reloaded from %s", a->config_path ? a->config_path : "defaults");
}

/* Gives back whatever the commit did not take: slots taken return to their places. */
static void reload_done(struct mesh_agent *a, struct reload *rl)
{
    for (size_t i = 0; i < rl->n_slots; i++) {
        if (!rl->slots[i])
            continue;
        if (rl->taken[i] >= 0)
            a->slots[rl->taken[i]] = rl->slots[i];
        else
            mesh_agent__slot_free(rl->slots[i]);
    }
    mesh_free(rl->slots);
    mesh_free(rl->taken);
    if (rl->access_log_fd >= 0)
        close(rl->access_log_fd);
    if (rl->admin)
        mesh_admin_close(rl->admin, 0, NULL, NULL);
    mesh_ctl_watch_free(rl->watch);
    mesh_certs_free(rl->certs);
    mesh_agent_config_unref(rl->next);
    mesh_free(rl->why);
}

static int do_reload(struct mesh_agent *a)
{
    struct reload rl = {.access_log_fd = -1};
    int r;
    if ((r = load_next(a, &rl)) < 0 || (r = check_restart(a, &rl)) < 0 ||
        (r = prepare_access_log(a, &rl)) < 0 || (r = prepare_identity(a, &rl)) < 0 ||
        (r = prepare_admin(a, &rl)) < 0 || (r = prepare_slots(a, &rl)) < 0)
        goto out;
    commit(a, &rl);
out:
    if (r < 0)
        reload_failed(a, rl.why ? rl.why : strerror(-r));
    reload_done(a, &rl);
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
