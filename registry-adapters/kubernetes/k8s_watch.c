/*
 * Reflectors: for each resource kind (and each configured namespace, or all), list in
 * pages (limit/continue), then watch from the list's resourceVersion with bookmarks, as
 * client-go's reflector does. A watch that ends (timeoutSeconds) starts again from the last
 * resourceVersion; a stream cut reconnects with backoff; 410 Gone (the version was
 * compacted away, as an HTTP status or an ERROR event) lists again. A list's pages are
 * decoded as they come and kept aside; only when the last page is in do they replace the
 * cache, and what the list did not see goes: a partial list never reaches the catalog (an
 * object moved between pages would otherwise be missing meanwhile).
 */
#define MESH_LOG_MODULE "kubernetes"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/backoff.h"
#include "common/log.h"
#include "registry-adapters/kubernetes/k8s-int.h"

#define MAX_EVENT (8u << 20)
#define MAX_PAGE (256u << 20)

struct k8s_reflector {
    struct k8s_registry *k;
    enum k8s_kind kind;
    const char *ns; /* NULL: all namespaces */
    char *rv;       /* where the watch goes on from */
    char *cont;     /* the next list page */
    uint64_t gen;   /* of the list in progress */
    bool listing, listed, relist;
    void **staged; /* the objects of the list in progress, applied at its last page */
    size_t n_staged, cap_staged;
    struct mesh_http_req req;
    char *url;
    struct mesh_k8s_stream stream;
    uv_timer_t timer;
    unsigned failures;
    uint64_t watch_started_ms;
    char stream_err[256];
};

static void list_next(struct k8s_reflector *r);
static void watch_start(struct k8s_reflector *r);

static const char *const paths[K8S_KINDS] = {"/apis/discovery.k8s.io/v1", "/api/v1", "/api/v1"};
static const char *const plurals[K8S_KINDS] = {"endpointslices", "services", "pods"};

/* The resource's URL with the selectors that keep answers to what the adapter uses. */
static char *url_of(const struct k8s_reflector *r, const char *query)
{
    struct k8s_registry *k = r->k;
    struct mesh_buf b;
    mesh_buf_init(&b, 8192);
    mesh_buf_appendf(&b, "%s%s/", k->conn.server, paths[r->kind]);
    if (r->ns)
        mesh_buf_appendf(&b, "namespaces/%s/", r->ns);
    mesh_buf_appendf(&b, "%s?%s", plurals[r->kind], query);
    if (r->kind == K8S_SLICES) /* only slices that belong to a Service */
        mesh_buf_append_str(&b, "&labelSelector=kubernetes.io%2Fservice-name");
    if (r->kind == K8S_PODS) {
        mesh_buf_append_str(&b, "&fieldSelector=spec.nodeName%3D");
        mesh_http_escape(&b, k->conn.node_name);
    }
    return b.err ? (mesh_buf_done(&b), NULL) : mesh_buf_steal(&b, NULL);
}

static void on_timer(uv_timer_t *t)
{
    struct k8s_reflector *r = container_of(t, struct k8s_reflector, timer);
    if (r->listing)
        list_next(r);
    else
        watch_start(r);
}

#define RETRY_AFTER_MAX_S 600

