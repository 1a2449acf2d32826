/*
 * The HTTP/1.1 data plane, inside a worker: downstream connections (http_proxy.c; reading
 * them in http_read.c, forwarding their requests in http_forward.c), the requests they carry
 * and how those are routed and rewritten (http_request.c), and the upstream connections with
 * their keep-alive pools (http_upstream.c).
 *
 * One request at a time per downstream connection: pipelined requests wait in the input
 * buffer until the response before them is done. Bodies stream in both directions and are
 * never buffered whole; a request body is kept (up to MESH_HTTP_REPLAY_MAX) only so that a
 * retry can send it again.
 */
#ifndef MESH_HTTP_PROXY_H
#define MESH_HTTP_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "common/http_parse.h"
#include "proxy/worker-int.h"

#define MESH_HTTP_REPLAY_MAX (64 * 1024) /* request body kept for retries */
#define MESH_HTTP_MAX_TRIES 11           /* the first try and 10 retries */

/* Response flags, as Envoy names them, for access logs and local responses. */
#define RF_NO_ROUTE 0x001u         /* NR: no service for the Host */
#define RF_NO_HEALTHY 0x002u       /* UH: no endpoint can take it */
#define RF_CONNECT_FAILURE 0x004u  /* UF */
#define RF_OVERFLOW 0x008u         /* UO: a circuit breaker refused it */
#define RF_UPSTREAM_TIMEOUT 0x010u /* UT */
#define RF_RETRIES_EXCEEDED 0x020u /* URX */
#define RF_FAULT_ABORT 0x040u      /* FI */
#define RF_FAULT_DELAY 0x080u      /* DI */
#define RF_RATE_LIMITED 0x100u     /* RL */
#define RF_UPSTREAM_RESET 0x200u   /* UC: the upstream closed or reset */
#define RF_DOWNSTREAM_RESET 0x400u /* DC */
#define RF_PROTOCOL_ERROR 0x800u   /* UPE: the upstream sent a bad response */
#define RF_DENIED 0x1000u          /* RBAC: authorization denied it */
#define RF_BAD_REQUEST 0x2000u     /* DPE: the client sent a bad request */

/* Writes "UF,URX" for flags into out; "-" when none. */
void mesh_http_flags_format(unsigned flags, char *out, size_t size);

enum body_kind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

/* Where a message body ends: by length, by the chunked coding, or at the close. */
struct body_framing {
    enum body_kind kind;
    uint64_t left; /* BODY_LENGTH */
    struct mesh_http_chunked chunked;
    bool done;
};

/* How much of data[0..len) belongs to the body; sets f->done at its end. <0: bad chunking. */
ssize_t mesh_body_feed(struct body_framing *f, char *data, size_t len, const char **error);

struct upconn;
struct http_conn;

enum req_phase {
    REQ_NONE,       /* between requests */
    REQ_DELAYED,    /* a fault delay runs */
    REQ_BACKOFF,    /* waiting to retry */
    REQ_CONNECTING, /* an upstream connection is coming */
    REQ_SENT,       /* the head went out; waiting for the response head */
    REQ_STREAMING,  /* the response head went to the client; its body follows */
    REQ_LOCAL,      /* a response of our own is being written */
    REQ_TUNNEL,     /* after 101 Switching Protocols: bytes both ways */
};

struct http_req {
    enum req_phase phase;
    /* What was asked: method, authority, path (NUL-separated copies), for logs and rules. */
    struct mesh_buf meta;
    size_t method_len, authority_off, path_off;
    int version;
    bool keep_alive; /* the client may send another request after this one */
    bool upgrade;
    bool idempotent;
    bool expect_continue;
    bool head_only; /* HEAD: no response body */
    struct body_framing body;
    struct mesh_buf replay; /* the body as sent so far, for a retry */
    bool replayable;
    /* Where it goes. */
    struct snap_vhost *vhost;
    struct snap_rule *rule; /* NULL: the default rule */
    const struct mesh_route_rule *rr;
    struct snap_dest *dest;
    struct mesh_buf head_out; /* the request head for the upstream */
    /* Tries. */
    int tries;
    uint32_t tried[MESH_HTTP_MAX_TRIES];
    size_t n_tried;
    struct upconn *up;
    uint64_t try_deadline; /* loop ms; 0: none */
    uint64_t deadline;     /* the route's timeout, loop ms; 0: none */
    uint64_t wake_at;      /* a delay or a backoff ends */
    bool counted_active, counted_pending, counted_retry;
    bool head_sent;     /* the head reached the upstream of the current try */
    bool body_sent_all; /* every body byte reached the upstream of the current try */

