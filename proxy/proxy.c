#define MESH_LOG_MODULE "proxy"

#include "proxy/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/claims.h"
#include "common/log.h"
#include "common/prom.h"
#include "proxy/health_check-int.h"
#include "proxy/listeners-int.h"
#include "proxy/worker-int.h"

/* How often ejected endpoints are checked for return, and failed listeners retried. */
#define SWEEP_MS 250

struct mesh_proxy {
    uv_loop_t *loop;
    struct mesh_proxy_options opts;
    struct mesh_proxy_shared shared;
    struct mesh_worker *workers;
    int n_workers;
    int started_workers;
    uv_async_t exited;
    uv_timer_t sweep;
    uv_timer_t drain;
    struct mesh_proxy_snapshot *snap;
    uint64_t version;
    struct mesh_state_regs regs;
    /* What endpoints are built from besides the catalog; a change rebuilds them all. */
    uint64_t inputs_gen;
    bool last_tls;
    uint64_t last_members_version;
    char *last_zone;
    uint64_t swept_at; /* mesh_ep_states_released() at the last sweep */
    struct mesh_dest_policy default_policy;
    struct mesh_listeners listeners;
    struct mesh_health_checker *hc;
    uv_async_t applied; /* a worker took a snapshot */
    uv_async_t spans;   /* a worker's span queue is half full */
    void (*spans_cb)(void *data);
    void *spans_data;
    bool stopping;
    int closing;
    void (*done)(void *data);
    void *done_data;
};

/*
 * Drops the registry's reference of states nothing else holds: endpoint states first (each
 * holds its destination's), looking only at destinations flagged since the last sweep. A
 * count of one cannot grow behind our back: a new reference comes from one already held.
 */
static void sweep_registry(struct mesh_proxy *p)
{
    struct mesh_hmap *m = &p->regs.dests;
    p->swept_at = mesh_ep_states_released();
    void **gone = NULL;
    size_t n = 0, cap = 0, i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(m, &i, &he)) {
        struct mesh_dest_state *d = he->value;
        if (atomic_exchange_explicit(&d->sweep, false, memory_order_acquire)) {
            size_t kept = 0;
            for (size_t k = 0; k < d->n_eps; k++) {
                if (atomic_load(&d->eps[k]->refs) == 1)
                    mesh_ep_state_unref(d->eps[k]);
                else
                    d->eps[kept++] = d->eps[k];
            }
            d->n_eps = kept;
        }
        if (atomic_load(&d->refs) == 1 &&
            mesh_grow((void **)&gone, &cap, n + 1, sizeof(*gone)) == 0)
            gone[n++] = d;
    }
    for (size_t k = 0; k < n; k++) {
        mesh_hmap_remove(m, ((struct mesh_dest_state *)gone[k])->key);
        mesh_dest_state_unref(gone[k]);
    }
    mesh_free(gone);
}

/* ---- listeners and snapshots ---- */

/*
 * Workers already joined have closed their loops: a wake would make libuv abort (its
 * async write fails), and a command would never be read. Both happen on this loop only.
 */
static void wake_all(struct mesh_proxy *p)
{
    for (int i = 0; i < p->started_workers; i++) {
        if (!p->workers[i].joined)
            mesh_worker_wake(&p->workers[i]);
    }
}

/* Queues a command for every worker; wake_all() then sends them on their way. */
static void post_all(struct mesh_proxy *p, enum worker_cmd_type type, const char *key,
                     struct mesh_proxy_snapshot *snap)
{
    for (int i = 0; i < p->started_workers; i++) {
        if (p->workers[i].joined)
            continue;
        struct worker_cmd *cmd = mesh_calloc(1, sizeof(*cmd));
        if (!cmd) {
            mesh_log_error("out of memory telling worker %d", i);
            continue;
        }
        cmd->type = type;
        if (key && !(cmd->key = mesh_strdup(key))) {
            mesh_free(cmd);
            continue;
        }
        if (snap) {
            mesh_snapshot_ref(snap);
            cmd->snap = snap;
        }
        mesh_worker_post(&p->workers[i], cmd);
    }
}

