/*
 * This host's services in the local Consul agent (/v1/agent/service/register), each with a
 * check: by default a TTL check the adapter keeps updating from its own probe of the
 * workload (a TCP connect every check_ttl / 3); or a TCP or HTTP check Consul runs itself.
 *
 * Consul may forget a registration (its agent restarted without state): a check update
 * answered 404 ("Unknown check"), or a service lookup answered 404, registers it again.
 * Services that stop being local, and all of them on a clean stop, are deregistered (404
 * there means already gone). Only services carrying our "mesh-managed-by" marker for this
 * node are ever deregistered: the adapter never deletes what it did not register.
 */
#define MESH_LOG_MODULE "consul"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/backoff.h"
#include "common/log.h"
#include "common/spiffe.h"
#include "registry-adapters/consul/consul-int.h"

#define CLEANUP_DELAY_MS 5000 /* let the local services settle before removing stale ones */
#define DEREGISTER_TIMEOUT_MS 2000

enum reg_state { REG_NEW, REG_REGISTERING, REG_REGISTERED, REG_DEREGISTERING };

struct probe;

struct consul_reg {
    struct consul_registry *c;
    char *id;
    char *check_id;
    char *name;
    char *body; /* the registration, JSON */
    struct mesh_addr workload;
    enum reg_state state;
    bool present; /* in the latest local set */
    bool healthy;
    char output[200];
    unsigned failures;
    char *url;
    char *update; /* the check update body */
    struct mesh_http_req req;
    uv_timer_t timer;
    struct probe *probe;
};

/* A TCP connect to the workload; outlives its registration when that goes first. */
struct probe {
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct consul_reg *reg; /* NULL once abandoned */
};

static void reg_tick(struct consul_reg *g);

static char *manager(const struct consul_registry *c)
{
    size_t n = strlen(c->base.env->node_name) + 16;
    char *m = mesh_malloc(n);
    if (m)
        snprintf(m, n, "mesh-agent/%s", c->base.env->node_name);
    return m;
}

static uint64_t period_of(const struct consul_registry *c)
{
    if (c->cfg->check == MESH_CONSUL_CHECK_TTL)
        return c->cfg->check_ttl_ms / 3;
    return c->cfg->check_interval_ms * 3 < 10000 ? 10000 : c->cfg->check_interval_ms * 3;
}

/* ---- the registration body ---- */

static char *ms_str(uint64_t ms, char *out, size_t n)
{
    snprintf(out, n, "%" PRIu64 "ms", ms);
    return out;
}

/* Collects the labels Meta cannot carry, for one warning per registration. */
static void on_label_skipped(void *data, const char *key, const char *why)
{
    struct mesh_buf *b = data;
    mesh_buf_appendf(b, "%s'%s' (%s)", b->len ? ", " : "", key, why);
}

/*
 * The registration of `ls`, JSON; the labels Meta cannot carry are listed in `skipped`.
 * NULL when out of memory.
 */
