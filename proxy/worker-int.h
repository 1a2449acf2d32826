/*
 * A data-plane worker: one thread, one libuv loop, its own SO_REUSEPORT listener sockets,
 * and the connections it accepted. The main loop talks to it only through its command
 * queue (a mutex held for a push or a pop, never on the data path) and uv_async.
 */
#ifndef MESH_WORKER_H
#define MESH_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "common/io.h"
#include "proxy/bufpool-int.h"
#include "proxy/proxy-int.h"

enum worker_cmd_type {
    WORKER_ADD_LISTENER,    /* adopt fd, listening on key */
    WORKER_REMOVE_LISTENER, /* close the listener for key */
    WORKER_SNAPSHOT,        /* use snap for new connections */
    WORKER_STOP,            /* close listeners; exit once connections are done */
    WORKER_ABORT,           /* close every connection now */
};

struct worker_cmd {
    struct worker_cmd *next;
    enum worker_cmd_type type;
    struct mesh_proxy_snapshot *snap; /* a reference, for WORKER_SNAPSHOT */
    char *key;
    int fd;
};

struct wlistener;
struct tcp_conn;
struct mesh_http_worker;
struct mesh_health_query;

struct mesh_worker {
    int index;
    struct mesh_proxy_shared *shared;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_mutex_t lock;
    struct worker_cmd *head, *tail; /* under lock */
    /* Worker thread only: */
    struct mesh_proxy_snapshot *snap;
    struct mesh_lb_state **lb; /* by destination of snap, made at its first pick */
    struct wlistener *listeners;
    struct tcp_conn *conns;
    struct mtls_handshake *handshakes;
    size_t n_conns; /* TCP and HTTP */
    struct mesh_http_worker *http;
    bool stopping;
    struct mesh_bufpool pool;
    struct mesh_io_loop iol;
    struct mesh_tls_sessions tls_sessions; /* client sessions to resume */
    uint64_t rng;
    int backlog;
    uint64_t last_refusal_log; /* loop ms; refusals are logged at most every 10 s */
    uint64_t refusals_unlogged;
    struct mesh_health_query *health_queries; /* health_serve.c */
    /* Read by the main loop. */
    atomic_int active;
    atomic_ullong accepted;
    atomic_ullong snap_version; /* of the snapshot new connections get */
    /* Signalled (from the worker thread) once the loop has ended and `finished` is set. */
    uv_async_t *exited;
    atomic_bool finished;
    bool joined; /* main loop */
};

/* Creates the worker's loop and queue (the thread starts in mesh_worker_run). */
int mesh_worker_init(struct mesh_worker *w, int index, struct mesh_proxy_shared *shared,
                     uv_async_t *exited, int backlog);
int mesh_worker_run(struct mesh_worker *w);
/* Queues a command (taking ownership); the worker sees it once woken. Main loop. */
void mesh_worker_post(struct mesh_worker *w, struct worker_cmd *cmd);
/* Wakes the worker to run what was posted: one wake for a batch of commands. */
void mesh_worker_wake(struct mesh_worker *w);
/* Worker thread: ends the loop once stopping and every connection is gone. */
void mesh_worker_maybe_exit(struct mesh_worker *w);
/* After the thread exited: frees what is left. */
void mesh_worker_done(struct mesh_worker *w);
/* The worker's balancer for d of `snap`, made at its first use; NULL when `snap` is not the
 * worker's current one (or out of memory): the caller then uses a one-off one. */
struct mesh_lb_state *mesh_worker_lb(struct mesh_worker *w, const struct mesh_proxy_snapshot *snap,
                                     const struct snap_dest *d);

/* tcp_proxy.c */
/* Proxies an accepted connection (taking io) to the destination of the listener at key. */
void mesh_tcp_adopt(struct mesh_worker *w, struct mesh_io *io, const char *key);
/* The same for a captured caller whose upstream mTLS presents `as`, its own identity in the
 * worker's snapshot (NULL: the listener's); pod_caller: the caller is a pod named by its
 * address (mesh_capture_pod_identity_total counts what it presents when mTLS starts). */
void mesh_tcp_adopt_as(struct mesh_worker *w, struct mesh_io *io, const char *key,
                       const struct mesh_tls_identity *as, bool pod_caller);
/* The same for a caller whose mTLS certificate said it is peer_id (its SPIFFE ID). */
void mesh_tcp_adopt_peer(struct mesh_worker *w, struct mesh_io *io, const char *key,
                         const char *peer_id);
/* Proxies a captured connection (taking io) straight to `to`, its original destination, in
 * plain TCP; the listener at key counts it. */
void mesh_tcp_adopt_direct(struct mesh_worker *w, struct mesh_io *io, const char *key,
                           const struct mesh_addr *to);
/* Logs a refused connection, at most one warning every 10 s per worker. */
void mesh_tcp_log_refusal(struct mesh_worker *w, const char *what, const char *where);
/* capture_accept.c */
/* A connection accepted on a capture listener l: to the mesh service or local workload its
 * original destination names, passed through, or refused (docs/capture.md). */
void mesh_capture_accept(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l);
/* mtls_accept.c */
/* Runs the mTLS handshake on an accepted connection, then hands it to the TCP or HTTP
 * proxy of the local service its SNI names, if its caller may call it. */
void mesh_mtls_accept(struct mesh_worker *w, struct mesh_io *io);
void mesh_mtls_close_all(struct mesh_worker *w);

/* A new snapshot: connections to endpoints it no longer has start draining. */
void mesh_tcp_snapshot_changed(struct mesh_worker *w);
void mesh_tcp_close_all(struct mesh_worker *w);

#endif
