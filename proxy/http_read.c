#define MESH_LOG_MODULE "http"

/*
 * Reading requests from the client: the head, parsed and routed, then its body fed to the
 * request; pipelined requests wait in the input buffer. Also accepting a connection and
 * stopping the worker's connections.
 */
#include <errno.h>
#include <stdio.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/http_proxy-int.h"

/* ---- reading requests ---- */

static void start_request(struct http_conn *c, const struct mesh_http_request *r);

/* Bytes of the request body that may be taken now (before the head is sent, at most what
 * the replay buffer still holds, since they must wait there). */
static size_t body_room(const struct http_req *q, size_t avail)
{
    if (q->head_sent)
        return avail;
    size_t room = MESH_HTTP_REPLAY_MAX > q->replay.len ? MESH_HTTP_REPLAY_MAX - q->replay.len : 0;
    return avail < room ? avail : room;
}

/* Whether the chunked body bytes that came with a head are well formed so far. */
static bool chunks_look_valid(char *data, size_t len)
{
    struct mesh_http_chunked d;
    size_t used;
    const char *err;
    mesh_http_chunked_init(&d);
    return mesh_http_chunked_decode(&d, data, len, &used, NULL, &err) >= 0;
}

/* Uses what it can of data[0..len): request heads, body bytes. Returns how much it used. */
static size_t feed(struct http_conn *c, char *data, size_t len)
{
    struct http_req *q = &c->req;
    size_t used = 0;
    while (used < len && !c->closing && !c->shutting && !c->pending_input) {
        if (q->phase == REQ_NONE && c->requests == 0 && used == 0 && !c->stream) {
            /* HTTP/2 with prior knowledge: the preface where a first request would be (never
             * inside a stream: an HTTP/2 stream cannot carry another HTTP/2 connection). */
            int h2 = mesh_h2_preface(data, len);
            if (h2 == -EAGAIN)
                return 0;
            if (h2 == 1) {
                if (mesh_h2_start(c, data, len) < 0)
                    mesh_http_proxy__conn_abort(c);
                return len;
            }
        }
        if (q->phase == REQ_NONE) {
            struct mesh_http_request r;
            int n =
                mesh_http_parse_request(data + used, len - used, &mesh_http_proxy__opts(c)->limits,
                                        c->w->http->headers, &r);
            if (n == -EAGAIN) {
                if (len - used >= mesh_http_proxy__opts(c)->limits.max_head) {
                    q->flags |= RF_BAD_REQUEST;
                    q->phase = REQ_LOCAL;
                    q->body.done = false;
                    mesh_http_proxy__respond(c, 431, "text/plain", "request head too large\n",
                                             NULL);
                    return len;
                }
                if (c->idle_deadline >
                    mesh_http_proxy__now_ms(c) + mesh_http_proxy__opts(c)->header_timeout_ms) {
                    c->idle_deadline =
                        mesh_http_proxy__now_ms(c) + mesh_http_proxy__opts(c)->header_timeout_ms;
                    mesh_http_proxy__arm_timer(c);
                }
                return used;
            }
            if (n < 0) {
                int status = mesh_http_error_status(n);
                q->phase = REQ_LOCAL;
                q->start_us = uv_hrtime() / 1000;
                mesh_log_debug("bad request from a client: %s (%d)", r.error ? r.error : "?",
                               status);
                q->flags |= RF_BAD_REQUEST;
                q->body.done = false; /* the rest of the stream cannot be trusted */
                mesh_http_proxy__respond(c, status, "text/plain", r.error ? r.error : "bad request",
                                         NULL);
                return len;
            }
            used += (size_t)n;
            if ((r.flags & MESH_HTTP_F_CHUNKED) && !chunks_look_valid(data + used, len - used)) {
                /* Bad chunking already in hand: refused before anything goes upstream. */
                q->phase = REQ_LOCAL;
                q->start_us = uv_hrtime() / 1000;
                q->flags |= RF_BAD_REQUEST;
                mesh_http_proxy__respond(c, 400, "text/plain", "bad chunked body\n", NULL);
                return len;
            }
            start_request(c, &r);
            continue;
        }
        if (q->phase == REQ_TUNNEL) {
            if (q->up) {
                uv_buf_t b = uv_buf_init(data + used, (unsigned)(len - used));
                mesh_http_proxy__write_up(c, &b, 1);
            }
            return len;
        }
        if (q->body.done)
            return used; /* the next request waits for this response */
        size_t take = body_room(q, len - used);
        if (take == 0) {
            mesh_http_proxy__pause_down(c, PAUSE_WAIT_HEAD); /* resumes when the head is sent */
            return used;
        }
        const char *err = NULL;
        ssize_t k = mesh_body_feed(&q->body, data + used, take, &err);
        if (k < 0) {
            q->flags |= RF_BAD_REQUEST;
            if (q->phase == REQ_STREAMING || q->phase == REQ_TUNNEL)
                mesh_http_proxy__conn_abort(c);
            else
                mesh_http_proxy__respond(c, 400, "text/plain", err ? err : "bad chunked body",
                                         NULL);
            return len;
        }
        mesh_http_proxy__body_bytes(c, data + used, (size_t)k);
        used += (size_t)k;
    }
    return used;
}

