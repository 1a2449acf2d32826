#define MESH_LOG_MODULE "http"

/*
 * HTTP/1.1 downstream connections: reading requests, routing them, trying upstreams with
 * retries and timeouts, streaming bodies, and keeping the connection for the next request.
 *
 * A request goes through phases (struct http_req): routed at once when its head is in,
 * perhaps DELAYED by a fault, CONNECTING to an endpoint (or taking a pooled connection),
 * SENT, then STREAMING its response; or LOCAL when answered here. Between tries it may
 * wait in BACKOFF. Everything times off one timer per connection.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/http_proxy-int.h"
#include "proxy/http_try-int.h"

static void process_input(struct http_conn *c);
static void start_try(struct http_conn *c);
static void arm_timer(struct http_conn *c);
static uint64_t earliest(uint64_t a, uint64_t b);
static void finish_request(struct http_conn *c);
static void on_down_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_down_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static uint64_t now_ms(const struct http_conn *c)
{
    return uv_now(&c->w->loop);
}

static const struct mesh_http_options *opts(const struct http_conn *c)
{
    return &c->w->shared->http;
}

/* ---- writes ---- */

/* A queued write: what try_write left, copied. */
struct wreq {
    uv_write_t req;
    void *owner; /* struct http_conn (down) or struct upconn (up) */
    bool down;
    char data[];
};

static void on_down_written(uv_write_t *req, int status);
static void on_up_written(uv_write_t *req, int status);

/*
 * Writes bufs to a stream: at once when the socket takes it all (the usual case), the rest
 * through a queued request. Returns 0 or a libuv error.
 */
static int write_bufs(struct mesh_io *s, uv_buf_t *bufs, unsigned n, void *owner, bool down)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    int done = 0;
    if (mesh_io_queue_size(s) == 0) {
        done = mesh_io_try_write(s, bufs, n);
        if (done < 0 && done != UV_EAGAIN)
            return done;
        if (done < 0)
            done = 0;
        if ((size_t)done == total)
            return 0;
    }
    struct wreq *w = mesh_malloc(sizeof(*w) + total - (size_t)done);
    if (!w)
        return UV_ENOMEM;
    w->owner = owner;
    w->down = down;
    size_t skip = (size_t)done, len = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t from = skip < bufs[i].len ? skip : bufs[i].len;
        skip -= from;
        memcpy(w->data + len, bufs[i].base + from, bufs[i].len - from);
        len += bufs[i].len - from;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int r = mesh_io_write(&w->req, s, &b, 1, down ? on_down_written : on_up_written);
    if (r < 0)
        mesh_free(w);
    return r;
}

static void conn_abort(struct http_conn *c);

static void write_down(struct http_conn *c, uv_buf_t *bufs, unsigned n)
{
    if (c->closing)
        return;
    for (unsigned i = 0; i < n; i++)
        c->req.bytes_out += bufs[i].len;
    if (write_bufs(c->io, bufs, n, c, true) < 0) {
        c->req.flags |= RF_DOWNSTREAM_RESET;
        conn_abort(c);
        return;
    }
    struct upconn *u = c->req.up;
    if (u && mesh_io_queue_size(c->io) > c->w->shared->high_water)
        mesh_up_pause(u);
}

static void pause_down(struct http_conn *c, unsigned why)
{
    if (!c->paused && !c->closing && !c->eof)
        mesh_io_read_stop(c->io);
    c->paused |= why;
}

static void resume_down(struct http_conn *c, unsigned why)
{
    if (!(c->paused & why))
        return;
    c->paused &= ~why;
    if (!c->paused && !c->closing && !c->eof)
        mesh_io_read_start(c->io, on_down_alloc, on_down_read);
}

static void write_up(struct http_conn *c, uv_buf_t *bufs, unsigned n)
{
    struct upconn *u = c->req.up;
    if (write_bufs(u->io, bufs, n, u, false) < 0) {
        mesh_http_on_up_error(c, u, UV_ECONNRESET);
        return;
    }
    if (mesh_io_queue_size(u->io) > c->w->shared->high_water)
        pause_down(c, PAUSE_UPSTREAM);
}

static void on_up_written(uv_write_t *req, int status)
{
    struct wreq *w = container_of(req, struct wreq, req);
    struct upconn *u = w->owner;
    mesh_free(w);
    if (status < 0 || u->state != UP_BUSY || !u->c)
        return; /* a failed write shows as a read error too */
    struct http_conn *c = u->c;
    if (mesh_io_queue_size(u->io) <= c->w->shared->low_water)
        resume_down(c, PAUSE_UPSTREAM);
}

/* ---- teardown ---- */

static void free_conn(struct http_conn *c)
{
    struct mesh_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->http->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&w->shared->active_total, 1, memory_order_relaxed);
    mesh_buf_done(&c->in);
    mesh_buf_done(&c->req.meta);
    mesh_buf_done(&c->req.replay);
    mesh_buf_done(&c->req.head_out);
    mesh_snapshot_unref(c->snap);
    mesh_free(c->peer_identity);
    mesh_free(c);
    mesh_worker_maybe_exit(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    if (--c->open_handles == 0)
        free_conn(c);
}

