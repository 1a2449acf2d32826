#define MESH_LOG_MODULE "kubernetes"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/prom.h"
#include "registry-adapters/kubernetes/k8s-int.h"
#include "registry-adapters/kubernetes/k8s_pods.h"

#define TOKEN_REREAD_MS 60000 /* the kubelet rotates projected tokens well before this */

const char *const mesh_k8s__kind_names[K8S_KINDS] = {"endpointslices", "services", "pods"};
static const char *const err_names[K8S_ERR_KINDS] = {"connect", "unauthorized", "forbidden", "http",
                                                     "decode"};
static const char *const event_names[] = {"added", "modified", "deleted", "bookmark", "error"};

uint64_t mesh_k8s__now(struct k8s_registry *k)
{
    return uv_now(k->base.loop);
}

/* ---- the token ---- */

static void set_token(struct k8s_registry *k, const char *token)
{
    mesh_free(k->auth_header);
    k->auth_header = NULL;
    if (token) {
        size_t n = strlen(token) + 32;
        if ((k->auth_header = mesh_malloc(n)))
            snprintf(k->auth_header, n, "Authorization: Bearer %s", token);
    }
    size_t i = 0;
    k->headers[i++] = "Accept: application/json";
    if (k->auth_header)
        k->headers[i++] = k->auth_header;
    k->headers[i] = NULL;
}

const char *const *mesh_k8s__headers(struct k8s_registry *k)
{
    char err[512];
    if (!k->conn.token_file)
        return k->headers;
    int r = mesh_token_file_refresh(&k->token, mesh_k8s__now(k), err, sizeof(err));
    if (r < 0)
        mesh_k8s__problem(k, K8S_ERR_AUTH, "%s; keeping the token read before", err);
    else if (r > 0)
        set_token(k, k->token.value);
    return k->headers;
}

/* ---- problems ---- */

void mesh_k8s__problem(struct k8s_registry *k, enum k8s_err_kind kind, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    k->errors[kind]++;
    mesh_registry_problem(&k->base, &k->problem, msg);
}

void mesh_k8s__ok(struct k8s_registry *k)
{
    k->last_success = mesh_registry_recovered(&k->base, &k->problem, "the API server answers");
}

int mesh_k8s__start(struct k8s_registry *k, struct mesh_http_req *req)
{
    req->tls = &k->tls;
    int r = mesh_http_req_start(k->http, req);
    if (r == 0)
        k->requests++;
    return r;
}

/* ---- stopping ---- */

void mesh_k8s__closed_one(struct k8s_registry *k)
{
    k->pending_closes--;
    if (k->stopping && k->pending_closes == 0 && k->stopped_cb)
        k->stopped_cb(&k->base, k->stopped_data);
}

static void on_http_closed(void *data)
{
    mesh_k8s__closed_one(data);
}

static void k8s_stop(struct mesh_registry *r, mesh_registry_stopped_cb done, void *data)
{
    struct k8s_registry *k = (struct k8s_registry *)r;
    k->stopping = true;
    k->stopped_cb = done;
    k->stopped_data = data;
    k->pending_closes++; /* held while the closes start */
    mesh_k8s__reflectors_stop(k);
    k->pending_closes++;
    mesh_http_client_close(k->http, on_http_closed, k);
    k->http = NULL;
    mesh_k8s__closed_one(k);
}

/* ---- the adapter ---- */

static const char *real_getenv(const char *name)
{
    return getenv(name);
}

static int k8s_create(uv_loop_t *loop, const struct mesh_registry_config *cfg,
                      const struct mesh_registry_env *env, const struct mesh_registry_sink *sink,
                      struct mesh_registry **ret)
{
    struct k8s_registry *k = mesh_calloc(1, sizeof(*k));
    struct mesh_cfg_errors errors = {0};
    if (!k)
        return -ENOMEM;
    mesh_registry_init(&k->base, &mesh_k8s_registry_ops, loop, cfg, env, sink);
    k->cfg = cfg->adapter;
    int r = mesh_k8s__resolve(k->cfg, real_getenv, env->node_name, env->node_name_guessed, &k->conn,
                              &errors);
    if (r < 0) {
        for (size_t i = 0; i < errors.n; i++)
            mesh_log_error("registry '%s': %s", cfg->name, errors.v[i]);
        mesh_cfg_errors_done(&errors);
        mesh_free(k);
        return r;
    }
    r = mesh_http_client_new(loop, NULL, &k->http);
    if (r < 0) {
        mesh_k8s__conn_done(&k->conn);
        mesh_free(k);
        return r;
    }
    k->tls = (struct mesh_http_tls){
        .ca_file = k->conn.ca_file,
        .ca_pem = k->conn.ca_pem,
        .cert_file = k->conn.cert_file,
        .key_file = k->conn.key_file,
        .cert_pem = k->conn.cert_pem,
        .key_pem = k->conn.key_pem,
        .insecure = k->conn.insecure,
    };
    mesh_token_file_init(&k->token, k->conn.token_file, TOKEN_REREAD_MS);
    set_token(k, k->conn.token);
    for (int i = 0; i < K8S_KINDS; i++)
        mesh_hmap_init(&k->cache[i]);
    mesh_hmap_init(&k->groups);
    mesh_hmap_init(&k->pods_by_ip);
    mesh_jdoc_init(&k->page, 64u << 20); /* a 256 MiB page at most: a value takes >= 2 bytes */
    r = mesh_k8s__reflectors_new(k);
    if (r < 0) {
        k->base.ops->destroy(&k->base);
        return r;
    }
    *ret = &k->base;
    return 0;
}

