#define MESH_LOG_MODULE "consul"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/prom.h"
#include "common/token_file.h"
#include "registry-adapters/consul/consul-int.h"

#define TOKEN_REREAD_MS 60000

static const char *const err_names[CONSUL_ERR_KINDS] = {"connect", "acl", "http", "decode"};

uint64_t mesh_consul__now(struct consul_registry *c)
{
    return uv_now(c->base.loop);
}

/* ---- the token ---- */

static void set_token(struct consul_registry *c, const char *token, size_t len)
{
    mesh_free(c->token_header);
    c->token_header = NULL;
    if (len) {
        size_t n = len + 32;
        c->token_header = mesh_malloc(n);
        if (c->token_header)
            snprintf(c->token_header, n, "X-Consul-Token: %.*s", (int)len, token);
    }
    c->headers[0] = c->token_header;
    c->headers[1] = NULL;
}

const char *const *mesh_consul__headers(struct consul_registry *c)
{
    char err[512];
    if (!c->conn.token_file)
        return c->headers;
    int r = mesh_token_file_refresh(&c->token, mesh_consul__now(c), err, sizeof(err));
    if (r < 0)
        mesh_consul__problem(c, CONSUL_ERR_ACL, "%s; keeping the token read before", err);
    else if (r > 0)
        set_token(c, c->token.value, strlen(c->token.value));
    return c->headers;
}

/* ---- problems ---- */

void mesh_consul__problem(struct consul_registry *c, enum consul_err_kind kind, const char *fmt,
                          ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->errors[kind]++;
    mesh_registry_problem(&c->base, &c->problem, msg);
}

void mesh_consul__ok(struct consul_registry *c)
{
    c->last_sync = mesh_registry_recovered(&c->base, &c->problem, "Consul answers");
}

/* The first line of an error answer, for messages. */
static void first_line(const struct mesh_http_req *req, char *out, size_t n)
{
    const char *b = req->answer.data ? req->answer.data : "";
    size_t len = strcspn(b, "\r\n");
    if (len > 160)
        len = 160;
    snprintf(out, n, "%.*s", (int)len, b);
}

enum consul_err_kind mesh_consul__failed(struct consul_registry *c, struct mesh_http_req *req,
                                         const char *what)
{
    char body[200];
    first_line(req, body, sizeof(body));
    if (req->status == 0) {
        mesh_consul__problem(c, CONSUL_ERR_CONNECT, "%s: Consul at %s does not answer: %s", what,
                             c->conn.where, req->error);
        return CONSUL_ERR_CONNECT;
    }
    if (req->status == 403) {
        if (strstr(body, "ACL not found")) {
            /* Perhaps rotated: read the token again for the next attempt. */
            c->token.refused = true;
            mesh_consul__problem(c, CONSUL_ERR_ACL,
                                 "%s: Consul does not know the token (403 ACL not found; token "
                                 "from %s)",
                                 what, c->conn.token_source);
        } else {
            mesh_consul__problem(c, CONSUL_ERR_ACL, "%s: not authorized (403 %s; token from %s)",
                                 what, body, c->conn.token_source);
        }
        return CONSUL_ERR_ACL;
    }
    mesh_consul__problem(c, CONSUL_ERR_HTTP, "%s: Consul answered %ld: %s", what, req->status,
                         body);
    return CONSUL_ERR_HTTP;
}

int mesh_consul__start(struct consul_registry *c, struct mesh_http_req *req)
{
    req->tls = &c->tls;
    req->unix_socket = c->conn.unix_socket;
    int r = mesh_http_req_start(c->http, req);
    if (r == 0)
        c->requests++;
    return r;
}

/* ---- stopping ---- */

void mesh_consul__closed_one(struct consul_registry *c)
{
    c->pending_closes--;
    if (c->stopping && c->pending_closes == 0 && c->stopped_cb)
        c->stopped_cb(&c->base, c->stopped_data);
}

static void on_timer_closed(uv_handle_t *h)
{
    mesh_consul__closed_one(h->data);
}

static void on_http_closed(void *data)
{
    mesh_consul__closed_one(data);
}

static void close_all(struct consul_registry *c)
{
    c->closing = true;
    mesh_consul__register_abandon(c); /* deregistrations that did not finish in time */
    uv_timer_t *timers[] = {&c->catalog_timer, &c->cleanup_timer, &c->stop_timer};
    for (size_t i = 0; i < MESH_ARRAY_SIZE(timers); i++) {
        timers[i]->data = c;
        c->pending_closes++;
        uv_close((uv_handle_t *)timers[i], on_timer_closed);
    }
    c->pending_closes++;
    mesh_http_client_close(c->http, on_http_closed, c);
    c->http = NULL;
    mesh_consul__closed_one(c); /* the hold consul_stop took */
}