static char *build_body(const struct consul_registry *c, const struct mesh_local_service *ls,
                        const char *id, const char *check_id, struct mesh_buf *skipped)
{
    const struct mesh_registry_env *env = c->base.env;
    char ip[MESH_ADDR_STRLEN], a[32], b[32], port_s[8], target[MESH_ADDR_STRLEN + 128];
    mesh_addr_ip(&ls->addr, ip, sizeof(ip));
    /* As the static registry publishes it: the node address, and the agent's inbound port
     * when it has one, so that both registries name the same endpoint. */
    const char *addr = env->node_address[0] ? env->node_address : ip;
    int port =
        mesh_addr_port(&ls->inbound) ? mesh_addr_port(&ls->inbound) : mesh_addr_port(&ls->addr);
    char *mgr = manager(c), identity[512];
    if (ls->identity)
        snprintf(identity, sizeof(identity), "%s", ls->identity);
    else
        mesh_spiffe_service_id(identity, sizeof(identity), env->trust_domain, ls->namespace,
                               ls->name);
    /* The namespace travels in Meta: Consul's own namespaces are an Enterprise feature, and
     * the mesh's need not match them (docs/consul.md). */
    json_t *meta =
        json_pack("{s:s?, s:s, s:s, s:s}", MESH_CONSUL_META_MANAGER, mgr, MESH_CONSUL_META_IDENTITY,
                  identity, MESH_CONSUL_META_PROTOCOL, mesh_protocol_names[ls->protocol],
                  MESH_CONSUL_META_NAMESPACE, ls->namespace);
    if (meta && env->mesh_port) {
        snprintf(port_s, sizeof(port_s), "%u", env->mesh_port);
        json_object_set_new(meta, MESH_CONSUL_META_PORT, json_string(port_s));
    }
    if (meta && mesh_consul_meta_add_labels(meta, &ls->labels, on_label_skipped, skipped) < 0) {
        json_decref(meta);
        meta = NULL;
    }
    json_t *check = json_pack("{s:s, s:s, s:s}", "CheckID", check_id, "Name",
                              "mesh-agent: workload reachable", "DeregisterCriticalServiceAfter",
                              ms_str(c->cfg->deregister_after_ms, a, sizeof(a)));
    if (check && c->cfg->check == MESH_CONSUL_CHECK_TTL) {
        json_object_set_new(check, "TTL", json_string(ms_str(c->cfg->check_ttl_ms, b, sizeof(b))));
    } else if (check) {
        mesh_addr_format(&ls->addr, target, sizeof(target));
        json_object_set_new(check, "Interval",
                            json_string(ms_str(c->cfg->check_interval_ms, b, sizeof(b))));
        if (c->cfg->check == MESH_CONSUL_CHECK_TCP) {
            json_object_set_new(check, "TCP", json_string(target));
        } else {
            char url[sizeof(target) + 300];
            snprintf(url, sizeof(url), "http://%s%s", target, c->cfg->check_http_path);
            json_object_set_new(check, "HTTP", json_string(url));
        }
    }
    json_t *root =
        json_pack("{s:s, s:s, s:[s], s:s, s:i, s:o, s:o}", "ID", id, "Name", ls->name, "Tags",
                  "mesh-agent", "Address", addr, "Port", port, "Meta", meta, "Check", check);
    char *out = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    mesh_free(mgr);
    return out;
}

/* ---- requests ---- */

static void on_timer(uv_timer_t *t)
{
    reg_tick(container_of(t, struct consul_reg, timer));
}

/*
 * Appends the Consul Enterprise namespace and partition the operator configured as query
 * parameters, so that registrations land where discovery reads (open-source Consul refuses
 * both, so without them nothing is sent).
 */
static void ent_query(const struct consul_registry *c, struct mesh_buf *u)
{
    const struct {
        const char *key, *value;
    } opt[] = {{"ns", c->cfg->consul_namespace}, {"partition", c->cfg->partition}};
    for (size_t i = 0; i < MESH_ARRAY_SIZE(opt); i++) {
        if (opt[i].value && opt[i].value[0]) {
            mesh_buf_appendf(u, "%c%s=", u->data && memchr(u->data, '?', u->len) ? '&' : '?',
                             opt[i].key);
            mesh_http_escape(u, opt[i].value);
        }
    }
}

/* Sends `method` (NULL: GET) to path + escaped arg on the registration's request. */
static int call(struct consul_reg *g, const char *method, const char *path, const char *arg,
                const char *body, mesh_http_done_cb done)
{
    struct consul_registry *c = g->c;
    struct mesh_buf u;
    mesh_buf_init(&u, 4096);
    mesh_buf_appendf(&u, "%s%s", c->conn.base_url, path);
    if (arg)
        mesh_http_escape(&u, arg);
    ent_query(c, &u);
    if (u.err) {
        mesh_buf_done(&u);
        return -ENOMEM;
    }
    mesh_free(g->url);
    g->url = mesh_buf_steal(&u, NULL);
    g->req.method = method;
    g->req.url = g->url;
    g->req.body = body;
    g->req.body_len = body ? strlen(body) : 0;
    g->req.headers = mesh_consul__headers(c);
    g->req.timeout_ms = c->stopping ? DEREGISTER_TIMEOUT_MS : 10000;
    g->req.done = done;
    g->req.data = g;
    return mesh_consul__start(c, &g->req);
}

static void retry_later(struct consul_reg *g)
{
    uv_timer_start(&g->timer, on_timer, mesh_backoff_ms(g->failures++, 1000, 60000), 0);
}

