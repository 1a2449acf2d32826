/*
 * Discovery: one blocking query on /v1/catalog/services for the names, and one per service
 * on /v1/health/service/<name> for its healthy instances, as Consul's "Blocking Queries"
 * page says to run them (consul_pace.c): the index from X-Consul-Index (an answer without a
 * valid one is an error, retried with backoff), reset when it goes backwards, never below 1;
 * an answer that brings nothing new (its index did not advance, or what it says equals the
 * last answer) costs a token of a bucket (burst unchanged_burst, one more per
 * unchanged_interval), and the next query waits for one; and no loop faster than
 * min_interval.
 *
 * At most max_watches service queries run at once (each holds a connection for up to
 * `wait`). With more services than that, the rest wait in a queue and the slots rotate:
 * each query then waits at most rotation_wait before handing its slot to the next service,
 * so every service is still read, and a change shows within about
 * services / max_watches * rotation_wait.
 */
#define MESH_LOG_MODULE "consul"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/backoff.h"
#include "common/log.h"
#include "common/strutil.h"
#include "registry-adapters/consul/consul-int.h"

struct consul_watch {
    struct consul_registry *c;
    char *name;
    struct mesh_http_req req;
    char *url;
    uv_timer_t timer;
    uint64_t index;
    uint64_t started_ms;
    unsigned failures;
    struct mesh_consul_bucket bucket;
    uint64_t digest; /* of the last answer applied */
    bool active;     /* holds a query slot */
    bool queued;     /* waits for one */
    bool answered;   /* its first answer came (and `digest` holds it) */
    bool need_token; /* its last answer brought nothing new */
    struct consul_watch *qnext;
    char **reported; /* the namespaces its last applied answer gave endpoints in */
    size_t n_reported;
};

static void watch_query(struct consul_watch *w);

/* ---- URLs ---- */

static void common_query(const struct consul_registry *c, struct mesh_buf *b)
{
    const struct mesh_consul_config *cfg = c->cfg;
    const struct {
        const char *key, *value;
    } opt[] = {
        {"dc", cfg->datacenter}, {"ns", cfg->consul_namespace}, {"partition", cfg->partition}};
    for (size_t i = 0; i < MESH_ARRAY_SIZE(opt); i++) {
        if (opt[i].value && opt[i].value[0]) {
            mesh_buf_appendf(b, "&%s=", opt[i].key);
            mesh_http_escape(b, opt[i].value);
        }
    }
    if (cfg->consistency == MESH_CONSUL_STALE)
        mesh_buf_append_str(b, "&stale");
    else if (cfg->consistency == MESH_CONSUL_CONSISTENT)
        mesh_buf_append_str(b, "&consistent");
}

/* The wait of the next query, and the client's timeout for it: Consul adds up to wait/16. */
static uint64_t wait_of(const struct consul_registry *c)
{
    bool rotating = c->watches.n > (size_t)c->cfg->max_watches;
    return rotating && c->cfg->rotation_wait_ms < c->cfg->wait_ms ? c->cfg->rotation_wait_ms
                                                                  : c->cfg->wait_ms;
}

static long timeout_for(uint64_t wait_ms)
{
    return (long)(wait_ms + wait_ms / 16 + 10000);
}

static char *health_url(const struct consul_registry *c, const char *name, uint64_t index,
                        uint64_t wait_ms)
{
    struct mesh_buf b;
    mesh_buf_init(&b, 4096);
    mesh_buf_appendf(&b, "%s/v1/health/service/", c->conn.base_url);
    mesh_http_escape(&b, name);
    mesh_buf_appendf(&b, "?index=%" PRIu64 "&wait=%" PRIu64 "ms", index, wait_ms);
    if (!c->cfg->include_warning)
        mesh_buf_append_str(&b, "&passing=1");
    if (c->cfg->tag && c->cfg->tag[0]) {
        mesh_buf_append_str(&b, "&tag=");
        mesh_http_escape(&b, c->cfg->tag);
    }
    common_query(c, &b);
    return b.err ? (mesh_buf_done(&b), NULL) : mesh_buf_steal(&b, NULL);
}

