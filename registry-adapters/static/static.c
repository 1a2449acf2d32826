#define MESH_LOG_MODULE "static"

#include "registry-adapters/static/static.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/atom.h"
#include "common/claims.h"
#include "common/json_dir.h"
#include "common/log.h"
#include "common/prom.h"
#include "common/spiffe.h"
#include "registry-adapters/static/service_file-int.h"

#define C(member) MESH_CFG_FIELD(struct mesh_static_config, member)

static const struct mesh_cfg_field config_fields[] = {
    {.key = "directory",
     .type = MESH_CFG_STRING,
     C(directory),
     .flags = MESH_CFG_PATH | MESH_CFG_NONEMPTY,
     .def = "/etc/mesh-agent/services.d",
     .expect = "a directory path"},
    {.key = "poll_interval",
     .type = MESH_CFG_DURATION,
     C(poll_interval_ms),
     .def = "10s",
     .max = 3600000},
    {0},
};

static const struct mesh_cfg_schema config_schema = {
    .size = sizeof(struct mesh_static_config),
    .fields = config_fields,
};

struct static_registry {
    struct mesh_registry base;
    const struct mesh_static_config *cfg;
    struct mesh_json_dir *dir;
    size_t n_services;
    size_t n_local;
    mesh_registry_stopped_cb stopped_cb;
    void *stopped_data;
};

static void report(struct static_registry *s, const char *msg)
{
    s->base.sink.error(s->base.sink.data, &s->base, msg);
}

/* Where a local service is reached from other hosts: the node address when configured. */
static int local_endpoint(const struct static_registry *s, const struct mesh_service_config *svc,
                          struct mesh_endpoint *ep)
{
    const struct mesh_registry_env *env = s->base.env;
    const char *ip = env->node_address[0] ? env->node_address : svc->address;
    /* With an inbound port, callers on other hosts come through this agent. */
    int port = svc->inbound_port ? svc->inbound_port : svc->port;
    memset(ep, 0, sizeof(*ep));
    if (mesh_ipport_from_ip(ip, (uint16_t)port, &ep->addr) < 0)
        return -EINVAL;
    ep->weight = 1;
    ep->health = MESH_EP_READY | MESH_EP_SERVING;
    if ((env->zone[0] && !(ep->zone = mesh_atom(env->zone))) ||
        !(ep->node = mesh_atom(env->node_name)) ||
        mesh_labels_copy(&ep->labels, &svc->labels) < 0) {
        mesh_endpoint_done(ep);
        return -ENOMEM;
    }
    return 0;
}

/* The endpoints a service definition gives (owned; free with endpoints_free). */
static int build_endpoints(const struct static_registry *s, const struct mesh_service_config *svc,
                           struct mesh_endpoint **ret, size_t *ret_n)
{
    size_t n = svc->port ? 1 : svc->endpoints.n, k = 0;
    struct mesh_endpoint *eps = mesh_calloc(n, sizeof(*eps));
    int r = eps ? 0 : -ENOMEM;
    if (r == 0 && svc->port) {
        r = local_endpoint(s, svc, &eps[0]);
        k = r == 0;
    }
    for (; r == 0 && !svc->port && k < n; k++) {
        const struct mesh_endpoint_config *ec =
            (const struct mesh_endpoint_config *)svc->endpoints.items + k;
        r = mesh_endpoint_from_config(ec, &eps[k]);
        if (r < 0)
            break;
    }
    if (r < 0) {
        for (size_t i = 0; i < k; i++)
            mesh_endpoint_done(&eps[i]);
        mesh_free(eps);
        return r;
    }
    *ret = eps;
    *ret_n = n;
    return 0;
}

static void endpoints_free(struct mesh_endpoint *eps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mesh_endpoint_done(&eps[i]);
    mesh_free(eps);
}

/* The SPIFFE ID of a service whose service file names its account; else NULL (the default:
 * the account is the service's name). */