static void on_registered(struct mesh_http_req *req)
{
    struct consul_reg *g = req->data;
    struct consul_registry *c = g->c;
    if (req->status != 200) {
        char what[200];
        snprintf(what, sizeof(what), "registering service '%s' with Consul", g->name);
        mesh_consul__failed(c, req, what);
        g->state = REG_NEW;
        retry_later(g);
        return;
    }
    g->failures = 0;
    g->state = REG_REGISTERED;
    c->registrations++;
    mesh_log_info("registered service '%s' with Consul as '%s'", g->name, g->id);
    reg_tick(g); /* report the workload's state at once */
}

/* Consul forgot the check (or the service): 404, or 500 "Unknown check" from older ones. */
static bool forgotten(const struct mesh_http_req *req)
{
    const char *body = req->answer.data ? req->answer.data : "";
    return req->status == 404 ||
           (req->status == 500 && (strstr(body, "Unknown check") || strstr(body, "does not have")));
}

static void on_checked(struct mesh_http_req *req)
{
    struct consul_reg *g = req->data;
    struct consul_registry *c = g->c;
    uint64_t next = period_of(c);
    if (req->status == 200) {
        g->failures = 0;
        if (c->cfg->check == MESH_CONSUL_CHECK_TTL)
            c->check_updates++;
    } else if (forgotten(req)) {
        mesh_log_warn("Consul forgot service '%s' (its agent restarted?): registering it again",
                      g->name);
        g->state = REG_NEW;
        next = 0;
    } else {
        char what[200];
        snprintf(what, sizeof(what), "updating the check of service '%s'", g->name);
        mesh_consul__failed(c, req, what);
        next = mesh_backoff_ms(g->failures++, 1000, period_of(c));
    }
    uv_timer_start(&g->timer, on_timer, next, 0);
}

static void send_update(struct consul_reg *g)
{
    json_t *u =
        json_pack("{s:s, s:s}", "Status", g->healthy ? "passing" : "critical", "Output", g->output);
    mesh_free(g->update);
    g->update = u ? json_dumps(u, JSON_COMPACT) : NULL;
    json_decref(u);
    if (!g->update ||
        call(g, "PUT", "/v1/agent/check/update/", g->check_id, g->update, on_checked) < 0)
        retry_later(g);
}

/* ---- the workload probe ---- */

static void on_probe_closed(uv_handle_t *h)
{
    struct probe *p = container_of((uv_tcp_t *)h, struct probe, tcp);
    struct consul_registry *c = h->data;
    mesh_free(p);
    mesh_consul__closed_one(c);
}

static void probe_close(struct probe *p, struct consul_registry *c)
{
    p->tcp.data = c;
    c->pending_closes++;
    uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
}

static void on_probe(uv_connect_t *req, int status)
{
    struct probe *p = container_of(req, struct probe, connect);
    struct consul_reg *g = p->reg;
    if (status == UV_ECANCELED || !g)
        return; /* abandoned: whoever let go of it closes it */
    char addr[MESH_ADDR_STRLEN];
    mesh_addr_format(&g->workload, addr, sizeof(addr));
    g->healthy = status == 0;
    if (g->healthy)
        snprintf(g->output, sizeof(g->output), "mesh-agent: %s accepts connections", addr);
    else
        snprintf(g->output, sizeof(g->output), "mesh-agent: %s: %s", addr, uv_strerror(status));
    g->probe = NULL;
    p->reg = NULL;
    probe_close(p, g->c);
    send_update(g);
}

static void probe_start(struct consul_reg *g)
{
    if (g->probe) { /* the last one never finished: the workload does not answer */
        struct probe *old = g->probe;
        old->reg = NULL;
        g->probe = NULL;
        g->healthy = false;
        snprintf(g->output, sizeof(g->output), "mesh-agent: the workload does not answer");
        probe_close(old, g->c);
        send_update(g);
        return;
    }
    struct probe *p = mesh_calloc(1, sizeof(*p));
    if (!p) {
        retry_later(g);
        return;
    }
    uv_tcp_init(g->c->base.loop, &p->tcp);
    p->reg = g;
    p->tcp.data = g->c;
    int r =
        uv_tcp_connect(&p->connect, &p->tcp, (const struct sockaddr *)&g->workload.ss, on_probe);
    if (r < 0) {
        g->healthy = false;
        snprintf(g->output, sizeof(g->output), "mesh-agent: cannot probe: %s", uv_strerror(r));
        p->reg = NULL;
        probe_close(p, g->c);
        send_update(g);
        return;
    }
    g->probe = p;
    /* The answer comes in on_probe; the next tick gives up on it. */
    uv_timer_start(&g->timer, on_timer, period_of(g->c), 0);
}