static char *catalog_url(const struct consul_registry *c, uint64_t index)
{
    struct mesh_buf b;
    mesh_buf_init(&b, 4096);
    mesh_buf_appendf(&b, "%s/v1/catalog/services?index=%" PRIu64 "&wait=%" PRIu64 "ms",
                     c->conn.base_url, index, c->cfg->wait_ms);
    common_query(c, &b);
    return b.err ? (mesh_buf_done(&b), NULL) : mesh_buf_steal(&b, NULL);
}

/*
 * The index for the next query from the answer's X-Consul-Index: 0 with *ret_advanced, or
 * -EINVAL after reporting an answer without a valid one (what: "watching service 'web'").
 */
static int take_index(struct consul_registry *c, const struct mesh_http_req *req, uint64_t prev,
                      const char *what, uint64_t *ret, bool *ret_advanced)
{
    size_t len = 0;
    const char *h = mesh_http_req_header(req, "X-Consul-Index", &len);
    uint64_t idx;
    bool reset;
    if (mesh_consul__next_index(h, len, prev, &idx, &reset) < 0) {
        char shown[40];
        size_t n = len < sizeof(shown) - 1 ? len : sizeof(shown) - 1;
        for (size_t i = 0; h && i < n; i++)
            shown[i] = h[i] >= 0x20 && h[i] < 0x7f ? h[i] : '?';
        shown[h ? n : 0] = '\0';
        if (!h)
            mesh_consul__problem(c, CONSUL_ERR_DECODE,
                                 "%s: Consul's answer has no X-Consul-Index header (is it "
                                 "Consul?); retrying with backoff",
                                 what);
        else
            mesh_consul__problem(c, CONSUL_ERR_DECODE,
                                 "%s: Consul's X-Consul-Index '%s%s' is not a number; retrying "
                                 "with backoff",
                                 what, shown, len > n ? "..." : "");
        return -EINVAL;
    }
    if (reset)
        c->index_resets++;
    *ret = idx;
    *ret_advanced = !reset && idx > prev;
    return 0;
}

/* An empty answer that ACLs filtered: "not authorized", never "nothing there". */
static bool filtered_by_acls(const struct mesh_http_req *req)
{
    size_t len = 0;
    const char *h = mesh_http_req_header(req, "X-Consul-Results-Filtered-By-Acls", &len);
    return h && len == 4 && strncasecmp(h, "true", 4) == 0;
}

/* ---- the first full sync ---- */

static void sync_check(struct consul_registry *c)
{
    if (c->synced || !c->sync_started || c->sync_pending)
        return;
    c->synced = true;
    c->base.sink.sync_end(c->base.sink.data, &c->base);
}

/* ---- slots ---- */

static void enqueue(struct consul_watch *w)
{
    struct consul_registry *c = w->c;
    w->queued = true;
    w->qnext = NULL;
    if (c->queue_tail)
        c->queue_tail->qnext = w;
    else
        c->queue_head = w;
    c->queue_tail = w;
}

static void dequeue(struct consul_watch *w)
{
    struct consul_registry *c = w->c;
    struct consul_watch **p = &c->queue_head, *prev = NULL;
    while (*p && *p != w) {
        prev = *p;
        p = &(*p)->qnext;
    }
    if (!*p)
        return;
    *p = w->qnext;
    if (c->queue_tail == w)
        c->queue_tail = prev;
    w->queued = false;
}

static void pump(struct consul_registry *c)
{
    while (!c->stopping && c->queue_head && c->n_active < (size_t)c->cfg->max_watches) {
        struct consul_watch *w = c->queue_head;
        dequeue(w);
        w->active = true;
        c->n_active++;
        watch_query(w);
    }
}

/* ---- one service ---- */

static void on_watch_timer(uv_timer_t *t)
{
    struct consul_watch *w = container_of(t, struct consul_watch, timer);
    watch_query(w);
    pump(w->c);
}

static bool has_ns(char *const *v, size_t n, const char *ns)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i], ns) == 0)
            return true;
    }
    return false;
}

static void reported_done(struct consul_watch *w)
{
    for (size_t i = 0; i < w->n_reported; i++)
        mesh_free(w->reported[i]);
    mesh_free(w->reported);
    w->reported = NULL;
    w->n_reported = 0;
}