static const char *identity_of(const struct static_registry *s,
                               const struct mesh_service_config *svc, const char *ns, char *out,
                               size_t size)
{
    if (!svc->service_account)
        return NULL;
    mesh_spiffe_service_id(out, size, s->base.env->trust_domain, ns, svc->service_account);
    return out;
}

static int local_service(const struct mesh_service_config *svc, const char *ns, const char *file,
                         const char *identity, struct mesh_local_service *out)
{
    memset(out, 0, sizeof(*out));
    out->protocol = (enum mesh_protocol)svc->protocol;
    mesh_addr_from_ip(svc->address, (uint16_t)svc->port, &out->addr);
    if (svc->inbound_port)
        mesh_addr_from_ip(svc->inbound_address, (uint16_t)svc->inbound_port, &out->inbound);
    if (!(out->name = mesh_strdup(svc->name)) || !(out->namespace = mesh_strdup(ns)) ||
        !(out->source = mesh_strdup(file)) || mesh_labels_copy(&out->labels, &svc->labels) < 0 ||
        (identity && !(out->identity = mesh_strdup(identity))))
        goto oom;
    if (svc->upstreams.n &&
        !(out->upstreams = mesh_calloc(svc->upstreams.n, sizeof(*out->upstreams))))
        goto oom;
    for (size_t i = 0; i < svc->upstreams.n; i++) {
        const struct mesh_upstream_config *u =
            (const struct mesh_upstream_config *)svc->upstreams.items + i;
        struct mesh_upstream *o = &out->upstreams[out->n_upstreams++];
        o->protocol = (enum mesh_protocol)u->protocol;
        mesh_addr_from_ip(u->bind_address, (uint16_t)u->bind_port, &o->bind);
        if (!(o->service = mesh_strdup(u->service)) ||
            !(o->namespace = mesh_strdup(u->namespace ? u->namespace : ns)))
            goto oom;
    }
    return 0;
oom:
    mesh_local_service_done(out);
    return -ENOMEM;
}

/* Drops upstream i of a local service. */
static void drop_upstream(struct mesh_local_service *ls, size_t i)
{
    mesh_free(ls->upstreams[i].service);
    mesh_free(ls->upstreams[i].namespace);
    memmove(&ls->upstreams[i], &ls->upstreams[i + 1],
            (ls->n_upstreams - i - 1) * sizeof(*ls->upstreams));
    ls->n_upstreams--;
}

static void report_conflict(struct static_registry *s, const char *file, const char *what,
                            const char *owner)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s/%s: %s is already defined in '%s'; ignoring it here",
             s->cfg->directory, file, what, owner);
    mesh_log_warn("%s", msg);
    report(s, msg);
}

/*
 * Claims the local addresses a service's upstreams and inbound port listen on; drops those
 * another definition took first.
 */
static int claim_binds(struct static_registry *s, struct mesh_claims *binds, const char *file,
                       struct mesh_local_service *ls)
{
    int err = 0;
    char addr[MESH_ADDR_STRLEN], what[MESH_ADDR_STRLEN + 32];
    for (size_t b = 0; b < ls->n_upstreams && err == 0;) {
        mesh_addr_format(&ls->upstreams[b].bind, addr, sizeof(addr));
        const char *owner = mesh_claims_take(binds, addr, file, &err);
        if (!owner) {
            b++;
            continue;
        }
        snprintf(what, sizeof(what), "upstream bind address %s", addr);
        report_conflict(s, file, what, owner);
        drop_upstream(ls, b);
    }
    if (err == 0 && mesh_addr_port(&ls->inbound)) {
        mesh_addr_format(&ls->inbound, addr, sizeof(addr));
        const char *owner = mesh_claims_take(binds, addr, file, &err);
        if (owner) {
            snprintf(what, sizeof(what), "inbound address %s", addr);
            report_conflict(s, file, what, owner);
            memset(&ls->inbound, 0, sizeof(ls->inbound));
        }
    }
    return err;
}

/*
 * The instances of one service that run here: definitions of the same namespace/name with
 * a `port`, told apart by the port their endpoint has (several instances, or versions, on
 * one host). They make one service with one endpoint each.
 */
