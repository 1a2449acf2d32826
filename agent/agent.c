#define MESH_LOG_MODULE "agent"

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
#include "agent/lkg.h"
#include "agent/notify.h"
#include "agent/resources.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/prom.h"
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

static void log_errors(const struct mesh_cfg_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        mesh_log_error("%s", e->v[i]);
    if (e->dropped)
        mesh_log_error("(%zu more errors not shown)", e->dropped);
}

static void apply_log_settings(struct mesh_agent *a)
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

/* ---- the data plane ---- */

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
    uint64_t t0 = uv_hrtime();
    mesh_proxy_update(a->proxy, &in);
    a->update_cost_ns = uv_hrtime() - t0;
    a->update_done_ms = uv_now(a->loop);
    mesh_free(locals);
}

static struct mesh_http_options http_options(const struct mesh_agent_http_config *h)
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

static void on_certs_changed(void *data)
{
    struct mesh_agent *a = data;
    mesh_ctl_watch_kick(a->watch); /* the first node certificate lets it start */
    mesh_agent__schedule(a);
}

static void clear_members(struct mesh_hmap *m)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(m, &i, &e))
        mesh_free((char *)(uintptr_t)e->key);
    mesh_hmap_done(m);
    mesh_hmap_init(m);
}

static void members_path(const struct mesh_agent *a, char *out, size_t n)
{
    snprintf(out, n, "%s/controller-members.json", a->cfg->state_dir);
}

/* The membership answered to a report: endpoints at these addresses run an agent. Kept in
 * the state dir: a restart while the controller is away still knows them. */
static void on_members(void *data, json_t *members)
{
    struct mesh_agent *a = data;
    struct mesh_hmap next;
    mesh_hmap_init(&next);
    size_t i;
    json_t *m;
    bool changed = false;
    json_array_foreach(members, i, m)
    {
        const char *node = json_string_value(json_object_get(m, "node"));
        const char *ip = json_string_value(json_object_get(m, "address"));
        json_int_t port = json_integer_value(json_object_get(m, "inbound_port"));
        struct mesh_addr tmp;
        if (!node || !ip || port < 1 || port > 65535 || strcmp(node, a->cfg->node.name) == 0 ||
            mesh_addr_from_ip(ip, 1, &tmp) < 0 || mesh_hmap_get(&next, ip))
            continue;
        char *key = mesh_strdup(ip);
        if (!key || mesh_hmap_put(&next, key, (void *)(uintptr_t)port) < 0) {
            mesh_free(key);
            continue;
        }
        changed |= mesh_hmap_get(&a->members, ip) != (void *)(uintptr_t)port;
    }
    changed |= next.n != a->members.n;
    if (!changed) {
        clear_members(&next);
        mesh_hmap_done(&next);
        return;
    }
    clear_members(&a->members);
    mesh_hmap_done(&a->members);
    a->members = next;
    a->members_version++;
    mesh_log_info("mesh membership: %zu other agents", next.n);
    mesh_agent__schedule(a);
    char path[4200], *text = json_dumps(members, JSON_COMPACT);
    members_path(a, path, sizeof(path));
    int r = text ? mesh_fs_write_atomic(path, text, strlen(text), 0600) : -ENOMEM;
    if (r < 0)
        mesh_log_warn("cannot keep the mesh membership in %s: %s", path, strerror(-r));
    mesh_free(text);
}

static void load_members(struct mesh_agent *a)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    members_path(a, path, sizeof(path));
    if (mesh_fs_read_file(path, 16 * 1024 * 1024, &text, &len) < 0)
        return;
    json_t *doc = json_loadb(text, len, 0, NULL);
    mesh_free(text);
    if (json_is_array(doc))
        on_members(a, doc);
    json_decref(doc);
}

static json_t *build_report(void *data)
{
    struct mesh_agent *a = data;
    json_t *services = json_array(), *certs = json_array();
    for (size_t i = 0; i < a->n_slots; i++) {
        for (size_t j = 0; j < a->slots[i]->n_locals; j++) {
            const struct mesh_local_service *l = &a->slots[i]->locals[j];
            json_array_append_new(
                services, json_pack("{s:s, s:s}", "namespace", l->namespace, "name", l->name));
        }
    }
    const struct mesh_tls_material *m = mesh_certs_material(a->certs);
    for (size_t i = 0; m && i < m->n; i++)
        json_array_append_new(certs, json_pack("{s:s, s:I}", "id", m->ids[i].id, "not_after",
                                               (json_int_t)m->ids[i].not_after));
    return json_pack("{s:s, s:s, s:i, s:o, s:I, s:o, s:{s:i}}", "version", MESH_VERSION, "address",
                     a->cfg->node.address ? a->cfg->node.address : "", "inbound_port",
                     (int)mesh_addr_port(&a->cfg->inbound_addr), "services", services,
                     "config_index", (json_int_t)mesh_ctl_watch_index(a->watch), "certificates",
                     certs, "counters", "active_connections",
                     a->proxy ? mesh_proxy_active(a->proxy) : 0);
}

