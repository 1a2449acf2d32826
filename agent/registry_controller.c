#define MESH_LOG_MODULE "registry"

/*
 * The `controller` registry: the mesh-wide catalog the mesh-controller keeps from every
 * agent's reports (GET /v1/catalog, a blocking query: index, wait, answered on a change),
 * fed to the catalog like any other source. Endpoints of this node are left out: they are
 * this host's own services, which its other registries already publish.
 *
 * It lives in agent/, not registry-adapters/: its calls go through the agent's controller
 * client (agent/ctl_client.h, on the loop) with the node's certificate, both the agent's.
 * It reaches them through its sink, whose data is the agent's slot (agent-int.h): the
 * registry interface stays as it is, and no registry module depends on the agent.
 *
 * The first answer (and any after the controller lost track of our index: a restart) is the
 * whole catalog, applied as a full sync (sync_begin, set_service..., sync_end), so a service
 * gone from it goes here too; the others hold only what changed since our index: the
 * services changed, whole, and the names of those removed. An answer that does not decode is
 * refused whole and the last good catalog stays (so does the last-known-good file across restarts).
 * Errors back off from 1 s to 60 s; queries never loop faster than every 200 ms.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/config.h"
#include "agent/ctl_client.h"
#include "agent/registries.h"
#include "catalog/catalog.h"
#include "catalog/endpoint_json.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/names.h"
#include "common/strutil.h"

#define MIN_INTERVAL_MS 200
#define NO_CREDENTIALS_RETRY_MS 500
#define MAX_ANSWER (256u * 1024 * 1024)

struct ctlreg_config {
    uint64_t wait_ms;
};

#define C(member) MESH_CFG_FIELD(struct ctlreg_config, member)

static const struct mesh_cfg_field config_fields[] = {
    {.key = "wait",
     .type = MESH_CFG_DURATION,
     C(wait_ms),
     .def = "30s",
     .min = 1000,
     .max = 600000},
    {0},
};

static const struct mesh_cfg_schema config_schema = {
    .size = sizeof(struct ctlreg_config),
    .fields = config_fields,
};

/* One service of an answer (the last-known-good file's shape, with its identities). */
struct ctl_service {
    char *namespace;
    char *name;
    int protocol;
    struct mesh_cfg_list endpoints;
    struct mesh_cfg_strings identities;
};

#define S(member) MESH_CFG_FIELD(struct ctl_service, member)

static const struct mesh_cfg_field service_fields[] = {
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     S(namespace),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "name",
     .type = MESH_CFG_STRING,
     S(name),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "protocol",
     .type = MESH_CFG_ENUM,
     S(protocol),
     .choices = mesh_protocol_names,
     .def = "tcp"},
    {.key = "endpoints",
     .type = MESH_CFG_LIST,
     S(endpoints),
     .schema = &mesh_endpoint_schema,
     .max = MESH_ENDPOINTS_MAX},
    {.key = "identities", .type = MESH_CFG_STRINGS, S(identities), .max = MESH_ENDPOINTS_MAX},
    {0},
};

static const struct mesh_cfg_schema service_schema = {
    .size = sizeof(struct ctl_service),
    .fields = service_fields,
};

struct ctl_catalog {
    bool full;
    struct mesh_cfg_list services;
    struct mesh_cfg_strings removed;
};

static const struct mesh_cfg_field catalog_fields[] = {
    {.key = "full", .type = MESH_CFG_BOOL, MESH_CFG_FIELD(struct ctl_catalog, full), .def_int = 1},
    {.key = "removed",
     .type = MESH_CFG_STRINGS,
     MESH_CFG_FIELD(struct ctl_catalog, removed),
     .max = 1000000},
    {.key = "services",
     .type = MESH_CFG_LIST,
     MESH_CFG_FIELD(struct ctl_catalog, services),
     .flags = MESH_CFG_REQUIRED,
     .schema = &service_schema,
     .max = 1000000},
    {0},
};

static const struct mesh_cfg_schema catalog_schema = {
    .size = sizeof(struct ctl_catalog),
    .fields = catalog_fields,
};

struct ctlreg {
    struct mesh_registry base;
    const struct ctlreg_config *cfg;
    struct slot *slot; /* the sink's data: the agent's slot running this registry */
    uv_timer_t timer;
    struct mesh_ctl_req req;
    uint64_t index; /* of the catalog applied (0: none yet) */
    uint64_t started_ms;
    unsigned failures;
    uint64_t queries, changes;
    double last_success;
    char *problem;
    bool stopping;
    mesh_registry_stopped_cb stopped_cb;
    void *stopped_data;
};

static void start_query(struct ctlreg *g);

static void on_timer(uv_timer_t *t)
{
    start_query(t->data);
}

static void later(struct ctlreg *g, uint64_t ms)
{
    if (!g->stopping)
        uv_timer_start(&g->timer, on_timer, ms, 0);
}

static void failed(struct ctlreg *g, const char *msg)
{
    mesh_registry_problem(&g->base, &g->problem, msg);
    later(g, mesh_ctl_backoff_ms(g->failures++));
}