/* Runs the input buffer until it has nothing usable. */
void mesh_http_proxy__process_input(struct http_conn *c)
{
    do {
        c->pending_input = false;
        c->in_feed = true;
        size_t n = feed(c, c->in.data, c->in.len);
        c->in_feed = false;
        mesh_buf_consume(&c->in, n);
    } while (c->pending_input && !c->closing);
    if (!c->closing && c->in.len < c->in.max / 2)
        mesh_http_proxy__resume_down(c, PAUSE_INPUT_FULL);
}

void mesh_http_proxy__on_down_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct http_conn *c = h->data;
    (void)suggested;
    struct mesh_pbuf *b = mesh_bufpool_get(&c->w->pool);
    *buf = b ? uv_buf_init(b->data, (unsigned)c->w->pool.size) : uv_buf_init(NULL, 0);
}

void mesh_http_proxy__on_down_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = s->data;
    struct mesh_pbuf *b = buf->base ? container_of(buf->base, struct mesh_pbuf, data) : NULL;
    if (nread > 0 && c->shutting) {
        mesh_bufpool_put(&c->w->pool, b); /* lingering: dropped */
        return;
    }
    if (nread > 0 && !c->closing && c->h2) {
        mesh_h2_input(c, b->data, (size_t)nread);
        mesh_bufpool_put(&c->w->pool, b);
        return;
    }
    if (nread > 0 && !c->closing) {
        size_t n = (size_t)nread;
        if (c->in.len == 0) {
            /* Straight from the read buffer; only a remainder is copied. */
            c->in_feed = true;
            size_t used = feed(c, b->data, n);
            c->in_feed = false;
            if (used < n && !c->closing && mesh_buf_append(&c->in, b->data + used, n - used) < 0)
                mesh_http_proxy__pause_down(c, PAUSE_INPUT_FULL);
            mesh_bufpool_put(&c->w->pool, b);
            if (!c->closing && c->pending_input)
                mesh_http_proxy__process_input(c);
        } else {
            if (mesh_buf_append(&c->in, b->data, n) < 0)
                mesh_http_proxy__pause_down(c, PAUSE_INPUT_FULL);
            mesh_bufpool_put(&c->w->pool, b);
            if (!c->closing)
                mesh_http_proxy__process_input(c);
        }
        if (!c->closing && c->in.len >= c->in.max - c->w->pool.size)
            mesh_http_proxy__pause_down(c, PAUSE_INPUT_FULL);
        return;
    }
    if (b)
        mesh_bufpool_put(&c->w->pool, b);
    if (nread == 0 || c->closing)
        return;
    struct http_req *q = &c->req;
    if (nread == UV_EOF) {
        c->eof = true;
        mesh_io_read_stop(c->io);
        /* A client may half-close after its request: the response still goes out. */
        if (c->shutting) {
            if (mesh_io_queue_size(c->io) == 0)
                mesh_http_proxy__conn_abort(c);
        } else if (q->phase == REQ_NONE || q->phase == REQ_LOCAL) {
            mesh_http_proxy__conn_close_gracefully(c);
        } else if (!q->body.done) {
            q->flags |= RF_DOWNSTREAM_RESET;
            mesh_http_proxy__conn_abort(c);
        } else if (q->phase == REQ_TUNNEL && q->up) {
            mesh_up_shutdown(q->up);
        }
        return;
    }
    q->flags |= RF_DOWNSTREAM_RESET;
    mesh_http_proxy__conn_abort(c);
}