static const struct mesh_ctl_report_ops report_ops = {.build = build_report, .members = on_members};

/* The controller's resources, in controller mode. Returns 0 or -errno. */
static int make_watch(struct mesh_agent *a, const struct mesh_agent_config *cfg,
                      struct mesh_certs *certs, struct mesh_ctl_watch **ret)
{
    *ret = NULL;
    if (cfg->identity.mode != MESH_IDENTITY_CONTROLLER)
        return 0;
    return mesh_ctl_watch_new(a->loop, a->ctl, cfg->identity.controller, cfg->state_dir, certs,
                              a->resources, ret);
}

/* The certificate manager the config asks for (NULL for none). Returns 0 or -errno. */
static int make_certs(struct mesh_agent *a, const struct mesh_agent_config *cfg,
                      struct mesh_certs **ret)
{
    *ret = NULL;
    if (cfg->identity.mode == MESH_IDENTITY_NONE)
        return 0;
    int r;
    if (cfg->identity.mode == MESH_IDENTITY_CONTROLLER && !a->ctl &&
        (r = mesh_http_client_new(a->loop, NULL, &a->ctl)) < 0)
        return r;
    return mesh_certs_new(a->loop, a->ctl, cfg, on_certs_changed, a, ret);
}

/* Whether a reload leaves the certificate manager as it is (the encoded section holds
 * every identity key, mode included). */
static bool identity_equal(const struct mesh_agent_config *a, const struct mesh_agent_config *b)
{
    json_t *ja = mesh_agent_config_to_json(a), *jb = mesh_agent_config_to_json(b);
    bool eq = ja && jb &&
              json_equal(json_object_get(ja, "identity"), json_object_get(jb, "identity")) &&
              strcmp(a->trust_domain, b->trust_domain) == 0;
    json_decref(ja);
    json_decref(jb);
    return eq;
}

static void on_resources_changed(void *data)
{
    struct mesh_agent *a = data;
    mesh_agent__schedule(a);
    mesh_agent__maybe_ready(a);
}

/* ---- the registry sink ---- */

static void sink_set_service(void *data, struct mesh_registry *r,
                             const struct mesh_service_update *u)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    int ret = mesh_catalog_update(s->agent->catalog, s->rc->name, u);
    if (ret < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "service '%s/%s' refused by the catalog: %s", u->namespace,
                 u->name, strerror(-ret));
        s->errors++;
        mesh_free(s->last_error);
        s->last_error = mesh_strdup(msg);
        mesh_log_warn("registry '%s': %s", s->rc->name, msg);
    }
}

static void sink_set_local(void *data, struct mesh_registry *r, const struct mesh_local_service *v,
                           size_t n)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    struct mesh_local_service *copy = mesh_calloc(n ? n : 1, sizeof(*copy));
    size_t k = 0;
    for (; copy && k < n; k++) {
        if (mesh_local_service_copy(&copy[k], &v[k]) < 0)
            break;
    }
    if (!copy || k < n) {
        for (size_t i = 0; i < k; i++)
            mesh_local_service_done(&copy[i]);
        mesh_free(copy);
        s->errors++;
        mesh_log_error("registry '%s': out of memory keeping local services", s->rc->name);
        return;
    }
    for (size_t i = 0; i < s->n_locals; i++)
        mesh_local_service_done(&s->locals[i]);
    mesh_free(s->locals);
    s->locals = copy;
    s->n_locals = n;
    mesh_agent__save_locals(s->agent);
    mesh_agent__schedule(s->agent);
}

static void sink_sync_begin(void *data, struct mesh_registry *r)
{
    struct slot *s = data;
    (void)r;
    if (!s->stopping)
        mesh_catalog_sync_begin(s->agent->catalog, s->rc->name);
}

static void sink_sync_end(void *data, struct mesh_registry *r)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    mesh_catalog_sync_end(s->agent->catalog, s->rc->name);
    if (!s->synced)
        mesh_log_info("registry '%s' synced", s->rc->name);
    s->synced = true;
    s->syncs++;
    s->last_sync = mesh_agent__now();
    mesh_agent__maybe_ready(s->agent);
}

static void sink_error(void *data, struct mesh_registry *r, const char *message)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    s->errors++;
    mesh_free(s->last_error);
    s->last_error = mesh_strdup(message);
}

static void on_catalog_change(void *data)
{
    struct mesh_agent *a = data;
    if (a->lkg && a->state != AGENT_STOPPING)
        mesh_lkg_schedule(a->lkg, a->catalog);
    mesh_agent__schedule(a);
}