/* Counts a change of what endpoints are built from, other than the catalog's services. */
static int note_inputs(struct mesh_proxy *p, const struct mesh_proxy_inputs *in)
{
    bool tls = in->tls != NULL;
    if (p->last_zone && tls == p->last_tls && in->members_version == p->last_members_version &&
        strcmp(in->node_zone, p->last_zone) == 0)
        return 0;
    char *zone = mesh_strdup(in->node_zone);
    if (!zone)
        return -ENOMEM;
    mesh_free(p->last_zone);
    p->last_zone = zone;
    p->last_tls = tls;
    p->last_members_version = in->members_version;
    p->inputs_gen++;
    return 0;
}

int mesh_proxy_update(struct mesh_proxy *p, const struct mesh_proxy_inputs *in)
{
    struct want_listener *wl = NULL;
    size_t n = 0;
    struct mesh_proxy_snapshot *snap = NULL;
    if (p->stopping)
        return 0;
    /* What the workers let go of since the last swap goes before the next build: when all
     * endpoints move, three generations of their states would otherwise meet. */
    sweep_registry(p);
    int r = note_inputs(p, in);
    if (r == 0)
        r = mesh_want_listeners(in, &wl, &n);
    /* Listeners: bind what is new first, so that one that cannot bind where it moves to
     * leaves its old address serving in the snapshot. */
    if (r == 0) {
        mesh_listeners_prepare(&p->listeners, wl, n);
        r = mesh_snapshot_build(&p->regs, ++p->version, &p->default_policy, in, p->inputs_gen,
                                p->snap, wl, n, &snap);
    }
    if (r < 0) {
        mesh_free(wl);
        mesh_log_error("out of memory building a proxy snapshot; keeping the previous one");
        return r;
    }
    /* The snapshot before the sockets it routes (a worker woken in between never accepts on
     * a listener its snapshot does not know), then removals. */
    post_all(p, WORKER_SNAPSHOT, NULL, snap);
    mesh_listeners_commit(&p->listeners);
    mesh_free(wl);
    wake_all(p);

    mesh_snapshot_unref(p->snap);
    p->snap = snap;
    if (mesh_health_checker_update(p->hc, snap) < 0)
        mesh_log_error("out of memory updating health checks");
    sweep_registry(p);
    mesh_log_debug("proxy snapshot %llu: %zu listeners, %zu destinations",
                   (unsigned long long)snap->version, snap->n_listeners, snap->n_dests);
    return 0;
}

/* ---- periodic work ---- */

/* Returns an ejected endpoint whose time is up (true), or forgets old ejections. */
static bool return_ejected(struct mesh_ep_state *s, uint64_t now)
{
    long long until = atomic_load(&s->ejected_until);
    if (until && (uint64_t)until <= now) {
        atomic_store(&s->ejected_until, 0);
        atomic_store(&s->consecutive_failures, 0);
        atomic_store(&s->consecutive_5xx, 0);
        atomic_store(&s->consecutive_gateway, 0);
        atomic_fetch_sub(&s->dest->ejected, 1);
        s->returned_at_s = (uint32_t)(now / 1000) | 1; /* never 0 once it happened */
        char a[MESH_ADDR_STRLEN];
        mesh_log_info("%s is back in '%s' after its ejection",
                      mesh_ipport_format(&s->addr, a, sizeof(a)), s->dest->key);
        return true;
    }
    if (!until && atomic_load(&s->ejections) && s->returned_at_s &&
        now / 1000 - s->returned_at_s > 300) {
        /* Five quiet minutes: the next ejection starts from the base time again. */
        atomic_store(&s->ejections, 0);
    }
    return false;
}

