#include "common/http_parse.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/http_chars-int.h"
#include "common/macros.h"
#include "common/strutil.h"

static int parse_fields(const char *buf, size_t len, size_t pos, const struct mesh_http_limits *lim,
                        struct mesh_http_header *headers, size_t *n_headers, const char **why);

static int fail(struct mesh_http_request *req, int err, const char *why)
{
    req->error = why;
    return err;
}

int mesh_http_error_status(int err)
{
    switch (err) {
    case -EMSGSIZE:
        return 431;
    case -ENAMETOOLONG:
        return 414;
    case -EPROTONOSUPPORT:
        return 505;
    case -ENOSYS:
        return 501;
    case -EOPNOTSUPP:
        return 417;
    default:
        return 400;
    }
}

static bool name_is(const struct mesh_http_header *h, const char *name, size_t n)
{
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

#define NAME_IS(h, lit) name_is(h, lit, sizeof(lit) - 1)

bool mesh_http_header_is(const struct mesh_http_header *h, const char *name)
{
    return name_is(h, name, strlen(name));
}

const struct mesh_http_header *mesh_http_find_header(const struct mesh_http_header *h, size_t n,
                                                     const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (name_is(&h[i], name, len))
            return &h[i];
    }
    return NULL;
}

bool mesh_http_list_has(const char *value, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows((unsigned char)value[i]) || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows((unsigned char)value[end - 1]))
            end--;
        if (end - start == tlen && strncasecmp(value + start, token, tlen) == 0)
            return true;
    }
    return false;
}

/* reg-name characters (RFC 3986 3.2.2): unreserved, pct-encoded, sub-delims. */
static bool is_reg_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("-._~!$&'()*+,;=%", c) != NULL);
}

/*
 * Host = uri-host [ ":" port ] (RFC 9110 7.2): a reg-name or IPv4 address, or an IP-literal
 * in brackets, then at most one ':' and a port of digits. Empty is refused: a proxy has
 * nothing to route it by.
 */