/* After routing (and any fault delay): limits, then the first try. */
void mesh_http_proxy__admit(struct http_conn *c)
{
    struct http_req *q = &c->req;
    unsigned retry_after;
    uint64_t now = mesh_http_proxy__now_ms(c);
    const struct mesh_rate_limit_policy *rl = &q->rr->rate_limit;
    bool limited = q->rule && rl->enabled &&
                   !mesh_bucket_take(mesh_dest_http(q->rule->state), rl, now, &retry_after);
    if (!limited && q->dest->policy->rate_limit.enabled)
        limited = !mesh_bucket_take(mesh_dest_http(q->dest->state), &q->dest->policy->rate_limit,
                                    now, &retry_after);
    if (limited) {
        char extra[64];
        snprintf(extra, sizeof(extra), "retry-after: %u\r\n", retry_after ? retry_after : 1);
        atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->rate_limited, 1,
                                  memory_order_relaxed);
        if (q->rule)
            atomic_fetch_add_explicit(&mesh_dest_http(q->rule->state)->rate_limited, 1,
                                      memory_order_relaxed);
        q->flags |= RF_RATE_LIMITED;
        mesh_http_proxy__respond(c, 429, "text/plain", "local rate limit exceeded\n", extra);
        return;
    }
    struct mesh_http_stats *st = mesh_dest_http(q->dest->state);
    int active = atomic_fetch_add_explicit(&st->active, 1, memory_order_relaxed) + 1;
    q->counted_active = true;
    if (q->dest->policy->max_requests && active > q->dest->policy->max_requests) {
        atomic_fetch_add_explicit(&st->overflows, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&q->dest->state->breaker_refusals, 1, memory_order_relaxed);
        mesh_http_proxy__respond_error(c, 503, RF_OVERFLOW,
                                       "upstream overflow: max_requests reached\n");
        return;
    }
    if (q->expect_continue && q->version == 11 && !q->body.done) {
        /* The body is welcome: say so here, rather than wait for the upstream's word. */
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(cont, sizeof(cont) - 1);
        mesh_http_proxy__write_down(c, &b, 1);
        if (c->closing)
            return;
    }
    mesh_http_proxy__start_try(c);
}

/* Each request uses the newest snapshot: a keep-alive connection must not pin an old one. */
static void refresh_snapshot(struct http_conn *c)
{
    struct mesh_worker *w = c->w;
    if (c->snap == w->snap || !w->snap)
        return;
    const struct snap_listener *l = mesh_snapshot_listener(w->snap, c->listener->key);
    if (!l || !l->http) {
        c->close_after = true; /* the listener is going away: this request is its last */
        return;
    }
    mesh_snapshot_unref(c->snap);
    c->snap = w->snap;
    mesh_snapshot_ref(c->snap);
    c->listener = l;
    const struct mesh_tls_identity *as =
        c->as_caller ? mesh_capture_source_as(c->snap, c->peer_identity) : NULL;
    c->tls_as = as ? as : l->tls_as;
}