/* Returns ejected endpoints whose time is up; retries failed listeners now and then. */
static void on_sweep(uv_timer_t *t)
{
    struct mesh_proxy *p = t->data;
    uint64_t now = uv_now(p->loop);
    bool changed = false;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&p->regs.dests, &i, &he)) {
        struct mesh_dest_state *d = he->value;
        if (!atomic_load(&d->ejected) && !d->ejections_remembered)
            continue; /* most services: nothing to look at */
        bool remembered = false;
        for (size_t k = 0; k < d->n_eps; k++) {
            changed |= return_ejected(d->eps[k], now);
            remembered |= atomic_load(&d->eps[k]->ejections) != 0;
        }
        d->ejections_remembered = remembered;
    }
    if (changed)
        atomic_fetch_add(&p->shared.health_epoch, 1);
    if (mesh_ep_states_released() != p->swept_at)
        sweep_registry(p); /* workers let go of older snapshots or connections since */
    if (mesh_listeners_retry(&p->listeners, p->snap, now) > 0) {
        wake_all(p);
        if (p->opts.changed)
            p->opts.changed(p->opts.changed_data); /* readiness; a moved one needs an update */
    }
}

/* ---- lifecycle ---- */

int mesh_proxy_new(uv_loop_t *loop, const struct mesh_proxy_options *opts, struct mesh_proxy **ret)
{
    struct mesh_proxy *p = mesh_calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->opts = *opts;
    p->n_workers = opts->workers > 0 ? opts->workers : (int)uv_available_parallelism();
    if (p->n_workers < 1)
        p->n_workers = 1;
    if (!p->opts.backlog)
        p->opts.backlog = 511;
    atomic_init(&p->shared.max_connections, opts->max_connections);
    p->shared.buffer_size = opts->buffer_size;
    /* Stop reading a side once four buffers wait for the other; resume at one. */
    p->shared.high_water = 4 * opts->buffer_size;
    p->shared.low_water = opts->buffer_size;
    struct mesh_http_options *h = &p->shared.http;
    *h = opts->http;
    if (!h->header_timeout_ms)
        h->header_timeout_ms = 10000;
    if (!h->idle_timeout_ms)
        h->idle_timeout_ms = 60000;
    if (!h->limits.max_head)
        h->limits.max_head = MESH_HTTP_DEFAULT_MAX_HEAD;
    if (!h->limits.max_headers)
        h->limits.max_headers = MESH_HTTP_DEFAULT_MAX_HEADERS;
    if (!h->limits.max_uri)
        h->limits.max_uri = MESH_HTTP_DEFAULT_MAX_URI;
    if (!h->path_given)
        h->path = (struct mesh_path_options)MESH_PATH_OPTIONS_DEFAULT;
    if (!h->h2_max_concurrent_streams)
        h->h2_max_concurrent_streams = 100;
    if (!h->h2_max_header_list)
        h->h2_max_header_list = 65536;
    if (!h->h2_max_resets)
        h->h2_max_resets = 100;
    if (!h->h2_reset_window_ms)
        h->h2_reset_window_ms = 1000;
    p->shared.access_log_fd = -1;
    if (opts->access_log && opts->access_log[0] &&
        mesh_proxy_set_access_log(p, opts->access_log) < 0)
        mesh_log_error("cannot open the access log '%s': %s; logging no requests", opts->access_log,
                       strerror(errno));
    mesh_hmap_init(&p->regs.dests);
    mesh_listeners_init(&p->listeners, p->opts.backlog);
    p->workers = mesh_calloc((size_t)p->n_workers, sizeof(*p->workers));
    if (!p->workers || mesh_dest_policy_defaults(&p->default_policy) < 0 ||
        mesh_istio_table_init(&p->shared.istio, opts->max_series) < 0 ||
        mesh_trace__init(&p->shared.trace, p->n_workers) < 0 ||
        mesh_health_checker_new(loop, &p->shared, &p->hc) < 0) {
        mesh_istio_table_done(&p->shared.istio);
        mesh_trace__done(&p->shared.trace);
        mesh_dest_policy_done(&p->default_policy);
        mesh_free(p->workers);
        mesh_free(p->hc);
        mesh_free(p);
        return -ENOMEM;
    }
    *ret = p;
    return 0;
}

static void on_worker_exited(uv_async_t *a);

static void on_spans(uv_async_t *a)
{
    struct mesh_proxy *p = a->data;
    if (p->spans_cb)
        p->spans_cb(p->spans_data);
}

static void on_applied(uv_async_t *a)
{
    struct mesh_proxy *p = a->data;
    if (p->opts.changed && !p->stopping)
        p->opts.changed(p->opts.changed_data);
}

