#define MESH_LOG_MODULE "http"

#include "common/http_server.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/http_clients.h"
#include "common/http_server-int.h"
#include "common/io.h"
#include "common/log.h"

struct write_req {
    uv_write_t req;
    struct mesh_http_conn *conn;
    char *data;
};

static void conn_process(struct mesh_http_conn *c);
static void on_timer(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void server_maybe_done(struct mesh_http_server *s);

void mesh_http_server_options_default(struct mesh_http_server_options *opts)
{
    *opts = (struct mesh_http_server_options){
        .max_connections = 128,
        .max_connections_per_client = 64,
        .max_body = 1024 * 1024,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .total_timeout_ms = 600000,
        .limits =
            {
                .max_head = MESH_HTTP_DEFAULT_MAX_HEAD,
                .max_headers = MESH_HTTP_DEFAULT_MAX_HEADERS,
                .max_uri = MESH_HTTP_DEFAULT_MAX_URI,
            },
    };
}

int mesh_http_server_new(uv_loop_t *loop, const struct mesh_http_server_options *opts,
                         mesh_http_handler_cb handler, void *data, struct mesh_http_server **ret)
{
    struct mesh_http_server *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->opts = *opts;
    s->handler = handler;
    s->data = data;
    uv_timer_init(loop, &s->deadline);
    mesh_io_loop_init(&s->iol, loop);
    mesh_http_clients_init(&s->clients);
    s->open_handles = 2;
    *ret = s;
    return 0;
}

static void on_server_handle_closed(uv_handle_t *h)
{
    struct mesh_http_server *s = h->data;
    s->open_handles--;
    server_maybe_done(s);
}

static void on_iol_closed(uv_handle_t *h)
{
    struct mesh_http_server *s = container_of((uv_idle_t *)h, struct mesh_http_server, iol.idle);
    s->open_handles--;
    server_maybe_done(s);
}

static void server_maybe_done(struct mesh_http_server *s)
{
    if (!s->closing || s->conns)
        return;
    if (!uv_is_closing((uv_handle_t *)&s->deadline)) {
        s->deadline.data = s;
        uv_close((uv_handle_t *)&s->deadline, on_server_handle_closed);
        uv_close((uv_handle_t *)&s->iol.idle, on_iol_closed);
    }
    if (s->open_handles > 0)
        return;
    mesh_http_done_cb cb = s->done_cb;
    void *data = s->done_data;
    mesh_http_clients_done(&s->clients);
    mesh_free(s);
    if (cb)
        cb(data);
}

/* ---- writing ---- */

static void append_date(struct mesh_buf *b)
{
    char date[64];
    struct tm tm;
    time_t now = time(NULL);
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    mesh_buf_appendf(b, "Date: %s\r\n", date);
}

static void on_write_done(uv_write_t *req, int status)
{
    struct write_req *w = container_of(req, struct write_req, req);
    struct mesh_http_conn *c = w->conn;
    mesh_free(w->data);
    mesh_free(w);
    if (c->state == MESH_HTTP_CONN_CLOSING)
        return;
    if (status < 0 || c->close_after || c->srv->closing) {
        mesh_http__conn_close(c);
        return;
    }
    if (c->state != MESH_HTTP_CONN_WRITING)
        return; /* an interim response (100 Continue) was written */
    /* Ready for the next request; pipelined bytes may already be buffered. */
    mesh_buf_consume(&c->in, c->raw_end);
    c->state = MESH_HTTP_CONN_HEAD;
    c->waiting_since = uv_now(c->srv->loop);
    c->head_len = c->raw_end = c->body_len = 0;
    c->timer_for_head = false;
    c->ex = (struct mesh_http_exchange){.conn = c};
    conn_process(c);
}

/* Queues buf (owned, freed after the write). Returns 0 or a negative errno. */
static int conn_write(struct mesh_http_conn *c, char *data, size_t len)
{
    struct write_req *w = mesh_malloc(sizeof(*w));
    if (!w) {
        mesh_free(data);
        return -ENOMEM;
    }
    w->conn = c;
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int r = mesh_io_write(&w->req, c->io, &b, 1, on_write_done);
    if (r < 0) {
        mesh_free(data);
        mesh_free(w);
    }
    return r;
}

static bool status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

static int conn_respond(struct mesh_http_conn *c, int status, const char *content_type,
                        const struct mesh_http_field *extra, const void *body, size_t len,
                        bool head_only)
{
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    mesh_buf_appendf(&b, "HTTP/1.1 %d %s\r\n", status, mesh_http_reason(status));
    append_date(&b);
    if (content_type && status_has_body(status))
        mesh_buf_appendf(&b, "Content-Type: %s\r\n", content_type);
    if (status_has_body(status))
        mesh_buf_appendf(&b, "Content-Length: %zu\r\n", len);
    for (size_t i = 0; extra && extra[i].name; i++)
        mesh_buf_appendf(&b, "%s: %s\r\n", extra[i].name, extra[i].value);
    if (c->close_after || c->srv->closing)
        mesh_buf_append_str(&b, "Connection: close\r\n");
    else if (c->ex.req.version == 10)
        mesh_buf_append_str(&b, "Connection: keep-alive\r\n");
    mesh_buf_append_str(&b, "\r\n");
    if (!head_only && status_has_body(status) && len)
        mesh_buf_append(&b, body, len);
    if (b.err) {
        int err = b.err;
        mesh_buf_done(&b);
        mesh_http__conn_close(c);
        return err;
    }
    c->state = MESH_HTTP_CONN_WRITING;
    /* A client that does not take its answer holds its slot no longer than an idle one. */
    uv_timer_start(&c->timer, on_timer, c->srv->opts.idle_timeout_ms, 0);
    size_t n;
    char *data = mesh_buf_steal(&b, &n);
    int r = conn_write(c, data, n);
    if (r < 0)
        mesh_http__conn_close(c);
    return r;
}

/* Answers a request the parser or the limits refused, then closes. */
static void conn_refuse(struct mesh_http_conn *c, int status, const char *why)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "%s\n", why ? why : mesh_http_reason(status));
    c->srv->stats.bad_requests++;
    c->close_after = true;
    mesh_log_debug("refusing request from %s: %d (%s)", c->peer, status, why ? why : "");
    if (c->reading) {
        mesh_io_read_stop(c->io);
        c->reading = false;
    }
    uv_timer_stop(&c->timer);
    conn_respond(c, status, "text/plain", NULL, body, (size_t)n, false);
}

