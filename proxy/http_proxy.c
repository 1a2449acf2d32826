#define MESH_LOG_MODULE "http"

/*
 * HTTP/1.1 downstream connections: writes both ways, teardown, the end of a request and the
 * answers the proxy gives itself. Reading requests is in http_read.c; trying upstreams,
 * streaming the response back and the timer in http_forward.c.
 *
 * A request goes through phases (struct http_req): routed at once when its head is in,
 * perhaps DELAYED by a fault, CONNECTING to an endpoint (or taking a pooled connection),
 * SENT, then STREAMING its response; or LOCAL when answered here. Between tries it may
 * wait in BACKOFF. Everything times off one timer per connection.
 */
#include <string.h>

#include "common/alloc.h"
#include "proxy/http_proxy-int.h"
#include "proxy/http_try-int.h"

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

void mesh_http_proxy__write_down(struct http_conn *c, uv_buf_t *bufs, unsigned n)
{
    if (c->closing)
        return;
    for (unsigned i = 0; i < n; i++)
        c->req.bytes_out += bufs[i].len;
    if (write_bufs(c->io, bufs, n, c, true) < 0) {
        c->req.flags |= RF_DOWNSTREAM_RESET;
        mesh_http_proxy__conn_abort(c);
        return;
    }
    struct upconn *u = c->req.up;
    if (u && mesh_io_queue_size(c->io) > c->w->shared->high_water)
        mesh_up_pause(u);
}

void mesh_http_proxy__pause_down(struct http_conn *c, unsigned why)
{
    if (!c->paused && !c->closing && !c->eof)
        mesh_io_read_stop(c->io);
    c->paused |= why;
}

void mesh_http_proxy__resume_down(struct http_conn *c, unsigned why)
{
    if (!(c->paused & why))
        return;
    c->paused &= ~why;
    if (!c->paused && !c->closing && !c->eof)
        mesh_io_read_start(c->io, mesh_http_proxy__on_down_alloc, mesh_http_proxy__on_down_read);
}

void mesh_http_proxy__write_up(struct http_conn *c, uv_buf_t *bufs, unsigned n)
{
    struct upconn *u = c->req.up;
    if (write_bufs(u->io, bufs, n, u, false) < 0) {
        mesh_http_on_up_error(c, u, UV_ECONNRESET);
        return;
    }
    if (mesh_io_queue_size(u->io) > c->w->shared->high_water)
        mesh_http_proxy__pause_down(c, PAUSE_UPSTREAM);
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
        mesh_http_proxy__resume_down(c, PAUSE_UPSTREAM);
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
    if (!c->stream) {
        atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&w->shared->active_total, 1, memory_order_relaxed);
    }
    mesh_buf_done(&c->in);
    mesh_buf_done(&c->req.meta);
    mesh_buf_done(&c->req.replay);
    mesh_buf_done(&c->req.head_out);
    mesh_snapshot_unref(c->snap);
    mesh_free(c->peer_identity);
    mesh_free(c->xfcc);
    mesh_free(c->istio_peer);
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
void mesh_http_proxy__conn_abort(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->h2)
        mesh_h2_detach(c); /* its streams end with it */
    if (c->req.phase != REQ_NONE)
        mesh_http_proxy__finish_request(
            c); /* logged; a request without a response shows status 0 */
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
        mesh_http_proxy__conn_abort(c);
        return;
    }
    /* Linger: what the client still sends is read and dropped for a while, so that the
     * kernel does not answer it with a reset that could destroy our response in flight. */
    c->idle_deadline = mesh_http_proxy__now_ms(c) + LINGER_MS;
    mesh_http_proxy__arm_timer(c);
}

/* Closes once the queued writes are out: a FIN after the last byte, a linger, the close. */
void mesh_http_proxy__conn_close_gracefully(struct http_conn *c)
{
    if (c->closing || c->shutting)
        return;
    c->shutting = true;
    c->idle_deadline = mesh_http_proxy__now_ms(c) +
                       mesh_http_proxy__opts(c)->idle_timeout_ms; /* for the writes to drain */
    mesh_http_proxy__arm_timer(c);
    if (mesh_io_shutdown(&c->shutdown, c->io, on_shutdown) < 0) {
        mesh_http_proxy__conn_abort(c);
        return;
    }
    /* Keep reading (and dropping): a paused side would never see the client's FIN. */
    unsigned was = c->paused;
    c->paused = 0;
    if (was && !c->eof)
        mesh_io_read_start(c->io, mesh_http_proxy__on_down_alloc, mesh_http_proxy__on_down_read);
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
    mesh_istio_http_request(c, us);
    mesh_trace_http_request(c, us);
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
    q->traceparent[0] = q->parent_id[0] = q->user_agent[0] = '\0';
    q->sampled = false;
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
void mesh_http_proxy__finish_request(struct http_conn *c)
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
        mesh_http_proxy__conn_close_gracefully(c);
        return;
    }
    c->idle_deadline = mesh_http_proxy__now_ms(c) + mesh_http_proxy__opts(c)->idle_timeout_ms;
    mesh_http_proxy__arm_timer(c);
    if (c->in.len || c->paused & PAUSE_INPUT_FULL) {
        if (c->in_feed)
            c->pending_input = true; /* the loop in mesh_http_proxy__process_input takes it */
        else
            mesh_http_proxy__process_input(c);
    }
}

/* ---- local responses ---- */

void mesh_http_proxy__respond(struct http_conn *c, int status, const char *type, const char *body,
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
    mesh_http_proxy__write_down(c, &b, 1);
    mesh_buf_done(&out);
    if (!c->closing)
        mesh_http_proxy__finish_request(c);
}

void mesh_http_proxy__respond_error(struct http_conn *c, int status, unsigned flags,
                                    const char *body)
{
    c->req.flags |= flags;
    mesh_http_proxy__respond(c, status, "text/plain", body, NULL);
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
        mesh_http_proxy__conn_abort(c);
        return;
    }
    struct upconn *u = c->req.up;
    if (u && mesh_io_queue_size(c->io) <= c->w->shared->low_water)
        mesh_up_resume(u);
    if (c->h2 && mesh_io_queue_size(c->io) <= c->w->shared->low_water)
        mesh_h2_drained(c);
}
