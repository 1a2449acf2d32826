#define MESH_LOG_MODULE "http"

/*
 * A request on its way: picking an endpoint and trying it, retries and their backoff, the
 * request body to the upstream, the response back to the client, and the connection's timer
 * (fault delays, backoffs, per-try and route timeouts, idle and header timeouts).
 */
#include <errno.h>

#include "common/log.h"
#include "proxy/http_proxy-int.h"
#include "proxy/http_try-int.h"

static uint64_t earliest(uint64_t a, uint64_t b);

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
        mesh_http_proxy__start_try(c);
        return;
    }
    q->phase = REQ_BACKOFF;
    q->wake_at = mesh_http_proxy__now_ms(c) + wait;
    mesh_http_proxy__arm_timer(c);
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
    mesh_http_proxy__respond(c, status, "text/plain", body, mark);
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
    mesh_http_proxy__write_up(c, b, q->replay.len ? 2 : 1);
    if (!c->closing && q->phase == REQ_SENT) {
        mesh_http_proxy__arm_timer(c);
        mesh_http_proxy__resume_down(
            c, PAUSE_WAIT_HEAD); /* a body waiting for the connection may flow now */
    }
}

static void connect_failed(struct http_conn *c, int ep)
{
    struct http_req *q = &c->req;
    mesh_http_try_end(q);
    mesh_outlier_failure(c->w->shared, q->dest, &q->dest->eps[ep], mesh_http_proxy__now_ms(c));
    atomic_fetch_add_explicit(&q->dest->state->connect_failures, 1, memory_order_relaxed);
    q->flags |= RF_CONNECT_FAILURE;
    /* Nothing reached the upstream: trying another endpoint is always safe. */
    const struct mesh_retry_policy *p = &q->rr->retries;
    if (q->tries <= p->attempts && q->tries < MESH_HTTP_MAX_TRIES && !c->w->stopping) {
        atomic_fetch_add_explicit(&mesh_dest_http(q->dest->state)->retries, 1,
                                  memory_order_relaxed);
        mesh_http_proxy__start_try(c);
        return;
    }
    give_up(c, 503, 0, "upstream connect error\n");
}

void mesh_http_proxy__start_try(struct http_conn *c)
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
    mesh_http_try_begin(q, e, mesh_http_proxy__now_ms(c));
    mesh_ipport_format(&e->addr, q->upstream_host, sizeof(q->upstream_host));
    const char *as = e->mesh_port && c->tls_as ? c->tls_as->id : NULL;
    /* A named pod's request to a remote agent: counted once by what its mTLS presents. */
    if (as && c->as_caller && q->tries == 1)
        atomic_fetch_add_explicit(
            &w->shared->capture_pod_identity[c->tls_as != c->listener->tls_as ? 0 : 1], 1,
            memory_order_relaxed);
    struct upconn *u = mesh_up_take_idle(w, e->state, as, q->dest->peer_id);
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
    mesh_http_proxy__arm_timer(c);
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
void mesh_http_proxy__body_bytes(struct http_conn *c, char *data, size_t len)
{
    struct http_req *q = &c->req;
    q->bytes_in += len;
    if (q->replayable && mesh_buf_append(&q->replay, data, len) < 0) {
        q->replayable = false;
        mesh_buf_reset(&q->replay);
    }
    if (q->head_sent && q->up && (q->phase == REQ_SENT || q->phase == REQ_STREAMING)) {
        uv_buf_t b = uv_buf_init(data, (unsigned)len);
        mesh_http_proxy__write_up(c, &b, 1);
        if (q->body.done)
            q->body_sent_all = true;
    }
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
    mesh_http_proxy__finish_request(c);
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
        mesh_http_proxy__conn_abort(c);
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
        mesh_http_proxy__write_down(c, b, n);
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
    uint64_t now = mesh_http_proxy__now_ms(c);
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
    mesh_http_proxy__write_down(c, b, rest_len ? 2 : 1);
    if (!c->closing && c->in.len && q->up) {
        uv_buf_t r = uv_buf_init(c->in.data, (unsigned)c->in.len);
        mesh_http_proxy__write_up(c, &r, 1);
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
        int n = mesh_http_parse_response(buf, avail, &mesh_http_proxy__opts(c)->limits,
                                         c->w->http->headers, &res);
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
        mesh_http_proxy__write_down(c, &b, 1);
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
        mesh_http_proxy__finish_request(c);
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
        mesh_outlier_http_status(c->w->shared, q->dest, &q->dest->eps[u->ep],
                                 mesh_http_proxy__now_ms(c), 503);
        give_up(c, 503, RF_UPSTREAM_RESET,
                "upstream connect error or disconnect/reset before "
                "headers\n");
        return;
    }
    if (q->phase == REQ_TUNNEL && err == UV_EOF) {
        q->status = 101;
        c->close_after = true;
        mesh_http_proxy__finish_request(c);
        return;
    }
    q->flags |= RF_UPSTREAM_RESET;
    mesh_http_proxy__conn_abort(c);
}

/* ---- timers ---- */

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

static void on_timer(uv_timer_t *t);

void mesh_http_proxy__arm_timer(struct http_conn *c)
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
    uint64_t now = mesh_http_proxy__now_ms(c);
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
    uint64_t now = mesh_http_proxy__now_ms(c);
    if (c->closing)
        return;
    if (c->shutting) {
        if (now >= c->idle_deadline)
            mesh_http_proxy__conn_abort(c); /* the linger, or the last writes, took too long */
        else
            mesh_http_proxy__arm_timer(c);
        return;
    }
    if (q->phase == REQ_NONE) {
        if (!c->idle_deadline || now < c->idle_deadline) {
            mesh_http_proxy__arm_timer(c);
            return;
        }
        if (c->in.len) {
            /* A head begun and not finished in time (slowloris). */
            q->start_us = uv_hrtime() / 1000;
            q->flags |= RF_BAD_REQUEST;
            q->phase = REQ_LOCAL;
            mesh_http_proxy__respond(c, 408, "text/plain", "request header timeout\n", NULL);
        } else {
            mesh_http_proxy__conn_close_gracefully(c); /* idle keep-alive connection */
        }
        return;
    }
    if (q->deadline && now >= q->deadline) {
        count_timeout(q);
        q->flags |= RF_UPSTREAM_TIMEOUT;
        if (q->phase == REQ_STREAMING || q->phase == REQ_TUNNEL)
            mesh_http_proxy__conn_abort(c); /* the head went out: only a cut can tell */
        else
            mesh_http_proxy__respond(c, 504, "text/plain", "upstream request timeout\n", NULL);
        return;
    }
    if (q->wake_at && now >= q->wake_at) {
        q->wake_at = 0;
        if (q->phase == REQ_DELAYED)
            mesh_http_proxy__admit(c);
        else if (q->phase == REQ_BACKOFF)
            mesh_http_proxy__start_try(c);
        if (!c->closing)
            mesh_http_proxy__arm_timer(c);
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
            mesh_http_proxy__arm_timer(c);
        return;
    }
    mesh_http_proxy__arm_timer(c);
}
