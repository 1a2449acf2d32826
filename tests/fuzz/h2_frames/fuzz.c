/* Fuzzes the HTTP/2 frame layer of client connections (proxy/h2_session.c, h2_stream.c): the
 * input is what a client sends after the preface, fed in two pieces to a real session on a
 * connection whose writes go nowhere. Each stream's HTTP/1.1 request is read by a stand-in
 * for the stream connection, which answers it (by the request's first byte: a length, a
 * chunked body, a body ended by the close, or nothing before a close) so that both
 * translations run; then the loop runs until everything is freed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "proxy/h2-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* ---- the connection's io: writes are dropped ---- */

static int sink_read_start(struct mesh_io *io, uv_alloc_cb a, uv_read_cb r)
{
    (void)io, (void)a, (void)r;
    return 0;
}

static int sink_read_stop(struct mesh_io *io)
{
    (void)io;
    return 0;
}

static int sink_try_write(struct mesh_io *io, const uv_buf_t b[], unsigned n)
{
    (void)io;
    size_t t = 0;
    for (unsigned i = 0; i < n; i++)
        t += b[i].len;
    return (int)t;
}

static int sink_write(uv_write_t *req, struct mesh_io *io, const uv_buf_t b[], unsigned n,
                      uv_write_cb cb)
{
    (void)req, (void)io, (void)b, (void)n, (void)cb;
    return UV_EPIPE; /* never reached: try_write takes everything */
}

static int sink_shutdown(uv_shutdown_t *req, struct mesh_io *io, uv_shutdown_cb cb)
{
    (void)req, (void)io, (void)cb;
    return UV_ENOTCONN; /* the connection is then aborted */
}

static size_t sink_queue(const struct mesh_io *io)
{
    (void)io;
    return 0;
}

static void sink_close(struct mesh_io *io)
{
    (void)io;
}

static const struct mesh_io_ops sink_ops = {sink_read_start, sink_read_stop, sink_try_write,
                                            sink_write,      sink_shutdown,  sink_queue,
                                            sink_close};

/* ---- a stand-in for a stream connection ---- */

static char readbuf[4096];

static void st_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h, (void)suggested;
    *buf = uv_buf_init(readbuf, sizeof(readbuf));
}

static void st_shut(uv_shutdown_t *req, int status)
{
    struct mesh_io *io = req->data;
    (void)status;
    mesh_free(req);
    mesh_io_close(io, NULL);
}

static void st_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mesh_io *io = (struct mesh_io *)s;
    static char with_length[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
    static char chunked[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 No\r\n"
                            "Transfer-Encoding: chunked\r\nConnection: x-y\r\nX-Y: 1\r\n\r\n"
                            "3\r\nabc\r\n0\r\n\r\n";
    static char until_close[] = "HTTP/1.1 200 OK\r\n\r\nsome bytes";
    if (nread == 0)
        return;
    mesh_io_read_stop(io);
    char kind = nread > 0 ? buf->base[0] : 'x';
    char *res = kind == 'G' ? with_length : kind == 'P' ? chunked : until_close;
    if (kind != 'D') {
        uv_buf_t b = uv_buf_init(res, (unsigned)strlen(res));
        if (mesh_io_try_write(io, &b, 1) < 0) {
            mesh_io_close(io, NULL);
            return;
        }
    }
    uv_shutdown_t *req = kind == 'D' ? NULL : mesh_malloc(sizeof(*req));
    if (!req) {
        mesh_io_close(io, NULL); /* no answer: the stream is reset */
        return;
    }
    req->data = io;
    if (mesh_io_shutdown(req, io, st_shut) < 0) {
        mesh_free(req);
        mesh_io_close(io, NULL);
    }
}

static void abort_io(struct mesh_io *vio)
{
    mesh_io_close(vio, NULL);
}

static struct http_conn *adopt(struct http_conn *parent, struct mesh_io *vio)
{
    (void)parent;
    if (mesh_io_read_start(vio, st_alloc, st_read) < 0)
        mesh_io_close(vio, NULL);
    return NULL;
}

/* ---- a worker with one HTTP/2 connection ---- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mesh_proxy_shared shared;
    static struct mesh_worker w;
    memset(&w, 0, sizeof(w));
    memset(&shared, 0, sizeof(shared));
    shared.buffer_size = 16384;
    shared.high_water = 4 * 16384;
    shared.low_water = 16384;
    shared.http.header_timeout_ms = 1000;
    shared.http.idle_timeout_ms = 1000;
    shared.http.limits = (struct mesh_http_limits){8192, 32, 2048};
    shared.http.h2_max_concurrent_streams = 8;
    shared.http.h2_max_header_list = 4096;
    shared.http.h2_max_resets = 16;
    shared.http.h2_reset_window_ms = 1000;
    w.shared = &shared;
    uv_loop_init(&w.loop);
    mesh_io_loop_init(&w.iol, &w.loop);
    mesh_bufpool_init(&w.pool, shared.buffer_size, 4);
    if (mesh_http_worker_init(&w) < 0)
        abort();

    struct http_conn *c = mesh_calloc(1, sizeof(*c));
    c->w = &w;
    c->stream = true; /* not in the shared counters */
    c->io = mesh_io_new_virtual(&w.iol, &w.loop, &sink_ops, c);
    uv_timer_init(&w.loop, &c->timer);
    c->io->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    mesh_buf_init(&c->in, 1024);
    mesh_buf_init(&c->req.meta, 1024);
    mesh_buf_init(&c->req.replay, 1024);
    mesh_buf_init(&c->req.head_out, 1024);
    w.http->conns = c;
    w.n_conns = 1;

    if (mesh_h2_start(c, PREFACE, sizeof(PREFACE) - 1) < 0)
        abort();
    c->h2->adopt = adopt;
    c->h2->abort = abort_io;
    /* The connection is freed (by the proxy's code) once it closed: n_conns tells. */
    size_t half = size / 2;
    if (w.n_conns && !c->closing)
        mesh_h2_input(c, (const char *)data, half);
    uv_run(&w.loop, UV_RUN_NOWAIT);
    if (w.n_conns && !c->closing)
        mesh_h2_input(c, (const char *)data + half, size - half);
    for (int i = 0; i < 4; i++)
        uv_run(&w.loop, UV_RUN_NOWAIT);
    if (w.n_conns)
        mesh_http_proxy__conn_abort(c);
    mesh_http_worker_close(&w);
    mesh_io_loop_close(&w.iol);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    mesh_http_worker_done(&w);
    mesh_bufpool_done(&w.pool);
    if (uv_loop_close(&w.loop) != 0)
        abort(); /* a handle was left open */
    return 0;
}