/* Deregistrations get a moment to finish before the client goes (and cancels them). */
static void on_stop_deadline(uv_timer_t *t)
{
    struct consul_registry *c = container_of(t, struct consul_registry, stop_timer);
    if (!c->closing)
        close_all(c);
}

void mesh_consul__maybe_closed(struct consul_registry *c)
{
    if (c->stopping && !c->closing && !c->deregistering)
        close_all(c);
}

static void consul_stop(struct mesh_registry *r, mesh_registry_stopped_cb done, void *data)
{
    struct consul_registry *c = (struct consul_registry *)r;
    c->stopping = true;
    c->stopped_cb = done;
    c->stopped_data = data;
    c->pending_closes++; /* held until close_all is under way */
    mesh_consul__watch_stop(c);
    mesh_consul__register_stop(c);
    uv_timer_start(&c->stop_timer, on_stop_deadline, 2500, 0);
    mesh_consul__maybe_closed(c);
}

/* ---- the adapter ---- */

static const char *real_getenv(const char *name)
{
    return getenv(name);
}

static int consul_create(uv_loop_t *loop, const struct mesh_registry_config *cfg,
                         const struct mesh_registry_env *env, const struct mesh_registry_sink *sink,
                         struct mesh_registry **ret)
{
    struct consul_registry *c = mesh_calloc(1, sizeof(*c));
    struct mesh_cfg_errors errors = {0};
    if (!c)
        return -ENOMEM;
    mesh_registry_init(&c->base, &mesh_consul_registry_ops, loop, cfg, env, sink);
    c->cfg = cfg->adapter;
    int r = mesh_consul__resolve(c->cfg, real_getenv, &c->conn, &errors);
    if (r < 0) {
        for (size_t i = 0; i < errors.n; i++)
            mesh_log_error("registry '%s': %s", cfg->name, errors.v[i]);
        mesh_cfg_errors_done(&errors);
        mesh_free(c);
        return r;
    }
    /* One connection per service watch, one for the catalog, a few for registrations. */
    struct mesh_http_client_options o = {.max_host_connections = c->cfg->max_watches + 4};
    r = mesh_http_client_new(loop, &o, &c->http);
    if (r < 0) {
        mesh_consul__conn_done(&c->conn);
        mesh_free(c);
        return r;
    }
    c->tls = (struct mesh_http_tls){
        .ca_file = c->conn.ca_file,
        .cert_file = c->conn.cert_file,
        .key_file = c->conn.key_file,
        .insecure = c->conn.insecure,
        .server_name = c->conn.server_name,
    };
    /* A key Consul cannot know, so that no answer can be made to look like another. */
    if (getrandom(c->digest_key, sizeof(c->digest_key), GRND_NONBLOCK) !=
        (ssize_t)sizeof(c->digest_key)) {
        c->digest_key[0] = (uint64_t)(uintptr_t)c ^ uv_hrtime();
        c->digest_key[1] = uv_hrtime() * 0x9e3779b97f4a7c15ULL;
    }
    if (c->conn.token)
        set_token(c, c->conn.token, strlen(c->conn.token));
    else
        set_token(c, NULL, 0);
    mesh_token_file_init(&c->token, c->conn.token_file, TOKEN_REREAD_MS);
    mesh_hmap_init(&c->watches);
    mesh_hmap_init(&c->regs);
    uv_timer_init(loop, &c->catalog_timer);
    uv_timer_init(loop, &c->cleanup_timer);
    uv_timer_init(loop, &c->stop_timer);
    *ret = &c->base;
    return 0;
}

static void consul_validate(const struct mesh_registry_config *cfg,
                            const struct mesh_registry_env *env, struct mesh_cfg_errors *errors)
{
    struct mesh_consul_conn conn;
    (void)env;
    if (mesh_consul__resolve(cfg->adapter, real_getenv, &conn, errors) == 0)
        mesh_consul__conn_done(&conn);
}

static int consul_start(struct mesh_registry *r)
{
    struct consul_registry *c = (struct consul_registry *)r;
    mesh_log_info("registry '%s': watching Consul at %s (token from %s)", r->cfg->name,
                  c->conn.where, c->conn.token_source);
    return mesh_consul__watch_start(c);
}

