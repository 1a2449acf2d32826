#define MESH_LOG_MODULE "agent"

/*
 * The agent's lifecycle: new, start, stop and free. The other jobs are in agent_*.c:
 * the registries (agent_registries.c), the data plane (agent_dataplane.c), the controller
 * and identity (agent_controller.c), reload (agent_reload.c) and introspection
 * (agent_status.c); readiness.c says when the agent is ready.
 */
#include "agent/agent.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/admin.h"
#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/ctl_report.h"
#include "agent/ctl_watch.h"
#include "agent/hosts.h"
#include "agent/lkg.h"
#include "agent/local_health.h"
#include "agent/notify.h"
#include "agent/resources.h"
#include "agent/trace_export.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/http_client.h"
#include "common/log.h"
#include "mesh-version.h"
#include "proxy/proxy.h"

double mesh_agent__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void mesh_agent__format_time(double t, char *out, size_t n)
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void mesh_agent__log_errors(const struct mesh_cfg_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        mesh_log_error("%s", e->v[i]);
    if (e->dropped)
        mesh_log_error("(%zu more errors not shown)", e->dropped);
}

void mesh_agent__apply_log_settings(struct mesh_agent *a)
{
    enum mesh_log_level level = a->opts.log_level >= 0 ? (enum mesh_log_level)a->opts.log_level
                                                       : mesh_agent_config_log_level(a->cfg);
    enum mesh_log_format format;
    if (a->opts.log_format >= 0)
        format = (enum mesh_log_format)a->opts.log_format;
    else if (a->cfg->log.format == MESH_LOG_CHOICE_AUTO)
        format = mesh_log_stderr_is_journal() ? MESH_LOG_FORMAT_JOURNAL : MESH_LOG_FORMAT_TEXT;
    else
        format = (enum mesh_log_format)(a->cfg->log.format - 1);
    mesh_log_set_level(level);
    mesh_log_set_format(format);
}

static void on_resources_changed(void *data)
{
    struct mesh_agent *a = data;
    mesh_agent__schedule(a);
    mesh_agent__maybe_ready(a);
}

/* ---- lifecycle ---- */

static void on_signal(uv_signal_t *h, int signum)
{
    struct mesh_agent *a = h->data;
    if (signum == SIGHUP)
        mesh_agent_reload(a);
    else
        mesh_agent_stop(a);
}

/*
 * Logs why the agent cannot start (MESSAGE_ID start failed) and says it to the service
 * manager (STATUS=, ERRNO=) so that `systemctl status` shows it. Returns r.
 */
static int start_failed(int r, const char *fmt, ...) MESH_PRINTF(2, 3);

static int start_failed(int r, const char *fmt, ...)
{
    char why[512], status[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_START_FAILED, NULL, "%s; not starting", why);
    snprintf(status, sizeof(status), "cannot start: %s", why);
    mesh_notify_failed(-r, status);
    return r;
}

int mesh_agent_new(uv_loop_t *loop, const struct mesh_agent_options *opts, struct mesh_agent **ret)
{
    struct mesh_cfg_errors errors = {0};
    const char *path = opts->config_path;
    int r;
    if (!path && access(MESH_AGENT_DEFAULT_CONFIG, F_OK) == 0)
        path = MESH_AGENT_DEFAULT_CONFIG;
    struct mesh_agent *a = mesh_calloc(1, sizeof(*a));
    if (!a)
        return start_failed(-ENOMEM, "out of memory");
    a->loop = loop;
    a->opts = *opts;
    a->exit_code = 0;
    if (path && !(a->config_path = mesh_strdup(path))) {
        mesh_free(a);
        return start_failed(-ENOMEM, "out of memory");
    }
    r = mesh_agent_config_load(a->config_path, &errors, &a->cfg);
    if (r < 0) {
        mesh_agent__log_errors(&errors);
        start_failed(r, "%s: %zu error(s)%s%s", path ? path : "embedded defaults",
                     mesh_cfg_error_count(&errors), errors.n ? ", the first: " : "",
                     errors.n ? errors.v[0] : "");
        mesh_cfg_errors_done(&errors);
        mesh_free(a->config_path);
        mesh_free(a);
        return r;
    }
    mesh_cfg_errors_done(&errors);
    if (!path)
        mesh_log_notice("no config file at %s: using the embedded defaults",
                        MESH_AGENT_DEFAULT_CONFIG);
    mesh_agent__apply_log_settings(a);
    r = mesh_catalog_new(&a->catalog);
    if (r < 0) {
        mesh_agent_config_unref(a->cfg);
        mesh_free(a->config_path);
        mesh_free(a);
        return start_failed(r, "out of memory");
    }
    mesh_catalog_set_change_cb(a->catalog, mesh_agent__on_catalog_change, a);
    *ret = a;
    return 0;
}