/* ---- the state machine ---- */

static void reg_tick(struct consul_reg *g)
{
    struct consul_registry *c = g->c;
    if (c->stopping || g->state == REG_DEREGISTERING || mesh_http_req_active(&g->req))
        return;
    if (g->state == REG_NEW) {
        g->state = REG_REGISTERING;
        if (call(g, "PUT", "/v1/agent/service/register?replace-existing-checks=true", NULL, g->body,
                 on_registered) < 0) {
            g->state = REG_NEW;
            retry_later(g);
        }
        return;
    }
    if (c->cfg->check == MESH_CONSUL_CHECK_TTL) {
        probe_start(g);
        return;
    }
    /* Consul runs the check: only make sure it still knows the service. */
    if (call(g, NULL, "/v1/agent/service/", g->id, NULL, on_checked) < 0)
        retry_later(g);
}

static void on_reg_closed(uv_handle_t *h)
{
    struct consul_reg *g = container_of((uv_timer_t *)h, struct consul_reg, timer);
    struct consul_registry *c = g->c;
    mesh_http_req_done(&g->req);
    mesh_free(g->id);
    mesh_free(g->check_id);
    mesh_free(g->name);
    mesh_free(g->body);
    mesh_free(g->url);
    mesh_free(g->update);
    mesh_free(g);
    mesh_consul__closed_one(c);
}

static void reg_free(struct consul_reg *g)
{
    struct consul_registry *c = g->c;
    mesh_hmap_remove(&c->regs, g->id);
    mesh_http_req_cancel(&g->req);
    uv_timer_stop(&g->timer);
    if (g->probe) {
        g->probe->reg = NULL;
        probe_close(g->probe, c);
        g->probe = NULL;
    }
    c->pending_closes++;
    uv_close((uv_handle_t *)&g->timer, on_reg_closed);
}

static void on_deregistered(struct mesh_http_req *req)
{
    struct consul_reg *g = req->data;
    struct consul_registry *c = g->c;
    if (req->status == 200 || req->status == 404) {
        c->deregistrations++;
        mesh_log_info("deregistered service '%s' from Consul", g->name);
    } else {
        char what[200];
        snprintf(what, sizeof(what), "deregistering service '%s' from Consul", g->name);
        mesh_consul__failed(c, req, what);
    }
    reg_free(g);
    if (c->stopping) {
        c->deregistering--;
        mesh_consul__maybe_closed(c);
    }
}

static void deregister(struct consul_reg *g)
{
    struct consul_registry *c = g->c;
    mesh_http_req_cancel(&g->req);
    uv_timer_stop(&g->timer);
    bool known = g->state != REG_NEW;
    g->state = REG_DEREGISTERING;
    if (!known ||
        call(g, "PUT", "/v1/agent/service/deregister/", g->id, NULL, on_deregistered) < 0) {
        reg_free(g);
        return;
    }
    if (c->stopping)
        c->deregistering++;
}

/* A new registration; takes id, check_id and body on success (the caller's on failure). */
static int reg_new(struct consul_registry *c, char *id, char *check_id,
                   const struct mesh_local_service *ls, char *body)
{
    struct consul_reg *g = mesh_calloc(1, sizeof(*g));
    if (!g || !(g->name = mesh_strdup(ls->name)) || mesh_hmap_put(&c->regs, id, g) < 0) {
        if (g)
            mesh_free(g->name);
        mesh_free(g);
        return -ENOMEM;
    }
    g->id = id;
    g->check_id = check_id;
    g->c = c;
    g->body = body;
    g->workload = ls->addr;
    g->present = true;
    uv_timer_init(c->base.loop, &g->timer);
    reg_tick(g);
    return 0;
}

/* ---- stale registrations of an earlier run ---- */

static void cleanup_start(struct consul_registry *c);