static void start_request(struct http_conn *c, const struct mesh_http_request *r)
{
    struct http_req *q = &c->req;
    struct mesh_http_decision d;
    refresh_snapshot(c);
    c->requests++;
    q->start_us = uv_hrtime() / 1000;
    q->keep_alive = (r->flags & MESH_HTTP_F_KEEP_ALIVE) != 0;
    q->upgrade = (r->flags & MESH_HTTP_F_UPGRADE) != 0;
    q->expect_continue = (r->flags & MESH_HTTP_F_EXPECT_CONTINUE) != 0;
    if (r->flags & MESH_HTTP_F_CHUNKED) {
        q->body.kind = BODY_CHUNKED;
        mesh_http_chunked_init(&q->body.chunked);
    } else if ((r->flags & MESH_HTTP_F_CONTENT_LENGTH) && r->content_length) {
        q->body.kind = BODY_LENGTH;
        q->body.left = r->content_length;
    } else {
        q->body.done = true;
    }
    q->phase = REQ_CONNECTING; /* until routed: not REQ_NONE */
    c->idle_deadline = 0;
    int status = mesh_http_route(c, r, &d);
    uint64_t timeout = q->rr->timeout_ms;
    q->deadline = timeout ? mesh_http_proxy__now_ms(c) + timeout : 0;
    if (status) {
        if (q->flags & RF_FAULT_ABORT) {
            if (q->dest)
                atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->fault_aborts, 1,
                                          memory_order_relaxed);
            if (q->rule)
                atomic_fetch_add_explicit(&mesh_dest_http(q->rule->state)->fault_aborts, 1,
                                          memory_order_relaxed);
        }
        mesh_http_proxy__respond(c, status, d.content_type, d.body,
                                 d.headers.len ? d.headers.data : NULL);
        return;
    }
    if (d.delay_ms) {
        atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->fault_delays, 1,
                                  memory_order_relaxed);
        if (q->rule)
            atomic_fetch_add_explicit(&mesh_dest_http(q->rule->state)->fault_delays, 1,
                                      memory_order_relaxed);
        q->phase = REQ_DELAYED;
        q->wake_at = mesh_http_proxy__now_ms(c) + d.delay_ms;
        mesh_http_proxy__arm_timer(c);
        return;
    }
    mesh_http_proxy__admit(c);
}

/* ---- accept, stop ---- */

/* A connection's state around io (taken), in the worker's list and counted there. */
static void conn_init(struct http_conn *c, struct mesh_worker *w, struct mesh_io *io)
{
    c->w = w;
    c->io = io;
    uv_timer_init(&w->loop, &c->timer);
    io->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    mesh_buf_init(&c->in, w->shared->http.limits.max_head + w->pool.size);
    mesh_buf_init(&c->req.meta, w->shared->http.limits.max_head + w->shared->http.limits.max_uri);
    mesh_buf_init(&c->req.replay, MESH_HTTP_REPLAY_MAX);
    mesh_buf_init(&c->req.head_out, w->shared->http.limits.max_head * 2);
    c->req.replayable = true;
    c->req.version = 11;
    c->next = w->http->conns;
    if (w->http->conns)
        w->http->conns->prev = c;
    w->http->conns = c;
    w->n_conns++;
}

void mesh_http_adopt(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l,
                     const char *peer_id)
{
    mesh_http_adopt_as(w, io, l, peer_id, false);
}

void mesh_http_adopt_as(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l,
                        const char *peer_id, bool as_caller)
{
    struct http_conn *c = mesh_calloc(1, sizeof(*c));
    /* The caller's certificate is hashed now, at the handshake, for every request. */
    if (!c || (peer_id && (!(c->peer_identity = mesh_strdup(peer_id)) ||
                           (mesh_io_ssl(io) &&
                            !(c->xfcc = mesh_http_proxy__xfcc(mesh_io_ssl(io), peer_id)))))) {
        if (c) {
            mesh_free(c->peer_identity);
            mesh_free(c->xfcc);
        }
        mesh_free(c);
        mesh_io_close(io, NULL);
        return;
    }
    conn_init(c, w, io);
    atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shared->accepted_total, 1, memory_order_relaxed);
    int total = atomic_fetch_add_explicit(&w->shared->active_total, 1, memory_order_relaxed) + 1;
    c->snap = w->snap;
    mesh_snapshot_ref(c->snap);
    c->listener = l;
    /* A pod's keep-alive connection accepted before its account's certificate arrived
     * stays a caller: the next snapshot that holds it lends it (refresh_snapshot). */
    c->as_caller = as_caller && peer_id;
    const struct mesh_tls_identity *as =
        c->as_caller ? mesh_capture_source_as(c->snap, c->peer_identity) : NULL;
    c->tls_as = as ? as : l->tls_as;
    int cap = atomic_load_explicit(&w->shared->max_connections, memory_order_relaxed);
    if (w->stopping || (cap && total > cap)) {
        if (!w->stopping)
            atomic_fetch_add_explicit(&w->shared->refused_total, 1, memory_order_relaxed);
        mesh_http_proxy__conn_abort(c);
        return;
    }
    uv_tcp_nodelay(&c->io->tcp, 1);
    c->idle_deadline = uv_now(&w->loop) + w->shared->http.header_timeout_ms;
    mesh_http_proxy__arm_timer(c);
    if (mesh_io_read_start(c->io, mesh_http_proxy__on_down_alloc, mesh_http_proxy__on_down_read) <
        0)
        mesh_http_proxy__conn_abort(c);
}

