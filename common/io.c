#include "common/io.h"

#include <string.h>

#include <openssl/err.h>

#include "common/alloc.h"
#include "common/macros.h"

struct mesh_tls_state {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    mesh_io_handshake_cb hs_cb;
    uv_alloc_cb alloc_cb;
    uv_read_cb read_cb;
    bool reading;
    bool raw_eof;   /* the socket said EOF (or failed): raw_err */
    bool eof_sent;  /* the owner was told */
    bool any_input; /* a byte came from the peer */
    int raw_err;
    char *stash; /* sealed records try_write could not send: the next write sends them */
    size_t stash_len;
    char error[160];
};

/* A queued write of sealed records; `user` (may be NULL) learns when they are out. */
struct tls_wreq {
    uv_write_t req;
    uv_write_t *user;
    uv_write_cb cb;
    char data[];
};

static struct mesh_io *io_of(uv_handle_t *h)
{
    return container_of((uv_tcp_t *)h, struct mesh_io, tcp);
}

/* ---- the ready list ---- */

static void deliver(struct mesh_io *io);

static void on_idle(uv_idle_t *h)
{
    struct mesh_io_loop *l = h->data;
    struct mesh_io *list = l->ready;
    l->ready = NULL;
    uv_idle_stop(h);
    while (list) {
        struct mesh_io *io = list;
        list = io->next_ready;
        io->next_ready = NULL;
        io->queued = false;
        if (!io->closing && io->tls->reading)
            deliver(io);
    }
}

static void enqueue_ready(struct mesh_io *io)
{
    if (io->queued)
        return;
    io->queued = true;
    io->next_ready = io->iol->ready;
    io->iol->ready = io;
    uv_idle_start(&io->iol->idle, on_idle);
}

static void dequeue_ready(struct mesh_io *io)
{
    if (!io->queued)
        return;
    for (struct mesh_io **p = &io->iol->ready; *p; p = &(*p)->next_ready) {
        if (*p == io) {
            *p = io->next_ready;
            break;
        }
    }
    io->queued = false;
}

void mesh_io_loop_init(struct mesh_io_loop *l, uv_loop_t *loop)
{
    uv_idle_init(loop, &l->idle);
    l->idle.data = l;
    l->ready = NULL;
}

void mesh_io_loop_close(struct mesh_io_loop *l)
{
    if (!uv_is_closing((uv_handle_t *)&l->idle))
        uv_close((uv_handle_t *)&l->idle, NULL);
}

/* ---- life ---- */

struct mesh_io *mesh_io_new(struct mesh_io_loop *iol, uv_loop_t *loop)
{
    struct mesh_io *io = mesh_calloc(1, sizeof(*io));
    if (!io)
        return NULL;
    io->iol = iol;
    uv_tcp_init(loop, &io->tcp);
    return io;
}

struct mesh_io *mesh_io_new_pipe(struct mesh_io_loop *iol, uv_loop_t *loop)
{
    struct mesh_io *io = mesh_calloc(1, sizeof(*io));
    if (!io)
        return NULL;
    io->iol = iol;
    uv_pipe_init(loop, &io->pipe, 0);
    return io;
}

struct mesh_io *mesh_io_new_virtual(struct mesh_io_loop *iol, uv_loop_t *loop,
                                    const struct mesh_io_ops *ops, void *data)
{
    struct mesh_io *io = mesh_io_new(iol, loop);
    if (io) {
        io->ops = ops;
        io->ops_data = data;
    }
    return io;
}

static void on_io_closed(uv_handle_t *h)
{
    struct mesh_io *io = io_of(h);
    if (io->close_cb)
        io->close_cb(h);
    if (io->tls) {
        SSL_free(io->tls->ssl);
        mesh_free(io->tls->stash);
        mesh_free(io->tls);
    }
    mesh_free(io);
}

void mesh_io_close(struct mesh_io *io, uv_close_cb cb)
{
    if (io->closing)
        return;
    io->closing = true;
    io->close_cb = cb;
    if (io->ops)
        io->ops->close(io);
    dequeue_ready(io);
    uv_close((uv_handle_t *)&io->tcp, on_io_closed);
}

SSL *mesh_io_ssl(const struct mesh_io *io)
{
    return io->tls ? io->tls->ssl : NULL;
}