/* Applies one decoded service, without this node's endpoints. Returns the endpoints set,
 * or -ENOMEM. */
static int apply_service(struct ctlreg *g, const struct ctl_service *s)
{
    const char *self = g->base.env->node_name;
    struct mesh_endpoint *eps = mesh_calloc(s->endpoints.n ? s->endpoints.n : 1, sizeof(*eps));
    size_t k = 0;
    int r = eps ? 0 : -ENOMEM;
    for (size_t i = 0; r == 0 && i < s->endpoints.n; i++) {
        const struct mesh_endpoint_config *ec =
            (const struct mesh_endpoint_config *)s->endpoints.items + i;
        if (ec->node && strcmp(ec->node, self) == 0)
            continue; /* ours: this host's registries publish it */
        r = mesh_endpoint_from_config(ec, &eps[k]);
        k += r == 0;
    }
    if (r == 0) {
        /* With no endpoint but ours: not a remote service (gone from this source). */
        struct mesh_service_update u = {
            .namespace = s->namespace,
            .name = s->name,
            .protocol = (enum mesh_protocol)s->protocol,
            .endpoints = eps,
            .n_endpoints = k,
            .exists = k > 0,
            /* What its agents present (a service account of its own); with several, the
             * first: callers want one ID per service. */
            .identity = s->identities.n ? s->identities.v[0] : NULL,
        };
        g->base.sink.set_service(g->base.sink.data, &g->base, &u);
    }
    for (size_t i = 0; i < k; i++)
        mesh_endpoint_done(&eps[i]);
    mesh_free(eps);
    return r < 0 ? r : (int)k;
}

/* Decodes an answer and applies it whole. Returns 0, or -EINVAL with why in msg. */
static int apply(struct ctlreg *g, json_t *doc, char *msg, size_t n)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_cfg_ctx ctx;
    struct ctl_catalog cat;
    mesh_cfg_ctx_init(&ctx, "GET /v1/catalog", &errors);
    if (mesh_cfg_defaults(&catalog_schema, &cat) < 0)
        return -ENOMEM;
    json_object_del(doc, "index"); /* read already; larger than the config engine's ints */
    int r = mesh_cfg_decode(&ctx, &catalog_schema, doc, &cat);
    if (r < 0 || errors.n) {
        snprintf(msg, n, "the controller's catalog is refused, the last one stays: %s",
                 errors.n ? errors.v[0] : "invalid");
        mesh_cfg_errors_done(&errors);
        mesh_cfg_free(&catalog_schema, &cat);
        return -EINVAL;
    }
    /* The whole catalog is a full sync; changes since our index touch what they name. */
    if (cat.full)
        g->base.sink.sync_begin(g->base.sink.data, &g->base);
    for (size_t i = 0; r >= 0 && i < cat.services.n; i++)
        r = apply_service(g, (const struct ctl_service *)cat.services.items + i);
    for (size_t i = 0; r >= 0 && !cat.full && i < cat.removed.n; i++) {
        char ns[128];
        const char *slash = strchr(cat.removed.v[i], '/');
        if (!slash || (size_t)(slash - cat.removed.v[i]) >= sizeof(ns))
            continue;
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - cat.removed.v[i]), cat.removed.v[i]);
        if (!mesh_name_is_dns_label(ns) || !mesh_name_is_dns_label(slash + 1))
            continue;
        struct mesh_service_update u = {.namespace = ns, .name = slash + 1};
        g->base.sink.set_service(g->base.sink.data, &g->base, &u);
    }
    if (cat.full)
        g->base.sink.sync_end(g->base.sink.data, &g->base);
    mesh_cfg_free(&catalog_schema, &cat);
    if (r < 0) {
        snprintf(msg, n, "out of memory applying the controller's catalog");
        return r;
    }
    return 0;
}

static void on_answer(struct mesh_ctl_req *req)
{
    struct ctlreg *g = req->data;
    long status = req->http.status;
    json_t *doc = status == 200 ? mesh_ctl_req_json(req) : NULL;
    json_t *index = json_object_get(doc, "index");
    char msg[600];
    if (!json_is_integer(index) || json_integer_value(index) < 1) {
        if (status == 200)
            snprintf(msg, sizeof(msg), "GET /v1/catalog: not a catalog (no index)");
        else if (status)
            snprintf(msg, sizeof(msg), "GET /v1/catalog: %ld", status);
        else
            snprintf(msg, sizeof(msg), "the controller is unreachable: %s", req->http.error);
        json_decref(doc);
        failed(g, msg);
        return;
    }
    uint64_t next = (uint64_t)json_integer_value(index);
    if (next != g->index) {
        int r = apply(g, doc, msg, sizeof(msg));
        if (r < 0) {
            json_decref(doc);
            failed(g, msg);
            return;
        }
        g->index = next; /* also when it went back: a controller with another history */
        g->changes++;
        mesh_log_debug("registry '%s': catalog index %llu", g->base.cfg->name,
                       (unsigned long long)next);
    }
    json_decref(doc);
    g->failures = 0;
    g->last_success = mesh_registry_recovered(&g->base, &g->problem, "the controller answers");
    uint64_t since = uv_now(g->base.loop) - g->started_ms;
    later(g, since >= MIN_INTERVAL_MS ? 0 : MIN_INTERVAL_MS - since);
}