static void k8s_validate(const struct mesh_registry_config *cfg,
                         const struct mesh_registry_env *env, struct mesh_cfg_errors *errors)
{
    struct mesh_k8s_conn conn;
    if (mesh_k8s__resolve(cfg->adapter, real_getenv, env->node_name, env->node_name_guessed, &conn,
                          errors) == 0)
        mesh_k8s__conn_done(&conn);
}

static int k8s_start(struct mesh_registry *r)
{
    struct k8s_registry *k = (struct k8s_registry *)r;
    mesh_log_info("registry '%s': watching the Kubernetes API at %s (%s) as node '%s'",
                  r->cfg->name, k->conn.server, k->conn.source, k->conn.node_name);
    mesh_k8s__reflectors_start(k);
    return 0;
}

static void k8s_destroy(struct mesh_registry *r)
{
    struct k8s_registry *k = (struct k8s_registry *)r;
    if (k->http) { /* created but never started (or its create failed) */
        mesh_k8s__reflectors_stop(k);
        mesh_http_client_close(k->http, NULL, NULL);
    }
    mesh_k8s__caches_done(k);
    mesh_jdoc_done(&k->page);
    mesh_token_file_done(&k->token);
    mesh_k8s__conn_done(&k->conn);
    mesh_free(k->refl);
    mesh_free(k->auth_header);
    mesh_free(k->problem);
    mesh_free(k);
}

static void k8s_status(struct mesh_registry *r, json_t *out)
{
    struct k8s_registry *k = (struct k8s_registry *)r;
    json_object_set_new(out, "server", json_string(k->conn.server));
    json_object_set_new(out, "credentials", json_string(k->conn.source));
    json_object_set_new(out, "node_name", json_string(k->conn.node_name));
    json_t *cached = json_object();
    for (int i = 0; i < K8S_KINDS; i++)
        json_object_set_new(cached, mesh_k8s__kind_names[i],
                            json_integer((json_int_t)k->cache[i].n));
    json_object_set_new(out, "cached", cached);
    json_t *events = json_object();
    for (int i = 0; i < K8S_KINDS; i++) {
        uint64_t sum = 0;
        for (int t = 0; t < 5; t++)
            sum += k->events[i][t];
        json_object_set_new(events, mesh_k8s__kind_names[i], json_integer((json_int_t)sum));
    }
    json_object_set_new(out, "events", events);
    /* This node's pods by IP (a node runs some 100 at most), through the lookups a caller's
     * address is named with (k8s_pods.h). */
    json_t *pods = json_object();
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; pods && mesh_hmap_next(&k->pods_by_ip, &i, &e);) {
        struct mesh_k8s_pod_ref p;
        char id[600];
        if (!mesh_k8s_pod_by_ip(r, e->key, &p))
            continue;
        bool has_id = mesh_k8s_pod_identity(r, e->key, id, sizeof(id)) == 0;
        json_object_set_new(pods, e->key,
                            json_pack("{s:s, s:s, s:s?, s:s?}", "namespace", p.namespace, "name",
                                      p.name, "service_account", p.service_account, "identity",
                                      has_id ? id : NULL));
    }
    json_object_set_new(out, "pods_by_ip", pods ? pods : json_null());
    json_object_set_new(out, "identity_mismatches",
                        json_integer((json_int_t)k->identity_mismatches));
    if (k->problem)
        json_object_set_new(out, "problem", json_string(k->problem));
}

static void per_kind(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b,
                     const char *name, const char *type, const char *help,
                     double (*value)(const struct k8s_registry *k, int kind))
{
    mesh_prom_family(b, name, type, help);
    for (size_t i = 0; i < n; i++) {
        for (int kind = 0; kind < K8S_KINDS; kind++) {
            struct mesh_prom_label l[] = {{"registry", regs[i]->cfg->name},
                                          {"resource", mesh_k8s__kind_names[kind]},
                                          {NULL, NULL}};
            mesh_prom_sample(b, name, l, value((const struct k8s_registry *)regs[i], kind));
        }
    }
}