static void answered(const struct mesh_http_exchange *ex, int status)
{
    const struct mesh_http_server *s = ex->conn->srv;
    if (s->opts.on_answered)
        s->opts.on_answered(ex, status, uv_hrtime() - ex->start_ns, s->data);
}

int mesh_http_respond(struct mesh_http_exchange *ex, int status, const char *content_type,
                      const struct mesh_http_field *extra, const void *body, size_t len)
{
    struct mesh_http_conn *c = ex->conn;
    if (c->state != MESH_HTTP_CONN_HANDLING)
        return -EINVAL;
    ex->abort_cb = NULL;
    answered(ex, status);
    if (!(ex->req.flags & MESH_HTTP_F_KEEP_ALIVE))
        c->close_after = true;
    bool head = ex->req.method_len == 4 && memcmp(ex->req.method, "HEAD", 4) == 0;
    return conn_respond(c, status, content_type, extra, body, len, head);
}

/* ---- reading ---- */

static void on_timer(uv_timer_t *t)
{
    struct mesh_http_conn *c = container_of(t, struct mesh_http_conn, timer);
    if (c->state == MESH_HTTP_CONN_WRITING || (c->state == MESH_HTTP_CONN_HEAD && c->in.len == 0)) {
        mesh_http__conn_close(c); /* idle, or not taking its answer */
        return;
    }
    if (c->state == MESH_HTTP_CONN_HEAD || c->state == MESH_HTTP_CONN_BODY)
        conn_refuse(c, 408, "request not received in time");
}

/* The total deadline: the connection ends now, or after the response being written. */
static void on_life_over(uv_timer_t *t)
{
    struct mesh_http_conn *c = container_of(t, struct mesh_http_conn, life);
    c->close_after = true;
    if (c->state == MESH_HTTP_CONN_HEAD || c->state == MESH_HTTP_CONN_BODY) {
        on_timer(&c->timer);
    } else if (c->state == MESH_HTTP_CONN_HANDLING) {
        static const char msg[] = "the request was not answered in time\n";
        mesh_http_done_cb cb = c->ex.abort_cb;
        c->ex.abort_cb = NULL;
        if (cb)
            cb(c->ex.abort_data);
        c->srv->stats.requests_cut++;
        mesh_log_warn("%s: cutting a request not answered in %llu ms", c->peer,
                      (unsigned long long)c->srv->opts.total_timeout_ms);
        bool head = c->ex.req.method_len == 4 && memcmp(c->ex.req.method, "HEAD", 4) == 0;
        answered(&c->ex, 503);
        conn_respond(c, 503, "text/plain", NULL, msg, sizeof(msg) - 1, head);
    }
}