/* Releases what the request holds in shared counters. */
static void release_counts(struct http_req *q)
{
    mesh_http_try_end(q);
    if (q->counted_pending) {
        atomic_fetch_sub_explicit(&mesh_dest_http(q->dest->state)->pending, 1,
                                  memory_order_relaxed);
        q->counted_pending = false;
    }
    if (q->counted_retry) {
        atomic_fetch_sub_explicit(&mesh_dest_http(q->dest->state)->retrying, 1,
                                  memory_order_relaxed);
        q->counted_retry = false;
    }
    if (q->counted_active) {
        atomic_fetch_sub_explicit(&mesh_dest_http(q->dest->state)->active, 1, memory_order_relaxed);
        q->counted_active = false;
    }
}

/* Closes everything now: the client connection and the request's upstream. */
static void conn_abort(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->req.phase != REQ_NONE)
        finish_request(c); /* logged; a request without a response shows status 0 */
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    mesh_io_close(c->io, on_handle_closed);
}

#define LINGER_MS 2000

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct http_conn *c = container_of(req, struct http_conn, shutdown);
    if (c->closing)
        return;
    if (status < 0 || c->eof) {
        conn_abort(c);
        return;
    }
    /* Linger: what the client still sends is read and dropped for a while, so that the
     * kernel does not answer it with a reset that could destroy our response in flight. */
    c->idle_deadline = now_ms(c) + LINGER_MS;
    arm_timer(c);
}

/* Closes once the queued writes are out: a FIN after the last byte, a linger, the close. */
static void conn_close_gracefully(struct http_conn *c)
{
    if (c->closing || c->shutting)
        return;
    c->shutting = true;
    c->idle_deadline = now_ms(c) + opts(c)->idle_timeout_ms; /* for the writes to drain */
    arm_timer(c);
    if (mesh_io_shutdown(&c->shutdown, c->io, on_shutdown) < 0) {
        conn_abort(c);
        return;
    }
    /* Keep reading (and dropping): a paused side would never see the client's FIN. */
    unsigned was = c->paused;
    c->paused = 0;
    if (was && !c->eof)
        mesh_io_read_start(c->io, on_down_alloc, on_down_read);
}

/* ---- request end ---- */

static void record(struct http_conn *c)
{
    struct http_req *q = &c->req;
    uint64_t us = (uv_hrtime() / 1000) - q->start_us;
    if (q->dest)
        mesh_http_stats_record(mesh_dest_http(q->dest->state), q->status, us);
    if (q->rule)
        mesh_http_stats_record(mesh_dest_http(q->rule->state), q->status, us);
    mesh_access_log(c->w->shared, c);
}

static void reset_request(struct http_req *q)
{
    q->phase = REQ_NONE;
    q->vhost = NULL;
    q->rule = NULL;
    q->rr = NULL;
    q->dest = NULL;
    q->tries = 0;
    q->n_tried = 0;
    q->up = NULL;
    q->try_deadline = q->deadline = q->wake_at = 0;
    q->head_sent = q->body_sent_all = false;
    q->status = 0;
    q->flags = 0;
    q->upstream_host[0] = q->request_id[0] = q->trace_id[0] = '\0';
    q->bytes_in = q->bytes_out = 0;
    q->res_chunked_to_raw = q->res_keep_alive = false;
    q->upgrade = q->expect_continue = q->head_only = false;
    memset(&q->body, 0, sizeof(q->body));
    memset(&q->res_body, 0, sizeof(q->res_body));
    mesh_buf_reset(&q->replay);
    q->replayable = true;
    /* What the next request (perhaps a bad one) is logged with until it is parsed. */
    mesh_buf_reset(&q->meta);
    q->method_len = q->authority_off = q->path_off = 0;
    q->version = 11;
    q->keep_alive = false;
}

/* The request is over (answered, or given up): count it, log it, get ready for the next. */
static void finish_request(struct http_conn *c)
{
    struct http_req *q = &c->req;
    if (q->up) {
        struct upconn *u = q->up;
        q->up = NULL;
        mesh_up_close(u);
    }
    if (!q->status)
        q->flags |= RF_DOWNSTREAM_RESET;
    record(c);
    release_counts(q);
    reset_request(q);
    if (c->closing)
        return;
    if (c->close_after || c->eof || c->w->stopping) {
        conn_close_gracefully(c);
        return;
    }
    c->idle_deadline = now_ms(c) + opts(c)->idle_timeout_ms;
    arm_timer(c);
    if (c->in.len || c->paused & PAUSE_INPUT_FULL) {
        if (c->in_feed)
            c->pending_input = true; /* the loop in process_input takes it */
        else
            process_input(c);
    }
}

/* ---- local responses ---- */

static void respond(struct http_conn *c, int status, const char *type, const char *body,
                    const char *extra)
{
    struct http_req *q = &c->req;
    if (q->up) {
        struct upconn *u = q->up;
        q->up = NULL;
        mesh_up_close(u);
    }
    q->status = status;
    q->phase = REQ_LOCAL;
    /* Unread request bytes would be taken for the next request: close instead. */
    if (!q->body.done || !q->keep_alive)
        c->close_after = true;
    struct mesh_buf out;
    mesh_buf_init(&out, 1 << 20);
    mesh_http_local_response(c, status, type, body, strlen(body), extra, &out);
    uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
    write_down(c, &b, 1);
    mesh_buf_done(&out);
    if (!c->closing)
        finish_request(c);
}

static void respond_error(struct http_conn *c, int status, unsigned flags, const char *body)
{
    c->req.flags |= flags;
    respond(c, status, "text/plain", body, NULL);
}

