/*
 * The HTTP server's insides, shared by its files (common/http_server.c: reading, writing
 * and the connections' lives; common/http_server_admit.c: who gets a connection slot).
 * Nothing outside them includes this.
 */
#ifndef MESH_HTTP_SERVER_INT_H
#define MESH_HTTP_SERVER_INT_H

#include <stdbool.h>

#include "common/buf.h"
#include "common/http_clients.h"
#include "common/http_server.h"
#include "common/io.h"

/*
 * Connection states:
 *   HEAD      waiting for (the rest of) a request head; idle when nothing is buffered
 *   BODY      head done, waiting for the body
 *   HANDLING  the handler owns the exchange; reading only notices a dead peer
 *   WRITING   the response is queued
 *   CLOSING   handles are closing; freed in the last close callback
 */
enum mesh_http_conn_state {
    MESH_HTTP_CONN_HEAD,
    MESH_HTTP_CONN_BODY,
    MESH_HTTP_CONN_HANDLING,
    MESH_HTTP_CONN_WRITING,
    MESH_HTTP_CONN_CLOSING
};

union mesh_http_stream {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};

struct mesh_http_exchange {
    struct mesh_http_conn *conn;
    struct mesh_http_request req;
    const char *body;
    size_t body_len;
    mesh_http_done_cb abort_cb;
    void *abort_data;
    uint64_t start_ns; /* uv_hrtime() when the request was complete */
};

struct mesh_http_conn {
    struct mesh_http_server *srv;
    struct mesh_http_conn *prev, *next; /* oldest first */
    struct mesh_io *io;
    uv_timer_t timer; /* header, idle or write deadline */
    uv_timer_t life;  /* the total deadline */
    int open_handles;
    enum mesh_http_conn_state state;
    bool reading;
    bool close_after; /* close once the current response is written */
    bool timer_for_head;
    struct mesh_buf in;
    size_t head_len;
    size_t raw_end; /* end of this request's bytes (head and raw body) in `in` */
    size_t body_len;
    struct mesh_http_chunked chunked;
    bool chunked_body;
    struct mesh_http_exchange ex;
    struct mesh_http_header *headers;
    struct mesh_http_client *client; /* NULL once closing */
    uint64_t waiting_since;          /* loop time it began waiting for a request */
    struct mesh_addr peer_addr;
    char peer[MESH_ADDR_STRLEN];
};

struct mesh_http_server {
    uv_loop_t *loop;
    struct mesh_http_server_options opts;
    mesh_http_handler_cb handler;
    void *data;
    union mesh_http_stream listener;
    bool listening;
    bool closing;
    uv_timer_t deadline;
    int open_handles;
    struct mesh_http_conn *conns, *conns_tail; /* oldest first */
    size_t conns_open;                         /* not closing */
    struct mesh_http_clients clients;
    struct mesh_http_server_stats stats;
    struct mesh_io_loop iol; /* connections' sockets, plain or TLS */
    mesh_http_done_cb done_cb;
    void *done_data;
};

/* Closes a connection (idempotent); it is freed in its last close callback. */
void mesh_http__conn_close(struct mesh_http_conn *c);

/*
 * Admits a connection just accepted (linked and counted): notes its peer and client, and
 * makes room under the limits, closing the oldest connection that only waits for a
 * request, of its client first when that client is at its own limit. Returns true, or false
 * when the connection was refused (closed; plain HTTP gets a 503 first).
 */
bool mesh_http__admit(struct mesh_http_server *s, struct mesh_http_conn *c, bool is_unix);

#endif