static double v_restarts(const struct k8s_registry *k, int kind)
{
    return (double)k->watch_restarts[kind];
}

static double v_relists(const struct k8s_registry *k, int kind)
{
    return (double)k->relists[kind];
}

static double v_objects(const struct k8s_registry *k, int kind)
{
    return (double)k->cache[kind].n;
}

static void k8s_metrics(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b)
{
    per_kind(regs, n, b, "mesh_k8s_watch_restarts_total", "counter",
             "Watches that ended and started again (timeouts, stream cuts, errors).", v_restarts);
    per_kind(regs, n, b, "mesh_k8s_relists_total", "counter",
             "Lists run again after 410 Gone (the watched version was compacted away).", v_relists);
    per_kind(regs, n, b, "mesh_k8s_objects", "gauge", "Objects in the adapter's cache.", v_objects);
    mesh_prom_family(b, "mesh_k8s_events_total", "counter", "Watch events applied, by type.");
    for (size_t i = 0; i < n; i++) {
        const struct k8s_registry *k = (const struct k8s_registry *)regs[i];
        for (int kind = 0; kind < K8S_KINDS; kind++) {
            for (int t = 0; t < 5; t++) {
                struct mesh_prom_label l[] = {{"registry", regs[i]->cfg->name},
                                              {"resource", mesh_k8s__kind_names[kind]},
                                              {"type", event_names[t]},
                                              {NULL, NULL}};
                mesh_prom_sample(b, "mesh_k8s_events_total", l, (double)k->events[kind][t]);
            }
        }
    }
    mesh_prom_family(b, "mesh_k8s_errors_total", "counter",
                     "Failed API requests and unusable answers, by kind.");
    for (size_t i = 0; i < n; i++) {
        const struct k8s_registry *k = (const struct k8s_registry *)regs[i];
        for (int e = 0; e < K8S_ERR_KINDS; e++) {
            struct mesh_prom_label l[] = {
                {"registry", regs[i]->cfg->name}, {"kind", err_names[e]}, {NULL, NULL}};
            mesh_prom_sample(b, "mesh_k8s_errors_total", l, (double)k->errors[e]);
        }
    }
    static const struct {
        const char *name, *help;
    } counters[] = {
        {"mesh_k8s_identity_mismatches_total",
         "Local endpoints whose pod's service account is not the one its Service declares."},
        {"mesh_k8s_bad_service_accounts_total",
         "Services whose mesh-agent.io/service-account annotation is not a service account."},
    };
    for (size_t c = 0; c < MESH_ARRAY_SIZE(counters); c++) {
        mesh_prom_family(b, counters[c].name, "counter", counters[c].help);
        for (size_t i = 0; i < n; i++) {
            const struct k8s_registry *k = (const struct k8s_registry *)regs[i];
            struct mesh_prom_label l[] = {{"registry", regs[i]->cfg->name}, {NULL, NULL}};
            mesh_prom_sample(b, counters[c].name, l,
                             (double)(c ? k->bad_service_accounts : k->identity_mismatches));
        }
    }
    mesh_prom_family(b, "mesh_k8s_apply_seconds", "summary",
                     "Time to apply a batch of watch events to the catalog.");
    for (size_t i = 0; i < n; i++) {
        const struct k8s_registry *k = (const struct k8s_registry *)regs[i];
        struct mesh_prom_label l[] = {{"registry", regs[i]->cfg->name}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_k8s_apply_seconds_sum", l, k->apply_seconds_sum);
        mesh_prom_sample(b, "mesh_k8s_apply_seconds_count", l, (double)k->apply_count);
    }
    mesh_prom_family(b, "mesh_k8s_last_success_timestamp_seconds", "gauge",
                     "When a list last completed, in seconds since the epoch.");
    for (size_t i = 0; i < n; i++) {
        struct mesh_prom_label l[] = {{"registry", regs[i]->cfg->name}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_k8s_last_success_timestamp_seconds", l,
                         ((const struct k8s_registry *)regs[i])->last_success);
    }
}

const struct mesh_registry_ops mesh_k8s_registry_ops = {
    .type = "kubernetes",
    .config_schema = &mesh_k8s__schema,
    .create = k8s_create,
    .validate = k8s_validate,
    .start = k8s_start,
    .stop = k8s_stop,
    .destroy = k8s_destroy,
    .status = k8s_status,
    .metrics = k8s_metrics,
};