static void on_local_health(void *data)
{
    struct mesh_agent *a = data;
    mesh_ctl_report_kick(a->report);
}

int mesh_agent_start(struct mesh_agent *a)
{
    int r;
    char path[4096];
    a->start_time = mesh_agent__now();
    a->state = AGENT_STARTING;

    /* Handles first: whatever fails below, mesh_agent_stop() can close them. */
    uv_signal_init(a->loop, &a->sig_hup);
    uv_signal_init(a->loop, &a->sig_term);
    uv_signal_init(a->loop, &a->sig_int);
    a->sig_hup.data = a->sig_term.data = a->sig_int.data = a;
    uv_signal_start(&a->sig_hup, on_signal, SIGHUP);
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    mesh_notify_init(a->loop, &a->notify);

    uv_timer_init(a->loop, &a->sync_timer);
    a->sync_timer.data = a;
    uv_timer_init(a->loop, &a->update_timer);
    a->update_timer.data = a;

    r = mesh_agent__hosts_new(a);
    if (r < 0)
        return start_failed(r, "cannot set up the DNS resolver: %s", strerror(-r));

    r = mesh_fs_mkdir_private(a->cfg->state_dir, 0700);
    if (r < 0)
        return start_failed(r, "cannot create the state directory '%s': %s", a->cfg->state_dir,
                            strerror(-r));

    /* Registries first (without starting them) so the catalog knows its sources. */
    a->slots = mesh_calloc(a->cfg->registries.n ? a->cfg->registries.n : 1, sizeof(*a->slots));
    if (!a->slots)
        return start_failed(-ENOMEM, "out of memory");
    for (size_t i = 0; i < a->cfg->registries.n; i++) {
        r = mesh_agent__slot_new(a, a->cfg, &a->cfg->registries.v[i], &a->slots[a->n_slots]);
        if (r < 0)
            return start_failed(r, "cannot create registry '%s': %s", a->cfg->registries.v[i].name,
                                strerror(-r));
        a->n_slots++;
    }
    r = mesh_agent__set_catalog_sources(a, a->slots, a->n_slots);
    if (r < 0)
        return start_failed(r, "cannot set the catalog's sources: %s", strerror(-r));

    snprintf(path, sizeof(path), "%s/%s", a->cfg->state_dir, MESH_LKG_FILE);
    struct mesh_cfg_errors errors = {0};
    a->lkg_loaded = mesh_lkg_load(path, a->catalog, &errors);
    if (a->lkg_loaded < 0) {
        mesh_agent__log_errors(&errors);
        mesh_log_warn("ignoring the last-known-good catalog '%s'", path);
    } else if (a->lkg_loaded > 0) {
        mesh_log_info("loaded %d services from the last-known-good catalog '%s'", a->lkg_loaded,
                      path);
    }
    mesh_cfg_errors_done(&errors);
    if (a->lkg_loaded > 0 && mesh_agent__hosts_remember(a) < 0)
        mesh_log_warn("out of memory remembering the host names of the last-known-good "
                      "catalog; they are resolved afresh");
    r = mesh_lkg_new(a->loop, path, &a->lkg);
    if (r < 0)
        return start_failed(r, "out of memory");
    mesh_agent__restore_locals(a); /* listeners for what ran here, until the registries sync */

    r = mesh_resources_new(a->loop, on_resources_changed, a, &a->resources);
    if (r == 0)
        r = mesh_resources_watch(a->resources, a->cfg->resources_dir, 10000);
    if (r < 0)
        return start_failed(r, "cannot watch the resources in '%s': %s", a->cfg->resources_dir,
                            strerror(-r));
    struct mesh_proxy_options popts = {
        .workers = a->cfg->proxy.workers,
        .max_connections = a->cfg->proxy.max_connections,
        .buffer_size = (size_t)a->cfg->proxy.buffer_size,
        .access_log = a->cfg->proxy.access_log,
        .max_series = (size_t)a->cfg->telemetry.max_series,
        .http = mesh_agent__http_options(&a->cfg->proxy.http),
        .changed = mesh_agent__on_proxy_changed,
        .changed_data = a,
    };
    mesh_hmap_init(&a->members);
    if ((r = mesh_agent__make_certs(a, a->cfg, &a->certs)) < 0 ||
        (r = mesh_agent__make_watch(a, a->cfg, a->certs, &a->watch)) < 0 ||
        (a->watch &&
         (r = mesh_ctl_report_new(a->loop, a->ctl, a->cfg->identity.controller, a->certs,
                                  &mesh_agent__report_ops, a, &a->report)) < 0))
        return start_failed(r, "cannot set up identity (identity.mode \"%s\"): %s",
                            mesh_identity_mode_names[a->cfg->identity.mode], strerror(-r));
    if (a->watch)
        mesh_agent__load_members(a);
    /* What this node reports of its workloads' health comes from its own checks. */
    if (a->report && (r = mesh_local_health_new(a->loop, on_local_health, a, &a->local_health)) < 0)
        return start_failed(r, "cannot check the local workloads: %s", strerror(-r));
    /* Before the data plane: captured calls to virtual IPs find their service from the start. */
    r = mesh_agent__dns_start(a);
    if (r < 0)
        return start_failed(
            r, "cannot start the DNS responder on %s: %s", a->cfg->dns_responder.listen,
            r == -ELOOP ? "an upstream is the responder itself (see above)" : strerror(-r));

    r = mesh_proxy_new(a->loop, &popts, &a->proxy);
    if (r == 0)
        r = mesh_proxy_start(a->proxy);
    if (r < 0)
        return start_failed(r, "cannot start the data plane: %s", strerror(-r));
    if ((r = mesh_agent__tracing_start(a)) < 0)
        return start_failed(r, "cannot start tracing: %s", strerror(-r));
    if ((r = mesh_agent__capture_start(a)) < 0)
        return start_failed(r, "cannot install the capture rules (docs/capture.md)");

    r = mesh_admin_start(a->loop, &a->cfg->admin_addr, a, &a->admin);
    if (r < 0)
        return start_failed(r, "cannot listen on %s for the admin API: %s", a->cfg->admin.listen,
                            uv_strerror(r));

    if (a->cfg->readiness.registry_sync_timeout_ms)
        uv_timer_start(&a->sync_timer, mesh_agent__on_sync_timeout,
                       a->cfg->readiness.registry_sync_timeout_ms, 0);
    else
        a->sync_timed_out = true;

    for (size_t i = 0; i < a->n_slots; i++) {
        r = a->slots[i]->r->ops->start(a->slots[i]->r);
        if (r < 0) {
            /* A registry that cannot start is reported; the others still serve. */
            mesh_log_error("cannot start registry '%s': %s", a->slots[i]->rc->name, strerror(-r));
            a->slots[i]->errors++;
        }
    }
    mesh_log_info("mesh-agent %s (%s) starting on node '%s' with %zu registries", MESH_VERSION,
                  MESH_GIT_COMMIT, a->cfg->node.name, a->n_slots);
    mesh_agent__maybe_ready(a);
    return 0;
}