    /* The current try (http_try.h): its endpoint, counted in flight there, when it began
     * (loop ms), and whether its per-try timeout is the destination's default. */
    struct mesh_ep_state *try_ep;
    uint64_t try_start;
    bool try_soft;
    /* The response. */
    int status;
    struct body_framing res_body;
    bool res_chunked_to_raw; /* an HTTP/1.0 client: chunks decoded, the close ends the body */
    bool res_keep_alive;     /* the upstream connection may be reused */
    unsigned flags;          /* RF_* */
    char upstream_host[MESH_ADDR_STRLEN];
    char request_id[40];
    char trace_id[33];
    /* Tracing (trace_record.c): the traceparent the upstream gets (this hop's span id in
     * it), the caller's span id ("" for a new trace), whether the span is recorded, and the
     * User-Agent, copied only then. */
    char traceparent[56];
    char parent_id[17];
    bool sampled;
    char user_agent[96];
    uint64_t start_us;
    uint64_t bytes_in, bytes_out;
};

#define PAUSE_INPUT_FULL 0x1u /* the input buffer is full (pipelining) */
#define PAUSE_WAIT_HEAD 0x2u  /* a body waits for the upstream connection */
#define PAUSE_UPSTREAM 0x4u   /* the upstream's write queue is over the high-water mark */
#define PAUSE_H2_OUT 0x8u     /* HTTP/2: our frames wait in the write queue (h2_session.c) */

struct mesh_h2;

struct http_conn {
    struct http_conn *prev, *next;
    struct mesh_worker *w;
    struct mesh_proxy_snapshot *snap; /* a reference */
    const struct snap_listener *listener;
    struct mesh_io *io;
    uv_timer_t timer;
    int open_handles;
    bool closing;
    bool close_after;       /* close once the current response is out */
    unsigned paused;        /* PAUSE_*: reading stops while any is set */
    bool eof;               /* the client sent its FIN */
    bool shutting;          /* our FIN is on its way; what the client still sends is dropped */
    bool in_feed;           /* feed() runs: a finished request leaves the next to its loop */
    bool pending_input;     /* a request finished inside feed(): run the input again */
    struct mesh_buf in;     /* bytes read and not used yet */
    uint64_t idle_deadline; /* between requests: keep-alive or header timeout, loop ms */
    struct http_req req;
    unsigned requests;  /* requests begun on it: the HTTP/2 preface must come first */
    struct mesh_h2 *h2; /* it speaks HTTP/2 (h2_session.c): its streams carry the requests */
    bool stream;        /* an HTTP/2 stream served as a connection (io virtual, not counted) */
    uv_shutdown_t shutdown;
    char *peer_identity; /* the caller's SPIFFE ID (mTLS); NULL: a plain caller */
    /* Who its upstream mTLS presents (in snap's material): the listener's identity, or a
     * captured pod's own (as_caller: peer_identity's, found again in each new snapshot). */
    const struct mesh_tls_identity *tls_as;
    bool as_caller;
    char *xfcc;       /* mTLS: the X-Forwarded-Client-Cert value its requests carry */
    char *istio_peer; /* inbound: the caller's source_* labels, made at its first request */
    /* The series of its last request and what chose it: the next request with the same
     * snapshot version, destination, status and flags takes it without a lookup. */
    struct {
        struct mesh_istio_series *series;
        uint64_t version;
        const struct snap_dest *dest;
        int status;
        unsigned flags;
    } istio_last;
};

/* An upstream connection: connecting, carrying a request, or idle in its pool. */
enum up_state { UP_CONNECTING, UP_BUSY, UP_IDLE, UP_CLOSING };

struct upconn {
    struct upconn *prev, *next; /* in the idle list of its pool entry */
    struct mesh_worker *w;
    struct mesh_io *io;
    uv_connect_t connect;
    char *as_id;   /* mTLS: the SPIFFE ID it presented (pooled per caller); NULL: plain */
    char *peer_id; /* mTLS: the ID the peer was checked against (pooled per it too) */
    const struct snap_dest *tls_dest; /* while its handshake runs: SNI and expected peer */
    enum up_state state;
    struct mesh_ep_state *ep_state; /* a reference: the pool key */
    int ep;                         /* index in the request's destination */
    struct http_conn *c;            /* while busy */
    struct mesh_buf in;             /* a response head in pieces */
    uint64_t idle_since;
    uint64_t idle_timeout_ms;
    bool reused;
    bool got_bytes; /* any response byte on this try */
    bool paused;
    bool shut;
    uv_shutdown_t shutdown;
};