struct http_conn *mesh_http_proxy__adopt_stream(struct http_conn *parent, struct mesh_io *vio)
{
    struct mesh_worker *w = parent->w;
    struct http_conn *c = mesh_calloc(1, sizeof(*c));
    /* The caller of the connection is the caller of each of its streams. */
    if (!c || (parent->peer_identity && !(c->peer_identity = mesh_strdup(parent->peer_identity))) ||
        (parent->xfcc && !(c->xfcc = mesh_strdup(parent->xfcc)))) {
        if (c) {
            mesh_free(c->peer_identity);
            mesh_free(c->xfcc);
        }
        mesh_free(c);
        mesh_io_close(vio, NULL);
        return NULL;
    }
    c->stream = true; /* its connection is the one counted and capped */
    conn_init(c, w, vio);
    c->snap = parent->snap;
    mesh_snapshot_ref(c->snap);
    c->listener = parent->listener;
    c->as_caller = parent->as_caller; /* and the identity it calls with */
    c->tls_as = parent->tls_as;
    c->idle_deadline = uv_now(&w->loop) + w->shared->http.header_timeout_ms;
    mesh_http_proxy__arm_timer(c);
    if (w->stopping || mesh_io_read_start(c->io, mesh_http_proxy__on_down_alloc,
                                          mesh_http_proxy__on_down_read) < 0) {
        mesh_http_proxy__conn_abort(c);
        return NULL;
    }
    return c;
}

void mesh_http_close_all(struct mesh_worker *w)
{
    for (struct http_conn *c = w->http->conns; c; c = c->next)
        mesh_http_proxy__conn_abort(c);
    mesh_up_pools_close(w);
}

void mesh_http_stop(struct mesh_worker *w)
{
    for (struct http_conn *c = w->http->conns; c; c = c->next) {
        if (c->h2 && !c->closing)
            mesh_h2_stop(c);
        else if (c->req.phase == REQ_NONE)
            mesh_http_proxy__conn_close_gracefully(c);
        else
            c->close_after = true;
    }
}

int mesh_http_worker_init(struct mesh_worker *w)
{
    w->http = mesh_calloc(1, sizeof(*w->http));
    if (!w->http)
        return -ENOMEM;
    w->http->headers =
        mesh_calloc(w->shared->http.limits.max_headers + 1, sizeof(*w->http->headers));
    if (!w->http->headers || mesh_route_rule_defaults(&w->http->default_rule) < 0 ||
        mesh_up_pools_init(w) < 0) {
        mesh_free(w->http->headers);
        mesh_free(w->http);
        w->http = NULL;
        return -ENOMEM;
    }
    return 0;
}

void mesh_http_worker_close(struct mesh_worker *w)
{
    if (w->http)
        mesh_up_pools_close(w);
}

void mesh_http_worker_done(struct mesh_worker *w)
{
    if (!w->http)
        return;
    mesh_up_pools_done(w);
    mesh_route_rule_done(&w->http->default_rule);
    mesh_free(w->http->headers);
    mesh_free(w->http);
    w->http = NULL;
}