/* ---- trying upstreams ---- */

static int pick(struct http_conn *c, bool exclude)
{
    struct mesh_worker *w = c->w;
    struct http_req *q = &c->req;
    size_t n = exclude ? q->n_tried : 0;
    struct mesh_lb_state *lb = mesh_worker_lb(w, c->snap, q->dest);
    if (lb)
        return mesh_lb_pick(lb, w->shared, 0, q->tried, n, &w->rng);
    struct mesh_lb_state tmp = {.dest = q->dest};
    int ep = mesh_lb_pick(&tmp, w->shared, 0, q->tried, n, &w->rng);
    mesh_lb_state_done(&tmp);
    return ep;
}

static unsigned retry_on(const struct mesh_retry_policy *p)
{
    return p->on_set ? p->on : MESH_RETRY_DEFAULT;
}

/* May the request be tried again (the cause allowing it)? Counts it when so. `unsent`: the
 * failed try never reached the workload, so any method may be tried again. */
static bool may_retry_as(struct http_conn *c, bool cause_allowed, bool unsent)
{
    struct http_req *q = &c->req;
    const struct mesh_retry_policy *p = &q->rr->retries;
    if (!cause_allowed || q->tries > p->attempts || !q->replayable ||
        q->tries >= MESH_HTTP_MAX_TRIES || (!q->idempotent && !p->non_idempotent && !unsent) ||
        c->w->stopping)
        return false;
    struct mesh_http_stats *st = mesh_dest_http(q->dest->state);
    if (!q->counted_retry) {
        if (!mesh_http_retry_budget_allows(q, st))
            return false;
        atomic_fetch_add_explicit(&st->retrying, 1, memory_order_relaxed);
        q->counted_retry = true;
    }
    return true;
}

static bool may_retry(struct http_conn *c, bool cause_allowed)
{
    return may_retry_as(c, cause_allowed, false);
}

static bool status_retriable(const struct mesh_retry_policy *p, int status)
{
    unsigned on = retry_on(p);
    if ((on & MESH_RETRY_5XX) && status >= 500)
        return true;
    if ((on & MESH_RETRY_GATEWAY_ERROR) && status >= 502 && status <= 504)
        return true;
    for (size_t i = 0; (on & MESH_RETRY_STATUSES) && i < p->n_statuses; i++) {
        if (p->statuses[i] == status)
            return true;
    }
    return false;
}

/* Waits a jittered, exponentially growing backoff, then tries again. */
static void retry_later(struct http_conn *c)
{
    struct http_req *q = &c->req;
    const struct mesh_retry_policy *p = &q->rr->retries;
    uint64_t cap = p->backoff_base_ms;
    for (int i = 1; i < q->tries && cap < p->backoff_max_ms; i++)
        cap *= 2;
    if (cap > p->backoff_max_ms)
        cap = p->backoff_max_ms;
    uint64_t wait = cap ? mesh_rng_next(&c->w->rng) % (cap + 1) : 0;
    mesh_http_try_end(q);
    atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->retries, 1, memory_order_relaxed);
    if (q->rule)
        atomic_fetch_add_explicit(&mesh_dest_http(q->rule->state)->retries, 1,
                                  memory_order_relaxed);
    if (wait == 0) {
        start_try(c);
        return;
    }
    q->phase = REQ_BACKOFF;
    q->wake_at = now_ms(c) + wait;
    arm_timer(c);
}

/* Gives up on the upstream: the client gets `status` (the last failure). */
static void give_up(struct http_conn *c, int status, unsigned flags, const char *body)
{
    if (c->req.tries > 1)
        flags |= RF_RETRIES_EXCEEDED;
    c->req.flags |= flags;
    /* A call from another agent that never got a response from here: marked, so that the
     * caller tries elsewhere (http_try.h). */
    const char *mark = c->peer_identity && status == 503 ? mesh_http_mark_for(c->req.flags) : NULL;
    respond(c, status, "text/plain", body, mark);
}

/* Sends the head and the body so far to the request's upstream connection. */
static void send_head(struct http_conn *c)
{
    struct http_req *q = &c->req;
    uv_buf_t b[2] = {uv_buf_init(q->head_out.data, (unsigned)q->head_out.len),
                     uv_buf_init(q->replay.data, (unsigned)q->replay.len)};
    q->phase = REQ_SENT;
    q->head_sent = true;
    q->body_sent_all = q->body.done;
    q->try_deadline = mesh_http_try_deadline(q, &q->try_soft);
    write_up(c, b, q->replay.len ? 2 : 1);
    if (!c->closing && q->phase == REQ_SENT) {
        arm_timer(c);
        resume_down(c, PAUSE_WAIT_HEAD); /* a body waiting for the connection may flow now */
    }
}

static void connect_failed(struct http_conn *c, int ep)
{
    struct http_req *q = &c->req;
    mesh_http_try_end(q);
    mesh_outlier_failure(c->w->shared, q->dest, &q->dest->eps[ep], now_ms(c));
    atomic_fetch_add_explicit(&q->dest->state->connect_failures, 1, memory_order_relaxed);
    q->flags |= RF_CONNECT_FAILURE;
    /* Nothing reached the upstream: trying another endpoint is always safe. */
    const struct mesh_retry_policy *p = &q->rr->retries;
    if (q->tries <= p->attempts && q->tries < MESH_HTTP_MAX_TRIES && !c->w->stopping) {
        atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->retries, 1,
                                  memory_order_relaxed);
        start_try(c);
        return;
    }
    give_up(c, 503, 0, "upstream connect error\n");
}