static void dispatch(struct mesh_http_conn *c, const char *body, size_t body_len)
{
    uv_timer_stop(&c->timer);
    c->state = MESH_HTTP_CONN_HANDLING;
    c->ex.body = body;
    c->ex.body_len = body_len;
    c->ex.start_ns = uv_hrtime();
    c->srv->stats.requests++;
    c->srv->handler(&c->ex, c->srv->data);
}

static void send_continue(struct mesh_http_conn *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    char *d = mesh_memdup(msg, sizeof(msg) - 1);
    if (!d || conn_write(c, d, sizeof(msg) - 1) < 0)
        mesh_http__conn_close(c);
}

static void process_body(struct mesh_http_conn *c)
{
    struct mesh_http_request *req = &c->ex.req;
    if (!c->chunked_body) {
        if (c->in.len < c->raw_end)
            return;
        dispatch(c, c->in.data + c->head_len, (size_t)req->content_length);
        return;
    }
    size_t consumed, data;
    const char *why = NULL;
    char *raw = c->in.data + c->raw_end;
    int r =
        mesh_http_chunked_decode(&c->chunked, raw, c->in.len - c->raw_end, &consumed, &data, &why);
    if (data) {
        memmove(c->in.data + c->head_len + c->body_len, raw, data);
        c->body_len += data;
    }
    c->raw_end += consumed;
    if (r < 0) {
        conn_refuse(c, 400, why);
        return;
    }
    if (c->body_len > c->srv->opts.max_body) {
        conn_refuse(c, 413, "request body too large");
        return;
    }
    if (r == 1)
        dispatch(c, c->in.data + c->head_len, c->body_len);
}

static void conn_process(struct mesh_http_conn *c)
{
    struct mesh_http_server *s = c->srv;
    if (!c->reading && (c->state == MESH_HTTP_CONN_HEAD || c->state == MESH_HTTP_CONN_BODY)) {
        if (mesh_io_read_start(c->io, on_alloc, on_read) < 0) {
            mesh_http__conn_close(c);
            return;
        }
        c->reading = true;
    }
    if (c->state == MESH_HTTP_CONN_HEAD) {
        if (c->in.len == 0) {
            if (s->closing) {
                mesh_http__conn_close(c);
                return;
            }
            c->timer_for_head = false;
            uv_timer_start(&c->timer, on_timer, s->opts.idle_timeout_ms, 0);
            return;
        }
        int r =
            mesh_http_parse_request(c->in.data, c->in.len, &s->opts.limits, c->headers, &c->ex.req);
        if (r == -EAGAIN) {
            if (!c->timer_for_head) {
                c->timer_for_head = true;
                uv_timer_start(&c->timer, on_timer, s->opts.header_timeout_ms, 0);
            }
            return;
        }
        if (r < 0) {
            conn_refuse(c, mesh_http_error_status(r), c->ex.req.error);
            return;
        }
        struct mesh_http_request *req = &c->ex.req;
        c->head_len = c->raw_end = (size_t)r;
        c->body_len = 0;
        c->chunked_body = (req->flags & MESH_HTTP_F_CHUNKED) != 0;
        if (!c->chunked_body && !(req->flags & MESH_HTTP_F_CONTENT_LENGTH)) {
            dispatch(c, NULL, 0);
            return;
        }
        if (!c->chunked_body) {
            if (req->content_length > s->opts.max_body) {
                conn_refuse(c, 413, "request body too large");
                return;
            }
            c->raw_end += (size_t)req->content_length;
        } else {
            mesh_http_chunked_init(&c->chunked);
        }
        c->state = MESH_HTTP_CONN_BODY;
        if (!c->timer_for_head) {
            c->timer_for_head = true;
            uv_timer_start(&c->timer, on_timer, s->opts.header_timeout_ms, 0);
        }
        if ((req->flags & MESH_HTTP_F_EXPECT_CONTINUE) && c->in.len == c->head_len)
            send_continue(c);
    }
    if (c->state == MESH_HTTP_CONN_BODY)
        process_body(c);
}