struct local_group {
    const char *ns, *name;                   /* borrowed from the files */
    const struct mesh_service_config *first; /* its identity's (service_account) */
    int protocol;
    struct mesh_endpoint *eps;
    size_t n, cap;
};

static struct local_group *find_group(struct local_group *g, size_t n, const char *ns,
                                      const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(g[i].ns, ns) == 0 && strcmp(g[i].name, name) == 0)
            return &g[i];
    }
    return NULL;
}

/*
 * Takes a local definition's place: the service's name for its first instance (none may
 * define it otherwise), and "<namespace>/<name>:<port>" for each. Returns the group to add
 * its endpoint to, NULL when another definition holds the place (reported), or NULL with
 * *err set.
 */
static struct local_group *claim_instance(struct static_registry *s, struct mesh_claims *services,
                                          struct local_group **groups, size_t *n, size_t *cap,
                                          const struct mesh_service_config *svc, const char *ns,
                                          const char *file, int *err)
{
    char key[200], what[240];
    int port = svc->inbound_port ? svc->inbound_port : svc->port;
    struct local_group *g = find_group(*groups, *n, ns, svc->name);
    const char *owner = NULL;
    if (!g) {
        snprintf(key, sizeof(key), "%s/%s", ns, svc->name);
        if ((owner = mesh_claims_take(services, key, file, err)) || *err) {
            snprintf(what, sizeof(what), "service '%s'", key);
            if (owner)
                report_conflict(s, file, what, owner);
            return NULL;
        }
    }
    snprintf(key, sizeof(key), "%s/%s:%d", ns, svc->name, port);
    if ((owner = mesh_claims_take(services, key, file, err)) || *err) {
        snprintf(what, sizeof(what), "service '%s/%s' at port %d", ns, svc->name, port);
        if (owner)
            report_conflict(s, file, what, owner);
        return NULL;
    }
    if (!g) {
        if ((*err = mesh_grow((void **)groups, cap, *n + 1, sizeof(**groups))) < 0)
            return NULL;
        g = &(*groups)[(*n)++];
        *g = (struct local_group){
            .ns = ns, .name = svc->name, .first = svc, .protocol = svc->protocol};
    }
    return g;
}

/*
 * Hands the good content of every file (sorted by name) to the sink as one full sync. A
 * directory that cannot be read never gets here: nothing is removed for it.
 */