static void consul_destroy(struct mesh_registry *r)
{
    struct consul_registry *c = (struct consul_registry *)r;
    mesh_http_req_done(&c->catalog);
    mesh_http_req_done(&c->cleanup);
    mesh_hmap_done(&c->watches);
    mesh_hmap_done(&c->regs);
    mesh_consul__stale_done(c);
    mesh_token_file_done(&c->token);
    mesh_consul__conn_done(&c->conn);
    mesh_free(c->catalog_url);
    mesh_free(c->cleanup_url);
    mesh_free(c->token_header);
    mesh_free(c->problem);
    mesh_free(c);
}

static void consul_local_services(struct mesh_registry *r,
                                  const struct mesh_local_service *const *v, size_t n)
{
    mesh_consul__register_set((struct consul_registry *)r, v, n);
}

static void consul_status(struct mesh_registry *r, json_t *out)
{
    struct consul_registry *c = (struct consul_registry *)r;
    json_object_set_new(out, "address", json_string(c->conn.where));
    json_object_set_new(out, "token_from", json_string(c->conn.token_source));
    json_object_set_new(out, "services", json_integer((json_int_t)c->watches.n));
    json_object_set_new(out, "queries_in_flight",
                        json_integer((json_int_t)mesh_http_client_sockets(c->http)));
    json_object_set_new(out, "registered", json_integer((json_int_t)c->regs.n));
    json_object_set_new(out, "catalog_index", json_integer((json_int_t)c->catalog_index));
    if (c->problem)
        json_object_set_new(out, "problem", json_string(c->problem));
}

struct family {
    const char *name, *type, *help;
};

static double value_of(const struct consul_registry *c, size_t k)
{
    switch (k) {
    case 0:
        return (double)c->n_active;
    case 1:
        return (double)c->watches.n;
    case 2:
        return (double)c->requests;
    case 3:
        return (double)c->index_resets;
    case 4:
        return (double)c->rate_limited;
    case 5:
        return (double)c->registrations;
    case 6:
        return (double)c->deregistrations;
    case 7:
        return (double)c->check_updates;
    case 8:
        return c->last_sync;
    case 9:
        return (double)c->bad_identities;
    default:
        return 0;
    }
}

static void consul_metrics(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b)
{
    static const struct family fam[] = {
        {"mesh_consul_blocking_queries", "gauge",
         "Service watches holding a query slot (a blocking query in flight or due)."},
        {"mesh_consul_watched_services", "gauge", "Services in the Consul catalog being watched."},
        {"mesh_consul_requests_total", "counter", "Requests sent to Consul."},
        {"mesh_consul_index_resets_total", "counter",
         "Blocking-query indexes that went backwards and were reset."},
        {"mesh_consul_rate_limited_total", "counter",
         "Blocking queries held back by the token bucket: the answer before brought nothing new."},
        {"mesh_consul_registrations_total", "counter", "Services registered with Consul."},
        {"mesh_consul_deregistrations_total", "counter", "Services deregistered from Consul."},
        {"mesh_consul_check_updates_total", "counter", "TTL check updates sent to Consul."},
        {"mesh_consul_last_success_timestamp_seconds", "gauge",
         "When Consul last gave a good answer to a discovery query."},
        {"mesh_consul_refused_identities_total", "counter",
         "Instances left out because their mesh-identity meta is not a valid identity of their "
         "service."},
    };
    for (size_t k = 0; k < MESH_ARRAY_SIZE(fam); k++) {
        mesh_prom_family(b, fam[k].name, fam[k].type, fam[k].help);
        for (size_t i = 0; i < n; i++) {
            struct mesh_prom_label l[] = {{"registry", regs[i]->cfg->name}, {NULL, NULL}};
            mesh_prom_sample(b, fam[k].name, l,
                             value_of((const struct consul_registry *)regs[i], k));
        }
    }
    mesh_prom_family(b, "mesh_consul_errors_total", "counter",
                     "Failed Consul requests and unusable answers, by kind.");
    for (size_t i = 0; i < n; i++) {
        const struct consul_registry *c = (const struct consul_registry *)regs[i];
        for (size_t k = 0; k < CONSUL_ERR_KINDS; k++) {
            struct mesh_prom_label l[] = {
                {"registry", regs[i]->cfg->name}, {"kind", err_names[k]}, {NULL, NULL}};
            mesh_prom_sample(b, "mesh_consul_errors_total", l, (double)c->errors[k]);
        }
    }
}

const struct mesh_registry_ops mesh_consul_registry_ops = {
    .type = "consul",
    .config_schema = &mesh_consul__schema,
    .create = consul_create,
    .validate = consul_validate,
    .start = consul_start,
    .stop = consul_stop,
    .destroy = consul_destroy,
    .local_services = consul_local_services,
    .status = consul_status,
    .metrics = consul_metrics,
};