const char *mesh_io_tls_error(const struct mesh_io *io)
{
    return io->tls ? io->tls->error : "";
}

bool mesh_io_tls_silent(const struct mesh_io *io)
{
    return io->tls && !io->tls->any_input;
}

size_t mesh_io_queue_size(const struct mesh_io *io)
{
    if (io->ops)
        return io->ops->queue_size(io);
    return uv_stream_get_write_queue_size((const uv_stream_t *)&io->tcp);
}

/* ---- sealed records out ---- */

#define SEAL_PIECE 16384 /* a queued write larger than this is sealed a piece at a time */

static void on_tls_written(uv_write_t *req, int status)
{
    struct tls_wreq *w = container_of(req, struct tls_wreq, req);
    if (w->cb)
        w->cb(w->user, status);
    mesh_free(w);
}

static int queue_records(struct mesh_io *io, const char *data, size_t len, uv_write_t *user,
                         uv_write_cb cb)
{
    struct tls_wreq *w = mesh_malloc(sizeof(*w) + len);
    if (!w)
        return UV_ENOMEM;
    memcpy(w->data, data, len);
    w->user = user;
    w->cb = cb;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int r = uv_write(&w->req, mesh_io_stream(io), &b, 1, on_tls_written);
    if (r < 0)
        mesh_free(w);
    return r;
}

/*
 * Sends what the session has sealed: straight to the socket when nothing is queued ahead,
 * the rest queued. With `stash`, what the socket does not take is kept for the next
 * mesh_io_write instead. Returns 1 when everything went out at once, 0 when some is
 * queued or stashed, or a libuv error.
 */
static int flush(struct mesh_io *io, bool stash)
{
    struct mesh_tls_state *t = io->tls;
    char *data;
    long len = BIO_get_mem_data(t->wbio, &data);
    if (len <= 0)
        return 1;
    size_t done = 0;
    if (mesh_io_queue_size(io) == 0 && !t->stash) {
        uv_buf_t b = uv_buf_init(data, (unsigned)len);
        int n = uv_try_write(mesh_io_stream(io), &b, 1);
        if (n < 0 && n != UV_EAGAIN) {
            (void)BIO_reset(t->wbio);
            return n;
        }
        done = n > 0 ? (size_t)n : 0;
    }
    int r = done == (size_t)len ? 1 : 0;
    if (!r && stash) {
        t->stash = mesh_malloc((size_t)len - done);
        if (!t->stash)
            r = UV_ENOMEM;
        else {
            memcpy(t->stash, data + done, (size_t)len - done);
            t->stash_len = (size_t)len - done;
        }
    } else if (!r) {
        int q = queue_records(io, data + done, (size_t)len - done, NULL, NULL);
        if (q < 0)
            r = q;
    }
    (void)BIO_reset(t->wbio);
    return r;
}

/* Seals bufs into the write BIO. Returns 0 or a libuv error. */
static int seal(struct mesh_io *io, const uv_buf_t bufs[], unsigned n)
{
    struct mesh_tls_state *t = io->tls;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (n > 1 && total <= sizeof(io->iol->seal)) {
        /* One record for a head and a small body. */
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(io->iol->seal + off, bufs[i].base, bufs[i].len);
            off += bufs[i].len;
        }
        size_t w;
        return SSL_write_ex(t->ssl, io->iol->seal, total, &w) == 1 ? 0 : UV_EPROTO;
    }
    for (unsigned i = 0; i < n; i++) {
        size_t w;
        if (bufs[i].len && SSL_write_ex(t->ssl, bufs[i].base, bufs[i].len, &w) != 1)
            return UV_EPROTO;
    }
    return 0;
}

/*
 * Seals a large write (an answer of megabytes) SEAL_PIECE at a time, queueing the records
 * of each piece: the write BIO keeps the largest size it ever held for the connection's life,
 * and clears all of it on every reset, so one large answer would cost its size per
 * connection from then on. What is left in the BIO is queued by the caller, last. Returns 0
 * or a libuv error.
 */