/* Tells the catalog that the service is gone from each namespace it was reported in (and
 * from the registry's own), except those in `keep` (NULL: none). */
static void forget_namespaces(struct consul_watch *w, const struct mesh_consul_instances *keep)
{
    struct consul_registry *c = w->c;
    const char *own = c->base.cfg->namespace;
    for (size_t i = 0; i <= w->n_reported; i++) {
        const char *ns = i < w->n_reported ? w->reported[i] : own;
        if (i == w->n_reported && has_ns(w->reported, w->n_reported, own))
            break; /* already done */
        bool kept = false;
        for (size_t g = 0; keep && g < keep->n_groups && !kept; g++)
            kept = strcmp(keep->groups[g].namespace, ns) == 0;
        if (!kept) {
            struct mesh_service_update u = {.namespace = ns, .name = w->name};
            c->base.sink.set_service(c->base.sink.data, &c->base, &u);
        }
    }
}

/* Passes a decoded answer on: one service per namespace its instances name; a namespace the
 * last answer had and this one has not loses the service. */
static void report(struct consul_watch *w, const struct mesh_consul_instances *in)
{
    struct consul_registry *c = w->c;
    for (size_t g = 0; g < in->n_groups; g++) {
        const struct mesh_consul_group *gr = &in->groups[g];
        struct mesh_service_update u = {
            .namespace = gr->namespace,
            .name = w->name,
            .protocol = gr->protocol,
            .endpoints = in->v + gr->first,
            .n_endpoints = gr->n,
            .identity = gr->identity,
        };
        c->base.sink.set_service(c->base.sink.data, &c->base, &u);
    }
    forget_namespaces(w, in);
    reported_done(w);
    w->reported = mesh_calloc(in->n_groups + 1, sizeof(*w->reported));
    for (size_t g = 0; w->reported && g < in->n_groups; g++) {
        if ((w->reported[w->n_reported] = mesh_strdup(in->groups[g].namespace)))
            w->n_reported++;
    }
}

/* Applies an answer; returns true when it said something new. */
static bool apply_answer(struct consul_watch *w)
{
    struct consul_registry *c = w->c;
    struct mesh_consul_health_options o = {
        .include_warning = c->cfg->include_warning,
        .zone_key = c->cfg->zone_meta_key,
        .namespace = c->base.cfg->namespace,
        .trust_domain = c->base.env->trust_domain,
        .service = w->name,
    };
    struct mesh_consul_instances in = {0};
    char err[256];
    int r = mesh_consul_decode_health(w->req.answer.data ? w->req.answer.data : "",
                                      w->req.answer.len, &o, &in, err, sizeof(err));
    if (r < 0) {
        mesh_consul__problem(c, CONSUL_ERR_DECODE, "service '%s': cannot read Consul's answer: %s",
                             w->name, r == -ENOMEM ? "out of memory" : err);
        return false;
    }
    if (in.n == 0 && filtered_by_acls(&w->req)) {
        mesh_consul__problem(c, CONSUL_ERR_ACL,
                             "service '%s': not authorized: the token may not read its instances "
                             "(an empty answer filtered by ACLs); keeping the last good endpoints",
                             w->name);
        mesh_consul_instances_done(&in);
        return false;
    }
    uint64_t digest = mesh_consul_instances_digest(&in, c->digest_key);
    mesh_consul__ok(c);
    if (w->answered && digest == w->digest) {
        mesh_consul_instances_done(&in);
        return false;
    }
    w->digest = digest;
    if (in.bad_namespace)
        mesh_log_warn("service '%s': %zu Consul instance(s) left out: their '%s' meta '%s' is not "
                      "a namespace (a DNS label: lowercase letters, digits and '-')",
                      w->name, in.bad_namespace, MESH_CONSUL_META_NAMESPACE,
                      in.first_bad_namespace);
    /* Counted once per answer that says something new, as the instances are left out again
     * in each. */
    c->bad_identities += in.bad_identity + in.identity_conflicts;
    if (in.bad_identity)
        mesh_log_warn("service '%s': %zu Consul instance(s) left out: their '%s' meta '%s' is not "
                      "a SPIFFE ID of trust domain '%s' naming a service account of their "
                      "namespace",
                      w->name, in.bad_identity, MESH_CONSUL_META_IDENTITY, in.first_bad_identity,
                      c->base.env->trust_domain ? c->base.env->trust_domain : "");
    if (in.identity_conflicts)
        mesh_log_warn("service '%s': %zu Consul instance(s) left out: their '%s' meta '%s' is not "
                      "the identity the service's first instance gives",
                      w->name, in.identity_conflicts, MESH_CONSUL_META_IDENTITY, in.first_conflict);
    report(w, &in);
    mesh_consul_instances_done(&in);
    if (!w->answered) {
        w->answered = true;
        if (c->sync_started && !c->synced) {
            c->sync_pending--;
            sync_check(c);
        }
    }
    return true;
}