static void start_try(struct http_conn *c)
{
    struct http_req *q = &c->req;
    struct mesh_worker *w = c->w;
    struct mesh_http_stats *st = mesh_dest_http(q->dest->state);
    int ep = pick(c, true);
    if (ep < 0 && q->n_tried)
        ep = pick(c, false); /* every endpoint was tried: the same one may do now */
    if (ep < 0) {
        if (q->tries == 0)
            atomic_fetch_add_explicit(&q->dest->state->no_endpoint, 1, memory_order_relaxed);
        give_up(c, 503, RF_NO_HEALTHY, "no healthy upstream\n");
        return;
    }
    q->tries++;
    if (q->n_tried < MESH_HTTP_MAX_TRIES)
        q->tried[q->n_tried++] = (uint32_t)ep;
    const struct snap_endpoint *e = &q->dest->eps[ep];
    mesh_http_try_begin(q, e, now_ms(c));
    mesh_ipport_format(&e->addr, q->upstream_host, sizeof(q->upstream_host));
    const char *as = e->mesh_port && c->listener->tls_as ? c->listener->tls_as->id : NULL;
    struct upconn *u = mesh_up_take_idle(w, e->state, as);
    if (u) {
        u->c = c;
        u->ep = ep;
        q->up = u;
        send_head(c);
        return;
    }
    int max_pending = q->dest->policy->max_pending_requests;
    int pending = atomic_fetch_add_explicit(&st->pending, 1, memory_order_relaxed) + 1;
    q->counted_pending = true;
    if (max_pending && pending > max_pending) {
        atomic_fetch_add_explicit(&st->overflows, 1, memory_order_relaxed);
        give_up(c, 503, RF_OVERFLOW, "upstream connect queue overflow\n");
        return;
    }
    u = mesh_up_connect(w, c, ep, e);
    if (!u) {
        atomic_fetch_sub_explicit(&st->pending, 1, memory_order_relaxed);
        q->counted_pending = false;
        connect_failed(c, ep);
        return;
    }
    q->up = u;
    q->phase = REQ_CONNECTING;
    bool soft;
    q->try_deadline = earliest(q->try_start + q->dest->policy->connect_timeout_ms,
                               mesh_http_try_deadline(q, &soft));
    arm_timer(c);
}

void mesh_http_on_up_connected(struct http_conn *c, struct upconn *u, int status)
{
    struct http_req *q = &c->req;
    if (q->counted_pending) {
        atomic_fetch_sub_explicit(&mesh_dest_http(q->dest->state)->pending, 1,
                                  memory_order_relaxed);
        q->counted_pending = false;
    }
    if (status < 0) {
        q->up = NULL; /* closed by the pool side */
        connect_failed(c, u->ep);
        return;
    }
    mesh_outlier_success(&q->dest->eps[u->ep]);
    send_head(c);
}

/* ---- the request body (client to upstream) ---- */

/* Body bytes from the client: kept for a retry, sent when the head has gone. */
static void body_bytes(struct http_conn *c, char *data, size_t len)
{
    struct http_req *q = &c->req;
    q->bytes_in += len;
    if (q->replayable && mesh_buf_append(&q->replay, data, len) < 0) {
        q->replayable = false;
        mesh_buf_reset(&q->replay);
    }
    if (q->head_sent && q->up && (q->phase == REQ_SENT || q->phase == REQ_STREAMING)) {
        uv_buf_t b = uv_buf_init(data, (unsigned)len);
        write_up(c, &b, 1);
        if (q->body.done)
            q->body_sent_all = true;
    }
}

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
        if (q->phase == REQ_NONE) {
            struct mesh_http_request r;
            int n = mesh_http_parse_request(data + used, len - used, &opts(c)->limits,
                                            c->w->http->headers, &r);
            if (n == -EAGAIN) {
                if (len - used >= opts(c)->limits.max_head) {
                    q->flags |= RF_BAD_REQUEST;
                    q->phase = REQ_LOCAL;
                    q->body.done = false;
                    respond(c, 431, "text/plain", "request head too large\n", NULL);
                    return len;
                }
                if (c->idle_deadline > now_ms(c) + opts(c)->header_timeout_ms) {
                    c->idle_deadline = now_ms(c) + opts(c)->header_timeout_ms;
                    arm_timer(c);
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
                respond(c, status, "text/plain", r.error ? r.error : "bad request", NULL);
                return len;
            }
            used += (size_t)n;
            if ((r.flags & MESH_HTTP_F_CHUNKED) && !chunks_look_valid(data + used, len - used)) {
                /* Bad chunking already in hand: refused before anything goes upstream. */
                q->phase = REQ_LOCAL;
                q->start_us = uv_hrtime() / 1000;
                q->flags |= RF_BAD_REQUEST;
                respond(c, 400, "text/plain", "bad chunked body\n", NULL);
                return len;
            }
            start_request(c, &r);
            continue;
        }
        if (q->phase == REQ_TUNNEL) {
            if (q->up) {
                uv_buf_t b = uv_buf_init(data + used, (unsigned)(len - used));
                write_up(c, &b, 1);
            }
            return len;
        }
        if (q->body.done)
            return used; /* the next request waits for this response */
        size_t take = body_room(q, len - used);
        if (take == 0) {
            pause_down(c, PAUSE_WAIT_HEAD); /* resumes when the head is sent */
            return used;
        }
        const char *err = NULL;
        ssize_t k = mesh_body_feed(&q->body, data + used, take, &err);
        if (k < 0) {
            q->flags |= RF_BAD_REQUEST;
            if (q->phase == REQ_STREAMING || q->phase == REQ_TUNNEL)
                conn_abort(c);
            else
                respond(c, 400, "text/plain", err ? err : "bad chunked body", NULL);
            return len;
        }
        body_bytes(c, data + used, (size_t)k);
        used += (size_t)k;
    }
    return used;
}

