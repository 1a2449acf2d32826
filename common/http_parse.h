/*
 * Strict HTTP/1.1 message parsing (RFC 9110, RFC 9112) for a proxy and its servers.
 *
 * mesh_http_parse_request() parses a request head from the start of a buffer without
 * copying: the result points into the buffer. It is stateless (call it again with more
 * bytes); it refuses as soon as the bytes seen so far can no longer be a valid head, so a
 * bad request is answered at once rather than at the header timeout.
 *
 * Refused, each with a reason in req->error: bare CR or LF, NUL and other control
 * characters, obs-fold, whitespace before the colon, invalid token characters, a bad
 * request line or version, Content-Length with Transfer-Encoding, duplicate or malformed
 * Content-Length, Transfer-Encoding other than "chunked" or on HTTP/1.0, missing or
 * duplicate Host on HTTP/1.1, an Expect other than 100-continue, and heads, header counts
 * or URIs over the limits.
 */
#ifndef MESH_HTTP_PARSE_H
#define MESH_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mesh_http_header {
    const char *name;
    size_t name_len;
    const char *value; /* optional whitespace trimmed */
    size_t value_len;
};

/* Whether h's name is name (a C string), compared as field names are: ignoring case. */
bool mesh_http_header_is(const struct mesh_http_header *h, const char *name);

struct mesh_http_limits {
    size_t max_head;    /* request line + headers + final CRLF (431) */
    size_t max_headers; /* header count (431); at most the caller's array size */
    size_t max_uri;     /* request target length (414) */
};

#define MESH_HTTP_DEFAULT_MAX_HEAD (64 * 1024)
#define MESH_HTTP_DEFAULT_MAX_HEADERS 100
#define MESH_HTTP_DEFAULT_MAX_URI 8192

#define MESH_HTTP_F_CONTENT_LENGTH 0x01u /* content_length is set */
#define MESH_HTTP_F_CHUNKED 0x02u        /* Transfer-Encoding: chunked */
#define MESH_HTTP_F_KEEP_ALIVE 0x04u     /* the connection may carry another request */
#define MESH_HTTP_F_EXPECT_CONTINUE 0x08u
#define MESH_HTTP_F_UPGRADE 0x10u /* Upgrade with Connection: upgrade */

struct mesh_http_request {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    const char *path; /* the target without its query */
    size_t path_len;
    const char *query; /* after '?', without it; query_len 0 when none */
    size_t query_len;
    int version; /* 10 or 11 */
    struct mesh_http_header *headers;
    size_t num_headers;
    const char *host; /* the Host, or an absolute-form target's authority; NULL: neither */
    size_t host_len;
    const char *authority; /* absolute-form: the target's authority; else NULL */
    size_t authority_len;
    uint64_t content_length;
    unsigned flags;
    const char *error; /* why the request was refused; static text */
};

/*
 * Parses a request head at the start of buf[0..len). `headers` has room for
 * lim->max_headers entries. Returns the head length (> 0) when complete, -EAGAIN when more
 * bytes are needed, or a negative errno that mesh_http_error_status() turns into a status.
 */
int mesh_http_parse_request(const char *buf, size_t len, const struct mesh_http_limits *lim,
                            struct mesh_http_header *headers, struct mesh_http_request *req);

/* A response head, as mesh_http_parse_response() reads it. */
struct mesh_http_response {
    int version; /* 10 or 11 */
    int status;
    const char *reason;
    size_t reason_len;
    struct mesh_http_header *headers;
    size_t num_headers;
    uint64_t content_length;
    unsigned flags; /* MESH_HTTP_F_CONTENT_LENGTH, _CHUNKED, _KEEP_ALIVE */
    const char *error;
};

/*
 * Parses a response head from an upstream, with the same strictness as requests (an
 * upstream can smuggle too): bare CR/LF, obs-fold, bad names or values, duplicate or bad
 * Content-Length, Content-Length with Transfer-Encoding are refused with -EBADMSG (the
 * proxy answers 502). Returns the head length, -EAGAIN, or a negative errno.
 */
int mesh_http_parse_response(const char *buf, size_t len, const struct mesh_http_limits *lim,
                             struct mesh_http_header *headers, struct mesh_http_response *res);

/*
 * Whether a response to `method` with `status` has a body at all (RFC 9112 6.3): never for
 * HEAD, 1xx, 204 and 304, nor for a 2xx to CONNECT.
 */
bool mesh_http_response_has_body(const char *method, size_t method_len, int status);

/* Status code for a parse error: 400, 414, 417, 431, 501 or 505. */
int mesh_http_error_status(int err);

/* Case-insensitive header lookup; returns the first match or NULL. */
const struct mesh_http_header *mesh_http_find_header(const struct mesh_http_header *h, size_t n,
                                                     const char *name);

/* True when the comma-separated list in `value` holds `token` (case-insensitive). */
bool mesh_http_list_has(const char *value, size_t len, const char *token);

/* Reason phrase for a status code ("Not Found"), or "Unknown". */
const char *mesh_http_reason(int status);

/*
 * Query parameter `name` from a query string (no leading '?'), percent-decoded into `out`.
 * Returns the decoded length, -ENOENT when absent, -EINVAL on bad encoding, -ENOBUFS when
 * it does not fit.
 */
int mesh_http_query_get(const char *query, size_t len, const char *name, char *out, size_t n);

/* Streaming decoder of the chunked transfer coding (RFC 9112 section 7.1). */
struct mesh_http_chunked {
    int state;
    int ext_state;
    uint64_t remaining;
    unsigned size_digits;
    size_t line_len;
    size_t trailer_len;
    char name[24]; /* the trailer field name being read, lower-cased (long ones cut) */
    size_t name_len;
};

#define MESH_HTTP_CHUNK_LINE_MAX 4096
#define MESH_HTTP_TRAILER_MAX 8192

void mesh_http_chunked_init(struct mesh_http_chunked *d);
/*
 * Decodes buf[0..len) in place: the data bytes are moved to the front of buf and counted in
 * *ret_data. *ret_consumed says how much of the input was used (all of it unless the body
 * ended; what follows belongs to the next message). Returns 1 when the body is complete
 * (trailers included), 0 when more input is needed, or -EBADMSG with *ret_error set.
 * With ret_data NULL the bytes are only checked, not moved: a proxy forwards them as they
 * came and learns where the body ends.
 * Trailer fields that frame, route or authorize a message (Content-Length,
 * Transfer-Encoding, Host, Authorization, ...: RFC 9110 6.5.1) are refused: a next hop
 * that merges trailers into the header section would act on them.
 */
int mesh_http_chunked_decode(struct mesh_http_chunked *d, char *buf, size_t len,
                             size_t *ret_consumed, size_t *ret_data, const char **ret_error);

#endif