static int seal_pieces(struct mesh_io *io, const uv_buf_t bufs[], unsigned n)
{
    struct mesh_tls_state *t = io->tls;
    for (unsigned i = 0; i < n; i++) {
        for (size_t off = 0; off < bufs[i].len;) {
            size_t piece = bufs[i].len - off < SEAL_PIECE ? bufs[i].len - off : SEAL_PIECE, w;
            if (SSL_write_ex(t->ssl, bufs[i].base + off, piece, &w) != 1)
                return UV_EPROTO;
            off += piece;
            char *data;
            long len = BIO_get_mem_data(t->wbio, &data);
            if (len >= (long)SEAL_PIECE) {
                int r = queue_records(io, data, (size_t)len, NULL, NULL);
                (void)BIO_reset(t->wbio);
                if (r < 0)
                    return r;
            }
        }
    }
    return 0;
}

int mesh_io_try_write(struct mesh_io *io, const uv_buf_t bufs[], unsigned n)
{
    struct mesh_tls_state *t = io->tls;
    if (io->ops)
        return io->ops->try_write(io, bufs, n);
    if (!t)
        return uv_try_write(mesh_io_stream(io), bufs, n);
    if (t->hs_cb || mesh_io_queue_size(io) > 0 || t->stash)
        return UV_EAGAIN;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int r = seal(io, bufs, n);
    if (r < 0)
        return r;
    r = flush(io, true);
    if (r < 0)
        return r;
    return r == 1 ? (int)total : 0;
}

int mesh_io_write(uv_write_t *req, struct mesh_io *io, const uv_buf_t bufs[], unsigned n,
                  uv_write_cb cb)
{
    struct mesh_tls_state *t = io->tls;
    if (io->ops)
        return io->ops->write(req, io, bufs, n, cb);
    if (!t)
        return uv_write(req, mesh_io_stream(io), bufs, n, cb);
    if (t->stash) {
        /* The bytes try_write sealed and could not send. */
        int r = queue_records(io, t->stash, t->stash_len, req, cb);
        mesh_free(t->stash);
        t->stash = NULL;
        t->stash_len = 0;
        return r;
    }
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int r = total > SEAL_PIECE ? seal_pieces(io, bufs, n) : seal(io, bufs, n);
    if (r < 0)
        return r;
    char *data;
    long len = BIO_get_mem_data(t->wbio, &data);
    r = queue_records(io, data, len > 0 ? (size_t)len : 0, req, cb);
    (void)BIO_reset(t->wbio);
    return r;
}

int mesh_io_shutdown(uv_shutdown_t *req, struct mesh_io *io, uv_shutdown_cb cb)
{
    struct mesh_tls_state *t = io->tls;
    if (io->ops)
        return io->ops->shutdown(req, io, cb);
    if (t && !t->hs_cb) {
        (void)SSL_shutdown(t->ssl); /* close_notify; the peer's answer is not awaited */
        if (t->stash) {
            int r = queue_records(io, t->stash, t->stash_len, NULL, NULL);
            mesh_free(t->stash);
            t->stash = NULL;
            if (r < 0)
                return r;
        }
        int r = flush(io, false);
        if (r < 0)
            return r;
    }
    return uv_shutdown(req, mesh_io_stream(io), cb);
}

/* ---- records in ---- */

static void on_cipher_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mesh_io *io = io_of(h);
    (void)suggested;
    *buf = uv_buf_init(io->iol->cipher, sizeof(io->iol->cipher));
}

static void set_error(struct mesh_tls_state *t, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK)
        snprintf(t->error, sizeof(t->error), "%s: certificate: %s", what,
                 X509_verify_cert_error_string(vr));
    else if (e)
        snprintf(t->error, sizeof(t->error), "%s: %s", what, ERR_reason_error_string(e));
    else
        snprintf(t->error, sizeof(t->error), "%s", what);
    ERR_clear_error();
}

static void handshake_step(struct mesh_io *io)
{
    struct mesh_tls_state *t = io->tls;
    int r = SSL_do_handshake(t->ssl);
    int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    int fr = flush(io, false); /* our flight, or the alert that ends it */
    mesh_io_handshake_cb cb = t->hs_cb;
    if (r == 1 && fr >= 0) {
        t->hs_cb = NULL;
        t->reading = false;
        uv_read_stop(mesh_io_stream(io));
        cb(io, 0);
        return;
    }
    if (fr >= 0 && err == SSL_ERROR_WANT_READ && !t->raw_eof)
        return;
    if (fr < 0)
        snprintf(t->error, sizeof(t->error), "handshake: %s", uv_strerror(fr));
    else if (err == SSL_ERROR_WANT_READ)
        snprintf(t->error, sizeof(t->error), "handshake: the peer closed the connection");
    else
        set_error(t, "handshake");
    t->hs_cb = NULL;
    uv_read_stop(mesh_io_stream(io));
    cb(io, UV_EPROTO);
}