/* Runs the input buffer until it has nothing usable. */
static void process_input(struct http_conn *c)
{
    do {
        c->pending_input = false;
        c->in_feed = true;
        size_t n = feed(c, c->in.data, c->in.len);
        c->in_feed = false;
        mesh_buf_consume(&c->in, n);
    } while (c->pending_input && !c->closing);
    if (!c->closing && c->in.len < c->in.max / 2)
        resume_down(c, PAUSE_INPUT_FULL);
}

static void on_down_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct http_conn *c = h->data;
    (void)suggested;
    struct mesh_pbuf *b = mesh_bufpool_get(&c->w->pool);
    *buf = b ? uv_buf_init(b->data, (unsigned)c->w->pool.size) : uv_buf_init(NULL, 0);
}

static void on_down_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = s->data;
    struct mesh_pbuf *b = buf->base ? container_of(buf->base, struct mesh_pbuf, data) : NULL;
    if (nread > 0 && c->shutting) {
        mesh_bufpool_put(&c->w->pool, b); /* lingering: dropped */
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
                pause_down(c, PAUSE_INPUT_FULL);
            mesh_bufpool_put(&c->w->pool, b);
            if (!c->closing && c->pending_input)
                process_input(c);
        } else {
            if (mesh_buf_append(&c->in, b->data, n) < 0)
                pause_down(c, PAUSE_INPUT_FULL);
            mesh_bufpool_put(&c->w->pool, b);
            if (!c->closing)
                process_input(c);
        }
        if (!c->closing && c->in.len >= c->in.max - c->w->pool.size)
            pause_down(c, PAUSE_INPUT_FULL);
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
                conn_abort(c);
        } else if (q->phase == REQ_NONE || q->phase == REQ_LOCAL) {
            conn_close_gracefully(c);
        } else if (!q->body.done) {
            q->flags |= RF_DOWNSTREAM_RESET;
            conn_abort(c);
        } else if (q->phase == REQ_TUNNEL && q->up) {
            mesh_up_shutdown(q->up);
        }
        return;
    }
    q->flags |= RF_DOWNSTREAM_RESET;
    conn_abort(c);
}

/* After routing (and any fault delay): limits, then the first try. */
static void admit(struct http_conn *c)
{
    struct http_req *q = &c->req;
    unsigned retry_after;
    uint64_t now = now_ms(c);
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
        respond(c, 429, "text/plain", "local rate limit exceeded\n", extra);
        return;
    }
    struct mesh_http_stats *st = mesh_dest_http(q->dest->state);
    int active = atomic_fetch_add_explicit(&st->active, 1, memory_order_relaxed) + 1;
    q->counted_active = true;
    if (q->dest->policy->max_requests && active > q->dest->policy->max_requests) {
        atomic_fetch_add_explicit(&st->overflows, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&q->dest->state->breaker_refusals, 1, memory_order_relaxed);
        respond_error(c, 503, RF_OVERFLOW, "upstream overflow: max_requests reached\n");
        return;
    }
    if (q->expect_continue && q->version == 11 && !q->body.done) {
        /* The body is welcome: say so here, rather than wait for the upstream's word. */
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(cont, sizeof(cont) - 1);
        write_down(c, &b, 1);
        if (c->closing)
            return;
    }
    start_try(c);
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
}

static void start_request(struct http_conn *c, const struct mesh_http_request *r)
{
    struct http_req *q = &c->req;
    struct mesh_http_decision d;
    refresh_snapshot(c);
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
    q->deadline = timeout ? now_ms(c) + timeout : 0;
    if (status) {
        if (q->flags & RF_FAULT_ABORT) {
            if (q->dest)
                atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->fault_aborts, 1,
                                          memory_order_relaxed);
            if (q->rule)
                atomic_fetch_add_explicit(&mesh_dest_http(q->rule->state)->fault_aborts, 1,
                                          memory_order_relaxed);
        }
        respond(c, status, d.content_type, d.body, d.headers.len ? d.headers.data : NULL);
        return;
    }
    if (d.delay_ms) {
        atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->fault_delays, 1,
                                  memory_order_relaxed);
        if (q->rule)
            atomic_fetch_add_explicit(&mesh_dest_http(q->rule->state)->fault_delays, 1,
                                      memory_order_relaxed);
        q->phase = REQ_DELAYED;
        q->wake_at = now_ms(c) + d.delay_ms;
        arm_timer(c);
        return;
    }
    admit(c);
}

/* ---- responses (upstream to client) ---- */

static void response_complete(struct http_conn *c)
{
    struct http_req *q = &c->req;
    struct upconn *u = q->up;
    q->up = NULL;
    /* A request body still coming cannot be told apart from the next request. */
    if (!q->body.done)
        c->close_after = true;
    if (u)
        mesh_up_release(u, q->res_keep_alive && q->body_sent_all, q->dest->policy);
    finish_request(c);
}