/*
 * The parsed head points into `in`: when growing the buffer for a body may have moved it,
 * parses the head again where it now is (the same bytes, so the same result). Returns 0 or
 * -EBADMSG.
 */
static int conn_rebase_head(struct mesh_http_conn *c)
{
    const struct mesh_http_limits *lim = &c->srv->opts.limits;
    struct mesh_http_request req;
    int r = mesh_http_parse_request(c->in.data, c->head_len, lim, c->headers, &req);
    if (r < 0 || (size_t)r != c->head_len)
        return -EBADMSG;
    c->ex.req = req;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mesh_http_conn *c = h->data;
    size_t want = MESH_MIN(suggested, (size_t)16384);
    if (c->state == MESH_HTTP_CONN_HEAD || c->state == MESH_HTTP_CONN_BODY) {
        size_t cap = c->in.cap; /* a new capacity: the data may have moved */
        if (mesh_buf_reserve(&c->in, want) < 0) {
            /* Over the cap: a zero-length buffer makes libuv report UV_ENOBUFS. */
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        if (c->state == MESH_HTTP_CONN_BODY && c->in.cap != cap && conn_rebase_head(c) < 0) {
            *buf = uv_buf_init(NULL, 0); /* cannot happen: refused as too large */
            return;
        }
    }
    /*
     * While a handler holds the exchange, its request points into `in`: never reallocate.
     * Reading goes on only to notice a peer that goes away, into the room there is.
     */
    size_t room = c->in.cap > c->in.len + 1 ? c->in.cap - c->in.len - 1 : 0;
    *buf = uv_buf_init(room ? c->in.data + c->in.len : NULL, (unsigned)room);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct mesh_http_conn *c = stream->data;
    (void)buf;
    if (nread == 0 || c->state == MESH_HTTP_CONN_CLOSING)
        return;
    if (nread == UV_ENOBUFS) {
        if (c->state == MESH_HTTP_CONN_HEAD)
            conn_refuse(c, 431, "request head too large");
        else if (c->state == MESH_HTTP_CONN_BODY)
            conn_refuse(c, 413, "request body too large");
        else {
            uv_read_stop(stream);
            c->reading = false;
        }
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF &&
            (c->state == MESH_HTTP_CONN_HANDLING || c->state == MESH_HTTP_CONN_WRITING)) {
            /* A half-closed client still gets its answer. */
            uv_read_stop(stream);
            c->reading = false;
            c->close_after = true;
            return;
        }
        mesh_http__conn_close(c);
        return;
    }
    c->in.len += (size_t)nread;
    c->in.data[c->in.len] = '\0';
    if (c->state == MESH_HTTP_CONN_HEAD || c->state == MESH_HTTP_CONN_BODY)
        conn_process(c);
}

/* ---- connection lifecycle ---- */

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct mesh_http_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct mesh_http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->conns_tail = c->prev;
    s->stats.connections_active--;
    mesh_buf_done(&c->in);
    mesh_free(c->headers);
    mesh_free(c);
    server_maybe_done(s);
}

void mesh_http__conn_close(struct mesh_http_conn *c)
{
    if (c->state == MESH_HTTP_CONN_CLOSING)
        return;
    bool aborted = c->state == MESH_HTTP_CONN_HANDLING;
    c->state = MESH_HTTP_CONN_CLOSING;
    c->srv->conns_open--;
    mesh_http_clients_unref(&c->srv->clients, c->client);
    c->client = NULL;
    if (aborted && c->ex.abort_cb) {
        mesh_http_done_cb cb = c->ex.abort_cb;
        c->ex.abort_cb = NULL;
        cb(c->ex.abort_data);
    }
    mesh_io_close(c->io, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->life, on_conn_handle_closed);
}

static void on_handshake(struct mesh_io *io, int status)
{
    struct mesh_http_conn *c = io->tcp.data;
    if (status < 0) {
        mesh_log_debug("TLS handshake with %s failed: %s", c->peer, mesh_io_tls_error(io));
        mesh_http__conn_close(c);
        return;
    }
    if (mesh_io_read_start(c->io, on_alloc, on_read) < 0) {
        mesh_http__conn_close(c);
        return;
    }
    c->reading = true;
    conn_process(c);
}

