/*
 * An HTTP(S) client on a libuv loop: libcurl's multi-socket interface driven by uv_poll and
 * uv_timer, as curl's docs/examples/multi-uv.c shows. No call blocks the loop; connections
 * are kept and reused across requests by the client's connection cache, and their number
 * can be capped.
 *
 * The caller owns each request struct. mesh_http_req_start() runs it; `done` runs on the
 * loop once it ended (never from inside start), after which the request may be started
 * again or freed. A request in flight may be cancelled (no `done` then), except from inside
 * its own on_data callback, which returns non-zero to end the transfer instead.
 *
 * Main loop only.
 */
#ifndef MESH_HTTP_CLIENT_H
#define MESH_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "common/buf.h"

struct mesh_http_client;
struct mesh_http_req;

struct mesh_http_client_options {
    long max_host_connections;  /* connections to one host at once; 0: no cap */
    long max_total_connections; /* 0: no cap */
};

/*
 * Whom to trust and who we are; files are re-read by path for every new connection. PEMs in
 * memory are copied, except the private key, which is read where it is (so that no copy of
 * it outlives the request uncleansed): it must stay until done or cancel, like the rest.
 * libcurl reuses a kept connection only for a request whose CA and client certificate equal
 * the ones it was made with (libcurl's Curl_ssl_config_matches compares them byte for byte).
 */
struct mesh_http_tls {
    const char *ca_file;   /* NULL: the system's bundle */
    const char *ca_pem;    /* in memory, instead of ca_file */
    const char *cert_file; /* client certificate, NULL: none */
    const char *key_file;
    const char *cert_pem; /* in memory, instead of cert_file and key_file */
    const char *key_pem;
    bool insecure; /* do not verify the server (an operator's explicit choice) */
    /*
     * The name to send (SNI) and verify the server's certificate against, when the URL's host
     * is not it (an IP address, say): the URL's host then only says where to connect, and the
     * Host header carries this name. NULL: the URL's host. A host name, no port.
     */
    const char *server_name;
};

/* A piece of the body of a 2xx answer; return 0 to go on, non-zero to end the transfer. */
typedef int (*mesh_http_data_cb)(struct mesh_http_req *req, const char *data, size_t len);
typedef void (*mesh_http_done_cb)(struct mesh_http_req *req);

struct mesh_http_req {
    /* In; borrowed until done (or cancel). */
    const char *method; /* NULL: GET, or POST when there is a body */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;           /* sent as is; NULL: none */
    size_t body_len;
    long timeout_ms;         /* whole transfer; 0: none */
    long connect_timeout_ms; /* 0: 5 s */
    const struct mesh_http_tls *tls;
    const char *unix_socket;   /* connect to this Unix socket path instead; NULL: the URL's */
    const char *protocols;     /* the schemes allowed, like "https"; NULL: "http,https" */
    bool fresh_connection;     /* a new connection, closed after: shared with no other request */
    size_t max_answer;         /* cap on `answer`; 0: 1 MiB. Past it the transfer fails */
    mesh_http_data_cb on_data; /* streaming: 2xx bodies go here instead of `answer` */
    mesh_http_done_cb done;
    void *data;
    /* Out; valid in done. */
    long status;      /* the HTTP status, 0 when no answer came (`result` says why) */
    long head_status; /* the status of the head received, even when the body then failed */
    int result;       /* 0, or -ETIMEDOUT, -ECONNREFUSED, -EMSGSIZE, -ECANCELED, -EPROTO (TLS),
                         -EIO */
    char error[256];  /* what went wrong, in words, when result < 0 */
    struct mesh_buf answer; /* the body (non-streamed answers) */
    struct mesh_buf head;   /* header lines of the final answer */
    /* Private. */
    struct mesh_http_client *client;
    void *easy;
    void *hlist;
    void *connect_to;
    struct mesh_http_req *next, *prev;
};

/* Returns 0 or -ENOMEM. */
int mesh_http_client_new(uv_loop_t *loop, const struct mesh_http_client_options *opts,
                         struct mesh_http_client **ret);
/*
 * Cancels every request in flight (no done callbacks), closes connections and handles;
 * `done(data)` runs on the loop once everything is closed, then the client is freed.
 */
void mesh_http_client_close(struct mesh_http_client *c, void (*done)(void *data), void *data);

/* Starts `req`. Returns 0, -EBUSY when it is in flight already, -ENOMEM or -EINVAL. */
int mesh_http_req_start(struct mesh_http_client *c, struct mesh_http_req *req);
/* Ends `req` without calling done; no-op when it is not in flight. */
void mesh_http_req_cancel(struct mesh_http_req *req);
bool mesh_http_req_active(const struct mesh_http_req *req);
/* Frees the answer buffers (cancels first). The struct itself stays the caller's. */
void mesh_http_req_done(struct mesh_http_req *req);

/*
 * The value of header `name` (compared case-insensitively) in the answer's head, trimmed;
 * NULL when absent. *ret_len gets its length; the pointer is valid until the next start.
 */
const char *mesh_http_req_header(const struct mesh_http_req *req, const char *name,
                                 size_t *ret_len);
/* Sockets being watched now (transfers in progress), for status. */
size_t mesh_http_client_sockets(const struct mesh_http_client *c);

/* Percent-encodes `s` for a URL path segment or query value into `out`. */
int mesh_http_escape(struct mesh_buf *out, const char *s);

#endif
