#define MESH_LOG_MODULE "http2"

/*
 * HTTP/2 from clients, one nghttp2 server session per connection (h2-int.h): the preface
 * that switches an HTTP listener's connection to it, the frames in and out through the
 * connection's own reads and write path, the protections (stream and header-list limits,
 * rapid reset), GOAWAY when the worker stops.
 */
#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/h2-int.h"

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(PREFACE) - 1)

int mesh_h2_preface(const char *data, size_t len)
{
    size_t n = len < PREFACE_LEN ? len : PREFACE_LEN;
    if (memcmp(data, PREFACE, n) != 0)
        return 0;
    return len < PREFACE_LEN ? -EAGAIN : 1;
}

static const struct mesh_http_options *opts_of(const struct mesh_h2 *h2)
{
    return &h2->w->shared->http;
}

/* ---- nghttp2's callbacks: they only record; streams run later (h2-int.h) ---- */

static struct h2_stream *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct mesh_h2 *h2 = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_stream *st = mesh_h2__stream_new(h2, f->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* this stream is reset */
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
    h2->n_open++;
    atomic_fetch_add_explicit(&h2->w->shared->h2_streams, 1, memory_order_relaxed);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers of a request are not passed on (docs/http2.md) */
    struct h2_stream *st = stream_of(s, f->hd.stream_id);
    return st ? mesh_h2__stream_header(st, name, nlen, value, vlen) : 0;
}

/* Rapid reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671): over h2_max_resets streams
 * reset within h2_reset_window_ms, by the client or by nghttp2 for the client's frames (not by
 * us), end the connection with GOAWAY(ENHANCE_YOUR_CALM). */
static void count_reset(struct mesh_h2 *h2)
{
    const struct mesh_http_options *o = opts_of(h2);
    uint64_t now = uv_now(&h2->w->loop);
    if (now - h2->reset_window_start >= o->h2_reset_window_ms) {
        h2->reset_window_start = now;
        h2->resets = 0;
    }
    if (++h2->resets <= o->h2_max_resets || h2->calm)
        return;
    h2->calm = true;
    atomic_fetch_add_explicit(&h2->w->shared->h2_calm, 1, memory_order_relaxed);
    mesh_log_warn("an HTTP/2 client reset over %u streams within %llu ms: GOAWAY "
                  "(ENHANCE_YOUR_CALM), closing its connection",
                  (unsigned)o->h2_max_resets, (unsigned long long)o->h2_reset_window_ms);
    nghttp2_session_terminate_session(h2->s, NGHTTP2_ENHANCE_YOUR_CALM);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    struct h2_stream *st;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        st = stream_of(s, f->hd.stream_id);
        if (st && f->headers.cat == NGHTTP2_HCAT_REQUEST)
            mesh_h2__stream_head_done(st, end);
        else if (st && end)
            mesh_h2__stream_end(st);
        break;
    case NGHTTP2_DATA:
        st = stream_of(s, f->hd.stream_id);
        if (st && end)
            mesh_h2__stream_end(st);
        break;
    case NGHTTP2_RST_STREAM:
        st = stream_of(s, f->hd.stream_id);
        if (st)
            st->peer_rst = true; /* counted when it closes, whatever its code */
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct h2_stream *st = stream_of(s, id);
    if (st)
        mesh_h2__stream_data(st, data, len);
    else
        nghttp2_session_consume(s, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    struct mesh_h2 *h2 = ud;
    struct h2_stream *st = stream_of(s, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    h2->n_open--;
    if (!st->rst && (error_code != NGHTTP2_NO_ERROR || st->peer_rst))
        count_reset(h2);
    mesh_h2__stream_closed(st, error_code);
    return 0;
}

/* ---- frames out ---- */

/* Closes the connection once nghttp2 wants neither to read nor to write (a GOAWAY went out,
 * or a fatal error), or once a stopping worker's last stream is done; keeps the idle
 * timeout running while no stream is open (a stream whose output stalled is reset after the
 * idle timeout: on_stall). */
static void check_done(struct mesh_h2 *h2)
{
    struct http_conn *c = h2->c;
    if (!c || c->closing || c->shutting)
        return;
    bool write = nghttp2_session_want_write(h2->s) != 0;
    if ((!nghttp2_session_want_read(h2->s) && !write) ||
        (h2->stopping && h2->n_open == 0 && !write)) {
        mesh_http_proxy__conn_close_gracefully(c);
        return;
    }
    uint64_t now = mesh_http_proxy__now_ms(c);
    if (h2->n_open == 0 && !c->idle_deadline) {
        c->idle_deadline = now + mesh_http_proxy__opts(c)->idle_timeout_ms;
        mesh_http_proxy__arm_timer(c);
    } else if (h2->n_open && c->idle_deadline) {
        c->idle_deadline = 0;
        mesh_http_proxy__arm_timer(c);
    }
}

/* Writes what nghttp2 has queued, until the write queue is over the high-water mark (then
 * reading stops too, and mesh_h2_drained goes on). */
static void send_now(struct mesh_h2 *h2)
{
    h2->want_send = false;
    for (;;) {
        struct http_conn *c = h2->c;
        if (!c || c->closing || c->shutting)
            return;
        if (mesh_io_queue_size(c->io) > c->w->shared->high_water) {
            mesh_http_proxy__pause_down(c, PAUSE_H2_OUT);
            return;
        }
        const uint8_t *data;
        h2->in_session = true;
        ssize_t n = nghttp2_session_mem_send(h2->s, &data);
        h2->in_session = false;
        if (n < 0) {
            mesh_log_debug("HTTP/2 session: %s; closing", nghttp2_strerror((int)n));
            mesh_http_proxy__conn_abort(c);
            return;
        }
        if (n == 0)
            return;
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)data, (unsigned)n); /* not written to */
        mesh_http_proxy__write_down(c, &b, 1);
    }
}