static void on_refused_closed(uv_handle_t *h)
{
    mesh_free(h);
}

/* Accepts and closes at once: left in the backlog, it would stall the listener. */
static void refuse_unaccepted(struct mesh_http_server *s, uv_stream_t *listener)
{
    union mesh_http_stream *tmp = mesh_malloc(sizeof(*tmp));
    s->stats.connections_refused++;
    if (!tmp)
        return;
    if (listener->type == UV_NAMED_PIPE)
        uv_pipe_init(s->loop, &tmp->pipe, 0);
    else
        uv_tcp_init(s->loop, &tmp->tcp);
    uv_accept(listener, &tmp->stream);
    uv_close(&tmp->handle, on_refused_closed);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct mesh_http_server *s = listener->data;
    if (status < 0) {
        mesh_log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    bool is_unix = listener->type == UV_NAMED_PIPE;
    struct mesh_http_conn *c = mesh_calloc(1, sizeof(*c));
    struct mesh_http_header *headers =
        c ? mesh_calloc(s->opts.limits.max_headers, sizeof(*headers)) : NULL;
    c = headers ? c : (mesh_free(c), NULL);
    if (c)
        c->io = is_unix ? mesh_io_new_pipe(&s->iol, s->loop) : mesh_io_new(&s->iol, s->loop);
    if (!c || !c->io) {
        mesh_free(headers);
        mesh_free(c);
        refuse_unaccepted(s, listener); /* out of memory */
        return;
    }
    c->srv = s;
    c->headers = headers;
    c->ex.conn = c;
    c->waiting_since = uv_now(s->loop);
    mesh_buf_init(&c->in, s->opts.limits.max_head + s->opts.max_body + 16384);
    uv_timer_init(s->loop, &c->timer);
    uv_timer_init(s->loop, &c->life);
    c->io->tcp.data = c;
    c->timer.data = c;
    c->life.data = c;
    c->open_handles = 3;
    c->prev = s->conns_tail;
    if (s->conns_tail)
        s->conns_tail->next = c;
    else
        s->conns = c;
    s->conns_tail = c;
    s->conns_open++;
    s->stats.connections_active++;
    s->stats.connections_accepted++;
    int r = uv_accept(listener, mesh_io_stream(c->io));
    if (r < 0) {
        mesh_http__conn_close(c);
        return;
    }
    if (!mesh_http__admit(s, c, is_unix))
        return; /* refused */
    if (s->opts.total_timeout_ms)
        uv_timer_start(&c->life, on_life_over, s->opts.total_timeout_ms, 0);
    if (s->opts.tls && !is_unix) {
        /* HTTPS: requests are read once the handshake is done, within the header timeout. */
        SSL *ssl = SSL_new(s->opts.tls);
        if (ssl)
            SSL_set_accept_state(ssl);
        r = ssl ? mesh_io_tls_start(c->io, ssl, on_handshake) : UV_ENOMEM;
        if (r == 0) {
            c->timer_for_head = true;
            uv_timer_start(&c->timer, on_timer, s->opts.header_timeout_ms, 0);
            return;
        }
    } else {
        r = mesh_io_read_start(c->io, on_alloc, on_read);
    }
    if (r < 0) {
        mesh_http__conn_close(c);
        return;
    }
    c->reading = true;
    conn_process(c);
}

int mesh_http_server_listen(struct mesh_http_server *s, const struct mesh_addr *addr)
{
    int r;
    if (s->listening || s->closing)
        return -EALREADY;
    if (mesh_addr_is_unix(addr)) {
        const char *path = ((const struct sockaddr_un *)&addr->ss)->sun_path;
        struct stat st;
        /* Replace a socket left by an earlier run; never remove anything else. */
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(path);
        r = uv_pipe_init(s->loop, &s->listener.pipe, 0);
        if (r == 0)
            r = uv_pipe_bind(&s->listener.pipe, path);
        if (r == 0 && chmod(path, 0660) < 0)
            r = -errno;
    } else {
        r = uv_tcp_init(s->loop, &s->listener.tcp);
        if (r == 0)
            r = uv_tcp_bind(&s->listener.tcp, (const struct sockaddr *)&addr->ss, 0);
    }
    s->listener.handle.data = s;
    s->open_handles++;
    s->listening = true;
    if (r == 0)
        r = uv_listen(&s->listener.stream, 128, on_connection);
    if (r < 0) {
        s->listening = false;
        uv_close(&s->listener.handle, on_server_handle_closed);
    }
    return r;
}

int mesh_http_server_address(const struct mesh_http_server *s, struct mesh_addr *ret)
{
    if (!s->listening)
        return -ENOTCONN;
    struct mesh_addr a = {0};
    if (s->listener.handle.type == UV_NAMED_PIPE) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&a.ss;
        size_t n = sizeof(sun->sun_path);
        sun->sun_family = AF_UNIX;
        int r = uv_pipe_getsockname(&s->listener.pipe, sun->sun_path, &n);
        if (r < 0)
            return r;
        a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    } else {
        int len = sizeof(a.ss);
        int r = uv_tcp_getsockname(&s->listener.tcp, (struct sockaddr *)&a.ss, &len);
        if (r < 0)
            return r;
        a.len = (socklen_t)len;
    }
    *ret = a;
    return 0;
}