/* Response body bytes: passed on (HTTP/1.0 clients get chunked bodies decoded). */
static void response_body(struct http_conn *c, char *data, size_t len, const struct mesh_buf *head)
{
    struct http_req *q = &c->req;
    size_t out = 0, used = 0;
    const char *err = NULL;
    int r;
    if (q->res_chunked_to_raw) {
        r = mesh_http_chunked_decode(&q->res_body.chunked, data, len, &used, &out, &err);
        q->res_body.done = r == 1;
    } else {
        ssize_t k = mesh_body_feed(&q->res_body, data, len, &err);
        r = k < 0 ? (int)k : 0;
        used = out = k < 0 ? 0 : (size_t)k;
    }
    if (r < 0) {
        /* Bad framing: a 502 while the head is still ours to write, else a cut. */
        if (head) {
            give_up(c, 502, RF_PROTOCOL_ERROR, "upstream sent an invalid response\n");
            return;
        }
        q->flags |= RF_PROTOCOL_ERROR;
        conn_abort(c);
        return;
    }
    if (used < len)
        q->res_keep_alive = false; /* bytes after the response: the upstream is confused */
    /* The head, when given, goes in the same write as the first body bytes. */
    uv_buf_t b[2];
    unsigned n = 0;
    if (head)
        b[n++] = uv_buf_init(head->data, (unsigned)head->len);
    if (out)
        b[n++] = uv_buf_init(data, (unsigned)out);
    if (n)
        write_down(c, b, n);
    if (!c->closing && q->res_body.done)
        response_complete(c);
}

static void set_response_framing(struct http_conn *c, const struct mesh_http_response *res)
{
    struct http_req *q = &c->req;
    const char *method = q->meta.data;
    q->res_keep_alive = (res->flags & MESH_HTTP_F_KEEP_ALIVE) != 0;
    if (!mesh_http_response_has_body(method, q->method_len, res->status)) {
        q->res_body.kind = BODY_NONE;
        q->res_body.done = true;
    } else if (res->flags & MESH_HTTP_F_CHUNKED) {
        q->res_body.kind = BODY_CHUNKED;
        mesh_http_chunked_init(&q->res_body.chunked);
        if (q->version == 10) {
            q->res_chunked_to_raw = true;
            c->close_after = true; /* the close ends the body for the client */
        }
    } else if (res->flags & MESH_HTTP_F_CONTENT_LENGTH) {
        q->res_body.kind = BODY_LENGTH;
        q->res_body.left = res->content_length;
        q->res_body.done = res->content_length == 0;
    } else {
        q->res_body.kind = BODY_UNTIL_CLOSE;
        q->res_keep_alive = false;
        c->close_after = true;
    }
    if (!q->keep_alive || c->eof || c->w->stopping)
        c->close_after = true;
}

/* A final response head from the upstream: retried, or passed on with what follows it. */
static void response_head(struct http_conn *c, struct upconn *u, struct mesh_http_response *res,
                          char *rest, size_t rest_len)
{
    struct http_req *q = &c->req;
    uint64_t now = now_ms(c);
    const struct mesh_retry_policy *rp = &q->rr->retries;
    /* An agent's mark: it could not deliver the call (http_try.h). A gateway error of that
     * endpoint; retried as a connect failure (whatever the method) or as a reset. */
    enum mesh_http_marked mark = mesh_http_take_mark(res, u->as_id != NULL);
    mesh_outlier_http_status(c->w->shared, q->dest, &q->dest->eps[u->ep], now,
                             mark ? 503 : res->status);
    if (mark)
        q->flags |= mark == MESH_HTTP_MARK_CONNECT ? RF_CONNECT_FAILURE : RF_UPSTREAM_RESET;
    bool again = mark == MESH_HTTP_MARK_CONNECT ? may_retry_as(c, true, true)
                 : mark                         ? may_retry(c, (retry_on(rp) & MESH_RETRY_RESET) ||
                                                                   status_retriable(rp, res->status))
                        : status_retriable(rp, res->status) && may_retry(c, true);
    if (again) {
        q->up = NULL;
        mesh_up_close(u); /* its body is not wanted: cheaper to close than to read */
        retry_later(c);
        return;
    }
    q->status = res->status;
    q->try_deadline = 0;
    /* No retry from here on: the request head's buffer takes the response head. */
    struct mesh_buf *head = &q->head_out;
    if (res->status == 101) {
        if (!q->upgrade) {
            q->status = 0;
            give_up(c, 502, RF_PROTOCOL_ERROR, "upstream switched protocols unasked\n");
            return;
        }
        q->phase = REQ_TUNNEL;
        q->deadline = 0;
    } else {
        set_response_framing(c, res);
        q->phase = REQ_STREAMING;
    }
    if (mesh_http_response_head(c, res, head) < 0) {
        q->status = 0;
        give_up(c, 502, RF_PROTOCOL_ERROR, "upstream response head too large\n");
        return;
    }
    if (q->phase == REQ_STREAMING) {
        response_body(c, rest, rest_len, head);
        return;
    }
    /* A tunnel: what came after the 101 is the new protocol's, both ways. */
    uv_buf_t b[2] = {uv_buf_init(head->data, (unsigned)head->len),
                     uv_buf_init(rest, (unsigned)rest_len)};
    write_down(c, b, rest_len ? 2 : 1);
    if (!c->closing && c->in.len && q->up) {
        uv_buf_t r = uv_buf_init(c->in.data, (unsigned)c->in.len);
        write_up(c, &r, 1);
        mesh_buf_reset(&c->in);
    }
}

