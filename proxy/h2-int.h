/*
 * HTTP/2 from clients: a session per connection (h2_session.c) and its streams
 * (h2_stream.c), with libnghttp2.
 *
 * Each stream is served as an HTTP/1.1 connection of its own (a "stream connection", struct
 * http_conn with `stream` set) over a virtual io (common/io.h): the stream's request, turned
 * into HTTP/1.1 bytes, is what that connection reads, and the HTTP/1.1 response it writes is
 * turned back into HEADERS and DATA frames. So every stream goes through the one pipeline
 * HTTP/1.1 requests take: routes, destinations, retries, timeouts, faults, limits,
 * authorization, access log, metrics.
 *
 * A stream lives until both its sides are done: the session's (nghttp2 closed it, or the
 * session went away) and the stream connection's (its io closed). Whatever a stream
 * connection does inside an nghttp2 callback is only recorded there; the work that calls
 * back (reads delivered to it, its write and shutdown callbacks) runs from the session's
 * idle handle or right after the session has read or written, never inside nghttp2.
 */
#ifndef MESH_PROXY_H2_H
#define MESH_PROXY_H2_H

#include <stdbool.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "common/buf.h"
#include "proxy/http_proxy-int.h"

struct h2_stream;

struct mesh_h2 {
    struct http_conn *c; /* the connection it runs on; NULL once detached */
    struct mesh_worker *w;
    nghttp2_session *s;
    struct h2_stream *streams; /* every stream not yet freed */
    size_t n_open;             /* streams the session still has open */
    uv_idle_t idle;            /* runs the streams' pending work */
    uv_timer_t stall;          /* resets the streams whose output stalled (mesh_h2__watch_stall) */
    int handles;               /* idle and stall, until closed */
    bool in_session;           /* inside nghttp2_session_mem_recv or _mem_send */
    bool want_send;            /* frames were queued while in_session */
    bool stopping;             /* a GOAWAY went out: close once no stream is open */
    bool calm;                 /* refused for rapid reset: close once the GOAWAY is out */
    uint64_t reset_window_start;
    uint32_t resets;
    /* Serves a stream (mesh_http_proxy__adopt_stream; the fuzz target's own consumer). */
    struct http_conn *(*adopt)(struct http_conn *parent, struct mesh_io *vio);
    /* Aborts what serves a stream (its stream connection), when the stream is gone. */
    void (*abort)(struct mesh_io *vio);
};

/* The HTTP/1.1 response a stream connection writes, as it is turned into frames. */
enum h2_res_state { RES_HEAD, RES_BODY, RES_DONE };

struct h2_stream {
    struct h2_stream *prev, *next;
    struct mesh_h2 *h2; /* NULL once the session is gone */
    struct mesh_worker *w;
    int32_t id;
    bool session_open; /* nghttp2 has not closed it */
    /* The request, as HTTP/1.1 bytes for the stream connection. */
    struct mesh_io *vio;                    /* the stream connection's io; NULL once it closed */
    char *method, *path, *authority, *host; /* pseudo-header fields and Host */
    bool has_length;                        /* content-length given */
    struct mesh_buf head;                   /* the header fields, while they come */
    struct mesh_buf cookie;                 /* cookie fields, joined with "; " (RFC 9113 8.2.3) */
    struct mesh_buf in;                     /* bytes not yet read by the stream connection */
    size_t header_bytes;                    /* the header list's size as SETTINGS counts it */
    bool too_large;                         /* over h2_max_header_list: answered 431 */
    bool bad_scheme;                        /* :scheme neither http nor https: 400 */
    bool head_only;                         /* HEAD */
    bool chunked;                           /* a body without content-length: sent chunked */
    bool in_end, eof_delivered;             /* END_STREAM came; the stream connection saw its EOF */
    size_t unacked;                         /* DATA bytes not yet consumed (flow control) */
    bool reading;
    uv_alloc_cb alloc_cb;
    uv_read_cb read_cb;
    /* The response. */
    enum h2_res_state res;
    struct mesh_buf res_head; /* a response head in pieces */
    struct body_framing body;
    bool chunked_res;
    struct mesh_buf out; /* body bytes for DATA frames */
    bool out_end;        /* the body is complete */
    bool deferred;       /* the data source waits for bytes */
    bool rst;            /* RST_STREAM submitted */
    bool peer_rst;       /* RST_STREAM received */
    uv_write_t *writes;  /* queued writes (linked by data), done when `out` drains */
    uv_shutdown_t *shut; /* done once the body's end is sent */
    bool pending;        /* has work for run_pending */
    uint64_t moved;      /* when its output last moved, once its stream connection closed */
};

/* h2_stream.c: the session's calls into a stream. */
struct h2_stream *mesh_h2__stream_new(struct mesh_h2 *h2, int32_t id);
/* A header field of the request (pseudo or not). Returns 0 or an nghttp2 error. */
int mesh_h2__stream_header(struct h2_stream *st, const uint8_t *name, size_t nlen,
                           const uint8_t *value, size_t vlen);
/* The request head is in (end: END_STREAM with it): its stream connection starts. */
void mesh_h2__stream_head_done(struct h2_stream *st, bool end);
void mesh_h2__stream_data(struct h2_stream *st, const uint8_t *data, size_t len);
/* END_STREAM (after DATA or trailers). */
void mesh_h2__stream_end(struct h2_stream *st);
/* nghttp2 closed it (error_code from the client, or ours). */
void mesh_h2__stream_closed(struct h2_stream *st, uint32_t error_code);
/* The session is gone: the stream connection is aborted; frees the stream when it can. */
void mesh_h2__stream_orphan(struct h2_stream *st);
/* Runs the stream's pending work (reads, write and shutdown callbacks). */
void mesh_h2__stream_run(struct h2_stream *st);
/* Whether st's stream connection is gone while its response still waits to go out. */
bool mesh_h2__stream_stalled(const struct h2_stream *st);
/* Its response made no progress for the idle timeout: RST_STREAM(CANCEL). */
void mesh_h2__stream_cancel(struct h2_stream *st);

/* h2_session.c: what streams ask of their session. */
/* Sends what nghttp2 has queued (later when inside a callback). */
void mesh_h2__flush(struct mesh_h2 *h2);
/* Marks st as having pending work and wakes the idle handle. */
void mesh_h2__want_run(struct h2_stream *st);
/* Starts checking the streams mesh_h2__stream_stalled says: one whose output has not moved
 * for the idle timeout is cancelled. */
void mesh_h2__watch_stall(struct mesh_h2 *h2);
/* Unlinks and frees st (both sides done). */
void mesh_h2__stream_free(struct h2_stream *st);

#endif