static void on_deadline(uv_timer_t *t)
{
    mesh_http_server_abort(container_of(t, struct mesh_http_server, deadline));
}

void mesh_http_server_abort(struct mesh_http_server *s)
{
    struct mesh_http_conn *c = s->conns;
    while (c) {
        struct mesh_http_conn *next = c->next;
        mesh_http__conn_close(c);
        c = next;
    }
}

void mesh_http_server_close(struct mesh_http_server *s, uint64_t deadline_ms,
                            mesh_http_done_cb done_cb, void *data)
{
    s->closing = true;
    s->done_cb = done_cb;
    s->done_data = data;
    if (s->listening) {
        s->listening = false;
        uv_close(&s->listener.handle, on_server_handle_closed);
    }
    struct mesh_http_conn *c = s->conns;
    while (c) {
        struct mesh_http_conn *next = c->next;
        if (c->state == MESH_HTTP_CONN_HEAD || c->state == MESH_HTTP_CONN_BODY)
            mesh_http__conn_close(c);
        else
            c->close_after = true;
        c = next;
    }
    if (deadline_ms && s->conns)
        uv_timer_start(&s->deadline, on_deadline, deadline_ms, 0);
    server_maybe_done(s);
}

void mesh_http_server_get_stats(const struct mesh_http_server *s,
                                struct mesh_http_server_stats *ret)
{
    *ret = s->stats;
}

void mesh_http_respond_json(struct mesh_http_exchange *ex, int status, json_t *doc)
{
    static const struct mesh_http_field no_cache[] = {{"Cache-Control", "no-store"}, {0}};
    char *body = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    json_decref(doc);
    if (!body) {
        static const char oom[] = "{\"error\": \"out of memory\"}\n";
        mesh_http_respond(ex, 500, "application/json", no_cache, oom, sizeof(oom) - 1);
        return;
    }
    size_t len = strlen(body);
    char *with_nl = mesh_realloc(body, len + 2); /* room for the trailing newline */
    if (with_nl) {
        body = with_nl;
        body[len++] = '\n';
        body[len] = '\0';
    }
    mesh_http_respond(ex, status, "application/json", no_cache, body, len);
    mesh_free(body);
}

SSL *mesh_http_exchange_ssl(const struct mesh_http_exchange *ex)
{
    return mesh_io_ssl(ex->conn->io);
}

const struct mesh_http_request *mesh_http_exchange_request(const struct mesh_http_exchange *ex)
{
    return &ex->req;
}

const char *mesh_http_exchange_body(const struct mesh_http_exchange *ex, size_t *ret_len)
{
    if (ret_len)
        *ret_len = ex->body_len;
    return ex->body;
}

const char *mesh_http_exchange_peer(const struct mesh_http_exchange *ex)
{
    return ex->conn->peer;
}

const struct mesh_addr *mesh_http_exchange_peer_addr(const struct mesh_http_exchange *ex)
{
    return &ex->conn->peer_addr;
}

const char *mesh_http_exchange_client(const struct mesh_http_exchange *ex)
{
    return ex->conn->client ? ex->conn->client->key : "";
}

void mesh_http_exchange_on_abort(struct mesh_http_exchange *ex, mesh_http_done_cb cb, void *data)
{
    ex->abort_cb = cb;
    ex->abort_data = data;
}

uv_loop_t *mesh_http_exchange_loop(const struct mesh_http_exchange *ex)
{
    return ex->conn->srv->loop;
}
