/*
 * A proxied socket, plain or TLS, behind one libuv-shaped interface.
 *
 * The data plane reads, writes, shuts down and closes every socket through these calls, so
 * the TCP and HTTP proxies do not care whether a side speaks TLS. A plain io is a uv_tcp_t
 * and each call is the libuv call. A TLS io runs OpenSSL over memory BIOs: ciphertext read
 * from the socket goes into the session and plaintext comes out to the owner's read
 * callback; plaintext written is sealed and the records go to the socket (at once when it
 * takes them, else through libuv's write queue, which backpressure watches as before).
 *
 * The owner keeps its pointer in tcp.data, as with a bare handle. An io is heap-allocated
 * so that a connection can be handed from the TLS acceptor to the proxy that serves it.
 */
#ifndef MESH_IO_H
#define MESH_IO_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>
#include <uv.h>

struct mesh_io;

/* Per loop: TLS streams with plaintext waiting for their owner to read again. */
struct mesh_io_loop {
    uv_idle_t idle;
    struct mesh_io *ready;
    char cipher[65536]; /* ciphertext read from a socket, fed at once into its session */
    char seal[16384];   /* small writes coalesced into one record */
};

typedef void (*mesh_io_handshake_cb)(struct mesh_io *io, int status);

struct mesh_tls_state;

/*
 * A virtual io carries no socket: each call goes to its ops, and its data lives in
 * ops_data. An HTTP/2 stream served as a connection of its own is one (proxy/h2_stream.c).
 * The calls have libuv's contract: write and shutdown callbacks never run inside the call
 * that queued them, and once close runs, the ops must call what is still queued with
 * UV_ECANCELED before returning.
 */
struct mesh_io_ops {
    int (*read_start)(struct mesh_io *io, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
    int (*read_stop)(struct mesh_io *io);
    int (*try_write)(struct mesh_io *io, const uv_buf_t bufs[], unsigned n);
    int (*write)(uv_write_t *req, struct mesh_io *io, const uv_buf_t bufs[], unsigned n,
                 uv_write_cb cb);
    int (*shutdown)(uv_shutdown_t *req, struct mesh_io *io, uv_shutdown_cb cb);
    size_t (*queue_size)(const struct mesh_io *io);
    void (*close)(struct mesh_io *io); /* mesh_io_close began: the owner is gone */
};

struct mesh_io {
    union { /* first: the io from its handle */
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    };
    struct mesh_io_loop *iol;
    struct mesh_tls_state *tls;    /* NULL: plain */
    const struct mesh_io_ops *ops; /* a virtual io's; NULL: a socket */
    void *ops_data;
    uv_close_cb close_cb;
    struct mesh_io *next_ready;
    bool queued;
    bool closing;
};

void mesh_io_loop_init(struct mesh_io_loop *l, uv_loop_t *loop);
/* Closes the loop's handle (before the loop ends). */
void mesh_io_loop_close(struct mesh_io_loop *l);

/* A new plain io on the loop (uv_tcp_init done), or NULL when memory is short. */
struct mesh_io *mesh_io_new(struct mesh_io_loop *iol, uv_loop_t *loop);
/* The same on a unix socket (uv_pipe_init done); never TLS. */
struct mesh_io *mesh_io_new_pipe(struct mesh_io_loop *iol, uv_loop_t *loop);
/* A virtual io (no socket: an unopened TCP handle stands for it) calling ops with data in
 * ops_data, or NULL when memory is short. */
struct mesh_io *mesh_io_new_virtual(struct mesh_io_loop *iol, uv_loop_t *loop,
                                    const struct mesh_io_ops *ops, void *data);
/* Closes the socket: cb((uv_handle_t *)&io->tcp) runs last, then the io is freed. */
void mesh_io_close(struct mesh_io *io, uv_close_cb cb);

static inline uv_stream_t *mesh_io_stream(struct mesh_io *io)
{
    return (uv_stream_t *)&io->tcp;
}

int mesh_io_read_start(struct mesh_io *io, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
int mesh_io_read_stop(struct mesh_io *io);
/*
 * Writes what the socket takes now, as uv_try_write. A TLS io either takes every byte (the
 * records went out) or none, then returns 0 and expects mesh_io_write with the same bytes.
 */
int mesh_io_try_write(struct mesh_io *io, const uv_buf_t bufs[], unsigned n);
/* Queues a write, as uv_write; cb(req, status) once it is out (or cancelled by a close). */
int mesh_io_write(uv_write_t *req, struct mesh_io *io, const uv_buf_t bufs[], unsigned n,
                  uv_write_cb cb);
/* Ends this side's writes (TLS: close_notify, then FIN), as uv_shutdown. */
int mesh_io_shutdown(uv_shutdown_t *req, struct mesh_io *io, uv_shutdown_cb cb);
/* Bytes queued for the socket. */
size_t mesh_io_queue_size(const struct mesh_io *io);

/*
 * Starts TLS on a connected io, taking ssl (its accept or connect state already set):
 * cb(io, 0) once the handshake is done, or cb(io, error) when it failed (an alert is sent
 * when OpenSSL made one); reads stay stopped until the owner starts them.
 */
int mesh_io_tls_start(struct mesh_io *io, SSL *ssl, mesh_io_handshake_cb cb);
/* The session, or NULL for a plain io. */
SSL *mesh_io_ssl(const struct mesh_io *io);
/* Why the handshake failed, for logs ("" when it did not). */
const char *mesh_io_tls_error(const struct mesh_io *io);
/* Whether the peer sent nothing at all (a port probe rather than a TLS client). */
bool mesh_io_tls_silent(const struct mesh_io *io);

#endif
