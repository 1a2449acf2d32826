/*
 * A small HTTP/1.1 server on a libuv loop, for the agent's admin API and the controller.
 * Requests are parsed by mesh_http_parse_request() (strict; errors answered 400/408/413/
 * 414/417/431/501/505 and the connection closed); bodies with Content-Length or chunked
 * coding are buffered up to max_body; keep-alive and pipelining work; 100-continue is sent
 * when a body is expected.
 *
 * Every connection has deadlines: header_timeout for a request's head and body (408),
 * idle_timeout between requests and for a response to be taken by the client, and
 * total_timeout for its whole life (then it closes after the response in progress; a
 * request still unanswered is aborted and answered 503). Connection slots are limited in
 * all (max_connections) and per client (max_connections_per_client, a client being a
 * source address, see common/http_clients.h). When a new connection would exceed either,
 * the oldest connection of that client, or of all, that is only waiting for a request is
 * closed to make room; only when none waits is the new one refused (503 on plain HTTP).
 * So idle or slow clients cannot lock others out, and a busy client only shares its slots.
 *
 * The handler runs on the loop for each complete request and must answer it exactly once
 * with mesh_http_respond(), at once or later (long polls). A handler that answers later
 * sets an abort callback with mesh_http_exchange_on_abort(): if the client goes away first,
 * or the connection's total deadline passes, it runs instead, and the exchange must not be
 * used after it returns.
 */
#ifndef MESH_HTTP_SERVER_H
#define MESH_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "common/addr.h"
#include "common/http_parse.h"

struct mesh_http_server;
struct mesh_http_exchange;

typedef void (*mesh_http_handler_cb)(struct mesh_http_exchange *ex, void *data);
typedef void (*mesh_http_done_cb)(void *data);
/* An exchange answered with `status`, `elapsed_ns` after its request was complete (for
 * latency metrics); the request is still readable. `data` is the handler's. */
typedef void (*mesh_http_answered_cb)(const struct mesh_http_exchange *ex, int status,
                                      uint64_t elapsed_ns, void *data);

struct mesh_http_server_options {
    size_t max_connections;            /* in all (see above) */
    size_t max_connections_per_client; /* per source address; 0: no limit of its own */
    size_t max_body;                   /* larger bodies get 413 */
    uint64_t header_timeout_ms;        /* from the first byte of a request to its last (408) */
    uint64_t idle_timeout_ms;          /* with no request, or with a response not taken: closed */
    uint64_t total_timeout_ms;         /* a connection's whole life; 0: none */
    struct mesh_http_limits limits;
    SSL_CTX *tls; /* HTTPS on TCP listeners when set (borrowed; must outlive the server) */
    /* Called on the loop for every request answered by the handler, or cut at the total
     * deadline (503); not for requests the parser refused. NULL: none. */
    mesh_http_answered_cb on_answered;
};

/* A response header; arrays of them end with {NULL, NULL}. */
struct mesh_http_field {
    const char *name;
    const char *value;
};

struct mesh_http_server_stats {
    uint64_t connections_accepted;
    uint64_t connections_refused; /* over the limits with no connection to make room */
    uint64_t connections_evicted; /* closed while waiting, to make room for a new one */
    uint64_t requests_cut;        /* aborted and answered 503 at the total deadline */
    uint64_t requests;
    uint64_t bad_requests; /* refused by the parser or limits */
    size_t connections_active;
};

/* Fills `opts` with defaults: 128 connections, 64 per client, 1 MiB bodies, 10 s header,
 * 60 s idle, 10 min total. */
void mesh_http_server_options_default(struct mesh_http_server_options *opts);

/*
 * Creates a server on `loop`; `handler` is called with `data` on the loop. Returns 0 or
 * -ENOMEM. The caller owns the server and ends it with mesh_http_server_close().
 */
int mesh_http_server_new(uv_loop_t *loop, const struct mesh_http_server_options *opts,
                         mesh_http_handler_cb handler, void *data, struct mesh_http_server **ret);

/*
 * Listens on a TCP or unix socket address (a stale unix socket file is replaced; the new
 * one gets mode 0660). May be called once. Returns 0 or a negative errno (libuv's).
 */
int mesh_http_server_listen(struct mesh_http_server *s, const struct mesh_addr *addr);

/* The address actually bound (the port chosen by the kernel when 0 was asked). */
int mesh_http_server_address(const struct mesh_http_server *s, struct mesh_addr *ret);

/*
 * Stops accepting, closes idle connections, lets exchanges in progress answer (with
 * "Connection: close"), then frees the server and calls done_cb(data) on the loop.
 * Exchanges still unanswered are aborted when `deadline_ms` passes (0: wait forever).
 */
void mesh_http_server_close(struct mesh_http_server *s, uint64_t deadline_ms,
                            mesh_http_done_cb done_cb, void *data);

/* During a close: aborts the exchanges still open at once instead of at the deadline. */
void mesh_http_server_abort(struct mesh_http_server *s);

void mesh_http_server_get_stats(const struct mesh_http_server *s,
                                struct mesh_http_server_stats *ret);

const struct mesh_http_request *mesh_http_exchange_request(const struct mesh_http_exchange *ex);
/* The request body (decoded from chunked if it was), NULL with length 0 when none. */
const char *mesh_http_exchange_body(const struct mesh_http_exchange *ex, size_t *ret_len);
/* The peer's address, formatted ("127.0.0.1:40312", "unix"). */
const char *mesh_http_exchange_peer(const struct mesh_http_exchange *ex);
/* The peer's address (AF_UNIX for a unix socket). */
const struct mesh_addr *mesh_http_exchange_peer_addr(const struct mesh_http_exchange *ex);
/* The client the peer counts as, for limits per source (see common/http_clients.h). */
const char *mesh_http_exchange_client(const struct mesh_http_exchange *ex);
/* Sets what runs if the connection dies before the response is written. */
void mesh_http_exchange_on_abort(struct mesh_http_exchange *ex, mesh_http_done_cb cb, void *data);
/* The exchange's loop. */
uv_loop_t *mesh_http_exchange_loop(const struct mesh_http_exchange *ex);

/*
 * Answers the exchange: status, optional Content-Type, optional extra headers, and a body
 * (copied). HEAD requests get the headers only. Returns 0, or a negative errno if the
 * response could not be queued (the connection is then closed). Either way the exchange
 * is finished and must not be used again.
 */
int mesh_http_respond(struct mesh_http_exchange *ex, int status, const char *content_type,
                      const struct mesh_http_field *extra, const void *body, size_t len);

/* Answers with doc (taken) as indented JSON and no caching; 500 when doc is NULL. */
void mesh_http_respond_json(struct mesh_http_exchange *ex, int status, json_t *doc);

/* The TLS session of an HTTPS exchange (its peer's certificate), or NULL for plain. */
SSL *mesh_http_exchange_ssl(const struct mesh_http_exchange *ex);

#endif