/* ---- registry slots ---- */

static void slot_free(struct slot *s)
{
    if (s->r)
        s->r->ops->destroy(s->r);
    for (size_t i = 0; i < s->n_locals; i++)
        mesh_local_service_done(&s->locals[i]);
    mesh_free(s->locals);
    mesh_free(s->last_error);
    mesh_agent_config_unref(s->cfg);
    mesh_free(s);
}

static int slot_new(struct mesh_agent *a, struct mesh_agent_config *cfg,
                    const struct mesh_registry_config *rc, struct slot **ret)
{
    struct slot *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->agent = a;
    s->rc = rc;
    s->cfg = mesh_agent_config_ref(cfg);
    struct mesh_registry_sink sink = {
        .data = s,
        .set_service = sink_set_service,
        .set_local = sink_set_local,
        .sync_begin = sink_sync_begin,
        .sync_end = sink_sync_end,
        .error = sink_error,
    };
    int r = rc->ops->create(a->loop, rc, &cfg->env, &sink, &s->r);
    if (r < 0) {
        s->r = NULL;
        slot_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

static void on_slot_stopped(struct mesh_registry *r, void *data)
{
    struct slot *s = data;
    (void)r;
    slot_free(s);
}

static void slot_stop(struct slot *s)
{
    s->stopping = true;
    s->r->ops->stop(s->r, on_slot_stopped, s);
}

static int set_catalog_sources(struct mesh_agent *a, struct slot **slots, size_t n)
{
    struct mesh_catalog_source src[MESH_AGENT_REGISTRIES_MAX];
    for (size_t i = 0; i < n; i++)
        src[i] = (struct mesh_catalog_source){slots[i]->rc->name, slots[i]->rc->type,
                                              slots[i]->rc->merge};
    return mesh_catalog_set_sources(a->catalog, src, n);
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
        log_errors(&errors);
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
    apply_log_settings(a);
    r = mesh_catalog_new(&a->catalog);
    if (r < 0) {
        mesh_agent_config_unref(a->cfg);
        mesh_free(a->config_path);
        mesh_free(a);
        return start_failed(r, "out of memory");
    }
    mesh_catalog_set_change_cb(a->catalog, on_catalog_change, a);
    *ret = a;
    return 0;
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

    r = mesh_fs_mkdir_private(a->cfg->state_dir, 0700);
    if (r < 0)
        return start_failed(r, "cannot create the state directory '%s': %s", a->cfg->state_dir,
                            strerror(-r));

    /* Registries first (without starting them) so the catalog knows its sources. */
    a->slots = mesh_calloc(a->cfg->registries.n ? a->cfg->registries.n : 1, sizeof(*a->slots));
    if (!a->slots)
        return start_failed(-ENOMEM, "out of memory");
    for (size_t i = 0; i < a->cfg->registries.n; i++) {
        r = slot_new(a, a->cfg, &a->cfg->registries.v[i], &a->slots[a->n_slots]);
        if (r < 0)
            return start_failed(r, "cannot create registry '%s': %s", a->cfg->registries.v[i].name,
                                strerror(-r));
        a->n_slots++;
    }
    r = set_catalog_sources(a, a->slots, a->n_slots);
    if (r < 0)
        return start_failed(r, "cannot set the catalog's sources: %s", strerror(-r));

    snprintf(path, sizeof(path), "%s/%s", a->cfg->state_dir, MESH_LKG_FILE);
    struct mesh_cfg_errors errors = {0};
    a->lkg_loaded = mesh_lkg_load(path, a->catalog, &errors);
    if (a->lkg_loaded < 0) {
        log_errors(&errors);
        mesh_log_warn("ignoring the last-known-good catalog '%s'", path);
    } else if (a->lkg_loaded > 0) {
        mesh_log_info("loaded %d services from the last-known-good catalog '%s'", a->lkg_loaded,
                      path);
    }
    mesh_cfg_errors_done(&errors);
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
        .http = http_options(&a->cfg->proxy.http),
        .changed = mesh_agent__on_proxy_changed,
        .changed_data = a,
    };
    mesh_hmap_init(&a->members);
    if ((r = make_certs(a, a->cfg, &a->certs)) < 0 ||
        (r = make_watch(a, a->cfg, a->certs, &a->watch)) < 0 ||
        (a->watch && (r = mesh_ctl_report_new(a->loop, a->ctl, a->cfg->identity.controller,
                                              a->certs, &report_ops, a, &a->report)) < 0))
        return start_failed(r, "cannot set up identity (identity.mode \"%s\"): %s",
                            mesh_identity_mode_names[a->cfg->identity.mode], strerror(-r));
    if (a->watch)
        load_members(a);
    r = mesh_proxy_new(a->loop, &popts, &a->proxy);
    if (r == 0)
        r = mesh_proxy_start(a->proxy);
    if (r < 0)
        return start_failed(r, "cannot start the data plane: %s", strerror(-r));

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

/* ---- reload ---- */

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

/* The running slot with rc's name, or -1. */
static int find_slot(const struct mesh_agent *a, const struct mesh_registry_config *rc)
{
    for (size_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i] && strcmp(a->slots[i]->rc->name, rc->name) == 0)
            return (int)i;
    }
    return -1;
}