/* ---- stop ---- */

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_lkg_closed(void *data)
{
    (void)data;
}

static void on_admin_closed(void *data)
{
    struct mesh_agent *a = data;
    a->admin = NULL;
}

static void on_proxy_stopped(void *data)
{
    struct mesh_agent *a = data;
    a->proxy = NULL;
    mesh_log_info("data plane stopped");
}

static void on_left(void *data)
{
    if (data)
        mesh_http_client_close(data, NULL, NULL);
}

static void on_resources_closed(void *data)
{
    struct mesh_agent *a = data;
    a->resources = NULL;
}

void mesh_agent_stop(struct mesh_agent *a)
{
    if (a->state == AGENT_STOPPING) {
        mesh_log_warn("second stop signal: closing every connection now");
        if (a->admin)
            mesh_admin_abort(a->admin);
        if (a->proxy)
            mesh_proxy_abort(a->proxy);
        return;
    }
    a->state = AGENT_STOPPING;
    mesh_notify_stopping();
    mesh_agent__capture_stop(a);
    mesh_log_info("stopping: draining for up to %" PRIu64 " ms", a->cfg->shutdown.drain_timeout_ms);
    for (size_t i = 0; i < a->n_slots; i++)
        mesh_agent__slot_stop(a->slots[i]);
    mesh_free(a->slots);
    a->slots = NULL;
    a->n_slots = 0;
    mesh_hosts_close(a->hosts, NULL, NULL);
    a->hosts = NULL;
    mesh_agent__dns_stop(a);
    if (a->admin)
        mesh_admin_close(a->admin, a->cfg->shutdown.drain_timeout_ms, on_admin_closed, a);
    mesh_trace_exporter_free(a->tracer); /* it reads the proxy's spans: before the proxy goes */
    a->tracer = NULL;
    if (a->proxy)
        mesh_proxy_stop(a->proxy, a->cfg->shutdown.drain_timeout_ms, on_proxy_stopped, a);
    if (a->resources)
        mesh_resources_close(a->resources, on_resources_closed, a);
    mesh_ctl_watch_free(a->watch);
    a->watch = NULL;
    mesh_local_health_free(a->local_health);
    a->local_health = NULL;
    /* This node leaves the mesh's registry; the client closes once the controller knows
     * (the loop runs until it closed), after its other users ended their calls. */
    if (a->report)
        mesh_ctl_report_leave(a->report, on_left, a->ctl);
    else if (a->ctl)
        mesh_http_client_close(a->ctl, NULL, NULL);
    a->report = NULL;
    mesh_certs_free(a->certs); /* the call in flight holds copies of the credentials */
    a->certs = NULL;
    a->ctl = NULL;
    mesh_agent__clear_members(&a->members);
    mesh_hmap_done(&a->members);
    uv_close((uv_handle_t *)&a->update_timer, on_handle_closed);
    if (a->lkg) {
        int r = mesh_lkg_flush(a->lkg);
        if (r < 0)
            mesh_log_warn("cannot write the last-known-good catalog: %s", strerror(-r));
        mesh_lkg_close(a->lkg, on_lkg_closed, NULL);
        a->lkg = NULL;
    }
    /* The second signal must still be heard while draining: keep SIGTERM/SIGINT open. */
    uv_close((uv_handle_t *)&a->sig_hup, on_handle_closed);
    uv_unref((uv_handle_t *)&a->sig_term);
    uv_unref((uv_handle_t *)&a->sig_int);
    uv_close((uv_handle_t *)&a->sync_timer, on_handle_closed);
    mesh_notify_close(&a->notify, on_handle_closed);
}

/* Closes what stays open during the drain; call after uv_run returns, then run again. */
void mesh_agent_close_signals(struct mesh_agent *a)
{
    if (!uv_is_closing((uv_handle_t *)&a->sig_term))
        uv_close((uv_handle_t *)&a->sig_term, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&a->sig_int))
        uv_close((uv_handle_t *)&a->sig_int, on_handle_closed);
}

void mesh_agent_free(struct mesh_agent *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n_slots; i++)
        mesh_agent__slot_free(a->slots[i]);
    mesh_free(a->slots);
    mesh_catalog_free(a->catalog);
    mesh_agent_config_unref(a->cfg);
    mesh_free(a->config_path);
    mesh_free(a->last_reload_error);
    mesh_free(a->locals_saved);
    mesh_free(a->capture_applied);
    mesh_free(a);
}
