#define MESH_LOG_MODULE "tcp"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/io.h"
#include "common/log.h"
#include "proxy/worker-int.h"

/*
 * One proxied TCP connection: the client ("down") side accepted by a worker, and the
 * upstream ("up") side it connects to an endpoint of the listener's destination.
 *
 *   CONNECTING  attempts, one at a time, each on a new socket: a failure or a connect
 *               timeout counts against the endpoint (outlier detection) and moves on to
 *               another endpoint, up to connect_retries times
 *   SPLICING    bytes flow both ways; an EOF on one side is passed on as a shutdown of the
 *               other side's writes (half-close); reading from a side stops while the other
 *               side's write queue is over the high-water mark and resumes under the low one
 *   CLOSING     handles closing; freed in the last close callback
 */

#define MAX_ATTEMPTS 12

enum conn_state { CONN_CONNECTING, CONN_SPLICING, CONN_CLOSING };

struct side {
    struct mesh_io *io;
    struct tcp_conn *c;
    uv_shutdown_t shutdown;
    bool paused;
    bool eof;
    bool shut_sent;
    bool shut_done;
};

/* An upstream socket: an attempt while connecting, the upstream side once connected. */
struct attempt {
    struct side side;
    uv_connect_t req;
    int ep;
    bool abandoned; /* closing; its connect result is ignored and it frees itself */
};

/* A captured connection passed through to its original destination: a destination of
 * one endpoint, the connection's own. */
struct direct {
    struct snap_dest dest;
    struct snap_endpoint ep;
    struct mesh_ep_state state;
};

struct tcp_conn {
    struct tcp_conn *prev, *next;
    struct mesh_worker *w;
    struct mesh_proxy_snapshot *snap;
    struct snap_dest *dest;
    const struct snap_listener *listener;
    const struct mesh_tls_identity *tls_as; /* who upstream mTLS presents (snap's material) */
    struct snap_endpoint *ep;               /* once connected */
    struct direct *direct;                  /* passed through; NULL: a listener's destination */
    struct mesh_istio_series
        *istio; /* opened counted once spliced or given up; closed when freed */
    struct side down;
    struct attempt *up;
    uv_timer_t timer;
    enum conn_state state;
    int open_handles;
    bool counted_total;
    bool counted_dest;
    bool istio_opened;
    bool pod_caller; /* a captured pod named by its address: its mTLS identity is counted */
    bool reset;      /* close with RST: the other side was reset */
    uint64_t client_hash;
    uint32_t tried[MAX_ATTEMPTS];
    size_t n_tried;
    uint64_t last_activity;
    uint64_t drain_deadline;
};

static void next_attempt(struct tcp_conn *c);
static void close_conn(struct tcp_conn *c);
static void on_timer(uv_timer_t *t);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void log_refusal(struct mesh_worker *w, const char *what, const char *where);

static struct side *peer_of(struct tcp_conn *c, struct side *s)
{
    return s == &c->down ? &c->up->side : &c->down;
}

static uint64_t now_ms(struct tcp_conn *c)
{
    return uv_now(&c->w->loop);
}

/* ---- teardown ---- */