/* Per-worker HTTP state. */
struct mesh_http_worker {
    struct http_conn *conns;
    struct pool_table *pools;
    uv_timer_t sweep;
    bool sweep_closing;
    struct mesh_http_header *headers; /* parse scratch, limits.max_headers entries */
    struct mesh_route_rule default_rule;
    uint64_t request_seq;
};

int mesh_http_worker_init(struct mesh_worker *w);
/* Closes the pool's idle connections and its timer (the loop may then end). */
void mesh_http_worker_close(struct mesh_worker *w);
void mesh_http_worker_done(struct mesh_worker *w);
/* Serves an accepted connection (taking io) on listener l; peer_id: the caller's SPIFFE ID
 * when it came over mTLS (XFCC then names its certificate), or a captured pod's by its
 * address (no XFCC: no certificate), else NULL. */
void mesh_http_adopt(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l,
                     const char *peer_id);
/* The same; as_caller: peer_id is a captured pod's SPIFFE ID, and upstream mTLS presents
 * that identity whenever the snapshot of the moment holds its certificate (chosen again at
 * each new snapshot), else the listener's. */
void mesh_http_adopt_as(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l,
                        const char *peer_id, bool as_caller);
/* xfcc.c: the X-Forwarded-Client-Cert value for a connection whose handshake verified the
 * caller's certificate (peer_id, its SPIFFE ID): malloc'd, or NULL (out of memory, no
 * certificate). */
char *mesh_http_proxy__xfcc(SSL *ssl, const char *peer_id);
void mesh_http_close_all(struct mesh_worker *w);
/* Stopping: idle client connections close now, busy ones after their response. */
void mesh_http_stop(struct mesh_worker *w);

/* ---- http_request.c: routing and heads ---- */

/* What routing decided when the request is answered here, or held first. */
struct mesh_http_decision {
    int status; /* 0: proxy it */
    const char *body;
    const char *content_type;
    struct mesh_buf headers; /* extra response headers, each with its CRLF */
    char headers_storage[2048];
    uint64_t delay_ms; /* a fault delay before proxying */
};

/*
 * Routes a parsed request: vhost, rule, action, faults. Returns 0 to proxy it (req->dest
 * set, req->head_out built), or the status to answer with (d says how); req->flags tell why.
 */
int mesh_http_route(struct http_conn *c, const struct mesh_http_request *r,
                    struct mesh_http_decision *d);
/* Builds the response head for the client from the upstream's. */
int mesh_http_response_head(struct http_conn *c, const struct mesh_http_response *res,
                            struct mesh_buf *out);
/* Whether h is named by the Connection header conn (NULL: none), so hop-by-hop. */
bool mesh_http_in_connection_list(const struct mesh_http_header *conn,
                                  const struct mesh_http_header *h);
/* Writes a complete local response (head and body) into out. */
void mesh_http_local_response(struct http_conn *c, int status, const char *type, const char *body,
                              size_t body_len, const char *extra_headers, struct mesh_buf *out);

/* ---- http_upstream.c ---- */

/* An idle pooled connection to ep of req->dest, or NULL. */
/* An idle connection to the endpoint of st made as `as` (NULL: plain) to a peer checked to be
 * `peer`, or NULL. */
struct upconn *mesh_up_take_idle(struct mesh_worker *w, struct mesh_ep_state *st, const char *as,
                                 const char *peer);
/* A new connection; on_connected runs later. Returns NULL when it cannot start. */
struct upconn *mesh_up_connect(struct mesh_worker *w, struct http_conn *c, int ep,
                               const struct snap_endpoint *e);
