#define MESH_LOG_MODULE "http2"

/*
 * An HTTP/2 stream served as an HTTP/1.1 connection of its own (h2-int.h): its request
 * turned into HTTP/1.1 bytes for that connection to read, the virtual io that connection
 * reads and writes, and its HTTP/1.1 response turned back into HEADERS and DATA.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/h2-int.h"

static const struct mesh_io_ops stream_ops;
static char status_name[] = ":status"; /* nghttp2_nv wants it writable; nghttp2 copies it */

static nghttp2_session *session_of(const struct h2_stream *st)
{
    return st->h2 && st->session_open ? st->h2->s : NULL;
}

static const struct mesh_proxy_shared *shared_of(const struct h2_stream *st)
{
    return st->w->shared;
}

static void reset(struct h2_stream *st, uint32_t code)
{
    nghttp2_session *s = session_of(st);
    if (s && !st->rst) {
        st->rst = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, code);
        mesh_h2__flush(st->h2);
    }
}

/* Opens the windows again by len bytes that arrived for st (RFC 9113 6.9): the stream's and
 * the connection's while nghttp2 has the stream open; the connection's alone once it closed it
 * (libnghttp2 gives nothing back for a closed stream when window updates are ours). */
static void give_back(struct h2_stream *st, size_t len)
{
    if (!len || !st->h2)
        return;
    if (st->session_open)
        nghttp2_session_consume(st->h2->s, st->id, len);
    else
        nghttp2_session_consume_connection(st->h2->s, len);
    mesh_h2__flush(st->h2);
}

struct h2_stream *mesh_h2__stream_new(struct mesh_h2 *h2, int32_t id)
{
    const struct mesh_http_options *o = &h2->w->shared->http;
    struct h2_stream *st = mesh_calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->h2 = h2;
    st->w = h2->w;
    st->id = id;
    st->session_open = true;
    mesh_buf_init(&st->head, o->h2_max_header_list + 1024);
    mesh_buf_init(&st->cookie, o->h2_max_header_list);
    /* The head, then what flow control lets the client send (and the chunk sizes). */
    mesh_buf_init(&st->in, o->h2_max_header_list + o->limits.max_uri + 4096 + (1u << 20));
    mesh_buf_init(&st->res_head, o->limits.max_head + 1);
    mesh_buf_init(&st->out, (size_t)64 << 20);
    st->next = h2->streams;
    if (h2->streams)
        h2->streams->prev = st;
    h2->streams = st;
    return st;
}

/* ---- the request ---- */

static bool name_is(const uint8_t *name, size_t nlen, const char *s)
{
    return nlen == strlen(s) && memcmp(name, s, nlen) == 0;
}