static void on_idle(uv_idle_t *h);

/* Runs the streams' pending work, a few rounds (what is left waits for the next). */
static void run_pending(struct mesh_h2 *h2)
{
    for (int round = 0; round < 4; round++) {
        bool any = false;
        struct h2_stream *next;
        for (struct h2_stream *st = h2->streams; st && h2->c; st = next) {
            next = st->next;
            if (st->pending) {
                any = true;
                mesh_h2__stream_run(st);
            }
        }
        if (!any || !h2->c)
            return;
    }
    uv_idle_start(&h2->idle, on_idle);
}

static void on_idle(uv_idle_t *h)
{
    struct mesh_h2 *h2 = container_of(h, struct mesh_h2, idle);
    uv_idle_stop(h);
    if (!h2->c)
        return;
    run_pending(h2);
    send_now(h2);
    check_done(h2);
}

static void on_stall(uv_timer_t *t)
{
    struct mesh_h2 *h2 = container_of(t, struct mesh_h2, stall);
    if (!h2->c)
        return;
    uint64_t now = uv_now(&h2->w->loop), limit = opts_of(h2)->idle_timeout_ms;
    bool any = false;
    for (struct h2_stream *st = h2->streams; st; st = st->next) {
        if (!mesh_h2__stream_stalled(st))
            continue;
        if (now - st->moved >= limit)
            mesh_h2__stream_cancel(st);
        else
            any = true;
    }
    if (!any)
        uv_timer_stop(t);
    send_now(h2);
    check_done(h2);
}

void mesh_h2__watch_stall(struct mesh_h2 *h2)
{
    if (!h2 || !h2->c || uv_is_active((uv_handle_t *)&h2->stall))
        return;
    uint64_t every = opts_of(h2)->idle_timeout_ms / 4;
    uv_timer_start(&h2->stall, on_stall, every, every);
}

void mesh_h2__want_run(struct h2_stream *st)
{
    st->pending = true;
    if (st->h2 && st->h2->c)
        uv_idle_start(&st->h2->idle, on_idle);
}

void mesh_h2__flush(struct mesh_h2 *h2)
{
    if (!h2 || !h2->c)
        return;
    h2->want_send = true;
    uv_idle_start(&h2->idle, on_idle);
}

/* ---- the connection's life ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct mesh_h2 *h2 = h->data;
    if (--h2->handles)
        return;
    nghttp2_session_del(h2->s); /* calls back nothing */
    mesh_free(h2);
}

static void abort_stream_conn(struct mesh_io *vio)
{
    mesh_http_proxy__conn_abort(vio->tcp.data);
}