static void apply(struct static_registry *s, const struct mesh_json_dir_file *files, size_t n)
{
    const struct mesh_registry_sink *sink = &s->base.sink;
    const char *default_ns = s->base.cfg->namespace;
    struct mesh_local_service *locals = NULL;
    size_t n_locals = 0, locals_cap = 0;
    struct local_group *groups = NULL;
    size_t n_groups = 0, groups_cap = 0;
    struct mesh_claims services, binds;
    int err = 0;
    mesh_claims_init(&services);
    mesh_claims_init(&binds);

    sink->sync_begin(sink->data, &s->base);
    s->n_services = 0;
    for (size_t k = 0; k < n && err == 0; k++) {
        const struct mesh_service_file *content = files[k].obj;
        const char *file = files[k].name;
        for (size_t j = 0; content && j < content->n && err == 0; j++) {
            const struct mesh_service_config *svc = content->all[j];
            const char *ns = svc->namespace ? svc->namespace : default_ns;
            char key[160], what[200];
            if (svc->port) {
                struct local_group *g = claim_instance(s, &services, &groups, &n_groups,
                                                       &groups_cap, svc, ns, file, &err);
                if (!g)
                    continue;
                err = mesh_grow((void **)&g->eps, &g->cap, g->n + 1, sizeof(*g->eps));
                if (err == 0)
                    err = local_endpoint(s, svc, &g->eps[g->n]);
                g->n += err == 0;
                if (err == 0)
                    err = mesh_grow((void **)&locals, &locals_cap, n_locals + 1, sizeof(*locals));
                char id[MESH_SPIFFE_ID_MAX + 1];
                const char *identity = identity_of(s, svc, ns, id, sizeof(id));
                if (err == 0)
                    err = local_service(svc, ns, file, identity, &locals[n_locals]);
                if (err == 0)
                    err = claim_binds(s, &binds, file, &locals[n_locals++]);
                continue;
            }
            snprintf(key, sizeof(key), "%s/%s", ns, svc->name);
            const char *owner = mesh_claims_take(&services, key, file, &err);
            if (owner) {
                snprintf(what, sizeof(what), "service '%s'", key);
                report_conflict(s, file, what, owner);
                continue;
            }
            struct mesh_endpoint *eps = NULL;
            size_t n_eps = 0;
            err = build_endpoints(s, svc, &eps, &n_eps);
            if (err < 0)
                break;
            char id[MESH_SPIFFE_ID_MAX + 1];
            const char *identity = identity_of(s, svc, ns, id, sizeof(id));
            struct mesh_service_update u = {
                .namespace = ns,
                .name = svc->name,
                .protocol = (enum mesh_protocol)svc->protocol,
                .endpoints = eps,
                .n_endpoints = n_eps,
                .identity = identity,
            };
            sink->set_service(sink->data, &s->base, &u);
            s->n_services++;
            endpoints_free(eps, n_eps);
        }
    }
    for (size_t k = 0; k < n_groups && err == 0; k++) {
        char id[MESH_SPIFFE_ID_MAX + 1];
        struct mesh_service_update u = {
            .namespace = groups[k].ns,
            .name = groups[k].name,
            .protocol = (enum mesh_protocol)groups[k].protocol,
            .endpoints = groups[k].eps,
            .n_endpoints = groups[k].n,
            .identity = identity_of(s, groups[k].first, groups[k].ns, id, sizeof(id)),
        };
        sink->set_service(sink->data, &s->base, &u);
        s->n_services++;
    }
    for (size_t k = 0; k < n_groups; k++)
        endpoints_free(groups[k].eps, groups[k].n);
    mesh_free(groups);
    if (err < 0) {
        /* Without sync_end nothing is removed: the catalog keeps its previous view. */
        report(s, "out of memory applying service files");
    } else {
        s->n_local = n_locals;
        sink->set_local(sink->data, &s->base, locals, n_locals);
        sink->sync_end(sink->data, &s->base);
    }
    for (size_t k = 0; k < n_locals; k++)
        mesh_local_service_done(&locals[k]);
    mesh_free(locals);
    mesh_claims_done(&services);
    mesh_claims_done(&binds);
}

/* ---- json_dir glue ---- */

static int parse_file(const char *path, const char *data, size_t len,
                      struct mesh_cfg_errors *errors, void **ret)
{
    struct mesh_service_file *f = NULL;
    int r = mesh_service_file_parse(path, data, len, errors, &f);
    *ret = f;
    return r;
}

static void free_file(void *obj)
{
    mesh_service_file_free(obj);
}

static void on_files_changed(void *data, const struct mesh_json_dir_file *files, size_t n)
{
    apply(data, files, n);
}

static void on_problem(void *data, const char *name, const char *message, bool last_good)
{
    (void)name;
    (void)last_good;
    report(data, message);
}

static const struct mesh_json_dir_ops dir_ops = {
    .parse = parse_file,
    .free = free_file,
    .changed = on_files_changed,
    .problem = on_problem,
};

/* ---- the adapter ---- */

static int static_create(uv_loop_t *loop, const struct mesh_registry_config *cfg,
                         const struct mesh_registry_env *env, const struct mesh_registry_sink *sink,
                         struct mesh_registry **ret)
{
    struct static_registry *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    mesh_registry_init(&s->base, &mesh_static_registry_ops, loop, cfg, env, sink);
    s->cfg = cfg->adapter;
    int r =
        mesh_json_dir_new(loop, s->cfg->directory, s->cfg->poll_interval_ms, &dir_ops, s, &s->dir);
    if (r < 0) {
        mesh_free(s);
        return r;
    }
    *ret = &s->base;
    return 0;
}

static int static_start(struct mesh_registry *r)
{
    mesh_json_dir_start(((struct static_registry *)r)->dir);
    return 0;
}