static void watch_backoff(struct consul_watch *w)
{
    uv_timer_start(&w->timer, on_watch_timer, mesh_backoff_ms(w->failures++, 1000, 60000), 0);
}

static void on_watch_done(struct mesh_http_req *req)
{
    struct consul_watch *w = req->data;
    struct consul_registry *c = w->c;
    char what[160];
    uint64_t index;
    bool advanced;
    snprintf(what, sizeof(what), "watching service '%s'", w->name);
    if (req->status != 200) {
        mesh_consul__failed(c, req, what);
        watch_backoff(w);
        return;
    }
    if (take_index(c, req, w->index, what, &index, &advanced) < 0) {
        watch_backoff(w);
        return;
    }
    w->failures = 0;
    w->index = index;
    bool fresh = apply_answer(w);
    if (!advanced || !fresh)
        w->need_token = true;
    if (c->queue_head && c->watches.n > (size_t)c->cfg->max_watches) {
        /* Others are waiting: hand the slot on. */
        w->active = false;
        c->n_active--;
        enqueue(w);
        pump(c);
        return;
    }
    watch_query(w);
    pump(c);
}

/* Its token came: back in the queue for a slot. */
static void on_watch_token(uv_timer_t *t)
{
    struct consul_watch *w = container_of(t, struct consul_watch, timer);
    enqueue(w);
    pump(w->c);
}

/*
 * Runs the next query of a watch that holds a slot; one whose last answer brought nothing
 * new first needs a token, and gives its slot up while it waits for one (the caller pumps).
 */
static void watch_query(struct consul_watch *w)
{
    struct consul_registry *c = w->c;
    if (c->stopping || mesh_http_req_active(&w->req))
        return;
    uint64_t now = mesh_consul__now(c);
    if (w->need_token) {
        uint64_t wait_ms = mesh_consul__bucket_take(
            &w->bucket, now, (unsigned)c->cfg->unchanged_burst, c->cfg->unchanged_interval_ms);
        if (wait_ms) {
            c->rate_limited++;
            w->active = false;
            c->n_active--;
            uv_timer_start(&w->timer, on_watch_token, wait_ms, 0);
            return;
        }
        w->need_token = false;
    }
    if (w->started_ms && now - w->started_ms < c->cfg->min_interval_ms) {
        uv_timer_start(&w->timer, on_watch_timer, c->cfg->min_interval_ms - (now - w->started_ms),
                       0);
        return;
    }
    uint64_t wait = wait_of(c);
    mesh_free(w->url);
    w->url = health_url(c, w->name, w->index, wait);
    if (!w->url) {
        uv_timer_start(&w->timer, on_watch_timer, 1000, 0);
        return;
    }
    w->started_ms = now;
    w->req.url = w->url;
    w->req.headers = mesh_consul__headers(c);
    w->req.timeout_ms = timeout_for(wait);
    w->req.max_answer = 64u << 20;
    w->req.done = on_watch_done;
    w->req.data = w;
    if (mesh_consul__start(c, &w->req) < 0)
        uv_timer_start(&w->timer, on_watch_timer, 1000, 0);
}

