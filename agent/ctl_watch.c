#define MESH_LOG_MODULE "controller"

#include "agent/ctl_watch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent/ctl_client.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"

#define MIN_INTERVAL_MS 200
#define WAIT "30s"
#define TIMEOUT_MS 45000 /* the wait and some */
#define STATE_FILE "controller-resources.json"

struct mesh_ctl_watch {
    uv_loop_t *loop;
    uv_timer_t timer;
    struct mesh_http_client *client;
    struct mesh_ctl_req req; /* the blocking query */
    char *url;
    char *path; /* the copy in the state dir */
    struct mesh_certs *certs;
    struct mesh_resources *resources;
    uint64_t index;
    uint64_t started_ms;
    unsigned failures;
    uint64_t changes;
    uint64_t queries; /* started */
    char last_error[300];
    bool closing;
};

/* Parses {"resources": [...]} (the controller checked it; so do we) and applies it. */
static int apply(struct mesh_ctl_watch *w, const char *text, size_t len, const char *from)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_resource_file *f = NULL;
    int r = mesh_resource_file_parse(from, text, len, &errors, &f);
    if (r < 0) {
        snprintf(w->last_error, sizeof(w->last_error), "%s",
                 errors.n ? errors.v[0] : "invalid resources");
        mesh_log_error("resources from the controller refused: %s", w->last_error);
        mesh_cfg_errors_done(&errors);
        return r;
    }
    r = mesh_resources_set_extra(w->resources, from, f);
    mesh_resource_file_unref(f);
    return r;
}

static void start(struct mesh_ctl_watch *w);

static void on_timer(uv_timer_t *t)
{
    start(t->data);
}

static void later(struct mesh_ctl_watch *w, uint64_t ms)
{
    if (!w->closing)
        uv_timer_start(&w->timer, on_timer, ms, 0);
}

static void failed(struct mesh_ctl_watch *w)
{
    later(w, mesh_ctl_backoff_ms(w->failures++));
}

static void on_answer(struct mesh_ctl_req *req)
{
    struct mesh_ctl_watch *w = req->data;
    long status = req->http.status;
    json_t *doc = status == 200 ? mesh_ctl_req_json(req) : NULL;
    json_t *index = json_object_get(doc, "index");
    json_t *list = json_object_get(doc, "resources");
    if (!json_is_integer(index) || json_integer_value(index) < 1 || !json_is_array(list)) {
        if (status)
            snprintf(w->last_error, sizeof(w->last_error), "GET /v1/resources: %ld", status);
        else
            snprintf(w->last_error, sizeof(w->last_error), "unreachable: %s", req->http.error);
        mesh_log_warn("controller %s", w->last_error);
        json_decref(doc);
        failed(w);
        return;
    }
    w->failures = 0;
    w->last_error[0] = '\0';
    uint64_t next = (uint64_t)json_integer_value(index);
    if (next != w->index) {
        json_t *file = json_pack("{s:O}", "resources", list);
        char *text = file ? json_dumps(file, JSON_COMPACT) : NULL;
        json_decref(file);
        if (text && apply(w, text, strlen(text), "controller") == 0) {
            int r = mesh_fs_write_atomic(w->path, text, strlen(text), 0600);
            if (r < 0)
                mesh_log_warn("cannot keep the controller's resources in %s: %s", w->path,
                              strerror(-r));
            mesh_log_info("resources from the controller: index %llu, %zu resources",
                          (unsigned long long)next, json_array_size(list));
            w->changes++;
            w->index = next; /* also when it went back: a restarted controller */
        }
        mesh_free(text);
    }
    json_decref(doc);
    uint64_t now = uv_now(w->loop);
    uint64_t since = now - w->started_ms;
    later(w, since >= MIN_INTERVAL_MS ? 0 : MIN_INTERVAL_MS - since);
}

static void start(struct mesh_ctl_watch *w)
{
    const char *cert, *key, *bundle;
    if (mesh_ctl_req_active(&w->req) || w->closing ||
        !mesh_certs_node_credentials(w->certs, &cert, &key, &bundle))
        return; /* kicked again once the node has a certificate */
    char url[4300];
    snprintf(url, sizeof(url), "%s/v1/resources?index=%llu&wait=" WAIT, w->url,
             (unsigned long long)w->index);
    struct mesh_ctl_call call = {
        .url = url, .ca_pem = bundle, .cert_pem = cert, .key_pem = key, .timeout_ms = TIMEOUT_MS};
    w->started_ms = uv_now(w->loop);
    int r = mesh_ctl_req_start(w->client, &w->req, &call);
    if (r < 0) {
        snprintf(w->last_error, sizeof(w->last_error), "cannot start a query: %s", strerror(-r));
        failed(w);
        return;
    }
    w->queries++;
}

int mesh_ctl_watch_new(uv_loop_t *loop, struct mesh_http_client *client, const char *controller,
                       const char *state_dir, struct mesh_certs *certs,
                       struct mesh_resources *resources, struct mesh_ctl_watch **ret)
{
    struct mesh_ctl_watch *w = mesh_calloc(1, sizeof(*w));
    char path[4200];
    snprintf(path, sizeof(path), "%s/" STATE_FILE, state_dir);
    if (!w || !(w->url = mesh_strdup(controller)) || !(w->path = mesh_strdup(path))) {
        if (w)
            mesh_free(w->url);
        mesh_free(w);
        return -ENOMEM;
    }
    size_t n = strlen(w->url);
    while (n && w->url[n - 1] == '/')
        w->url[--n] = '\0';
    w->loop = loop;
    w->client = client;
    mesh_ctl_req_init(&w->req, on_answer, w);
    w->certs = certs;
    w->resources = resources;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    /* The last resources the controller sent serve until it answers. */
    char *text = NULL;
    size_t len = 0;
    if (mesh_fs_read_file(w->path, 64 * 1024 * 1024, &text, &len) == 0) {
        if (apply(w, text, len, w->path) == 0)
            mesh_log_info("applied the controller's last resources from %s", w->path);
        mesh_free(text);
    }
    *ret = w;
    start(w);
    return 0;
}

void mesh_ctl_watch_kick(struct mesh_ctl_watch *w)
{
    if (w && !mesh_ctl_req_active(&w->req) && !uv_is_active((uv_handle_t *)&w->timer))
        start(w);
}

uint64_t mesh_ctl_watch_index(const struct mesh_ctl_watch *w)
{
    return w ? w->index : 0;
}

json_t *mesh_ctl_watch_status(const struct mesh_ctl_watch *w)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:b, s:s?}", "controller", w->url, "index",
                     (json_int_t)w->index, "changes", (json_int_t)w->changes, "queries",
                     (json_int_t)w->queries, "watching", mesh_ctl_req_active(&w->req), "error",
                     w->last_error[0] ? w->last_error : NULL);
}

static void on_closed(uv_handle_t *h)
{
    struct mesh_ctl_watch *w = h->data;
    mesh_free(w->url);
    mesh_free(w->path);
    mesh_free(w);
}

void mesh_ctl_watch_free(struct mesh_ctl_watch *w)
{
    if (!w || w->closing)
        return;
    w->closing = true;
    mesh_ctl_req_done(&w->req); /* a query in flight ends now, without calling back */
    uv_close((uv_handle_t *)&w->timer, on_closed);
}