/* Hands plaintext to the owner while it reads; EOF once the session and the socket end. */
static void deliver(struct mesh_io *io)
{
    struct mesh_tls_state *t = io->tls;
    uv_stream_t *s = mesh_io_stream(io);
    while (t->reading && !io->closing && !t->eof_sent) {
        uv_buf_t b = uv_buf_init(NULL, 0);
        t->alloc_cb((uv_handle_t *)s, 65536, &b);
        if (!b.base || !b.len) {
            t->read_cb(s, UV_ENOBUFS, &b);
            return;
        }
        size_t got = 0;
        int r = SSL_read_ex(t->ssl, b.base, b.len, &got);
        if (r == 1) {
            t->read_cb(s, (ssize_t)got, &b);
            continue;
        }
        int err = SSL_get_error(t->ssl, r);
        if (err == SSL_ERROR_WANT_READ && !t->raw_eof) {
            t->read_cb(s, 0, &b); /* returns the buffer */
            break;
        }
        t->eof_sent = true;
        if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_WANT_READ)
            t->read_cb(s, t->raw_err ? t->raw_err : UV_EOF, &b);
        else {
            set_error(t, "read");
            t->read_cb(s, UV_EPROTO, &b);
        }
        return;
    }
    if (!io->closing && BIO_ctrl_pending(t->wbio) > 0)
        (void)flush(io, false); /* a key update's answer, session tickets */
}

static void on_cipher_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mesh_io *io = io_of((uv_handle_t *)s);
    struct mesh_tls_state *t = io->tls;
    if (nread > 0) {
        t->any_input = true;
        if (BIO_write(t->rbio, buf->base, (int)nread) != (int)nread) {
            t->raw_eof = true;
            t->raw_err = UV_ENOMEM;
        }
    } else if (nread < 0) {
        t->raw_eof = true;
        t->raw_err = nread == UV_EOF ? 0 : (int)nread;
        uv_read_stop(s);
    } else {
        return;
    }
    if (t->hs_cb)
        handshake_step(io);
    else
        deliver(io);
}

int mesh_io_read_start(struct mesh_io *io, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
    struct mesh_tls_state *t = io->tls;
    if (io->ops)
        return io->ops->read_start(io, alloc_cb, read_cb);
    if (!t)
        return uv_read_start(mesh_io_stream(io), alloc_cb, read_cb);
    t->alloc_cb = alloc_cb;
    t->read_cb = read_cb;
    t->reading = true;
    if (!t->raw_eof) {
        int r = uv_read_start(mesh_io_stream(io), on_cipher_alloc, on_cipher_read);
        if (r < 0)
            return r;
    }
    /* Records may wait in the session or, unread yet, in the read BIO (the first request
     * often comes with the handshake's last flight). */
    if (SSL_has_pending(t->ssl) || BIO_ctrl_pending(t->rbio) > 0 || t->raw_eof)
        enqueue_ready(io);
    return 0;
}

int mesh_io_read_stop(struct mesh_io *io)
{
    if (io->ops)
        return io->ops->read_stop(io);
    if (io->tls)
        io->tls->reading = false;
    return uv_read_stop(mesh_io_stream(io));
}

int mesh_io_tls_start(struct mesh_io *io, SSL *ssl, mesh_io_handshake_cb cb)
{
    struct mesh_tls_state *t = mesh_calloc(1, sizeof(*t));
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (!t || !rb || !wb) {
        mesh_free(t);
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        return UV_ENOMEM;
    }
    BIO_set_mem_eof_return(rb, -1); /* empty: "try again", not EOF */
    BIO_set_mem_eof_return(wb, -1);
    SSL_set_bio(ssl, rb, wb);
    t->ssl = ssl;
    t->rbio = rb;
    t->wbio = wb;
    t->hs_cb = cb;
    io->tls = t;
    int r = uv_read_start(mesh_io_stream(io), on_cipher_alloc, on_cipher_read);
    if (r < 0)
        return r;
    if (!SSL_is_server(ssl))
        handshake_step(io); /* the ClientHello */
    return 0;
}