static void on_watch_closed(uv_handle_t *h)
{
    struct consul_watch *w = container_of((uv_timer_t *)h, struct consul_watch, timer);
    struct consul_registry *c = w->c;
    mesh_http_req_done(&w->req);
    reported_done(w);
    mesh_free(w->url);
    mesh_free(w->name);
    mesh_free(w);
    mesh_consul__closed_one(c);
}

/* Stops and frees a watch; `forget` also removes the service from the catalog. */
static void watch_remove(struct consul_watch *w, bool forget)
{
    struct consul_registry *c = w->c;
    mesh_hmap_remove(&c->watches, w->name);
    mesh_http_req_cancel(&w->req);
    uv_timer_stop(&w->timer);
    if (w->queued)
        dequeue(w);
    if (w->active)
        c->n_active--;
    if (!w->answered && c->sync_started && !c->synced)
        c->sync_pending--;
    if (forget && w->answered)
        forget_namespaces(w, NULL);
    c->pending_closes++;
    uv_close((uv_handle_t *)&w->timer, on_watch_closed);
}

static int watch_add(struct consul_registry *c, const char *name)
{
    struct consul_watch *w = mesh_calloc(1, sizeof(*w));
    if (!w || !(w->name = mesh_strdup(name))) {
        mesh_free(w);
        return -ENOMEM;
    }
    w->c = c;
    w->index = 1;
    mesh_consul__bucket_init(&w->bucket, mesh_consul__now(c), (unsigned)c->cfg->unchanged_burst,
                             c->cfg->unchanged_interval_ms);
    if (mesh_hmap_put(&c->watches, w->name, w) < 0) {
        mesh_free(w->name);
        mesh_free(w);
        return -ENOMEM;
    }
    uv_timer_init(c->base.loop, &w->timer);
    if (c->sync_started && !c->synced)
        c->sync_pending++;
    enqueue(w);
    return 0;
}

/* ---- the catalog ---- */

static void catalog_query(struct consul_registry *c);

static void on_catalog_timer(uv_timer_t *t)
{
    catalog_query(container_of(t, struct consul_registry, catalog_timer));
}

/* Makes the watches follow `names` (sorted). Returns 0, or -ENOMEM after reporting it. */
static int follow(struct consul_registry *c, const struct mesh_consul_names *names)
{
    struct consul_watch **gone = mesh_calloc(c->watches.n + 1, sizeof(*gone));
    size_t n_gone = 0;
    const struct mesh_hmap_entry *e;
    int r = 0;
    if (!gone) {
        mesh_consul__problem(c, CONSUL_ERR_DECODE, "out of memory following the catalog");
        return -ENOMEM;
    }
    for (size_t i = 0; mesh_hmap_next(&c->watches, &i, &e);) {
        if (!bsearch(&e->key, names->v, names->n, sizeof(*names->v), mesh_str_ptr_cmp))
            gone[n_gone++] = e->value;
    }
    for (size_t i = 0; i < n_gone; i++) {
        mesh_log_info("service '%s' left the Consul catalog", gone[i]->name);
        watch_remove(gone[i], true);
    }
    mesh_free(gone);
    for (size_t i = 0; i < names->n; i++) {
        if (!mesh_hmap_get(&c->watches, names->v[i]) && watch_add(c, names->v[i]) < 0) {
            mesh_consul__problem(c, CONSUL_ERR_DECODE, "out of memory following the catalog");
            r = -ENOMEM;
            break;
        }
    }
    pump(c);
    return r;
}