/*
 * Response bytes before the head is complete: parsed where they are when they hold a whole
 * head, gathered in u->in otherwise. 1xx heads other than 101 are dropped (the client got
 * its 100 Continue from us).
 */
static void response_start(struct http_conn *c, struct upconn *u, char *data, size_t len)
{
    struct http_req *q = &c->req;
    bool gathered = u->in.len > 0;
    if (gathered && mesh_buf_append(&u->in, data, len) < 0) {
        give_up(c, 502, RF_PROTOCOL_ERROR, "upstream response head too large\n");
        return;
    }
    for (;;) {
        char *buf = gathered ? u->in.data : data;
        size_t avail = gathered ? u->in.len : len;
        if (!avail)
            return;
        struct mesh_http_response res;
        int n = mesh_http_parse_response(buf, avail, &opts(c)->limits, c->w->http->headers, &res);
        if (n == -EAGAIN) {
            if (!gathered && mesh_buf_append(&u->in, data, len) < 0)
                give_up(c, 502, RF_PROTOCOL_ERROR, "upstream response head too large\n");
            return;
        }
        if (n < 0) {
            mesh_log_debug("bad response from %s: %s", q->upstream_host,
                           res.error ? res.error : "?");
            q->up = NULL;
            mesh_up_close(u);
            give_up(c, 502, RF_PROTOCOL_ERROR, "upstream sent an invalid response\n");
            return;
        }
        if (res.status >= 100 && res.status < 200 && res.status != 101) {
            if (gathered) {
                mesh_buf_consume(&u->in, (size_t)n);
            } else {
                data += n;
                len -= (size_t)n;
            }
            continue;
        }
        if (!gathered) {
            response_head(c, u, &res, buf + n, avail - (size_t)n);
            return;
        }
        /* Parsed in u->in: its storage lives until the head is written. */
        struct mesh_buf held = u->in;
        mesh_buf_init(&u->in, held.max);
        response_head(c, u, &res, held.data + n, held.len - (size_t)n);
        mesh_buf_done(&held);
        return;
    }
}

void mesh_http_on_up_data(struct http_conn *c, struct upconn *u, char *data, size_t len,
                          struct mesh_pbuf *pb)
{
    struct http_req *q = &c->req;
    if (q->up != u || c->closing) {
        mesh_bufpool_put(&u->w->pool, pb);
        mesh_up_close(u);
        return;
    }
    switch (q->phase) {
    case REQ_SENT:
        response_start(c, u, data, len);
        break;
    case REQ_STREAMING:
        response_body(c, data, len, NULL);
        break;
    case REQ_TUNNEL: {
        uv_buf_t b = uv_buf_init(data, (unsigned)len);
        write_down(c, &b, 1);
        break;
    }
    default:
        /* Bytes before the request was sent, or after it was answered. */
        q->up = NULL;
        mesh_up_close(u);
        break;
    }
    mesh_bufpool_put(&c->w->pool, pb);
}

void mesh_http_on_up_error(struct http_conn *c, struct upconn *u, int err)
{
    struct http_req *q = &c->req;
    if (q->up != u) {
        mesh_up_close(u);
        return;
    }
    q->up = NULL;
    mesh_up_close(u);
    if (q->phase == REQ_STREAMING && q->res_body.kind == BODY_UNTIL_CLOSE && err == UV_EOF) {
        q->res_body.done = true;
        q->res_keep_alive = false;
        finish_request(c);
        return;
    }
    if (q->phase == REQ_SENT) {
        /* Closed or reset before any response: on a reused connection, most likely the
         * server timed it out as we sent; nothing was processed. */
        bool stale = u->reused && !u->got_bytes;
        unsigned on = retry_on(&q->rr->retries);
        if (may_retry(c, stale || (on & MESH_RETRY_RESET))) {
            if (!stale)
                q->flags |= RF_UPSTREAM_RESET;
            retry_later(c);
            return;
        }
        mesh_outlier_http_status(c->w->shared, q->dest, &q->dest->eps[u->ep], now_ms(c), 503);
        give_up(c, 503, RF_UPSTREAM_RESET,
                "upstream connect error or disconnect/reset before "
                "headers\n");
        return;
    }
    if (q->phase == REQ_TUNNEL && err == UV_EOF) {
        q->status = 101;
        c->close_after = true;
        finish_request(c);
        return;
    }
    q->flags |= RF_UPSTREAM_RESET;
    conn_abort(c);
}

/* ---- timers ---- */

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

static void on_timer(uv_timer_t *t);

static void arm_timer(struct http_conn *c)
{
    if (c->closing)
        return;
    struct http_req *q = &c->req;
    uint64_t due = q->phase == REQ_NONE || c->shutting
                       ? c->idle_deadline
                       : earliest(earliest(q->deadline, q->try_deadline), q->wake_at);
    if (!due) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = now_ms(c);
    uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

static void count_timeout(struct http_req *q)
{
    atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->timeouts, 1, memory_order_relaxed);
    if (q->rule)
        atomic_fetch_add_explicit(&mesh_dest_http(q->rule->state)->timeouts, 1,
                                  memory_order_relaxed);
}