/*
 * A registry whose config changed starts with what its predecessor knew of this host's
 * services, so the listeners of those services stay up until the new one has synced.
 */
static void inherit_locals(struct slot *s, const struct slot *old)
{
    sink_set_local(s, s->r, old->locals, old->n_locals);
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
        log_errors(&errors);
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
    bool new_identity = !identity_equal(next, a->cfg);
    if (new_identity &&
        (make_certs(a, next, &certs) < 0 || make_watch(a, next, certs, &watch) < 0)) {
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
        int old = find_slot(a, rc);
        taken[n] = -1;
        if (old >= 0 && mesh_registry_config_equal(a->slots[old]->rc, rc)) {
            slots[n] = a->slots[old];
            a->slots[old] = NULL;
            taken[n] = old;
            continue;
        }
        r = slot_new(a, next, rc, &slots[n]);
        if (r < 0)
            goto fail;
        if (old >= 0)
            inherit_locals(slots[n], a->slots[old]);
    }
    r = set_catalog_sources(a, slots, n);
    if (r < 0)
        goto fail;

    /* Committed: nothing below fails. */
    for (size_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i])
            slot_stop(a->slots[i]);
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
        if (watch && mesh_ctl_report_new(a->loop, a->ctl, next->identity.controller, certs,
                                         &report_ops, a, &a->report) < 0)
            mesh_log_error("out of memory: no reports to the controller");
        mesh_ctl_watch_free(a->watch);
        mesh_certs_free(a->certs); /* connections keep the material they were made with */
        a->certs = certs;
        a->watch = watch;
    }
    bool resources_moved = strcmp(next->resources_dir, a->cfg->resources_dir) != 0;
    mesh_agent_config_unref(a->cfg);
    a->cfg = next;
    apply_log_settings(a);
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
            slot_free(slots[i]);
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
    mesh_log_info("stopping: draining for up to %" PRIu64 " ms", a->cfg->shutdown.drain_timeout_ms);
    for (size_t i = 0; i < a->n_slots; i++)
        slot_stop(a->slots[i]);
    mesh_free(a->slots);
    a->slots = NULL;
    a->n_slots = 0;
    if (a->admin)
        mesh_admin_close(a->admin, a->cfg->shutdown.drain_timeout_ms, on_admin_closed, a);
    if (a->proxy)
        mesh_proxy_stop(a->proxy, a->cfg->shutdown.drain_timeout_ms, on_proxy_stopped, a);
    if (a->resources)
        mesh_resources_close(a->resources, on_resources_closed, a);
    mesh_ctl_report_free(a->report);
    a->report = NULL;
    mesh_ctl_watch_free(a->watch);
    a->watch = NULL;
    mesh_certs_free(a->certs);
    a->certs = NULL;
    if (a->ctl) /* after its users, which ended their calls; the loop runs until it closed */
        mesh_http_client_close(a->ctl, NULL, NULL);
    a->ctl = NULL;
    clear_members(&a->members);
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
        slot_free(a->slots[i]);
    mesh_free(a->slots);
    mesh_catalog_free(a->catalog);
    mesh_agent_config_unref(a->cfg);
    mesh_free(a->config_path);
    mesh_free(a->last_reload_error);
    mesh_free(a->locals_saved);
    mesh_free(a);
}

/* ---- introspection ---- */

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
    return json_pack("{s:s, s:s, s:s, s:b, s:s, s:o, s:f, s:o, s:o, s:i}", "version", MESH_VERSION,
                     "commit", MESH_GIT_COMMIT, "node", a->cfg->node.name, "ready",
                     a->state == AGENT_READY, "status", line, "config_file",
                     a->config_path ? json_string(a->config_path) : json_null(), "uptime_seconds",
                     mesh_agent__now() - a->start_time, "reload", reload, "registries", regs,
                     "catalog_services", (int)mesh_catalog_count(a->catalog));
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
    mesh_registry_metrics(regs, a->n_slots, b);

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
    if (a->proxy)
        mesh_proxy_metrics(a->proxy, b);
    mesh_certs_metrics(a->certs, b);
    mesh_prom_family(b, "mesh_agent_watchdog_pings_total", "counter",
                     "Watchdog keep-alives sent to the service manager.");
    mesh_prom_sample(b, "mesh_agent_watchdog_pings_total", NULL, (double)a->notify.pings);
}