static int set_field(char **field, const uint8_t *value, size_t vlen)
{
    if (*field)
        return 0; /* nghttp2 refuses a duplicate pseudo-header field before this */
    *field = mesh_strndup((const char *)value, vlen);
    return *field ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

int mesh_h2__stream_header(struct h2_stream *st, const uint8_t *name, size_t nlen,
                           const uint8_t *value, size_t vlen)
{
    /* The header list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 6.5.2). */
    st->header_bytes += nlen + vlen + 32;
    if (st->header_bytes > shared_of(st)->http.h2_max_header_list)
        st->too_large = true;
    if (st->too_large)
        return 0;
    if (nlen && name[0] == ':') {
        if (name_is(name, nlen, ":method"))
            return set_field(&st->method, value, vlen);
        if (name_is(name, nlen, ":path"))
            return set_field(&st->path, value, vlen);
        if (name_is(name, nlen, ":authority"))
            return set_field(&st->authority, value, vlen);
        /* :scheme: the listener says which; any other than these would lift nghttp2's check
         * that :path is origin-form (RFC 9113 8.3.1). */
        if (name_is(name, nlen, ":scheme"))
            st->bad_scheme = !name_is(value, vlen, "http") && !name_is(value, vlen, "https");
        return 0;
    }
    /* nghttp2 already refused connection-specific fields (RFC 9113 8.2.2) and any name with
     * upper case, and values with CR, LF or NUL. */
    if (name_is(name, nlen, "host"))
        return set_field(&st->host, value, vlen);
    if (name_is(name, nlen, "cookie")) {
        if ((st->cookie.len && mesh_buf_append(&st->cookie, "; ", 2) < 0) ||
            mesh_buf_append(&st->cookie, value, vlen) < 0)
            st->too_large = true;
        return 0;
    }
    if (name_is(name, nlen, "content-length"))
        st->has_length = true;
    if (mesh_buf_append(&st->head, name, nlen) < 0 || mesh_buf_append(&st->head, ": ", 2) < 0 ||
        mesh_buf_append(&st->head, value, vlen) < 0 || mesh_buf_append(&st->head, "\r\n", 2) < 0)
        st->too_large = true;
    return 0;
}

/* Answers the stream here, without a body (431, 501), and leaves it. */
static void answer(struct h2_stream *st, int code)
{
    nghttp2_session *s = session_of(st);
    char status[4];
    snprintf(status, sizeof(status), "%03d", code);
    nghttp2_nv nv[] = {{(uint8_t *)status_name, (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE}};
    st->res = RES_DONE;
    st->out_end = true;
    if (s && nghttp2_submit_response(s, st->id, nv, 1, NULL) != 0)
        reset(st, NGHTTP2_INTERNAL_ERROR);
    mesh_h2__want_run(st); /* a request that goes on is reset (mesh_h2__stream_run) */
    mesh_h2__flush(st->h2);
}

void mesh_h2__stream_head_done(struct h2_stream *st, bool end)
{
    st->in_end = end;
    if (st->too_large) {
        mesh_log_debug("HTTP/2 stream %d: header list over %u bytes: 431", (int)st->id,
                       (unsigned)shared_of(st)->http.h2_max_header_list);
        answer(st, 431);
        return;
    }
    if (!st->method || !st->path) {
        answer(st, 501); /* CONNECT: no tunnels over HTTP/2 yet */
        return;
    }
    /* Origin-form only (or "*" for OPTIONS): an absolute :path would become an
     * absolute-form request line, routed by its own host instead of :authority. */
    if (st->bad_scheme || (st->path[0] != '/' &&
                           !(strcmp(st->path, "*") == 0 && strcmp(st->method, "OPTIONS") == 0))) {
        mesh_log_debug("HTTP/2 stream %d: :scheme or :path not of an origin-form request: 400",
                       (int)st->id);
        answer(st, 400);
        return;
    }
    st->head_only = strcmp(st->method, "HEAD") == 0;
    st->chunked = !end && !st->has_length;
    const char *authority = st->authority ? st->authority : st->host;
    struct mesh_buf *b = &st->in;
    mesh_buf_appendf(b, "%s %s HTTP/1.1\r\n", st->method, st->path);
    if (authority)
        mesh_buf_appendf(b, "host: %s\r\n", authority);
    mesh_buf_append(b, st->head.data ? st->head.data : "", st->head.len);
    if (st->cookie.len)
        mesh_buf_appendf(b, "cookie: %s\r\n", st->cookie.data);
    if (st->chunked)
        mesh_buf_append_str(b, "transfer-encoding: chunked\r\n");
    mesh_buf_append(b, "\r\n", 2);
    mesh_buf_done(&st->head);
    mesh_buf_done(&st->cookie);
    if (b->err) {
        answer(st, 431);
        return;
    }
    struct mesh_worker *w = st->w;
    struct mesh_io *vio = mesh_io_new_virtual(&w->iol, &w->loop, &stream_ops, st);
    if (!vio) {
        reset(st, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    st->vio = vio;
    st->h2->adopt(st->h2->c, vio); /* it reads from run(), later */
}

void mesh_h2__stream_data(struct h2_stream *st, const uint8_t *data, size_t len)
{
    if (!st->vio || st->eof_delivered) {
        give_back(st, len); /* nobody reads it */
        return;
    }
    if (st->chunked)
        mesh_buf_appendf(&st->in, "%zx\r\n", len);
    mesh_buf_append(&st->in, data, len);
    if (st->chunked)
        mesh_buf_append(&st->in, "\r\n", 2);
    if (st->in.err) {
        give_back(st, len);
        reset(st, NGHTTP2_FLOW_CONTROL_ERROR); /* more than the window let it send */
        return;
    }
    st->unacked += len;
    if (st->reading)
        mesh_h2__want_run(st);
}

void mesh_h2__stream_end(struct h2_stream *st)
{
    if (st->in_end)
        return;
    st->in_end = true;
    if (st->chunked && st->vio)
        mesh_buf_append(&st->in, "0\r\n\r\n", 5);
    mesh_h2__want_run(st);
}

void mesh_h2__stream_closed(struct h2_stream *st, uint32_t error_code)
{
    (void)error_code;
    st->session_open = false;
    give_back(st, st->unacked); /* the stream connection will not read them now */
    st->unacked = 0;
    mesh_h2__want_run(st);
}

/* ---- the response ---- */

static bool hop_by_hop(const struct mesh_http_header *h, const struct mesh_http_header *conn)
{
    static const char *const names[] = {"connection",        "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade",    "te"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (mesh_http_header_is(h, names[i]))
            return true;
    }
    return mesh_http_in_connection_list(conn, h);
}

static ssize_t on_read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    struct h2_stream *st = src->ptr;
    size_t n = st->out.len < length ? st->out.len : length;
    if (n) {
        memcpy(buf, st->out.data, n);
        mesh_buf_consume(&st->out, n);
    }
    if (n)
        st->moved = uv_now(&st->w->loop);
    if (st->out.len == 0 && st->out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        st->res = RES_DONE;
        if (!st->vio)
            mesh_h2__want_run(st); /* reset it if the request goes on (mesh_h2__stream_run) */
    } else if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if ((st->writes && st->out.len <= shared_of(st)->low_water) ||
        (st->shut && st->res == RES_DONE))
        mesh_h2__want_run(st);
    return (ssize_t)n;
}

static void more_out(struct h2_stream *st)
{
    nghttp2_session *s = session_of(st);
    if (s && st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(s, st->id);
    }
    mesh_h2__flush(st->h2);
}

/* Response body bytes (as the stream connection framed them): their data goes to `out`. */
static int body_input(struct h2_stream *st, const char *data, size_t len)
{
    if (st->out_end || !len)
        return 0; /* bytes after the body: the upstream connection is not reused anyway */
    size_t old = st->out.len;
    if (mesh_buf_append(&st->out, data, len) < 0)
        return -ENOBUFS;
    if (st->chunked_res) {
        size_t used, got;
        const char *err;
        int r =
            mesh_http_chunked_decode(&st->body.chunked, st->out.data + old, len, &used, &got, &err);
        if (r < 0)
            return -EPROTO;
        st->out.len = old + got;
        st->out.data[st->out.len] = '\0';
        st->out_end = r == 1;
    } else if (st->body.kind == BODY_LENGTH) {
        size_t take = st->body.left < len ? (size_t)st->body.left : len;
        st->body.left -= take;
        st->out.len = old + take;
        st->out.data[st->out.len] = '\0';
        st->out_end = st->body.left == 0;
    }
    more_out(st);
    return 0;
}

/* A complete response head in res_head: HEADERS, and the body's framing. */
static int submit_head(struct h2_stream *st, const struct mesh_http_response *res)
{
    nghttp2_session *s = session_of(st);
    size_t n = 0;
    char status[4];
    snprintf(status, sizeof(status), "%03d", res->status);
    nghttp2_nv *nv = mesh_calloc(res->num_headers + 1, sizeof(*nv));
    char *lower = mesh_malloc(st->res_head.len + 1); /* names in lower case */
    int r = -ENOMEM;
    if (!nv || !lower)
        goto out;
    nv[n++] = (nghttp2_nv){(uint8_t *)status_name, (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    const struct mesh_http_header *conn =
        mesh_http_find_header(res->headers, res->num_headers, "connection");
    size_t off = 0;
    for (size_t i = 0; i < res->num_headers; i++) {
        const struct mesh_http_header *h = &res->headers[i];
        if (hop_by_hop(h, conn))
            continue;
        for (size_t k = 0; k < h->name_len; k++) {
            char ch = h->name[k];
            lower[off + k] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
        }
        nv[n++] = (nghttp2_nv){(uint8_t *)lower + off, (uint8_t *)(uintptr_t)h->value, h->name_len,
                               h->value_len, NGHTTP2_NV_FLAG_NONE};
        off += h->name_len;
    }
    bool body = !st->head_only && res->status != 204 && res->status != 304;
    if (body && (res->flags & MESH_HTTP_F_CHUNKED)) {
        st->chunked_res = true;
        mesh_http_chunked_init(&st->body.chunked);
    } else if (body && (res->flags & MESH_HTTP_F_CONTENT_LENGTH)) {
        st->body.kind = BODY_LENGTH;
        st->body.left = res->content_length;
        body = res->content_length > 0;
    } else if (body) {
        st->body.kind = BODY_UNTIL_CLOSE; /* ends at the stream connection's shutdown */
    }
    st->out_end = !body;
    st->res = body ? RES_BODY : RES_DONE;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_body};
    r = s && nghttp2_submit_response(s, st->id, nv, n, body ? &prd : NULL) == 0 ? 0 : -EPIPE;
    mesh_h2__flush(st->h2);
out:
    mesh_free(nv);
    mesh_free(lower);
    return r;
}

/* HTTP/1.1 response bytes from the stream connection. */
static int res_input(struct h2_stream *st, const char *data, size_t len)
{
    if (st->res != RES_HEAD)
        return body_input(st, data, len);
    if (mesh_buf_append(&st->res_head, data, len) < 0)
        return -ENOBUFS;
    for (;;) {
        struct mesh_http_response res;
        const struct mesh_http_options *o = &shared_of(st)->http;
        int n = mesh_http_parse_response(st->res_head.data, st->res_head.len, &o->limits,
                                         st->w->http->headers, &res);
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return -EPROTO;
        if (res.status >= 100 && res.status < 200) {
            mesh_buf_consume(&st->res_head, (size_t)n); /* 100 Continue: not passed on */
            continue;
        }
        int r = submit_head(st, &res);
        if (r < 0)
            return r;
        /* What follows the head is body: res_head is free once it is taken. */
        struct mesh_buf held = st->res_head;
        mesh_buf_init(&st->res_head, held.max);
        r = body_input(st, held.data + n, held.len - (size_t)n);
        mesh_buf_done(&held);
        return r;
    }
}

/* ---- the virtual io of the stream connection ---- */

static struct h2_stream *io_stream(const struct mesh_io *io)
{
    return io->ops_data;
}

static int vio_read_start(struct mesh_io *io, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
    struct h2_stream *st = io_stream(io);
    st->alloc_cb = alloc_cb;
    st->read_cb = read_cb;
    st->reading = true;
    mesh_h2__want_run(st);
    return 0;
}

static int vio_read_stop(struct mesh_io *io)
{
    io_stream(io)->reading = false;
    return 0;
}

static int take(struct h2_stream *st, const uv_buf_t bufs[], unsigned n, size_t *ret_total)
{
    size_t total = 0;
    if (!session_of(st) || st->rst)
        return UV_EPIPE; /* the client reset it */
    for (unsigned i = 0; i < n; i++) {
        int r = res_input(st, bufs[i].base, bufs[i].len);
        if (r < 0) {
            reset(st, NGHTTP2_INTERNAL_ERROR);
            return UV_EPROTO;
        }
        total += bufs[i].len;
    }
    *ret_total = total;
    return 0;
}

static int vio_try_write(struct mesh_io *io, const uv_buf_t bufs[], unsigned n)
{
    struct h2_stream *st = io_stream(io);
    size_t total;
    if (st->out.len > shared_of(st)->high_water)
        return UV_EAGAIN;
    int r = take(st, bufs, n, &total);
    return r < 0 ? r : (int)total;
}

static int vio_write(uv_write_t *req, struct mesh_io *io, const uv_buf_t bufs[], unsigned n,
                     uv_write_cb cb)
{
    struct h2_stream *st = io_stream(io);
    size_t total;
    int r = take(st, bufs, n, &total);
    if (r < 0)
        return r;
    req->cb = cb;
    req->handle = mesh_io_stream(io);
    req->data = NULL;
    uv_write_t **tail = &st->writes;
    while (*tail)
        tail = (uv_write_t **)&(*tail)->data;
    *tail = req;
    mesh_h2__want_run(st);
    return 0;
}

static int vio_shutdown(uv_shutdown_t *req, struct mesh_io *io, uv_shutdown_cb cb)
{
    struct h2_stream *st = io_stream(io);
    req->cb = cb;
    req->handle = mesh_io_stream(io);
    st->shut = req;
    if (st->res == RES_HEAD)
        reset(st, NGHTTP2_INTERNAL_ERROR); /* no response at all */
    else if (!st->out_end) {
        st->out_end = true; /* a body delimited by the close ends here */
        more_out(st);
    }
    mesh_h2__want_run(st);
    return 0;
}

static size_t vio_queue_size(const struct mesh_io *io)
{
    return io_stream(io)->out.len;
}

/* Runs the queued write callbacks with status. */
static void writes_done(struct h2_stream *st, int status)
{
    while (st->writes) {
        uv_write_t *req = st->writes;
        st->writes = req->data;
        req->cb(req, status);
    }
}

static void vio_close(struct mesh_io *io)
{
    struct h2_stream *st = io_stream(io);
    st->vio = NULL;
    st->reading = false;
    writes_done(st, UV_ECANCELED);
    if (st->shut) {
        uv_shutdown_t *req = st->shut;
        st->shut = NULL;
        req->cb(req, UV_ECANCELED);
    }
    give_back(st, st->unacked);
    st->unacked = 0;
    if (!st->out_end) {
        reset(st, NGHTTP2_INTERNAL_ERROR); /* cut in the middle of its response */
    } else if (mesh_h2__stream_stalled(st)) {
        st->moved = uv_now(&st->w->loop); /* its body still has to go, within a bound */
        mesh_h2__watch_stall(st->h2);
    }
    mesh_h2__want_run(st);
}

static const struct mesh_io_ops stream_ops = {
    .read_start = vio_read_start,
    .read_stop = vio_read_stop,
    .try_write = vio_try_write,
    .write = vio_write,
    .shutdown = vio_shutdown,
    .queue_size = vio_queue_size,
    .close = vio_close,
};

/* ---- pending work ---- */

/* Gives the stream connection what it may read now: request bytes, then its EOF. */
static void deliver(struct h2_stream *st)
{
    while (st->vio && st->reading && (st->in.len || (st->in_end && !st->eof_delivered))) {
        uv_stream_t *stream = mesh_io_stream(st->vio);
        if (!st->in.len) {
            st->eof_delivered = true;
            uv_buf_t none = uv_buf_init(NULL, 0);
            st->read_cb(stream, UV_EOF, &none);
            continue;
        }
        uv_buf_t buf;
        st->alloc_cb((uv_handle_t *)stream, st->in.len, &buf);
        if (!buf.base || !buf.len)
            return; /* no buffer now: the next run */
        size_t n = st->in.len < buf.len ? st->in.len : buf.len;
        memcpy(buf.base, st->in.data, n);
        mesh_buf_consume(&st->in, n);
        /* Flow control: the window opens as the stream connection takes the body. */
        size_t ack = n < st->unacked ? n : st->unacked;
        nghttp2_session *s = session_of(st);
        if (ack && s) {
            st->unacked -= ack;
            nghttp2_session_consume(s, st->id, ack);
            mesh_h2__flush(st->h2);
        }
        st->read_cb(stream, (ssize_t)n, &buf);
    }
}

void mesh_h2__stream_run(struct h2_stream *st)
{
    st->pending = false;
    if (!st->session_open && st->vio && st->h2)
        st->h2->abort(st->vio); /* reset by the client, or done: nothing more to do */
    deliver(st);
    if (st->writes && (st->out.len <= shared_of(st)->low_water || !st->session_open))
        writes_done(st, 0);
    if (st->shut && (st->res == RES_DONE || !st->session_open)) {
        uv_shutdown_t *req = st->shut;
        st->shut = NULL;
        req->cb(req, 0);
    }
    /* Its stream connection is gone, its response went out whole, and the request's
     * END_STREAM has not come: RST_STREAM(NO_ERROR) ends it (RFC 9113 8.1). */
    if (!st->vio && session_of(st) && st->res == RES_DONE && !st->in_end)
        reset(st, NGHTTP2_NO_ERROR);
    if (!st->session_open && !st->vio)
        mesh_h2__stream_free(st);
}

bool mesh_h2__stream_stalled(const struct h2_stream *st)
{
    return !st->vio && session_of(st) && !st->rst && st->out_end && st->res != RES_DONE;
}

void mesh_h2__stream_cancel(struct h2_stream *st)
{
    reset(st, NGHTTP2_CANCEL);
}

void mesh_h2__stream_orphan(struct h2_stream *st)
{
    struct mesh_h2 *h2 = st->h2;
    if (st->prev)
        st->prev->next = st->next;
    else
        h2->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    st->h2 = NULL;
    st->session_open = false;
    if (st->vio)
        h2->abort(st->vio);
    mesh_h2__stream_free(st);
}