static void start_query(struct ctlreg *g)
{
    struct mesh_agent *a = g->slot->agent;
    const char *cert, *key, *bundle;
    if (g->stopping || mesh_ctl_req_active(&g->req))
        return;
    if (!a->ctl || !a->certs || !mesh_certs_node_credentials(a->certs, &cert, &key, &bundle)) {
        later(g, NO_CREDENTIALS_RETRY_MS); /* enrolling: soon */
        return;
    }
    char url[4400], wait[32];
    mesh_format_duration_ms(g->cfg->wait_ms, wait, sizeof(wait));
    const char *base = a->cfg->identity.controller;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    snprintf(url, sizeof(url), "%.*s/v1/catalog?index=%llu&wait=%s", (int)n, base,
             (unsigned long long)g->index, wait);
    struct mesh_ctl_call call = {.url = url,
                                 .ca_pem = bundle,
                                 .cert_pem = cert,
                                 .key_pem = key,
                                 .timeout_ms = (long)(g->cfg->wait_ms + 15000),
                                 .max_answer = MAX_ANSWER};
    g->started_ms = uv_now(g->base.loop);
    int r = mesh_ctl_req_start(a->ctl, &g->req, &call);
    if (r < 0) {
        snprintf(url, sizeof(url), "cannot start a query: %s", strerror(-r));
        failed(g, url);
        return;
    }
    g->queries++;
}

static int ctlreg_create(uv_loop_t *loop, const struct mesh_registry_config *cfg,
                         const struct mesh_registry_env *env, const struct mesh_registry_sink *sink,
                         struct mesh_registry **ret)
{
    struct slot *slot = sink->data;
    if (!mesh_certs_mode_uses_controller(slot->cfg->identity.mode)) {
        mesh_log_error("registry '%s': type 'controller' needs identity.mode 'controller'",
                       cfg->name);
        return -EINVAL;
    }
    struct ctlreg *g = mesh_calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    mesh_registry_init(&g->base, &mesh_agent_controller_registry_ops, loop, cfg, env, sink);
    g->cfg = cfg->adapter;
    g->slot = slot;
    mesh_ctl_req_init(&g->req, on_answer, g);
    uv_timer_init(loop, &g->timer);
    g->timer.data = g;
    *ret = &g->base;
    return 0;
}

static int ctlreg_start(struct mesh_registry *r)
{
    start_query((struct ctlreg *)r);
    return 0;
}

static void ctlreg_refresh(struct mesh_registry *r)
{
    struct ctlreg *g = (struct ctlreg *)r;
    /* A full answer at once: whatever index we hold, ask as if we had none. */
    if (!g->stopping) {
        mesh_ctl_req_done(&g->req);
        g->index = 0;
        start_query(g);
    }
}

static void on_closed(uv_handle_t *h)
{
    struct ctlreg *g = h->data;
    if (g->stopped_cb)
        g->stopped_cb(&g->base, g->stopped_data);
}

static void ctlreg_stop(struct mesh_registry *r, mesh_registry_stopped_cb done, void *data)
{
    struct ctlreg *g = (struct ctlreg *)r;
    g->stopping = true;
    g->stopped_cb = done;
    g->stopped_data = data;
    mesh_ctl_req_done(&g->req); /* a query in flight ends now, without calling back */
    uv_close((uv_handle_t *)&g->timer, on_closed);
}

static void ctlreg_destroy(struct mesh_registry *r)
{
    struct ctlreg *g = (struct ctlreg *)r;
    mesh_ctl_req_done(&g->req);
    mesh_free(g->problem);
    mesh_free(g);
}

static void ctlreg_status(struct mesh_registry *r, json_t *out)
{
    const struct ctlreg *g = (const struct ctlreg *)r;
    json_object_set_new(out, "index", json_integer((json_int_t)g->index));
    json_object_set_new(out, "queries", json_integer((json_int_t)g->queries));
    json_object_set_new(out, "changes", json_integer((json_int_t)g->changes));
    json_object_set_new(out, "watching", json_boolean(mesh_ctl_req_active(&g->req)));
    struct mesh_catalog_source_stats st = {0};
    mesh_catalog_source_stats(g->slot->agent->catalog, r->cfg->name, &st);
    json_object_set_new(out, "remote_services", json_integer((json_int_t)st.services));
    json_object_set_new(out, "remote_endpoints", json_integer((json_int_t)st.endpoints));
    if (g->problem)
        json_object_set_new(out, "problem", json_string(g->problem));
}

const struct mesh_registry_ops mesh_agent_controller_registry_ops = {
    .type = "controller",
    .config_schema = &config_schema,
    .create = ctlreg_create,
    .start = ctlreg_start,
    .refresh = ctlreg_refresh,
    .stop = ctlreg_stop,
    .destroy = ctlreg_destroy,
    .status = ctlreg_status,
};