static void on_cleanup_timer(uv_timer_t *t)
{
    cleanup_start(container_of(t, struct consul_registry, cleanup_timer));
}

static void stale_next(struct consul_registry *c);

static void on_stale_deregistered(struct mesh_http_req *req)
{
    struct consul_registry *c = container_of(req, struct consul_registry, cleanup);
    if (req->status != 200 && req->status != 404)
        mesh_consul__failed(c, req, "deregistering a stale service from Consul");
    stale_next(c);
}

/* Deregisters the stale services one after the other, on the cleanup request. */
static void stale_next(struct consul_registry *c)
{
    while (c->n_stale) {
        char *id = c->stale[--c->n_stale];
        struct mesh_buf u;
        mesh_buf_init(&u, 4096);
        mesh_buf_appendf(&u, "%s/v1/agent/service/deregister/", c->conn.base_url);
        mesh_http_escape(&u, id);
        ent_query(c, &u);
        mesh_log_info("deregistering '%s' from Consul: an earlier run of this agent registered "
                      "it",
                      id);
        mesh_free(id);
        if (u.err) {
            mesh_buf_done(&u);
            continue;
        }
        mesh_free(c->cleanup_url);
        c->cleanup_url = mesh_buf_steal(&u, NULL);
        c->cleanup.url = c->cleanup_url;
        c->cleanup.method = "PUT";
        c->cleanup.headers = mesh_consul__headers(c);
        c->cleanup.done = on_stale_deregistered;
        if (mesh_consul__start(c, &c->cleanup) == 0)
            return;
    }
}

void mesh_consul__stale_done(struct consul_registry *c)
{
    while (c->n_stale)
        mesh_free(c->stale[--c->n_stale]);
    mesh_free(c->stale);
    c->stale = NULL;
}

static void on_cleanup(struct mesh_http_req *req)
{
    struct consul_registry *c = container_of(req, struct consul_registry, cleanup);
    if (req->status != 200) {
        mesh_consul__failed(c, req, "listing the services registered with Consul");
        uv_timer_start(&c->cleanup_timer, on_cleanup_timer,
                       mesh_backoff_ms(c->cleanup_failures++, 1000, 60000), 0);
        return;
    }
    json_t *root = json_loadb(req->answer.data ? req->answer.data : "", req->answer.len, 0, NULL);
    char *mgr = manager(c);
    const char *id;
    json_t *svc;
    if (!json_is_object(root)) {
        mesh_consul__problem(c, CONSUL_ERR_DECODE, "cannot read the agent's service list");
    } else if (mgr && (c->stale = mesh_calloc(json_object_size(root) + 1, sizeof(*c->stale)))) {
        c->cleanup_done = true;
        json_object_foreach(root, id, svc)
        {
            json_t *meta = json_object_get(svc, "Meta");
            const char *m = json_string_value(json_object_get(meta, MESH_CONSUL_META_MANAGER));
            if (m && strcmp(m, mgr) == 0 && !mesh_hmap_get(&c->regs, id) &&
                (c->stale[c->n_stale] = mesh_strdup(id)))
                c->n_stale++;
        }
    }
    mesh_free(mgr);
    json_decref(root);
    stale_next(c);
}

static void cleanup_start(struct consul_registry *c)
{
    if (c->stopping || c->cleanup_done || mesh_http_req_active(&c->cleanup))
        return;
    struct mesh_buf u;
    mesh_buf_init(&u, 4096);
    mesh_buf_appendf(&u, "%s/v1/agent/services", c->conn.base_url);
    ent_query(c, &u);
    mesh_free(c->cleanup_url);
    if (u.err) {
        mesh_buf_done(&u);
        c->cleanup_url = NULL;
        return;
    }
    c->cleanup_url = mesh_buf_steal(&u, NULL);
    c->cleanup.method = NULL;
    c->cleanup.url = c->cleanup_url;
    c->cleanup.headers = mesh_consul__headers(c);
    c->cleanup.timeout_ms = 10000;
    c->cleanup.max_answer = 16u << 20;
    c->cleanup.done = on_cleanup;
    if (mesh_consul__start(c, &c->cleanup) < 0)
        uv_timer_start(&c->cleanup_timer, on_cleanup_timer, 1000, 0);
}

/* ---- the local set ---- */