static void on_timer(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    struct http_req *q = &c->req;
    uint64_t now = now_ms(c);
    if (c->closing)
        return;
    if (c->shutting) {
        if (now >= c->idle_deadline)
            conn_abort(c); /* the linger, or the last writes, took too long */
        else
            arm_timer(c);
        return;
    }
    if (q->phase == REQ_NONE) {
        if (!c->idle_deadline || now < c->idle_deadline) {
            arm_timer(c);
            return;
        }
        if (c->in.len) {
            /* A head begun and not finished in time (slowloris). */
            q->start_us = uv_hrtime() / 1000;
            q->flags |= RF_BAD_REQUEST;
            q->phase = REQ_LOCAL;
            respond(c, 408, "text/plain", "request header timeout\n", NULL);
        } else {
            conn_close_gracefully(c); /* idle keep-alive connection */
        }
        return;
    }
    if (q->deadline && now >= q->deadline) {
        count_timeout(q);
        q->flags |= RF_UPSTREAM_TIMEOUT;
        if (q->phase == REQ_STREAMING || q->phase == REQ_TUNNEL)
            conn_abort(c); /* the head went out: only a cut can tell */
        else
            respond(c, 504, "text/plain", "upstream request timeout\n", NULL);
        return;
    }
    if (q->wake_at && now >= q->wake_at) {
        q->wake_at = 0;
        if (q->phase == REQ_DELAYED)
            admit(c);
        else if (q->phase == REQ_BACKOFF)
            start_try(c);
        if (!c->closing)
            arm_timer(c);
        return;
    }
    if (q->try_deadline && now >= q->try_deadline) {
        q->try_deadline = 0;
        if (q->phase == REQ_CONNECTING && q->up) {
            struct upconn *u = q->up;
            int ep = u->ep;
            q->up = NULL;
            mesh_up_close(u);
            if (q->counted_pending) {
                atomic_fetch_sub_explicit(&mesh_dest_http(q->dest->state)->pending, 1,
                                          memory_order_relaxed);
                q->counted_pending = false;
            }
            connect_failed(c, ep);
        } else if (q->phase == REQ_SENT) {
            /* Per-try timeout: this endpoint is slow or a black hole; another may not be.
             * It counts against the endpoint as a gateway error would. */
            count_timeout(q);
            struct upconn *u = q->up;
            if (u)
                mesh_outlier_http_status(c->w->shared, q->dest, &q->dest->eps[u->ep], now, 504);
            unsigned on = retry_on(&q->rr->retries);
            if (may_retry(c, on & (MESH_RETRY_5XX | MESH_RETRY_GATEWAY_ERROR | MESH_RETRY_RESET))) {
                q->up = NULL;
                if (u)
                    mesh_up_close(u);
                retry_later(c);
            } else if (!q->try_soft || !u) {
                q->up = NULL;
                if (u)
                    mesh_up_close(u);
                q->flags |= RF_UPSTREAM_TIMEOUT;
                give_up(c, 504, 0, "upstream per-try timeout\n");
            }
            /* Else the default per-try timeout and no retry: wait on for the route's. */
        }
        if (!c->closing)
            arm_timer(c);
        return;
    }
    arm_timer(c);
}

/* ---- down writes done ---- */

static void on_down_written(uv_write_t *req, int status)
{
    struct wreq *w = container_of(req, struct wreq, req);
    struct http_conn *c = w->owner;
    mesh_free(w);
    if (c->closing)
        return;
    if (status < 0) {
        c->req.flags |= RF_DOWNSTREAM_RESET;
        conn_abort(c);
        return;
    }
    struct upconn *u = c->req.up;
    if (u && mesh_io_queue_size(c->io) <= c->w->shared->low_water)
        mesh_up_resume(u);
}

/* ---- accept, stop ---- */

void mesh_http_adopt(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l,
                     const char *peer_id)
{
    struct http_conn *c = mesh_calloc(1, sizeof(*c));
    if (!c || (peer_id && !(c->peer_identity = mesh_strdup(peer_id)))) {
        mesh_free(c);
        mesh_io_close(io, NULL);
        return;
    }
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
    atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shared->accepted_total, 1, memory_order_relaxed);
    int total = atomic_fetch_add_explicit(&w->shared->active_total, 1, memory_order_relaxed) + 1;
    c->snap = w->snap;
    mesh_snapshot_ref(c->snap);
    c->listener = l;
    int cap = atomic_load_explicit(&w->shared->max_connections, memory_order_relaxed);
    if (w->stopping || (cap && total > cap)) {
        if (!w->stopping)
            atomic_fetch_add_explicit(&w->shared->refused_total, 1, memory_order_relaxed);
        conn_abort(c);
        return;
    }
    uv_tcp_nodelay(&c->io->tcp, 1);
    c->idle_deadline = uv_now(&w->loop) + w->shared->http.header_timeout_ms;
    arm_timer(c);
    if (mesh_io_read_start(c->io, on_down_alloc, on_down_read) < 0)
        conn_abort(c);
}

void mesh_http_close_all(struct mesh_worker *w)
{
    for (struct http_conn *c = w->http->conns; c; c = c->next)
        conn_abort(c);
    mesh_up_pools_close(w);
}

void mesh_http_stop(struct mesh_worker *w)
{
    for (struct http_conn *c = w->http->conns; c; c = c->next) {
        if (c->req.phase == REQ_NONE)
            conn_close_gracefully(c);
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