/* Applies a catalog answer; returns true when it said something new. */
static bool apply_catalog(struct consul_registry *c, const struct mesh_http_req *req)
{
    struct mesh_consul_names names = {0};
    char err[256];
    bool fresh = false;
    int r = mesh_consul_decode_services(req->answer.data ? req->answer.data : "", req->answer.len,
                                        c->cfg->tag && c->cfg->tag[0] ? c->cfg->tag : NULL, &names,
                                        err, sizeof(err));
    if (r < 0) {
        mesh_consul__problem(c, CONSUL_ERR_DECODE, "cannot read the service catalog: %s",
                             r == -ENOMEM ? "out of memory" : err);
    } else if (names.n == 0 && names.skipped == 0 && filtered_by_acls(req)) {
        mesh_consul__problem(c, CONSUL_ERR_ACL,
                             "not authorized: the token may not list services (an empty answer "
                             "filtered by ACLs); keeping the last good catalog");
    } else {
        uint64_t digest = mesh_consul_names_digest(&names, c->digest_key);
        mesh_consul__ok(c);
        fresh = !c->catalog_known || digest != c->catalog_digest;
        if (fresh) {
            if (names.skipped)
                mesh_log_debug("%zu Consul services skipped: their names are not DNS labels "
                               "('%s')",
                               names.skipped, names.first_skipped);
            bool first = !c->sync_started;
            if (first) {
                c->sync_started = true;
                c->base.sink.sync_begin(c->base.sink.data, &c->base);
            }
            c->catalog_known = follow(c, &names) == 0;
            c->catalog_digest = digest;
            if (first) {
                c->sync_pending = c->watches.n;
                sync_check(c);
            }
        }
    }
    mesh_consul_names_done(&names);
    return fresh;
}

static void on_catalog_done(struct mesh_http_req *req)
{
    struct consul_registry *c = container_of(req, struct consul_registry, catalog);
    const char *what = "reading the service catalog";
    uint64_t index;
    bool advanced;
    if (req->status != 200) {
        mesh_consul__failed(c, req, what);
    } else if (take_index(c, req, c->catalog_index, what, &index, &advanced) == 0) {
        c->catalog_failures = 0;
        c->catalog_index = index;
        if (!apply_catalog(c, req) || !advanced)
            c->catalog_need_token = true;
        catalog_query(c);
        return;
    }
    uv_timer_start(&c->catalog_timer, on_catalog_timer,
                   mesh_backoff_ms(c->catalog_failures++, 1000, 60000), 0);
}

/* Runs the next catalog query, after a token when the last answer brought nothing new. */
static void catalog_query(struct consul_registry *c)
{
    if (c->stopping || mesh_http_req_active(&c->catalog))
        return;
    uint64_t now = mesh_consul__now(c);
    if (c->catalog_need_token) {
        uint64_t wait_ms =
            mesh_consul__bucket_take(&c->catalog_bucket, now, (unsigned)c->cfg->unchanged_burst,
                                     c->cfg->unchanged_interval_ms);
        if (wait_ms) {
            c->rate_limited++;
            uv_timer_start(&c->catalog_timer, on_catalog_timer, wait_ms, 0);
            return;
        }
        c->catalog_need_token = false;
    }
    if (c->catalog_started_ms && now - c->catalog_started_ms < c->cfg->min_interval_ms) {
        uv_timer_start(&c->catalog_timer, on_catalog_timer,
                       c->cfg->min_interval_ms - (now - c->catalog_started_ms), 0);
        return;
    }
    mesh_free(c->catalog_url);
    c->catalog_url = catalog_url(c, c->catalog_index);
    if (!c->catalog_url) {
        uv_timer_start(&c->catalog_timer, on_catalog_timer, 1000, 0);
        return;
    }
    c->catalog_started_ms = now;
    c->catalog.url = c->catalog_url;
    c->catalog.headers = mesh_consul__headers(c);
    c->catalog.timeout_ms = timeout_for(c->cfg->wait_ms);
    c->catalog.max_answer = 64u << 20;
    c->catalog.done = on_catalog_done;
    if (mesh_consul__start(c, &c->catalog) < 0)
        uv_timer_start(&c->catalog_timer, on_catalog_timer, 1000, 0);
}

int mesh_consul__watch_start(struct consul_registry *c)
{
    c->catalog_index = 1;
    mesh_consul__bucket_init(&c->catalog_bucket, mesh_consul__now(c),
                             (unsigned)c->cfg->unchanged_burst, c->cfg->unchanged_interval_ms);
    catalog_query(c);
    return 0;
}

void mesh_consul__watch_stop(struct consul_registry *c)
{
    mesh_http_req_cancel(&c->catalog);
    uv_timer_stop(&c->catalog_timer);
    const struct mesh_hmap_entry *e;
    while (c->watches.n) {
        size_t i = 0;
        if (!mesh_hmap_next(&c->watches, &i, &e))
            break;
        watch_remove(e->value, false);
    }
}