static char *make_id(const struct mesh_local_service *ls)
{
    size_t n = strlen(ls->namespace) + strlen(ls->name) + 8;
    char *id = mesh_malloc(n);
    if (id)
        snprintf(id, n, "mesh-%s-%s", ls->namespace, ls->name);
    return id;
}

void mesh_consul__register_set(struct consul_registry *c, const struct mesh_local_service *const *v,
                               size_t n)
{
    if (!c->cfg->register_services || c->stopping)
        return;
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&c->regs, &i, &e);)
        ((struct consul_reg *)e->value)->present = false;
    for (size_t k = 0; k < n; k++) {
        const struct mesh_local_service *ls = v[k];
        if (mesh_addr_is_unix(&ls->addr) || !mesh_addr_port(&ls->addr))
            continue;
        char *id = make_id(ls);
        char *check_id = id ? mesh_malloc(strlen(id) + 16) : NULL;
        if (check_id)
            snprintf(check_id, strlen(id) + 16, "%s:workload", id);
        struct mesh_buf skipped;
        mesh_buf_init(&skipped, 4096);
        char *body = check_id ? build_body(c, ls, id, check_id, &skipped) : NULL;
        struct consul_reg *g = id ? mesh_hmap_get(&c->regs, id) : NULL;
        bool fresh = body && (!g || (g->state != REG_DEREGISTERING && strcmp(g->body, body) != 0));
        if (fresh && skipped.len)
            mesh_log_warn("service '%s/%s': label(s) %.*s not carried in Consul's Meta: hosts "
                          "that find it through Consul do not see them",
                          ls->namespace, ls->name, (int)skipped.len, skipped.data);
        mesh_buf_done(&skipped);
        if (!body) {
            mesh_consul__problem(c, CONSUL_ERR_DECODE, "out of memory registering services");
        } else if (g && g->state != REG_DEREGISTERING) {
            g->present = true;
            if (strcmp(g->body, body) != 0) { /* changed: register again (it replaces) */
                mesh_free(g->body);
                g->body = body;
                body = NULL;
                g->workload = ls->addr;
                mesh_http_req_cancel(&g->req);
                uv_timer_stop(&g->timer);
                g->state = REG_NEW;
                reg_tick(g);
            }
        } else if (!g && reg_new(c, id, check_id, ls, body) == 0) {
            body = check_id = id = NULL;
        }
        mesh_free(body);
        mesh_free(check_id);
        mesh_free(id);
    }
    struct consul_reg *gone[64];
    size_t n_gone;
    do { /* deregister() edits the map: collect, then act */
        n_gone = 0;
        for (size_t i = 0; n_gone < MESH_ARRAY_SIZE(gone) && mesh_hmap_next(&c->regs, &i, &e);) {
            struct consul_reg *g = e->value;
            if (!g->present && g->state != REG_DEREGISTERING)
                gone[n_gone++] = g;
        }
        for (size_t i = 0; i < n_gone; i++)
            deregister(gone[i]);
    } while (n_gone == MESH_ARRAY_SIZE(gone));
    if (!c->cleanup_done && !uv_is_active((uv_handle_t *)&c->cleanup_timer) &&
        !mesh_http_req_active(&c->cleanup))
        uv_timer_start(&c->cleanup_timer, on_cleanup_timer, CLEANUP_DELAY_MS, 0);
}

void mesh_consul__register_stop(struct consul_registry *c)
{
    mesh_http_req_cancel(&c->cleanup);
    uv_timer_stop(&c->cleanup_timer);
    mesh_consul__stale_done(c);
    const struct mesh_hmap_entry *e;
    struct consul_reg *all[64];
    size_t n;
    do {
        n = 0;
        for (size_t i = 0; n < MESH_ARRAY_SIZE(all) && mesh_hmap_next(&c->regs, &i, &e);) {
            struct consul_reg *g = e->value;
            if (g->state != REG_DEREGISTERING)
                all[n++] = g;
        }
        for (size_t i = 0; i < n; i++)
            deregister(all[i]);
    } while (n == MESH_ARRAY_SIZE(all));
}

void mesh_consul__register_abandon(struct consul_registry *c)
{
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; c->regs.n && mesh_hmap_next(&c->regs, &i, &e); i = 0)
        reg_free(e->value);
    c->deregistering = 0;
}