static bool host_valid(const char *h, size_t n)
{
    size_t i = 0;
    if (n && h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (!close || close == h + 1)
            return false;
        for (i = 1; h + i < close; i++) {
            if (!is_reg_name_char((unsigned char)h[i]) && h[i] != ':')
                return false;
        }
        i++;
    } else {
        while (i < n && is_reg_name_char((unsigned char)h[i]))
            i++;
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (h[i++] != ':')
        return false;
    for (; i < n; i++) {
        if (h[i] < '0' || h[i] > '9')
            return false;
    }
    return true;
}

/* Finds the LF ending the line at buf[pos]; -1 if absent. Refuses a CR not before LF. */
static long find_line_end(const char *buf, size_t len, size_t pos)
{
    const char *lf = memchr(buf + pos, '\n', len - pos);
    return lf ? (long)(lf - buf) : -1;
}

static int parse_request_line(const char *buf, size_t len, size_t pos, size_t eol,
                              const struct mesh_http_limits *lim, struct mesh_http_request *req)
{
    if (eol == pos || buf[eol - 1] != '\r')
        return fail(req, -EBADMSG, "request line does not end with CRLF");
    size_t end = eol - 1; /* the CR */
    size_t i = pos;
    while (i < end && is_tchar((unsigned char)buf[i]))
        i++;
    if (i == pos || i >= end || buf[i] != ' ')
        return fail(req, -EBADMSG, "invalid method");
    req->method = buf + pos;
    req->method_len = i - pos;
    size_t t = ++i;
    while (i < end && is_target_char((unsigned char)buf[i]))
        i++;
    if (i == t || i >= end || buf[i] != ' ')
        return fail(req, -EBADMSG, "invalid request target");
    if (i - t > lim->max_uri)
        return fail(req, -ENAMETOOLONG, "request target too long");
    req->target = buf + t;
    req->target_len = i - t;
    i++;
    if (end - i != 8 || memcmp(buf + i, "HTTP/", 5) != 0 || buf[i + 6] != '.' || buf[i + 5] < '0' ||
        buf[i + 5] > '9' || buf[i + 7] < '0' || buf[i + 7] > '9')
        return fail(req, -EBADMSG, "invalid HTTP version");
    if (buf[i + 5] != '1')
        return fail(req, -EPROTONOSUPPORT, "HTTP version not supported");
    /* RFC 9110 6.2: a higher minor version is handled as the highest one we speak. */
    req->version = buf[i + 7] == '0' ? 10 : 11;
    (void)len;
    return 0;
}

static bool method_is(const struct mesh_http_request *req, const char *m)
{
    size_t n = strlen(m);
    return req->method_len == n && memcmp(req->method, m, n) == 0;
}

/* Splits target[start..n) into path and query. */
static void split_path(struct mesh_http_request *req, size_t start)
{
    const char *t = req->target;
    size_t n = req->target_len;
    const char *q = memchr(t + start, '?', n - start);
    req->path = t + start;
    req->path_len = (q ? (size_t)(q - t) : n) - start;
    req->query = q ? q + 1 : t + n;
    req->query_len = q ? n - (size_t)(q + 1 - t) : 0;
}

/*
 * The request target's form (RFC 9112 3.2): origin-form "/path?query"; absolute-form
 * "http://authority/path?query", whose authority then names the host; asterisk-form "*"
 * for OPTIONS only. CONNECT (authority-form) is not served: its tunnel would carry
 * anything past routing and authorization. A fragment is never sent (RFC 9110 4.2.4).
 */
static int parse_target(struct mesh_http_request *req)
{
    const char *t = req->target;
    size_t n = req->target_len;
    if (method_is(req, "CONNECT"))
        return fail(req, -ENOSYS, "CONNECT is not supported");
    if (memchr(t, '#', n))
        return fail(req, -EBADMSG, "fragment in the request target");
    if (t[0] == '/') {
        split_path(req, 0);
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        if (!method_is(req, "OPTIONS"))
            return fail(req, -EBADMSG, "asterisk-form target in a request other than OPTIONS");
        split_path(req, 0);
        return 0;
    }
    size_t scheme = n > 7 && strncasecmp(t, "http://", 7) == 0    ? 7
                    : n > 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                  : 0;
    if (!scheme)
        return fail(req, -EBADMSG, "invalid request target");
    size_t end = scheme;
    while (end < n && t[end] != '/' && t[end] != '?')
        end++;
    /* RFC 9110 4.2.1 and 4.2.4: a host is required, userinfo is not allowed. */
    if (memchr(t + scheme, '@', end - scheme) || !host_valid(t + scheme, end - scheme))
        return fail(req, -EBADMSG, "invalid authority in the request target");
    req->authority = t + scheme;
    req->authority_len = end - scheme;
    split_path(req, end);
    return 0;
}

/*
 * Whether a Connection field names a header that frames the message (or, in a request,
 * routes it). A proxy removes what Connection names (RFC 9110 7.6.1), so honouring it
 * would forward a body without its framing: the next hop would read that body as another
 * message (request smuggling). Such a message is refused instead.
 */
static bool names_framing(const struct mesh_http_header *h, bool request)
{
    return mesh_http_list_has(h->value, h->value_len, "content-length") ||
           mesh_http_list_has(h->value, h->value_len, "transfer-encoding") ||
           (request && mesh_http_list_has(h->value, h->value_len, "host"));
}

static int check_semantics(struct mesh_http_request *req)
{
    int n_cl = 0, n_te = 0, n_host = 0, n_upgrade = 0;
    bool conn_close = false, conn_keep_alive = false, conn_upgrade = false, upgrade_h2c = false;

    for (size_t i = 0; i < req->num_headers; i++) {
        const struct mesh_http_header *h = &req->headers[i];
        if (NAME_IS(h, "content-length")) {
            if (++n_cl > 1)
                return fail(req, -EBADMSG, "duplicate Content-Length");
            if (mesh_parse_u64(h->value, h->value_len, &req->content_length) < 0)
                return fail(req, -EBADMSG, "invalid Content-Length");
            req->flags |= MESH_HTTP_F_CONTENT_LENGTH;
        } else if (NAME_IS(h, "transfer-encoding")) {
            if (++n_te > 1)
                return fail(req, -EBADMSG, "duplicate Transfer-Encoding");
            if (h->value_len != 7 || strncasecmp(h->value, "chunked", 7) != 0) {
                /* "chunked, chunked" and other malformed lists are smuggling attempts. */
                if (mesh_http_list_has(h->value, h->value_len, "chunked"))
                    return fail(req, -EBADMSG, "invalid Transfer-Encoding");
                return fail(req, -ENOSYS, "unsupported transfer coding");
            }
            req->flags |= MESH_HTTP_F_CHUNKED;
        } else if (NAME_IS(h, "host")) {
            if (++n_host > 1)
                return fail(req, -EBADMSG, "duplicate Host");
            if (!host_valid(h->value, h->value_len))
                return fail(req, -EBADMSG, "invalid Host");
            req->host = h->value;
            req->host_len = h->value_len;
        } else if (NAME_IS(h, "connection")) {
            if (names_framing(h, true))
                return fail(req, -EBADMSG,
                            "Connection names Content-Length, Transfer-Encoding or Host");
            conn_close |= mesh_http_list_has(h->value, h->value_len, "close");
            conn_keep_alive |= mesh_http_list_has(h->value, h->value_len, "keep-alive");
            conn_upgrade |= mesh_http_list_has(h->value, h->value_len, "upgrade");
        } else if (NAME_IS(h, "expect")) {
            if (h->value_len != 12 || strncasecmp(h->value, "100-continue", 12) != 0)
                return fail(req, -EOPNOTSUPP, "unsupported expectation");
            req->flags |= MESH_HTTP_F_EXPECT_CONTINUE;
        } else if (NAME_IS(h, "upgrade")) {
            n_upgrade++;
            upgrade_h2c |= mesh_http_list_has(h->value, h->value_len, "h2c");
        }
    }
    if (n_te && n_cl)
        return fail(req, -EBADMSG, "both Content-Length and Transfer-Encoding");
    if (n_te && req->version == 10)
        return fail(req, -EBADMSG, "Transfer-Encoding in an HTTP/1.0 request");
    if (req->version == 11 && n_host == 0)
        return fail(req, -EBADMSG, "missing Host");
    if (req->authority) {
        /* RFC 9112 3.2.2: the target's authority wins over Host, which a proxy replaces. */
        req->host = req->authority;
        req->host_len = req->authority_len;
    }
    if (req->version == 11 ? !conn_close : (conn_keep_alive && !conn_close))
        req->flags |= MESH_HTTP_F_KEEP_ALIVE;
    /* h2c would switch the connection to HTTP/2 with the upstream, past every later
     * request's routing and authorization: such an upgrade is dropped (as Envoy does), and
     * so is one spread over several Upgrade fields. */
    if (n_upgrade == 1 && !upgrade_h2c && conn_upgrade)
        req->flags |= MESH_HTTP_F_UPGRADE;
    return 0;
}

int mesh_http_parse_request(const char *buf, size_t len, const struct mesh_http_limits *lim,
                            struct mesh_http_header *headers, struct mesh_http_request *req)
{
    size_t pos = 0;
    memset(req, 0, sizeof(*req));
    req->headers = headers;

    /* RFC 9112 2.2: ignore empty lines before the request line. */
    while (pos + 1 < len && buf[pos] == '\r' && buf[pos + 1] == '\n' && pos < 8)
        pos += 2;

    long eol = find_line_end(buf, len, pos);
    if (eol < 0) {
        if (len - pos > lim->max_uri + 32)
            return fail(req, -ENAMETOOLONG, "request line too long");
        /* Refuse bytes that can never start a request line without waiting for more. */
        for (size_t i = pos; i < len; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (c != '\r' && c != ' ' && !is_target_char(c))
                return fail(req, -EBADMSG, "invalid character in request line");
            if (c == '\r' && i + 1 < len)
                return fail(req, -EBADMSG, "bare CR in request line");
        }
        return -EAGAIN;
    }
    int r = parse_request_line(buf, len, pos, (size_t)eol, lim, req);
    if (r < 0)
        return r;
    pos = (size_t)eol + 1;

    r = parse_fields(buf, len, pos, lim, headers, &req->num_headers, &req->error);
    if (r < 0)
        return r;
    pos = (size_t)r;
    r = parse_target(req);
    if (r < 0)
        return r;
    r = check_semantics(req);
    if (r < 0)
        return r;
    return (int)pos;
}

/* Parses the header lines from pos to the empty line; shared by requests and responses. */
static int parse_fields(const char *buf, size_t len, size_t pos, const struct mesh_http_limits *lim,
                        struct mesh_http_header *headers, size_t *n_headers, const char **why)
{
    for (;;) {
        if (pos > lim->max_head) {
            *why = "head too large";
            return -EMSGSIZE;
        }
        if (pos >= len)
            return -EAGAIN;
        if (buf[pos] == '\r') {
            if (pos + 1 >= len)
                return -EAGAIN;
            if (buf[pos + 1] != '\n') {
                *why = "bare CR";
                return -EBADMSG;
            }
            pos += 2;
            break;
        }
        if (buf[pos] == '\n') {
            *why = "bare LF";
            return -EBADMSG;
        }
        if (is_ows((unsigned char)buf[pos])) {
            *why = "obsolete line folding";
            return -EBADMSG;
        }
        size_t start = pos, i = pos;
        while (i < len && is_tchar((unsigned char)buf[i]))
            i++;
        if (i >= len) {
            if (i - start > lim->max_head) {
                *why = "head too large";
                return -EMSGSIZE;
            }
            return -EAGAIN;
        }
        if (buf[i] != ':' || i == start) {
            *why = "invalid header name";
            return -EBADMSG;
        }
        size_t name_end = i++;
        while (i < len && is_ows((unsigned char)buf[i]))
            i++;
        size_t vstart = i;
        while (i < len && is_field_char((unsigned char)buf[i]))
            i++;
        if (i >= len) {
            if (i > lim->max_head) {
                *why = "head too large";
                return -EMSGSIZE;
            }
            return -EAGAIN;
        }
        if (buf[i] != '\r') {
            *why = buf[i] == '\n' ? "bare LF" : "invalid header value";
            return -EBADMSG;
        }
        if (i + 1 >= len)
            return -EAGAIN;
        if (buf[i + 1] != '\n') {
            *why = "bare CR";
            return -EBADMSG;
        }
        size_t vend = i;
        while (vend > vstart && is_ows((unsigned char)buf[vend - 1]))
            vend--;
        if (*n_headers >= lim->max_headers) {
            *why = "too many headers";
            return -EMSGSIZE;
        }
        headers[(*n_headers)++] = (struct mesh_http_header){
            .name = buf + start,
            .name_len = name_end - start,
            .value = buf + vstart,
            .value_len = vend - vstart,
        };
        pos = i + 2;
    }
    if (pos > lim->max_head) {
        *why = "head too large";
        return -EMSGSIZE;
    }
    return (int)pos;
}

int mesh_http_parse_response(const char *buf, size_t len, const struct mesh_http_limits *lim,
                             struct mesh_http_header *headers, struct mesh_http_response *res)
{
    memset(res, 0, sizeof(*res));
    res->headers = headers;
    long eol = find_line_end(buf, len, 0);
    if (eol < 0) {
        if (len > 1024) {
            res->error = "status line too long";
            return -EBADMSG;
        }
        return -EAGAIN;
    }
    /* HTTP/1.x SP 3DIGIT SP [reason] CRLF */
    size_t e = (size_t)eol;
    if (e < 13 || buf[e - 1] != '\r' || memcmp(buf, "HTTP/1.", 7) != 0 || buf[7] < '0' ||
        buf[7] > '9' || buf[8] != ' ' || buf[12] != ' ' || buf[9] < '1' || buf[9] > '5' ||
        buf[10] < '0' || buf[10] > '9' || buf[11] < '0' || buf[11] > '9') {
        res->error = "invalid status line";
        return -EBADMSG;
    }
    res->version = buf[7] == '0' ? 10 : 11;
    res->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    res->reason = buf + 13;
    res->reason_len = e - 1 - 13;
    for (size_t i = 13; i < e - 1; i++) {
        if (!is_field_char((unsigned char)buf[i])) {
            res->error = "invalid reason phrase";
            return -EBADMSG;
        }
    }
    int r = parse_fields(buf, len, e + 1, lim, headers, &res->num_headers, &res->error);
    if (r < 0)
        return r;
    int n_cl = 0, n_te = 0;
    bool conn_close = false, conn_keep_alive = false;
    for (size_t i = 0; i < res->num_headers; i++) {
        const struct mesh_http_header *h = &headers[i];
        if (NAME_IS(h, "content-length")) {
            if (++n_cl > 1 || mesh_parse_u64(h->value, h->value_len, &res->content_length) < 0) {
                res->error = "invalid or repeated Content-Length";
                return -EBADMSG;
            }
            res->flags |= MESH_HTTP_F_CONTENT_LENGTH;
        } else if (NAME_IS(h, "transfer-encoding")) {
            if (++n_te > 1 || h->value_len != 7 || strncasecmp(h->value, "chunked", 7) != 0) {
                res->error = "unsupported Transfer-Encoding";
                return -EBADMSG;
            }
            res->flags |= MESH_HTTP_F_CHUNKED;
        } else if (NAME_IS(h, "connection")) {
            if (names_framing(h, false)) {
                res->error = "Connection names Content-Length or Transfer-Encoding";
                return -EBADMSG;
            }
            conn_close |= mesh_http_list_has(h->value, h->value_len, "close");
            conn_keep_alive |= mesh_http_list_has(h->value, h->value_len, "keep-alive");
        }
    }
    if (n_te && n_cl) {
        res->error = "both Content-Length and Transfer-Encoding";
        return -EBADMSG;
    }
    if (n_te && res->version == 10) {
        /* RFC 9112 6.1: faulty framing; the connection must close. */
        res->error = "Transfer-Encoding in an HTTP/1.0 response";
        return -EBADMSG;
    }
    if (res->version == 11 ? !conn_close : (conn_keep_alive && !conn_close))
        res->flags |= MESH_HTTP_F_KEEP_ALIVE;
    return r;
}

bool mesh_http_response_has_body(const char *method, size_t method_len, int status)
{
    if (status < 200 || status == 204 || status == 304)
        return false;
    if (method_len == 4 && memcmp(method, "HEAD", 4) == 0)
        return false;
    if (method_len == 7 && memcmp(method, "CONNECT", 7) == 0 && status < 300)
        return false;
    return true;
}

const char *mesh_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

int mesh_http_query_get(const char *query, size_t len, const char *name, char *out, size_t n)
{
    size_t nlen = strlen(name);
    size_t i = 0;
    if (!query)
        return -ENOENT;
    while (i <= len) {
        size_t start = i;
        while (i < len && query[i] != '&')
            i++;
        const char *eq = memchr(query + start, '=', i - start);
        size_t klen = eq ? (size_t)(eq - (query + start)) : i - start;
        if (klen == nlen && memcmp(query + start, name, nlen) == 0) {
            const char *v = eq ? eq + 1 : query + i;
            size_t vlen = (size_t)(query + i - v), k = 0;
            for (size_t j = 0; j < vlen; j++) {
                char c = v[j];
                if (c == '%') {
                    if (j + 2 >= vlen)
                        return -EINVAL;
                    int hi = hexval(v[j + 1]), lo = hexval(v[j + 2]);
                    if (hi < 0 || lo < 0)
                        return -EINVAL;
                    c = (char)(hi * 16 + lo);
                    j += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                if (k + 1 >= n)
                    return -ENOBUFS;
                out[k++] = c;
            }
            if (n == 0)
                return -ENOBUFS;
            out[k] = '\0';
            return (int)k;
        }
        i++;
    }
    return -ENOENT;
}