int mesh_h2_start(struct http_conn *c, const char *data, size_t len)
{
    const struct mesh_http_options *o = mesh_http_proxy__opts(c);
    struct mesh_h2 *h2 = mesh_calloc(1, sizeof(*h2));
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    int r = -ENOMEM;
    if (!h2 || nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* Flow control follows what the stream connections take, not what arrives. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    if (nghttp2_session_server_new2(&h2->s, cbs, h2, opt) != 0) {
        h2->s = NULL;
        goto out;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->h2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, o->h2_max_header_list},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    /* The connection's window holds every stream's (what the streams buffer is bounded by
     * their own windows anyway): a stream whose upstream is slow to take its body stalls
     * itself, not the other streams' uploads. */
    uint64_t window = (uint64_t)o->h2_max_concurrent_streams * NGHTTP2_INITIAL_WINDOW_SIZE;
    if (window > NGHTTP2_MAX_WINDOW_SIZE)
        window = NGHTTP2_MAX_WINDOW_SIZE;
    if (nghttp2_submit_settings(h2->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(h2->s, NGHTTP2_FLAG_NONE, 0, (int32_t)window) != 0)
        goto out;
    h2->c = c;
    h2->w = c->w;
    h2->adopt = mesh_http_proxy__adopt_stream;
    h2->abort = abort_stream_conn;
    h2->reset_window_start = mesh_http_proxy__now_ms(c);
    uv_idle_init(&c->w->loop, &h2->idle);
    uv_timer_init(&c->w->loop, &h2->stall);
    h2->idle.data = h2->stall.data = h2;
    h2->handles = 2;
    atomic_fetch_add_explicit(&c->w->shared->h2_connections, 1, memory_order_relaxed);
    c->h2 = h2;
    h2 = NULL;
    r = 0;
out:
    if (h2) {
        if (h2->s)
            nghttp2_session_del(h2->s);
        mesh_free(h2);
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (r < 0)
        return r;
    c->idle_deadline = 0;
    mesh_h2_input(c, data, len);
    return 0;
}

void mesh_h2_input(struct http_conn *c, const char *data, size_t len)
{
    struct mesh_h2 *h2 = c->h2;
    h2->in_session = true;
    ssize_t r = nghttp2_session_mem_recv(h2->s, (const uint8_t *)data, len);
    h2->in_session = false;
    if (r < 0) {
        /* A fatal error (a flood, a bad preface): a GOAWAY when nghttp2 made one, then the
         * close. */
        mesh_log_debug("HTTP/2 client: %s; closing", nghttp2_strerror((int)r));
        if (r == NGHTTP2_ERR_FLOODED)
            atomic_fetch_add_explicit(&h2->w->shared->h2_calm, 1, memory_order_relaxed);
        if (r != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            nghttp2_session_terminate_session(h2->s, r == NGHTTP2_ERR_FLOODED
                                                         ? NGHTTP2_ENHANCE_YOUR_CALM
                                                         : NGHTTP2_PROTOCOL_ERROR);
        send_now(h2);
        if (h2->c)
            mesh_http_proxy__conn_close_gracefully(c);
        return;
    }
    run_pending(h2);
    send_now(h2);
    check_done(h2);
}

void mesh_h2_drained(struct http_conn *c)
{
    struct mesh_h2 *h2 = c->h2;
    mesh_http_proxy__resume_down(c, PAUSE_H2_OUT);
    send_now(h2);
    check_done(h2);
}

void mesh_h2_stop(struct http_conn *c)
{
    struct mesh_h2 *h2 = c->h2;
    if (h2->stopping)
        return;
    h2->stopping = true;
    nghttp2_submit_goaway(h2->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    send_now(h2);
    check_done(h2);
}

void mesh_h2_detach(struct http_conn *c)
{
    struct mesh_h2 *h2 = c->h2;
    c->h2 = NULL;
    h2->c = NULL;
    uv_idle_stop(&h2->idle);
    while (h2->streams)
        mesh_h2__stream_orphan(h2->streams);
    uv_close((uv_handle_t *)&h2->idle, on_handle_closed);
    uv_close((uv_handle_t *)&h2->stall, on_handle_closed);
}

void mesh_h2__stream_free(struct h2_stream *st)
{
    struct mesh_h2 *h2 = st->h2;
    if (h2) {
        if (st->prev)
            st->prev->next = st->next;
        else
            h2->streams = st->next;
        if (st->next)
            st->next->prev = st->prev;
    }
    mesh_buf_done(&st->head);
    mesh_buf_done(&st->cookie);
    mesh_buf_done(&st->in);
    mesh_buf_done(&st->res_head);
    mesh_buf_done(&st->out);
    mesh_free(st->method);
    mesh_free(st->path);
    mesh_free(st->authority);
    mesh_free(st->host);
    mesh_free(st);
}