static void static_refresh(struct mesh_registry *r)
{
    mesh_json_dir_rescan(((struct static_registry *)r)->dir);
}

static void on_dir_closed(void *data)
{
    struct static_registry *s = data;
    s->dir = NULL;
    if (s->stopped_cb)
        s->stopped_cb(&s->base, s->stopped_data);
}

static void static_stop(struct mesh_registry *r, mesh_registry_stopped_cb done, void *data)
{
    struct static_registry *s = (struct static_registry *)r;
    s->stopped_cb = done;
    s->stopped_data = data;
    mesh_json_dir_close(s->dir, on_dir_closed, s);
}

static void static_destroy(struct mesh_registry *r)
{
    mesh_free(r);
}

static void static_status(struct mesh_registry *r, json_t *out)
{
    struct static_registry *s = (struct static_registry *)r;
    if (s->dir)
        mesh_json_dir_status(s->dir, out);
    json_object_set_new(out, "services", json_integer((json_int_t)s->n_services));
    json_object_set_new(out, "local_services", json_integer((json_int_t)s->n_local));
}

static void static_metrics(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b)
{
    mesh_prom_family(b, "mesh_static_files", "gauge",
                     "Service files in the static registry's directory.");
    for (size_t k = 0; k < n; k++) {
        const struct static_registry *s = (const struct static_registry *)regs[k];
        struct mesh_prom_label l[] = {{"registry", regs[k]->cfg->name}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_static_files", l, (double)mesh_json_dir_count(s->dir, NULL));
    }
    mesh_prom_family(b, "mesh_static_invalid_files", "gauge",
                     "Service files that are invalid now (their last good version is served).");
    for (size_t k = 0; k < n; k++) {
        const struct static_registry *s = (const struct static_registry *)regs[k];
        size_t bad = 0;
        mesh_json_dir_count(s->dir, &bad);
        struct mesh_prom_label l[] = {{"registry", regs[k]->cfg->name}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_static_invalid_files", l, (double)bad);
    }
}

/* ---- validate: the same reading, without a loop ---- */

static void ignore_service(void *data, struct mesh_registry *r, const struct mesh_service_update *u)
{
    (void)data, (void)r, (void)u;
}

static void ignore_local(void *data, struct mesh_registry *r, const struct mesh_local_service *v,
                         size_t n)
{
    (void)data, (void)r, (void)v, (void)n;
}

static void ignore_sync(void *data, struct mesh_registry *r)
{
    (void)data, (void)r;
}

static void collect_error(void *data, struct mesh_registry *r, const char *message)
{
    struct mesh_cfg_errors *errors = data;
    (void)r;
    /* Joined file errors become one error per line again. */
    char *copy = mesh_strdup(message);
    if (!copy) {
        errors->dropped++;
        return;
    }
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        mesh_cfg_errors_add(errors, line);
    mesh_free(copy);
}

static void static_validate(const struct mesh_registry_config *cfg,
                            const struct mesh_registry_env *env, struct mesh_cfg_errors *errors)
{
    struct mesh_registry_sink sink = {
        .data = errors,
        .set_service = ignore_service,
        .set_local = ignore_local,
        .sync_begin = ignore_sync,
        .sync_end = ignore_sync,
        .error = collect_error,
    };
    struct static_registry tmp = {0};
    mesh_registry_init(&tmp.base, &mesh_static_registry_ops, NULL, cfg, env, &sink);
    tmp.cfg = cfg->adapter;
    int r = mesh_json_dir_read_once(tmp.cfg->directory, &dir_ops, &tmp);
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s: cannot read the service directory: %s", tmp.cfg->directory,
                 strerror(-r));
        collect_error(errors, NULL, msg);
    }
}

const struct mesh_registry_ops mesh_static_registry_ops = {
    .type = "static",
    .config_schema = &config_schema,
    .create = static_create,
    .validate = static_validate,
    .start = static_start,
    .refresh = static_refresh,
    .stop = static_stop,
    .destroy = static_destroy,
    .status = static_status,
    .metrics = static_metrics,
};