int mesh_proxy_start(struct mesh_proxy *p)
{
    uv_async_init(p->loop, &p->exited, on_worker_exited);
    uv_async_init(p->loop, &p->applied, on_applied);
    p->applied.data = p;
    p->shared.applied = &p->applied;
    uv_async_init(p->loop, &p->spans, on_spans);
    p->spans.data = p;
    p->shared.trace.wake = &p->spans;
    uv_timer_init(p->loop, &p->sweep);
    uv_timer_init(p->loop, &p->drain);
    p->exited.data = p->sweep.data = p->drain.data = p;
    uv_timer_start(&p->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    for (int i = 0; i < p->n_workers; i++) {
        int r = mesh_worker_init(&p->workers[i], i, &p->shared, &p->exited, p->opts.backlog);
        if (r == 0) {
            r = mesh_worker_run(&p->workers[i]);
            if (r < 0)
                mesh_worker_done(&p->workers[i]);
        }
        if (r < 0) {
            mesh_log_error("cannot start worker %d: %s", i, uv_strerror(r));
            p->n_workers = i;
            break;
        }
        p->started_workers = i + 1;
    }
    if (p->started_workers == 0)
        return -EAGAIN;
    mesh_listeners_set_workers(&p->listeners, p->workers, p->started_workers);
    mesh_log_info("data plane: %d worker threads", p->started_workers);
    return 0;
}

static void free_proxy(struct mesh_proxy *p)
{
    void (*done)(void *) = p->done;
    void *data = p->done_data;
    mesh_snapshot_unref(p->snap);
    mesh_listeners_done(&p->listeners);
    mesh_state_regs_done(&p->regs);
    mesh_dest_policy_done(&p->default_policy);
    mesh_trace__done(&p->shared.trace);
    mesh_istio_table_done(&p->shared.istio);
    mesh_free(p->last_zone);
    if (p->shared.access_log_fd >= 0)
        close(p->shared.access_log_fd);
    mesh_free(p->workers);
    mesh_free(p);
    if (done)
        done(data);
}

static void on_closed(uv_handle_t *h)
{
    struct mesh_proxy *p = h->data;
    if (--p->closing == 0)
        free_proxy(p);
}

static void on_hc_closed(void *data)
{
    struct mesh_proxy *p = data;
    p->hc = NULL;
    if (--p->closing == 0)
        free_proxy(p);
}

static void finish_stop(struct mesh_proxy *p)
{
    p->closing = 6;
    uv_close((uv_handle_t *)&p->exited, on_closed);
    uv_close((uv_handle_t *)&p->applied, on_closed);
    uv_close((uv_handle_t *)&p->spans, on_closed);
    uv_close((uv_handle_t *)&p->sweep, on_closed);
    uv_close((uv_handle_t *)&p->drain, on_closed);
    mesh_health_checker_close(p->hc, on_hc_closed, p);
}

static void on_worker_exited(uv_async_t *a)
{
    struct mesh_proxy *p = a->data;
    /* uv_async coalesces: join every worker whose loop has ended (it is about to return). */
    int running = 0;
    for (int i = 0; i < p->started_workers; i++) {
        struct mesh_worker *w = &p->workers[i];
        if (w->joined)
            continue;
        if (!atomic_load(&w->finished)) {
            running++;
            continue;
        }
        uv_thread_join(&w->thread);
        mesh_worker_done(w);
        w->joined = true;
    }
    if (p->stopping && running == 0 && !uv_is_closing((uv_handle_t *)&p->exited))
        finish_stop(p);
}

static void on_drain_deadline(uv_timer_t *t)
{
    struct mesh_proxy *p = t->data;
    mesh_log_warn("drain deadline: closing the %d connections still open",
                  atomic_load(&p->shared.active_total));
    post_all(p, WORKER_ABORT, NULL, NULL);
    wake_all(p);
}

void mesh_proxy_stop(struct mesh_proxy *p, uint64_t drain_ms, void (*done)(void *data), void *data)
{
    p->stopping = true;
    p->done = done;
    p->done_data = data;
    uv_timer_stop(&p->sweep);
    post_all(p, WORKER_STOP, NULL, NULL);
    if (drain_ms)
        uv_timer_start(&p->drain, on_drain_deadline, drain_ms, 0);
    else
        post_all(p, WORKER_ABORT, NULL, NULL);
    wake_all(p);
    /* Workers that already ended (or none started) are joined now. */
    uv_async_send(&p->exited);
}

void mesh_proxy_abort(struct mesh_proxy *p)
{
    post_all(p, WORKER_ABORT, NULL, NULL);
    wake_all(p);
}

/* ---- introspection ---- */

void mesh_proxy_set_max_series(struct mesh_proxy *p, size_t max)
{
    mesh_istio_table_set_max(&p->shared.istio, max);
}

void mesh_proxy_set_max_connections(struct mesh_proxy *p, int max)
{
    atomic_store(&p->shared.max_connections, max);
}

int mesh_proxy_access_log_open(const char *where, int *ret_fd)
{
    int fd;
    if (!where || !where[0]) {
        *ret_fd = -1;
        return 0;
    }
    if (strcmp(where, "stdout") == 0)
        fd = dup(STDOUT_FILENO);
    else if (strcmp(where, "stderr") == 0)
        fd = dup(STDERR_FILENO);
    else
        fd = open(where, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    *ret_fd = fd;
    return 0;
}

/*
 * Workers write to access_log_fd without a lock; it is never closed while they run, only
 * replaced with dup3() (atomic), so a line goes to the old file or the new one.
 */
void mesh_proxy_access_log_use(struct mesh_proxy *p, int fd)
{
    struct mesh_proxy_shared *sh = &p->shared;
    if (fd < 0) {
        atomic_store(&sh->access_log_on, false);
        return;
    }
    if (sh->access_log_fd < 0) {
        sh->access_log_fd = fd;
    } else {
        /* Onto a descriptor of ours that is open, dup3() fails only on EINTR or EBUSY
         * (a race with open() in another thread), which a retry ends. */
        int r;
        do
            r = dup3(fd, sh->access_log_fd, O_CLOEXEC);
        while (r < 0 && (errno == EINTR || errno == EBUSY));
        close(fd);
    }
    atomic_store(&sh->access_log_on, true);
}

int mesh_proxy_set_access_log(struct mesh_proxy *p, const char *where)
{
    int fd = -1;
    int r = mesh_proxy_access_log_open(where, &fd);
    if (r < 0)
        return r;
    mesh_proxy_access_log_use(p, fd);
    return 0;
}

size_t mesh_proxy_listener_errors(const struct mesh_proxy *p)
{
    return p->listeners.errors;
}

bool mesh_proxy_listener_problem(const struct mesh_proxy *p, char *out, size_t n)
{
    return mesh_listeners_problem(&p->listeners, out, n);
}

bool mesh_proxy_needs_update(const struct mesh_proxy *p)
{
    return mesh_listeners_pending(&p->listeners);
}

bool mesh_proxy_in_effect(const struct mesh_proxy *p)
{
    if (!p->snap)
        return true;
    for (int i = 0; i < p->started_workers; i++) {
        if (!p->workers[i].joined && atomic_load(&p->workers[i].snap_version) < p->snap->version)
            return false;
    }
    return true;
}

int mesh_proxy_can_listen(const struct mesh_addr *a)
{
    return mesh_listeners_can_listen(a);
}

int mesh_proxy_active(const struct mesh_proxy *p)
{
    return atomic_load(&p->shared.active_total);
}

json_t *mesh_proxy_traffic(struct mesh_proxy *p, size_t max_edges)
{
    return mesh_istio_traffic(&p->shared.istio, max_edges);
}

static size_t eligible_count(const struct snap_dest *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++)
        n += mesh_ep_eligible(&d->eps[i]);
    return n;
}

struct dest_metric {
    const char *name;
    const char *type;
    const char *help;
};

int mesh_proxy_set_tracing(struct mesh_proxy *p, bool on, double ratio, const char *node)
{
    return mesh_trace__set(&p->shared.trace, on, ratio, node);
}

void mesh_proxy_on_spans(struct mesh_proxy *p, void (*cb)(void *data), void *data)
{
    p->spans_cb = cb;
    p->spans_data = data;
}

size_t mesh_proxy_take_spans(struct mesh_proxy *p, struct mesh_span *out, size_t max)
{
    return mesh_trace__take(&p->shared.trace, out, max);
}

uint64_t mesh_proxy_spans_dropped(const struct mesh_proxy *p)
{
    return atomic_load_explicit(&p->shared.trace.dropped, memory_order_relaxed);
}

void mesh_proxy_metrics(struct mesh_proxy *p, struct mesh_buf *b)
{
    static const struct dest_metric fam[] = {
        {"mesh_proxy_connections_active", "gauge", "Open proxied connections."},
        {"mesh_proxy_connections_total", "counter", "Connections accepted and admitted."},
        {"mesh_proxy_connect_failures_total", "counter",
         "Upstream connects that failed or timed out."},
        {"mesh_proxy_connect_retries_total", "counter",
         "Upstream connects retried on another endpoint."},
        {"mesh_proxy_ejections_total", "counter", "Endpoints ejected by outlier detection."},
        {"mesh_proxy_endpoints_ejected", "gauge", "Endpoints ejected now."},
        {"mesh_proxy_circuit_breaker_refusals_total", "counter",
         "Connections refused: the destination's max_connections was reached."},
        {"mesh_proxy_no_endpoint_total", "counter",
         "Connections refused: no endpoint could take them."},
        {"mesh_proxy_drained_total", "counter",
         "Connections closed at the drain deadline of a removed endpoint."},
        {"mesh_proxy_idle_timeouts_total", "counter", "Connections closed after idle_timeout."},
        {"mesh_proxy_authz_denied_total", "counter",
         "Inbound connections (TCP) or requests (HTTP) refused by an AuthorizationPolicy."},
        {"mesh_proxy_endpoints", "gauge", "Endpoints of the destination."},
        {"mesh_proxy_endpoints_healthy", "gauge",
         "Endpoints that may take new connections (ready, passing checks, not ejected)."},
    };
    const struct mesh_proxy_snapshot *s = p->snap;
    for (size_t f = 0; f < MESH_ARRAY_SIZE(fam); f++) {
        mesh_prom_family(b, fam[f].name, fam[f].type, fam[f].help);
        for (size_t i = 0; s && i < s->n_dests; i++) {
            const struct snap_dest *d = &s->dests[i];
            struct mesh_dest_state *st = d->state;
            double v[] = {
                (double)atomic_load(&st->active),
                (double)atomic_load(&st->conns_total),
                (double)atomic_load(&st->connect_failures),
                (double)atomic_load(&st->retries),
                (double)atomic_load(&st->ejections),
                (double)atomic_load(&st->ejected),
                (double)atomic_load(&st->breaker_refusals),
                (double)atomic_load(&st->no_endpoint),
                (double)atomic_load(&st->drained),
                (double)atomic_load(&st->idle_timeouts),
                (double)atomic_load(&st->authz_denied),
                (double)d->n,
                (double)eligible_count(d),
            };
            struct mesh_prom_label l[] = {{"destination", d->key}, {NULL, NULL}};
            mesh_prom_sample(b, fam[f].name, l, v[f]);
        }
    }
    mesh_http_metrics(s, b);
    mesh_istio_metrics(&p->shared.istio, b);
    mesh_prom_family(b, "mesh_proxy_bytes_total", "counter",
                     "Bytes proxied, by direction: to the upstream endpoint or back to the "
                     "client.");
    for (size_t i = 0; s && i < s->n_dests; i++) {
        const struct snap_dest *d = &s->dests[i];
        struct mesh_prom_label up[] = {{"destination", d->key}, {"direction", "to_upstream"}, {0}};
        struct mesh_prom_label down[] = {
            {"destination", d->key}, {"direction", "to_downstream"}, {0}};
        mesh_prom_sample(b, "mesh_proxy_bytes_total", up,
                         (double)atomic_load(&d->state->bytes_to_upstream));
        mesh_prom_sample(b, "mesh_proxy_bytes_total", down,
                         (double)atomic_load(&d->state->bytes_to_downstream));
    }
    mesh_prom_family(b, "mesh_proxy_active_connections", "gauge",
                     "Open proxied connections, every listener.");
    mesh_prom_sample(b, "mesh_proxy_active_connections", NULL,
                     (double)atomic_load(&p->shared.active_total));
    mesh_prom_family(b, "mesh_proxy_accepted_total", "counter", "Connections accepted.");
    mesh_prom_sample(b, "mesh_proxy_accepted_total", NULL,
                     (double)atomic_load(&p->shared.accepted_total));
    mesh_prom_family(b, "mesh_proxy_refused_total", "counter",
                     "Connections refused: proxy.max_connections were open.");
    mesh_prom_sample(b, "mesh_proxy_refused_total", NULL,
                     (double)atomic_load(&p->shared.refused_total));
    mesh_prom_family(b, "mesh_proxy_http2_connections_total", "counter",
                     "Client connections served as HTTP/2.");
    mesh_prom_sample(b, "mesh_proxy_http2_connections_total", NULL,
                     (double)atomic_load(&p->shared.h2_connections));
    mesh_prom_family(b, "mesh_proxy_http2_streams_total", "counter",
                     "HTTP/2 streams (requests) begun by clients.");
    mesh_prom_sample(b, "mesh_proxy_http2_streams_total", NULL,
                     (double)atomic_load(&p->shared.h2_streams));
    mesh_prom_family(b, "mesh_proxy_http2_calm_total", "counter",
                     "HTTP/2 connections ended with GOAWAY(ENHANCE_YOUR_CALM): rapid reset or a "
                     "flood.");
    mesh_prom_sample(b, "mesh_proxy_http2_calm_total", NULL,
                     (double)atomic_load(&p->shared.h2_calm));
    mesh_prom_family(b, "mesh_proxy_tls_handshakes_total", "counter",
                     "mTLS handshakes with other agents, by direction and result.");
    for (int d = 0; d < 2; d++) {
        const char *dir = d ? "outbound" : "inbound";
        mesh_prom_sample(b, "mesh_proxy_tls_handshakes_total",
                         (struct mesh_prom_label[]){{"direction", dir}, {"result", "ok"}, {0}},
                         (double)atomic_load(&p->shared.tls_ok[d]));
        mesh_prom_sample(b, "mesh_proxy_tls_handshakes_total",
                         (struct mesh_prom_label[]){{"direction", dir}, {"result", "failed"}, {0}},
                         (double)atomic_load(&p->shared.tls_failed[d]));
    }
    mesh_prom_family(b, "mesh_proxy_tls_resumed_total", "counter",
                     "mTLS handshakes that resumed an earlier session (no certificates sent).");
    for (int d = 0; d < 2; d++)
        mesh_prom_sample(b, "mesh_proxy_tls_resumed_total",
                         (struct mesh_prom_label[]){{"direction", d ? "outbound" : "inbound"}, {0}},
                         (double)atomic_load(&p->shared.tls_resumed[d]));
    mesh_prom_family(b, "mesh_proxy_listeners", "gauge", "Listeners by state.");
    size_t n = p->listeners.map.n;
    mesh_prom_sample(b, "mesh_proxy_listeners",
                     (struct mesh_prom_label[]){{"state", "listening"}, {NULL, NULL}},
                     (double)(n - p->listeners.errors));
    mesh_prom_sample(b, "mesh_proxy_listeners",
                     (struct mesh_prom_label[]){{"state", "failed"}, {NULL, NULL}},
                     (double)p->listeners.errors);
    mesh_prom_family(b, "mesh_proxy_health_checks_total", "counter", "Active health checks made.");
    mesh_prom_sample(b, "mesh_proxy_health_checks_total", NULL,
                     p->hc ? (double)mesh_health_checker_probes(p->hc) : 0);
    mesh_prom_family(b, "mesh_proxy_health_queries_total", "counter",
                     "Health queries of other agents answered (about local services).");
    mesh_prom_sample(b, "mesh_proxy_health_queries_total", NULL,
                     (double)atomic_load(&p->shared.health_queries));
    mesh_prom_family(b, "mesh_proxy_worker_connections_active", "gauge",
                     "Open proxied connections per worker thread.");
    for (int i = 0; i < p->started_workers; i++) {
        char idx[16];
        snprintf(idx, sizeof(idx), "%d", i);
        mesh_prom_sample(b, "mesh_proxy_worker_connections_active",
                         (struct mesh_prom_label[]){{"worker", idx}, {NULL, NULL}},
                         (double)atomic_load(&p->workers[i].active));
    }
    mesh_capture_metrics(&p->shared, b);
}

static json_t *endpoint_status(const struct snap_endpoint *ep, uint64_t now)
{
    char ip[MESH_ADDR_STRLEN];
    long long until = atomic_load(&ep->state->ejected_until);
    json_t *o = json_pack("{s:s, s:i, s:i, s:s, s:b, s:b, s:i, s:i}", "address",
                          mesh_ipport_ip(&ep->addr, ip, sizeof(ip)), "port", (int)ep->addr.port,
                          "weight", (int)ep->weight, "health",
                          mesh_endpoint_health_name(ep->health), "eligible", mesh_ep_eligible(ep),
                          "health_check_passing", atomic_load(&ep->state->hc_healthy) != 0,
                          "active_connections", atomic_load(&ep->state->active),
                          "consecutive_failures", atomic_load(&ep->state->consecutive_failures));
    if (o && until)
        json_object_set_new(
            o, "ejected_for_ms",
            json_integer((json_int_t)((uint64_t)until > now ? (uint64_t)until - now : 0)));
    return o;
}

json_t *mesh_proxy_status(struct mesh_proxy *p)
{
    const struct mesh_proxy_snapshot *s = p->snap;
    uint64_t now = uv_now(p->loop);
    json_t *listeners = json_array(), *dests = json_array();
    for (size_t i = 0; s && listeners && i < s->n_listeners; i++) {
        const struct snap_listener *l = &s->listeners[i];
        const char *error = NULL;
        bool bound = mesh_listeners_state(&p->listeners, l->key, &error);
        static const char *const kinds[] = {"outbound",        "inbound",      "outbound_http",
                                            "inbound_mtls",    "mtls_service", "capture_outbound",
                                            "capture_inbound", "captured"};
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "address", l->key, "kind",
                              kinds[l->kind], "protocol", l->http ? "http" : "tcp", "description",
                              l->description, "destination",
                              l->dest                                ? l->dest->key
                              : l->kind == MESH_LISTENER_MTLS        ? "(by SNI)"
                              : l->kind == MESH_LISTENER_HTTP_SHARED ? "(by Host)"
                                                                     : "(by original destination)",
                              "state",
                              l->kind == MESH_LISTENER_SNI        ? "via the mTLS listener"
                              : l->kind == MESH_LISTENER_CAPTURED ? "via the capture listeners"
                              : bound                             ? "listening"
                                                                  : "failed");
        if (o && error)
            json_object_set_new(o, "error", json_string(error));
        json_array_append_new(listeners, o);
    }
    /* Listeners that cannot bind where they moved to (their old address serves above). */
    if (listeners)
        mesh_listeners_status(&p->listeners, s, listeners);
    for (size_t i = 0; s && dests && i < s->n_dests; i++) {
        const struct snap_dest *d = &s->dests[i];
        json_t *eps = json_array();
        for (size_t k = 0; eps && k < d->n; k++)
            json_array_append_new(eps, endpoint_status(&d->eps[k], now));
        json_array_append_new(
            dests,
            json_pack("{s:s, s:s, s:b, s:i, s:b, s:b, s:i, s:o}", "destination", d->key,
                      "load_balancer", mesh_lb_names[d->policy->lb], "zone_aware", d->zone_aware,
                      "max_connections", d->policy->max_connections, "health_check",
                      d->policy->health_check.enabled, "outlier_detection",
                      d->policy->outlier.enabled, "active_connections",
                      atomic_load(&d->state->active), "endpoints", eps ? eps : json_array()));
    }
    return json_pack("{s:i, s:i, s:I, s:o, s:o}", "workers", p->started_workers,
                     "active_connections", atomic_load(&p->shared.active_total), "snapshot",
                     (json_int_t)(s ? s->version : 0), "listeners",
                     listeners ? listeners : json_array(), "destinations",
                     dests ? dests : json_array());
}