static void free_conn(struct tcp_conn *c)
{
    struct mesh_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
    if (c->counted_total)
        atomic_fetch_sub_explicit(&w->shared->active_total, 1, memory_order_relaxed);
    if (c->counted_dest)
        atomic_fetch_sub_explicit(&c->dest->state->active, 1, memory_order_relaxed);
    if (c->ep)
        atomic_fetch_sub_explicit(&c->ep->state->active, 1, memory_order_relaxed);
    if (c->istio) {
        if (!c->istio_opened)
            atomic_fetch_add_explicit(&c->istio->opened, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->istio->closed, 1, memory_order_relaxed);
    }
    mesh_snapshot_unref(c->snap);
    mesh_free(c->direct);
    mesh_free(c);
    mesh_worker_maybe_exit(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct tcp_conn *c = h->data;
    if (c->up && h == (uv_handle_t *)&c->up->side.io->tcp) {
        mesh_free(c->up);
        c->up = NULL;
    }
    if (--c->open_handles == 0)
        free_conn(c);
}

static void on_attempt_closed(uv_handle_t *h)
{
    mesh_free(h->data);
}

/* Drops an attempt that did not (or will not) connect; it frees itself. */
static void abandon(struct attempt *a)
{
    a->abandoned = true;
    a->side.c = NULL;
    a->side.io->tcp.data = a;
    mesh_io_close(a->side.io, on_attempt_closed);
}

static void close_side(struct tcp_conn *c, struct side *s)
{
    s->io->tcp.data = c;
    /* Pass a reset on as a reset; a shutdown already sent rules it out. */
    uv_os_fd_t fd;
    if (c->reset && !s->shut_sent && uv_fileno((uv_handle_t *)&s->io->tcp, &fd) == 0) {
        struct linger l = {.l_onoff = 1, .l_linger = 0}; /* close sends RST */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    mesh_io_close(s->io, on_handle_closed);
}

static void close_conn(struct tcp_conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    bool connected = c->state == CONN_SPLICING;
    c->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    close_side(c, &c->down);
    if (c->up) {
        if (connected) {
            close_side(c, &c->up->side);
        } else {
            abandon(c->up);
            c->up = NULL;
        }
    }
}

/* ---- data ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct side *s = h->data;
    struct mesh_worker *w = s->c->w;
    (void)suggested;
    struct mesh_pbuf *b = mesh_bufpool_get(&w->pool);
    if (!b) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(b->data, (unsigned)w->pool.size);
}

/*
 * A queued write finished (or was cancelled by a close). The buffer names the connection,
 * which outlives its handles' callbacks, and whether the bytes came from the client side:
 * the side structs themselves may already be gone during a close.
 */
static void on_written(uv_write_t *req, int status)
{
    struct mesh_pbuf *b = container_of(req, struct mesh_pbuf, req);
    struct tcp_conn *c = b->owner;
    bool from_down = b->tag != 0;
    mesh_bufpool_put(&c->w->pool, b);
    if (c->state != CONN_SPLICING)
        return;
    struct side *src = from_down ? &c->down : &c->up->side;
    if (status < 0) {
        c->reset = status == UV_ECONNRESET || status == UV_EPIPE;
        close_conn(c);
        return;
    }
    struct side *dst = peer_of(c, src);
    if (src->paused && !src->eof && mesh_io_queue_size(dst->io) <= c->w->shared->low_water) {
        src->paused = false;
        mesh_io_read_start(src->io, on_alloc, on_read);
    }
}

static void maybe_finish(struct tcp_conn *c)
{
    if (c->down.eof && c->up->side.eof && c->down.shut_done && c->up->side.shut_done)
        close_conn(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct side *s = container_of(req, struct side, shutdown);
    struct tcp_conn *c = s->c;
    if (!c || c->state != CONN_SPLICING)
        return;
    s->shut_done = true;
    if (status < 0) {
        close_conn(c);
        return;
    }
    maybe_finish(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct side *s = stream->data;
    struct tcp_conn *c = s->c;
    struct mesh_worker *w = c->w;
    struct mesh_pbuf *b = buf->base ? container_of(buf->base, struct mesh_pbuf, data) : NULL;

    if (nread > 0 && c->state == CONN_SPLICING) {
        struct side *dst = peer_of(c, s);
        c->last_activity = uv_now(&w->loop);
        atomic_fetch_add_explicit(s == &c->down ? &c->dest->state->bytes_to_upstream
                                                : &c->dest->state->bytes_to_downstream,
                                  (unsigned long long)nread, memory_order_relaxed);
        if (c->istio)
            atomic_fetch_add_explicit(s == &c->down ? &c->istio->received : &c->istio->sent,
                                      (unsigned long long)nread, memory_order_relaxed);
        /*
         * Write at once without a request when the socket takes it all (the usual case):
         * a queued uv_write costs an epoll_ctl on completion in libuv 1.44 (uv__drain).
         * What is left goes through the write queue, which backpressure watches.
         */
        uv_buf_t out = uv_buf_init(b->data, (unsigned)nread);
        int n = mesh_io_try_write(dst->io, &out, 1);
        if (n == nread) {
            mesh_bufpool_put(&w->pool, b);
            return;
        }
        if (n < 0 && n != UV_EAGAIN) {
            mesh_bufpool_put(&w->pool, b);
            c->reset = n == UV_ECONNRESET || n == UV_EPIPE;
            close_conn(c);
            return;
        }
        out = uv_buf_init(b->data + (n > 0 ? n : 0), (unsigned)(nread - (n > 0 ? n : 0)));
        b->owner = c;
        b->tag = s == &c->down;
        if (mesh_io_write(&b->req, dst->io, &out, 1, on_written) < 0) {
            mesh_bufpool_put(&w->pool, b);
            close_conn(c);
            return;
        }
        if (mesh_io_queue_size(dst->io) > w->shared->high_water) {
            s->paused = true;
            mesh_io_read_stop(s->io);
        }
        return;
    }
    if (b)
        mesh_bufpool_put(&w->pool, b);
    if (nread == 0 || c->state != CONN_SPLICING)
        return;
    if (nread == UV_EOF) {
        /* Half-close: no more from this side; tell the other side once its writes are out. */
        struct side *dst = peer_of(c, s);
        s->eof = true;
        mesh_io_read_stop(s->io);
        if (!dst->shut_sent) {
            dst->shut_sent = true;
            dst->c = c;
            if (mesh_io_shutdown(&dst->shutdown, dst->io, on_shutdown) < 0) {
                close_conn(c);
                return;
            }
        }
        maybe_finish(c);
        return;
    }
    c->reset = nread == UV_ECONNRESET;
    if (nread != UV_ECONNRESET && nread != UV_ENOBUFS)
        mesh_log_debug("read error on '%s': %s", c->dest->key, uv_strerror((int)nread));
    close_conn(c);
}

/* ---- timers ---- */

static void arm_timer(struct tcp_conn *c)
{
    uint64_t now = now_ms(c), idle = c->dest->policy->idle_timeout_ms;
    uint64_t due = c->last_activity + idle;
    if (c->drain_deadline && c->drain_deadline < due)
        due = c->drain_deadline;
    uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct tcp_conn *c = t->data;
    if (c->state == CONN_CONNECTING) {
        /* Connect timeout: the endpoint did not answer in time. */
        struct attempt *a = c->up;
        c->up = NULL;
        mesh_outlier_failure(c->w->shared, c->dest, &c->dest->eps[a->ep], now_ms(c));
        atomic_fetch_add_explicit(&c->dest->state->connect_failures, 1, memory_order_relaxed);
        abandon(a);
        next_attempt(c);
        return;
    }
    if (c->state != CONN_SPLICING)
        return;
    uint64_t now = now_ms(c);
    if (c->drain_deadline && now >= c->drain_deadline) {
        atomic_fetch_add_explicit(&c->dest->state->drained, 1, memory_order_relaxed);
        close_conn(c);
        return;
    }
    if (now - c->last_activity >= c->dest->policy->idle_timeout_ms) {
        atomic_fetch_add_explicit(&c->dest->state->idle_timeouts, 1, memory_order_relaxed);
        close_conn(c);
        return;
    }
    arm_timer(c); /* activity since: wait for what is left */
}

/* ---- connecting ---- */

/* The Istio series counts the connection as opened once it reaches an upstream, or under
 * Envoy's response flag (UH, UF, UO) when it never will, as Istio's TCP metrics do. */
static void istio_open(struct tcp_conn *c, const char *flags)
{
    if (!c->istio || c->istio_opened)
        return;
    if (flags)
        c->istio = mesh_istio_tcp_flagged(c->w->shared, c->istio, flags);
    if (c->istio)
        atomic_fetch_add_explicit(&c->istio->opened, 1, memory_order_relaxed);
    c->istio_opened = true;
}

static void start_splice(struct tcp_conn *c, struct attempt *a)
{
    istio_open(c, NULL);
    c->state = CONN_SPLICING;
    c->ep = &c->dest->eps[a->ep];
    atomic_fetch_add_explicit(&c->ep->state->active, 1, memory_order_relaxed);
    mesh_outlier_success(c->ep);
    c->open_handles++; /* the upstream socket now belongs to the connection */
    a->side.io->tcp.data = &a->side;
    c->down.io->tcp.data = &c->down;
    uv_tcp_nodelay(&a->side.io->tcp, 1);
    uv_tcp_nodelay(&c->down.io->tcp, 1);
    c->last_activity = now_ms(c);
    if (mesh_io_read_start(c->down.io, on_alloc, on_read) < 0 ||
        mesh_io_read_start(a->side.io, on_alloc, on_read) < 0) {
        close_conn(c);
        return;
    }
    arm_timer(c);
}

/* The attempt failed (connect, or the mTLS handshake): the endpoint counts it; try another. */
static void attempt_failed(struct tcp_conn *c, struct attempt *a, const char *why)
{
    char addr[MESH_ADDR_STRLEN];
    uv_timer_stop(&c->timer);
    mesh_log_debug("connect to %s for '%s' failed: %s",
                   mesh_ipport_format(&c->dest->eps[a->ep].addr, addr, sizeof(addr)), c->dest->key,
                   why);
    mesh_outlier_failure(c->w->shared, c->dest, &c->dest->eps[a->ep], now_ms(c));
    atomic_fetch_add_explicit(&c->dest->state->connect_failures, 1, memory_order_relaxed);
    c->up = NULL;
    abandon(a);
    next_attempt(c);
}

static void on_up_handshake(struct mesh_io *io, int status)
{
    struct attempt *a = container_of((struct side *)io->tcp.data, struct attempt, side);
    struct tcp_conn *c = a->side.c;
    atomic_fetch_add_explicit(status == 0 ? &c->w->shared->tls_ok[1] : &c->w->shared->tls_failed[1],
                              1, memory_order_relaxed);
    if (status < 0) {
        const char *why = mesh_tls_refusal(mesh_io_ssl(io));
        mesh_log_warn("mTLS to an agent of '%s' failed: %s", c->dest->key,
                      why ? why : mesh_io_tls_error(io));
        attempt_failed(c, a, "mTLS handshake failed");
        return;
    }
    if (SSL_session_reused(mesh_io_ssl(io)))
        atomic_fetch_add_explicit(&c->w->shared->tls_resumed[1], 1, memory_order_relaxed);
    uv_timer_stop(&c->timer);
    start_splice(c, a);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct attempt *a = container_of(req, struct attempt, req);
    if (a->abandoned)
        return;
    struct tcp_conn *c = a->side.c;
    if (status < 0) {
        attempt_failed(c, a, uv_strerror(status));
        return;
    }
    const struct snap_endpoint *ep = &c->dest->eps[a->ep];
    if (!ep->mesh_port || !c->tls_as) {
        uv_timer_stop(&c->timer);
        start_splice(c, a);
        return;
    }
    /* An agent on the far side: mTLS, within what is left of the connect timeout. A named
     * pod's call is counted by what it presents, once (not per attempt). */
    if (c->pod_caller) {
        c->pod_caller = false;
        atomic_fetch_add_explicit(
            &c->w->shared->capture_pod_identity[c->tls_as != c->listener->tls_as ? 0 : 1], 1,
            memory_order_relaxed);
    }
    char peer[MESH_ADDR_STRLEN];
    struct mesh_addr to;
    mesh_ep_sockaddr(ep, true, &to);
    mesh_addr_format(&to, peer, sizeof(peer));
    char sni[200]; /* the instance picked: its agent may run several */
    mesh_tls_instance_sni(sni, sizeof(sni), c->dest->sni, ep->addr.port);
    SSL *ssl = mesh_tls_client_session(c->tls_as, sni, c->dest->peer_id, &c->w->tls_sessions, peer);
    if (!ssl || mesh_io_tls_start(a->side.io, ssl, on_up_handshake) < 0)
        attempt_failed(c, a, "out of memory"); /* the io owns ssl once given */
}

/* The worker's balancer for this destination, or a one-off one for an older snapshot. */
static int pick(struct tcp_conn *c)
{
    struct mesh_worker *w = c->w;
    if (c->direct)
        return c->n_tried == 0 ? 0 : -1;
    struct mesh_lb_state *lb = mesh_worker_lb(w, c->snap, c->dest);
    if (lb)
        return mesh_lb_pick(lb, w->shared, c->client_hash, c->tried, c->n_tried, &w->rng);
    struct mesh_lb_state tmp = {.dest = c->dest};
    int ep = mesh_lb_pick(&tmp, w->shared, c->client_hash, c->tried, c->n_tried, &w->rng);
    mesh_lb_state_done(&tmp);
    return ep;
}

static void next_attempt(struct tcp_conn *c)
{
    struct mesh_worker *w = c->w;
    for (;;) {
        if (c->n_tried > (size_t)c->dest->policy->connect_retries || c->n_tried >= MAX_ATTEMPTS) {
            istio_open(c, "UF");
            close_conn(c); /* every allowed attempt failed */
            return;
        }
        int ep = pick(c);
        if (ep < 0) {
            if (c->n_tried == 0) {
                atomic_fetch_add_explicit(&c->dest->state->no_endpoint, 1, memory_order_relaxed);
                log_refusal(w, "no endpoint can take it", c->dest->key);
            }
            istio_open(c, c->n_tried ? "UF" : "UH");
            close_conn(c);
            return;
        }
        if (c->n_tried)
            atomic_fetch_add_explicit(&c->dest->state->retries, 1, memory_order_relaxed);
        c->tried[c->n_tried++] = (uint32_t)ep;
        struct attempt *a = mesh_calloc(1, sizeof(*a));
        if (!a) {
            close_conn(c);
            return;
        }
        a->ep = ep;
        a->side.c = c;
        a->side.io = mesh_io_new(&w->iol, &w->loop);
        if (!a->side.io) {
            mesh_free(a);
            close_conn(c);
            return;
        }
        a->side.io->tcp.data = &a->side;
        struct mesh_addr to;
        mesh_ep_sockaddr(&c->dest->eps[ep], c->tls_as != NULL, &to);
        int r =
            uv_tcp_connect(&a->req, &a->side.io->tcp, (const struct sockaddr *)&to.ss, on_connect);
        if (r == 0) {
            c->up = a;
            uv_timer_start(&c->timer, on_timer, c->dest->policy->connect_timeout_ms, 0);
            return;
        }
        /* Refused at once (no route, no ports left): that endpoint failed; try another. */
        mesh_outlier_failure(w->shared, c->dest, &c->dest->eps[ep], now_ms(c));
        atomic_fetch_add_explicit(&c->dest->state->connect_failures, 1, memory_order_relaxed);
        abandon(a);
    }
}

/* ---- accept ---- */

/* A refused connection is worth a warning, but a flood of them is not worth a flood. */
static void log_refusal(struct mesh_worker *w, const char *what, const char *where)
{
    uint64_t now = uv_now(&w->loop);
    if (w->last_refusal_log && now - w->last_refusal_log < 10000) {
        w->refusals_unlogged++;
        return;
    }
    mesh_log_warn("refused a connection to '%s': %s (%llu more refused since the last "
                  "warning)",
                  where, what, (unsigned long long)w->refusals_unlogged);
    w->last_refusal_log = now;
    w->refusals_unlogged = 0;
}

void mesh_tcp_log_refusal(struct mesh_worker *w, const char *what, const char *where)
{
    log_refusal(w, what, where);
}

/* Proxies io to the destination of listener `key`, or to `direct`'s (taking it). */
/* as: the identity its upstream mTLS presents (in the worker's snapshot); NULL: the
 * listener's. pod_caller: a captured pod named by its address. */
static void adopt(struct mesh_worker *w, struct mesh_io *io, const char *key, struct direct *direct,
                  const char *peer_id, const struct mesh_tls_identity *as, bool pod_caller)
{
    struct tcp_conn *c = mesh_calloc(1, sizeof(*c));
    if (!c) {
        mesh_io_close(io, NULL);
        return;
    }
    c->w = w;
    c->direct = direct;
    c->state = CONN_CONNECTING;
    c->down.c = c;
    c->down.io = io;
    uv_timer_init(&w->loop, &c->timer);
    io->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shared->accepted_total, 1, memory_order_relaxed);

    c->counted_total = true;
    int total = atomic_fetch_add_explicit(&w->shared->active_total, 1, memory_order_relaxed) + 1;
    struct snap_listener *l = w->snap ? mesh_snapshot_listener(w->snap, key) : NULL;
    if (!l || w->stopping || (direct && !w->snap->passthrough)) {
        close_conn(c);
        return;
    }
    c->snap = w->snap;
    mesh_snapshot_ref(c->snap);
    c->dest = l->dest;
    if (direct) {
        /* The snapshot's passthrough counters, and the workload defaults: one endpoint,
         * no retry, no ejection. */
        static char passthrough_key[] = "capture:passthrough";
        direct->dest.key = direct->dest.service = passthrough_key;
        direct->dest.state = w->snap->passthrough;
        direct->dest.policy = &w->snap->inbound_policy;
        direct->dest.eps = &direct->ep;
        direct->dest.n = 1;
        direct->ep.state = &direct->state;
        direct->ep.health = MESH_EP_HEALTHY;
        direct->ep.weight = 1;
        atomic_init(&direct->state.hc_healthy, 1);
        direct->state.dest = w->snap->passthrough;
        c->dest = &direct->dest;
    }
    c->listener = l;
    c->tls_as = as ? as : l->tls_as;
    c->pod_caller = pod_caller;
    int cap = atomic_load_explicit(&w->shared->max_connections, memory_order_relaxed);
    if (cap && total > cap) {
        atomic_fetch_add_explicit(&w->shared->refused_total, 1, memory_order_relaxed);
        char what[96];
        snprintf(what, sizeof(what), "proxy.max_connections (%d) are open", cap);
        log_refusal(w, what, c->dest->key);
        close_conn(c);
        return;
    }
    c->counted_dest = true;
    c->istio = mesh_istio_tcp_series(w->shared, l, c->dest, peer_id);
    int active = atomic_fetch_add_explicit(&c->dest->state->active, 1, memory_order_relaxed) + 1;
    if (c->dest->policy->max_connections && active > c->dest->policy->max_connections) {
        atomic_fetch_add_explicit(&c->dest->state->breaker_refusals, 1, memory_order_relaxed);
        log_refusal(w, "its max_connections are open (circuit breaker)", c->dest->key);
        istio_open(c, "UO");
        close_conn(c);
        return;
    }
    atomic_fetch_add_explicit(&c->dest->state->conns_total, 1, memory_order_relaxed);
    if (c->dest->policy->lb == MESH_LB_RING_HASH) {
        struct mesh_addr peer = {0};
        int len = sizeof(peer.ss);
        if (uv_tcp_getpeername(&c->down.io->tcp, (struct sockaddr *)&peer.ss, &len) == 0)
            c->client_hash = mesh_hash_client(&peer);
    }
    next_attempt(c);
}

void mesh_tcp_adopt(struct mesh_worker *w, struct mesh_io *io, const char *key)
{
    adopt(w, io, key, NULL, NULL, NULL, false);
}

void mesh_tcp_adopt_as(struct mesh_worker *w, struct mesh_io *io, const char *key,
                       const struct mesh_tls_identity *as, bool pod_caller)
{
    adopt(w, io, key, NULL, NULL, as, pod_caller);
}

void mesh_tcp_adopt_peer(struct mesh_worker *w, struct mesh_io *io, const char *key,
                         const char *peer_id)
{
    adopt(w, io, key, NULL, peer_id, NULL, false);
}

void mesh_tcp_adopt_direct(struct mesh_worker *w, struct mesh_io *io, const char *key,
                           const struct mesh_addr *to)
{
    struct direct *d = mesh_calloc(1, sizeof(*d));
    if (!d || mesh_ipport_from_addr(to, &d->ep.addr) < 0) {
        mesh_free(d);
        mesh_io_close(io, NULL);
        return;
    }
    d->state.addr = d->ep.addr;
    adopt(w, io, key, d, NULL, NULL, false);
}

/* ---- snapshots and shutdown ---- */

void mesh_tcp_snapshot_changed(struct mesh_worker *w)
{
    uint64_t now = uv_now(&w->loop);
    for (struct tcp_conn *c = w->conns; c; c = c->next) {
        if (c->state != CONN_SPLICING || c->direct)
            continue;
        const struct snap_dest *nd = mesh_snapshot_dest(w->snap, c->dest->key);
        const struct snap_endpoint *e = nd ? mesh_snapshot_find_ep(nd, &c->ep->addr) : NULL;
        bool gone = !e || (e->health & MESH_EP_TERMINATING);
        if (!gone) {
            c->drain_deadline = 0; /* it came back */
            continue;
        }
        if (c->drain_deadline)
            continue;
        if (c->dest->policy->drain_timeout_ms == 0) {
            atomic_fetch_add_explicit(&c->dest->state->drained, 1, memory_order_relaxed);
            close_conn(c);
            continue;
        }
        c->drain_deadline = now + c->dest->policy->drain_timeout_ms;
        arm_timer(c);
    }
}

void mesh_tcp_close_all(struct mesh_worker *w)
{
    for (struct tcp_conn *c = w->conns; c; c = c->next)
        close_conn(c);
}