static void later(struct k8s_reflector *r)
{
    uint64_t ms = mesh_backoff_ms(r->failures++, 500, 30000);
    /* 429 Too Many Requests (API priority and fairness) and 5xx answers may say when to
     * come back: no sooner than that (delta-seconds, as the API server sends it). */
    long st = r->req.status;
    size_t len = 0;
    const char *ra =
        st == 429 || st >= 500 ? mesh_http_req_header(&r->req, "Retry-After", &len) : NULL;
    uint64_t secs;
    if (ra && mesh_parse_u64(ra, len, &secs) == 0) {
        secs = MESH_MIN(secs, (uint64_t)RETRY_AFTER_MAX_S);
        ms = MESH_MAX(ms, secs * 1000);
    }
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void set_rv(struct k8s_reflector *r, const char *rv)
{
    if (!rv || (r->rv && strcmp(r->rv, rv) == 0))
        return;
    char *copy = mesh_strdup(rv);
    if (copy) {
        mesh_free(r->rv);
        r->rv = copy;
    }
}

static int decode(struct k8s_reflector *r, const struct mesh_jdoc *d, size_t obj, void **ret,
                  char *err, size_t errlen)
{
    switch (r->kind) {
    case K8S_SLICES:
        return mesh_k8s_slice_decode(d, obj, r->k->cfg->pods ? r->k->conn.node_name : "",
                                     (struct mesh_k8s_slice **)ret, err, errlen);
    case K8S_SERVICES:
        return mesh_k8s_service_decode(d, obj, (struct mesh_k8s_service **)ret, err, errlen);
    default:
        return mesh_k8s_pod_decode(d, obj, (struct mesh_k8s_pod **)ret, err, errlen);
    }
}

void mesh_k8s__obj_free(enum k8s_kind kind, void *obj)
{
    if (kind == K8S_SLICES)
        mesh_k8s_slice_free(obj);
    else if (kind == K8S_SERVICES)
        mesh_k8s_service_free(obj);
    else
        mesh_k8s_pod_free(obj);
}

static void unstage(struct k8s_reflector *r)
{
    for (size_t i = 0; i < r->n_staged; i++)
        mesh_k8s__obj_free(r->kind, r->staged[i]);
    r->n_staged = 0;
}

/* Puts one object into the cache (a watch event) or aside until the list ends (a list
 * page, `staged`); a bad one is reported and skipped. */
static void take(struct k8s_reflector *r, const struct mesh_jdoc *d, size_t item, bool staged)
{
    void *obj = NULL;
    char err[256];
    int rc = decode(r, d, item, &obj, err, sizeof(err));
    if (rc == 0) {
        ((struct mesh_k8s_head *)obj)->seen = r->gen;
        if (staged)
            rc =
                mesh_grow((void **)&r->staged, &r->cap_staged, r->n_staged + 1, sizeof(*r->staged));
        if (staged && rc == 0)
            r->staged[r->n_staged++] = obj;
        else if (staged)
            mesh_k8s__obj_free(r->kind, obj);
        else
            rc = mesh_k8s__upsert(r->k, r->kind, obj);
        if (rc < 0) {
            mesh_k8s__problem(r->k, K8S_ERR_DECODE, "out of memory caching %s", plurals[r->kind]);
            return;
        }
    } else {
        mesh_k8s__problem(r->k, K8S_ERR_DECODE, "%s: skipping an object: %s", plurals[r->kind],
                          rc == -ENOMEM ? "out of memory" : err);
    }
}

/* ---- requests ---- */

static void http_failure(struct k8s_reflector *r, const char *what)
{
    struct k8s_registry *k = r->k;
    const char *body = r->req.answer.data ? r->req.answer.data : "";
    json_t *st = json_loads(body, 0, NULL);
    const char *msg = json_string_value(json_object_get(st, "message"));
    char text[300];
    snprintf(text, sizeof(text), "%.200s", msg ? msg : body);
    if (r->req.status == 0)
        mesh_k8s__problem(k, K8S_ERR_CONNECT, "%s %s: the API server at %s does not answer: %s",
                          what, plurals[r->kind], k->conn.server, r->req.error);
    else if (r->req.status == 401) {
        k->token.refused = true; /* read the token again at once */
        mesh_k8s__problem(k, K8S_ERR_AUTH,
                          "%s %s: 401 Unauthorized: the API server refused the token (%s)", what,
                          plurals[r->kind], k->conn.source);
    } else if (r->req.status == 403)
        mesh_k8s__problem(k, K8S_ERR_FORBIDDEN, "%s %s: 403 Forbidden: %s", what, plurals[r->kind],
                          text);
    else
        mesh_k8s__problem(k, K8S_ERR_HTTP, "%s %s: the API server answered %ld: %s", what,
                          plurals[r->kind], r->req.status, text);
    json_decref(st);
}

static void start_req(struct k8s_reflector *r, char *url, long timeout_ms, mesh_http_done_cb done,
                      mesh_http_data_cb on_data)
{
    mesh_free(r->url);
    r->url = url;
    if (!url) {
        later(r);
        return;
    }
    r->req.url = url;
    r->req.headers = mesh_k8s__headers(r->k);
    r->req.timeout_ms = timeout_ms;
    r->req.max_answer = MAX_PAGE;
    r->req.done = done;
    r->req.on_data = on_data;
    r->req.data = r;
    if (mesh_k8s__start(r->k, &r->req) < 0)
        later(r);
}

/* ---- list ---- */

static void list_done(struct k8s_reflector *r, const struct mesh_jdoc *d)
{
    struct k8s_registry *k = r->k;
    size_t items = mesh_jdoc_get(d, 0, "items"), meta = mesh_jdoc_get(d, 0, "metadata");
    for (size_t i = 0, it = mesh_jdoc_child(d, items); i < d->t[items].size;
         i++, it = mesh_jdoc_next(d, it))
        take(r, d, it, true);
    bool oom = false;
    char *cont = mesh_jdoc_strdup(d, mesh_jdoc_get(d, meta, "continue"), &oom);
    mesh_free(r->cont);
    r->cont = cont && cont[0] ? cont : NULL;
    if (!r->cont)
        mesh_free(cont);
    if (r->cont) {
        list_next(r);
        return;
    }
    /* The last page: the list replaces the cache at once; what it did not see is gone. */
    char rv[MESH_K8S_NAME_MAX];
    if (mesh_jdoc_str(d, mesh_jdoc_get(d, meta, "resourceVersion"), rv, sizeof(rv)) > 0)
        set_rv(r, rv);
    for (size_t i = 0; i < r->n_staged; i++) {
        if (mesh_k8s__upsert(k, r->kind, r->staged[i]) < 0) {
            mesh_k8s__obj_free(r->kind, r->staged[i]);
            mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory caching %s", plurals[r->kind]);
        }
    }
    r->n_staged = 0;
    mesh_k8s__sweep(k, r->kind, r->ns, r->gen);
    r->listing = false;
    r->listed = true;
    mesh_log_info("listed %s%s%s: %zu cached", plurals[r->kind], r->ns ? " in " : "",
                  r->ns ? r->ns : "", k->cache[r->kind].n);
    if (mesh_k8s__all_listed(k))
        mesh_k8s__full_sync(k);
    mesh_k8s__ok(k);
    watch_start(r);
}

static void on_list(struct mesh_http_req *req)
{
    struct k8s_reflector *r = req->data;
    if (req->status == 410 && r->cont) {
        /* The continue token expired: the list starts over. */
        mesh_free(r->cont);
        r->cont = NULL;
        unstage(r);
        r->gen = ++r->k->gen;
        list_next(r);
        return;
    }
    if (req->status != 200) {
        http_failure(r, "listing");
        later(r);
        return;
    }
    char why[200];
    struct mesh_jdoc *d = &r->k->page;
    int rc = mesh_jdoc_parse(d, req->answer.data ? req->answer.data : "", req->answer.len, why,
                             sizeof(why));
    if (rc < 0 || !mesh_jdoc_is(d, mesh_jdoc_get(d, 0, "items"), MESH_JT_ARRAY)) {
        mesh_k8s__problem(r->k, K8S_ERR_DECODE, "listing %s: not a list: %s", plurals[r->kind],
                          rc == -ENOMEM ? "out of memory"
                          : rc < 0      ? why
                                        : "no items");
        later(r);
        return;
    }
    r->failures = 0;
    list_done(r, d);
    mesh_jdoc_done(d); /* a page's tokens take megabytes: not kept between lists */
}

static void list_next(struct k8s_reflector *r)
{
    char q[4096];
    if (r->k->stopping)
        return;
    int n = snprintf(q, sizeof(q), "limit=%d", r->k->cfg->page_size);
    if (r->cont) {
        struct mesh_buf b;
        mesh_buf_init(&b, sizeof(q));
        mesh_http_escape(&b, r->cont);
        snprintf(q + n, sizeof(q) - (size_t)n, "&continue=%s", b.data ? b.data : "");
        mesh_buf_done(&b);
    }
    start_req(r, url_of(r, q), 120000, on_list, NULL);
}

static void list_start(struct k8s_reflector *r)
{
    r->listing = true;
    r->gen = ++r->k->gen;
    mesh_free(r->cont);
    r->cont = NULL;
    unstage(r);
    list_next(r);
}

/* ---- watch ---- */

static int on_event(void *data, enum mesh_k8s_event_type type, const struct mesh_jdoc *d,
                    size_t obj)
{
    struct k8s_reflector *r = data;
    struct k8s_registry *k = r->k;
    char ns[MESH_K8S_NAME_MAX], name[MESH_K8S_NAME_MAX], rv[MESH_K8S_NAME_MAX];
    mesh_k8s_meta(d, obj, ns, name, rv);
    k->events[r->kind][type]++;
    switch (type) {
    case MESH_K8S_ADDED:
    case MESH_K8S_MODIFIED:
        take(r, d, obj, false);
        break;
    case MESH_K8S_DELETED:
        if (ns[0] && name[0]) {
            char key[512];
            snprintf(key, sizeof(key), "%s/%s", ns, name);
            mesh_k8s__delete(k, r->kind, key);
        }
        break;
    case MESH_K8S_BOOKMARK:
        break;
    case MESH_K8S_ERROR: {
        int64_t code = 0;
        char msg[MESH_K8S_NAME_MAX] = "";
        mesh_jdoc_int(d, mesh_jdoc_get(d, obj, "code"), &code);
        mesh_jdoc_str(d, mesh_jdoc_get(d, obj, "message"), msg, sizeof(msg));
        if (code == 410) {
            r->relist = true; /* too old: list again */
        } else {
            mesh_k8s__problem(k, K8S_ERR_HTTP, "watching %s: error event %d: %.200s",
                              plurals[r->kind], (int)code, msg);
        }
        return 1; /* the watch is over either way */
    }
    }
    if (rv[0])
        set_rv(r, rv);
    return 0;
}

static int on_watch_data(struct mesh_http_req *req, const char *data, size_t len)
{
    struct k8s_reflector *r = req->data;
    int rc = mesh_k8s_stream_feed(&r->stream, data, len, on_event, r, r->stream_err,
                                  sizeof(r->stream_err));
    mesh_k8s__flush(r->k);
    if (rc < 0) {
        mesh_k8s__problem(r->k, K8S_ERR_DECODE, "watching %s: %s", plurals[r->kind],
                          rc == -ENOMEM ? "out of memory" : r->stream_err);
        return 1;
    }
    return rc; /* 1: an ERROR event ended it */
}

static void on_watch_done(struct mesh_http_req *req)
{
    struct k8s_reflector *r = req->data;
    struct k8s_registry *k = r->k;
    mesh_k8s_stream_reset(&r->stream);
    k->watch_restarts[r->kind]++;
    if (r->relist || req->status == 410) {
        r->relist = false;
        k->relists[r->kind]++;
        mesh_log_id(MESH_LOG_INFO, MESH_MSGID_RELIST,
                    MESH_LOG_FIELDS({"registry", k->base.cfg->name}),
                    "%s: resource version %s is gone (410): listing again", plurals[r->kind],
                    r->rv ? r->rv : "?");
        list_start(r);
        return;
    }
    if (req->status == 200 && req->result == 0) {
        /* The server ended the watch at timeoutSeconds: go on from where it was (at once,
         * unless it ended at once: a server that does that must not make a tight loop). */
        if (mesh_k8s__now(k) - r->watch_started_ms < 1000) {
            later(r);
            return;
        }
        r->failures = 0;
        watch_start(r);
        return;
    }
    if (req->head_status == 200 && req->result != -ECANCELED)
        mesh_k8s__problem(k, K8S_ERR_CONNECT, "watching %s: the stream broke: %s", plurals[r->kind],
                          req->error);
    else if (req->result != -ECANCELED)
        http_failure(r, "watching");
    later(r);
}

static void watch_start(struct k8s_reflector *r)
{
    struct k8s_registry *k = r->k;
    if (k->stopping)
        return;
    if (!r->rv) {
        list_start(r);
        return;
    }
    /* Spread the watches' ends so that a fleet does not reconnect in step: a timeout drawn
     * from [watch_timeout, 2 x watch_timeout], as client-go's reflector does (5 to 10 min). */
    uint64_t t = k->cfg->watch_timeout_ms / 1000;
    t += (uint64_t)rand() % (t + 1);
    char q[1024];
    struct mesh_buf b;
    mesh_buf_init(&b, sizeof(q));
    mesh_http_escape(&b, r->rv);
    snprintf(q, sizeof(q),
             "watch=1&allowWatchBookmarks=true&timeoutSeconds=%" PRIu64 "&resourceVersion=%s", t,
             b.data ? b.data : "");
    mesh_buf_done(&b);
    r->watch_started_ms = mesh_k8s__now(k);
    start_req(r, url_of(r, q), (long)(t * 1000 + 30000), on_watch_done, on_watch_data);
}

/* ---- the set ---- */

static int add(struct k8s_registry *k, enum k8s_kind kind, const char *ns)
{
    struct k8s_reflector *r = mesh_calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->k = k;
    r->kind = kind;
    r->ns = ns;
    mesh_k8s_stream_init(&r->stream, MAX_EVENT);
    k->refl[k->n_refl++] = r;
    return 0;
}

static void refl_free(struct k8s_reflector *r)
{
    unstage(r);
    mesh_free(r->staged);
    mesh_http_req_done(&r->req);
    mesh_k8s_stream_done(&r->stream);
    mesh_free(r->url);
    mesh_free(r->rv);
    mesh_free(r->cont);
    mesh_free(r);
}

int mesh_k8s__reflectors_new(struct k8s_registry *k)
{
    size_t per = k->cfg->namespaces.n ? k->cfg->namespaces.n : 1;
    k->refl = mesh_calloc(per * K8S_KINDS, sizeof(*k->refl));
    if (!k->refl)
        return -ENOMEM;
    for (int kind = 0; kind < K8S_KINDS; kind++) {
        if (kind == K8S_PODS && !k->cfg->pods)
            continue;
        for (size_t i = 0; i < per; i++) {
            int rc =
                add(k, (enum k8s_kind)kind, k->cfg->namespaces.n ? k->cfg->namespaces.v[i] : NULL);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

void mesh_k8s__reflectors_start(struct k8s_registry *k)
{
    /* Handles exist from here on: a registry created but never started frees plainly. */
    k->started = true;
    for (size_t i = 0; i < k->n_refl; i++)
        uv_timer_init(k->base.loop, &k->refl[i]->timer);
    for (size_t i = 0; i < k->n_refl; i++)
        list_start(k->refl[i]);
}

bool mesh_k8s__all_listed(const struct k8s_registry *k)
{
    for (size_t i = 0; i < k->n_refl; i++) {
        if (!k->refl[i]->listed)
            return false;
    }
    return true;
}

static void on_refl_closed(uv_handle_t *h)
{
    struct k8s_reflector *r = container_of((uv_timer_t *)h, struct k8s_reflector, timer);
    struct k8s_registry *k = r->k;
    refl_free(r);
    mesh_k8s__closed_one(k);
}

void mesh_k8s__reflectors_stop(struct k8s_registry *k)
{
    for (size_t i = 0; i < k->n_refl; i++) {
        struct k8s_reflector *r = k->refl[i];
        if (!k->started) {
            refl_free(r);
            continue;
        }
        mesh_http_req_cancel(&r->req);
        k->pending_closes++;
        uv_close((uv_handle_t *)&r->timer, on_refl_closed);
    }
    k->n_refl = 0;
}