/* Back to the pool when it may carry another request; closed otherwise. */
void mesh_up_release(struct upconn *u, bool reusable, const struct mesh_dest_policy *pol);
void mesh_up_close(struct upconn *u);
/* Backpressure: stop and resume reading the response while the client catches up. */
void mesh_up_pause(struct upconn *u);
void mesh_up_resume(struct upconn *u);
/* Sends a FIN (a tunnel's client is done sending). */
void mesh_up_shutdown(struct upconn *u);
int mesh_up_pools_init(struct mesh_worker *w);
void mesh_up_pools_close(struct mesh_worker *w);
void mesh_up_pools_done(struct mesh_worker *w);
size_t mesh_up_idle_count(const struct mesh_worker *w);

/* Events the upstream side reports to its request (http_forward.c). */
void mesh_http_on_up_connected(struct http_conn *c, struct upconn *u, int status);
void mesh_http_on_up_data(struct http_conn *c, struct upconn *u, char *data, size_t len,
                          struct mesh_pbuf *pb);
void mesh_http_on_up_error(struct http_conn *c, struct upconn *u, int err);
void mesh_http_on_up_drained(struct http_conn *c, struct upconn *u);

/* ---- one connection's path, across http_proxy.c, http_read.c and http_forward.c ---- */

static inline uint64_t mesh_http_proxy__now_ms(const struct http_conn *c)
{
    return uv_now(&c->w->loop);
}

static inline const struct mesh_http_options *mesh_http_proxy__opts(const struct http_conn *c)
{
    return &c->w->shared->http;
}

/* http_proxy.c: writes (backpressure pauses reading by PAUSE_* reasons), teardown, the end
 * of a request, local answers. */
void mesh_http_proxy__write_down(struct http_conn *c, uv_buf_t *bufs, unsigned n);
void mesh_http_proxy__write_up(struct http_conn *c, uv_buf_t *bufs, unsigned n);
void mesh_http_proxy__pause_down(struct http_conn *c, unsigned why);
void mesh_http_proxy__resume_down(struct http_conn *c, unsigned why);
void mesh_http_proxy__conn_abort(struct http_conn *c);
void mesh_http_proxy__conn_close_gracefully(struct http_conn *c);
void mesh_http_proxy__finish_request(struct http_conn *c);
void mesh_http_proxy__respond(struct http_conn *c, int status, const char *type, const char *body,
                              const char *extra);
void mesh_http_proxy__respond_error(struct http_conn *c, int status, unsigned flags,
                                    const char *body);

/* http_read.c: the client's bytes, and a routed request let through. */
void mesh_http_proxy__on_down_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void mesh_http_proxy__on_down_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
void mesh_http_proxy__process_input(struct http_conn *c);
void mesh_http_proxy__admit(struct http_conn *c);

/* http_forward.c: tries, the request body on its way, the connection's timer. */
void mesh_http_proxy__start_try(struct http_conn *c);
void mesh_http_proxy__body_bytes(struct http_conn *c, char *data, size_t len);
void mesh_http_proxy__arm_timer(struct http_conn *c);

/* ---- HTTP/2 from clients (h2_session.c, h2_stream.c; docs/http2.md) ---- */

/* Whether data[0..len) begins with the client connection preface: 1 yes, 0 no, -EAGAIN
 * when it is a prefix of it. */
int mesh_h2_preface(const char *data, size_t len);
/* Switches c to HTTP/2, feeding it data[0..len) (the preface first). Returns 0 or a negative
 * errno (c is then to be aborted). */
int mesh_h2_start(struct http_conn *c, const char *data, size_t len);
/* The client's bytes on an HTTP/2 connection. */
void mesh_h2_input(struct http_conn *c, const char *data, size_t len);
/* c's write queue fell to the low-water mark: more frames may go. */
void mesh_h2_drained(struct http_conn *c);
/* c is closing: its streams are aborted and the session is freed (later). */
void mesh_h2_detach(struct http_conn *c);
/* The worker stops: GOAWAY, and a close once the streams in flight are done. */
void mesh_h2_stop(struct http_conn *c);
/* http_read.c: serves a stream of the HTTP/2 connection parent as a connection of its own
 * over the virtual io vio (taken). Returns it, or NULL (vio closed). */
struct http_conn *mesh_http_proxy__adopt_stream(struct http_conn *parent, struct mesh_io *vio);

/* ---- istio_http.c ---- */

/* Counts c's finished request in Istio's metrics; duration_us: from its head to its end. */
void mesh_istio_http_request(struct http_conn *c, uint64_t duration_us);

/* ---- access_log.c ---- */

void mesh_access_log(struct mesh_proxy_shared *sh, const struct http_conn *c);

#endif
