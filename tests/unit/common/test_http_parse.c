/* The strict HTTP/1.1 request parser and the chunked decoder. */
#include <errno.h>
#include <stdio.h>

#include "common/http_parse.h"
#include "tests/unit/unit.h"

static const struct mesh_http_limits limits = {
    .max_head = 1024,
    .max_headers = 8,
    .max_uri = 64,
};

static int parse(const char *s, struct mesh_http_request *req)
{
    static struct mesh_http_header headers[8];
    return mesh_http_parse_request(s, strlen(s), &limits, headers, req);
}

static void test_simple_get(void **state)
{
    (void)state;
    struct mesh_http_request req;
    const char *s = "GET /a/b?x=1&y=%41 HTTP/1.1\r\nHost: example:80\r\nX-A:  v  \r\n\r\nNEXT";
    int n = parse(s, &req);
    assert_int_equal(n, (int)(strstr(s, "NEXT") - s));
    assert_int_equal(req.method_len, 3);
    assert_memory_equal(req.method, "GET", 3);
    assert_int_equal(req.path_len, 4);
    assert_memory_equal(req.path, "/a/b", 4);
    assert_int_equal(req.query_len, 9);
    assert_int_equal(req.version, 11);
    assert_int_equal(req.num_headers, 2);
    assert_int_equal(req.headers[1].value_len, 1); /* OWS trimmed */
    assert_true(req.flags & MESH_HTTP_F_KEEP_ALIVE);
    assert_int_equal(req.host_len, 10);
    char v[16];
    assert_int_equal(mesh_http_query_get(req.query, req.query_len, "y", v, sizeof(v)), 1);
    assert_string_equal(v, "A");
    assert_int_equal(mesh_http_query_get(req.query, req.query_len, "z", v, sizeof(v)), -ENOENT);
}

static void test_incremental(void **state)
{
    (void)state;
    const char *s = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    struct mesh_http_header headers[8];
    struct mesh_http_request req;
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(mesh_http_parse_request(s, i, &limits, headers, &req), -EAGAIN);
    assert_int_equal(mesh_http_parse_request(s, len, &limits, headers, &req), (int)len);
    assert_true(req.flags & MESH_HTTP_F_CONTENT_LENGTH);
    assert_int_equal(req.content_length, 5);
}

static void test_connection_semantics(void **state)
{
    (void)state;
    struct mesh_http_request req;
    assert_true(parse("GET / HTTP/1.0\r\n\r\n", &req) > 0);
    assert_false(req.flags & MESH_HTTP_F_KEEP_ALIVE);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &req) > 0);
    assert_true(req.flags & MESH_HTTP_F_KEEP_ALIVE);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n", &req) > 0);
    assert_false(req.flags & MESH_HTTP_F_KEEP_ALIVE);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: "
                      "websocket\r\n\r\n",
                      &req) > 0);
    assert_true(req.flags & MESH_HTTP_F_UPGRADE);
    assert_true(parse("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: "
                      "3\r\n\r\n",
                      &req) > 0);
    assert_true(req.flags & MESH_HTTP_F_EXPECT_CONTINUE);
    assert_true(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &req) >
                0);
    assert_true(req.flags & MESH_HTTP_F_CHUNKED);
    assert_true(parse("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0); /* leading CRLF */
    assert_true(parse("GET / HTTP/1.2\r\nHost: h\r\n\r\n", &req) > 0);     /* handled as 1.1 */
    assert_int_equal(req.version, 11);
    assert_true(parse("GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0);
    assert_int_equal(req.path_len, 2);
    assert_memory_equal(req.path, "/p", 2);
}

/* Request-target forms and Host (RFC 9112 3.2, RFC 9110 7.2), issue #13's review. */
static void test_targets_and_host(void **state)
{
    (void)state;
    struct mesh_http_request req;
    /* The absolute-form's authority wins over Host (RFC 9112 3.2.2). */
    assert_true(parse("GET HTTP://api:8080?x=1 HTTP/1.1\r\nHost: other\r\n\r\n", &req) > 0);
    assert_int_equal(req.host_len, 8);
    assert_memory_equal(req.host, "api:8080", 8);
    assert_ptr_equal(req.authority, req.host);
    assert_int_equal(req.path_len, 0);
    assert_int_equal(req.query_len, 3);
    assert_true(parse("GET https://[::1]:443/a HTTP/1.1\r\nHost: x\r\n\r\n", &req) > 0);
    assert_int_equal(req.host_len, 9);
    assert_int_equal(req.path_len, 2);
    assert_true(parse("GET /a HTTP/1.1\r\nHost: x\r\n\r\n", &req) > 0);
    assert_null(req.authority);
    /* Asterisk-form, for OPTIONS only. */
    assert_true(parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0);
    assert_int_equal(req.path_len, 1);
    assert_true(parse("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", &req) > 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: 10.0.0.1:\r\n\r\n", &req) > 0);
    /* h2c is never offered upstream; other upgrades are. */
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                      "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
                      &req) > 0);
    assert_false(req.flags & MESH_HTTP_F_UPGRADE);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: "
                      "websocket, H2C\r\n\r\n",
                      &req) > 0);
    assert_false(req.flags & MESH_HTTP_F_UPGRADE);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                      "Upgrade: websocket\r\n\r\n",
                      &req) > 0);
    assert_false(req.flags & MESH_HTTP_F_UPGRADE);
}

/* Malformed requests and the status each must get. */
#define C(raw, status)                                                                             \
    {                                                                                              \
        raw, sizeof(raw) - 1, status                                                               \
    }
static const struct {
    const char *raw;
    size_t len;
    int status;
} malformed[] = {
    C("GET / HTTP/1.1\nHost: h\r\n\r\n", 400),                 /* bare LF ends a line */
    C("GET / HTTP/1.1\r\nHost: h\n\r\n", 400),                 /* bare LF in a header */
    C("GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400),             /* bare CR */
    C("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),    /* CR inside a value */
    C("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 400),    /* NUL in a value */
    C("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n", 400),   /* control character */
    C("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", 400),   /* DEL */
    C("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400), /* obs-fold */
    C("GET / HTTP/1.1\r\nHost: h\r\n\tX: a\r\n\r\n", 400),     /* leading tab */
    C("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),              /* space before colon */
    C("GET / HTTP/1.1\r\nHo(st: h\r\n\r\n", 400),              /* invalid name char */
    C("GET / HTTP/1.1\r\n: h\r\n\r\n", 400),                   /* empty name */
    C("GET / HTTP/1.1\r\nHost h\r\n\r\n", 400),                /* no colon */
    C("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),              /* double space */
    C("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),              /* trailing space */
    C("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),            /* space in target */
    C("GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),           /* 8-bit in target */
    C("G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),               /* invalid method */
    C("GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400),               /* bad version */
    C("GET / http/1.1\r\nHost: h\r\n\r\n", 400),               /* version case */
    C("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),               /* unsupported major */
    C("GET /\r\n\r\n", 400),                                   /* HTTP/0.9 */
    C("GET / HTTP/1.1\r\n\r\n", 400),                          /* missing Host */
    C("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),    /* duplicate Host */
    C("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),             /* invalid Host */
    C("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),             /* userinfo in Host */
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
      "chunked\r\n\r\n",
      400),
    C("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    C("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    C("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    C("GET / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", 417),
    /* Request targets, Host (issue #13's review of RFC 9112 3.2). */
    C("CONNECT api:443 HTTP/1.1\r\nHost: api:443\r\n\r\n", 501),
    C("CONNECT / HTTP/1.1\r\nHost: api\r\n\r\n", 501),
    C("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET api/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET http://u@h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET http://h:x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET /a?b#c HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    C("GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400),
    C("GET / HTTP/1.1\r\nHost: h:8x\r\n\r\n", 400),
    C("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    C("GET / HTTP/1.1\r\nHost: []\r\n\r\n", 400),
    C("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
    /* Connection may not remove framing or routing (request smuggling, issue #13). */
    C("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: content-length\r\n\r\n", 400),
    C("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close, "
      "Transfer-Encoding\r\n\r\n",
      400),
    C("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: host\r\n\r\n", 400),
    C("GET /0123456789012345678901234567890123456789012345678901234567890123456789 "
      "HTTP/1.1\r\nHost: h\r\n\r\n",
      414),
    C("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: "
      "1\r\nH: 1\r\n\r\n",
      431),
};

static void test_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        struct mesh_http_header headers[8];
        struct mesh_http_request req;
        /* Lengths come from sizeof: some requests hold a NUL. */
        const char *raw = malformed[i].raw;
        int r = mesh_http_parse_request(raw, malformed[i].len, &limits, headers, &req);
        if (r >= 0 || r == -EAGAIN)
            fail_msg("case %zu accepted (%d): %s", i, r, raw);
        if (mesh_http_error_status(r) != malformed[i].status)
            fail_msg("case %zu: status %d, expected %d (%s)", i, mesh_http_error_status(r),
                     malformed[i].status, req.error ? req.error : "?");
        assert_non_null(req.error);
    }
}

static void test_head_too_large(void **state)
{
    (void)state;
    char big[2048];
    int k = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX: ");
    memset(big + k, 'a', sizeof(big) - (size_t)k - 1);
    big[sizeof(big) - 1] = '\0';
    struct mesh_http_request req;
    assert_int_equal(mesh_http_error_status(parse(big, &req)), 431);
}

static void test_garbage_refused_early(void **state)
{
    (void)state;
    struct mesh_http_request req;
    /* Binary noise is refused before any line end arrives. */
    assert_int_equal(parse("\x16\x03\x01\x02", &req), -EBADMSG);
    /* A partial valid line waits. */
    assert_int_equal(parse("GET /index", &req), -EAGAIN);
}

static int decode(const char *in, char *out, size_t *ret_data, size_t *consumed)
{
    struct mesh_http_chunked d;
    mesh_http_chunked_init(&d);
    size_t len = strlen(in);
    memcpy(out, in, len);
    const char *why = NULL;
    return mesh_http_chunked_decode(&d, out, len, consumed, ret_data, &why);
}

static void test_chunked(void **state)
{
    (void)state;
    char buf[256];
    size_t data, consumed;
    const char *body = "5\r\nhello\r\n6;name=val;q=\"a\\\"b\"\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    assert_int_equal(decode(body, buf, &data, &consumed), 1);
    assert_int_equal(data, 11);
    assert_memory_equal(buf, "hello world", 11);
    assert_int_equal(consumed, strlen(body) - 4);

    /* Byte by byte gives the same. */
    struct mesh_http_chunked d;
    mesh_http_chunked_init(&d);
    char acc[64];
    size_t total = 0;
    int r = 0;
    for (size_t i = 0; i < strlen(body) - 4; i++) {
        char c = body[i];
        size_t n, used;
        r = mesh_http_chunked_decode(&d, &c, 1, &used, &n, NULL);
        assert_true(r >= 0);
        assert_int_equal(used, 1);
        if (n)
            acc[total++] = c;
    }
    assert_int_equal(r, 1);
    assert_int_equal(total, 11);
    assert_memory_equal(acc, "hello world", 11);

    static const char *const bad[] = {
        "x\r\n",                    /* not hex */
        "\r\n",                     /* no size */
        "5\nhello\r\n",             /* bare LF */
        "5\r\nhelloX\r\n",          /* data not followed by CRLF */
        "11111111111111111\r\n",    /* 17 digits */
        "fffffffffffffffff\r\n",    /* overflow */
        "5;\r\nhello\r\n",          /* empty extension */
        "5;=a\r\nhello\r\n",        /* extension without a name */
        "5;a=\r\nhello\r\n",        /* extension without a value */
        "5;a=\"x\r\nhello\r\n",     /* unterminated quoted string */
        "5 x\r\nhello\r\n",         /* junk after the size */
        "0\r\nBad Trailer\r\n\r\n", /* invalid trailer name */
        "0\r\nT: a\x01\r\n\r\n",    /* control in a trailer */
        "0\r\n\rx",                 /* bare CR at the end */
        /* Framing, routing and authorization in trailers (RFC 9110 6.5.1). */
        "0\r\nContent-Length: 5\r\n\r\n",
        "0\r\nX: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        "0\r\nHOST: x\r\n\r\n",
        "0\r\nAuthorization: Basic eA==\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = decode(bad[i], buf, &data, &consumed);
        if (r != -EBADMSG)
            fail_msg("chunked case %zu accepted: %s", i, bad[i]);
    }
    assert_int_equal(decode("5;ext = \"v\" \r\nhello\r\n0\r\n\r\n", buf, &data, &consumed), 1);
    /* Other trailers are fine, long names included. */
    assert_int_equal(decode("0\r\nX-Checksum: 1\r\nContent-Length-And-More-Than-24: 1\r\n"
                            "Content-Lengt: 1\r\n\r\n",
                            buf, &data, &consumed),
                     1);
}

static int parse_res(const char *s, size_t len, struct mesh_http_response *res)
{
    static struct mesh_http_header headers[8];
    return mesh_http_parse_response(s, len, &limits, headers, res);
}

static void test_responses(void **state)
{
    (void)state;
    struct mesh_http_response res;
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_int_equal(parse_res(ok, strlen(ok), &res), (int)strlen(ok) - 5);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.content_length, 5);
    assert_true(res.flags & MESH_HTTP_F_KEEP_ALIVE);
    const char *ch = "HTTP/1.1 503 \r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    assert_int_equal(parse_res(ch, strlen(ch), &res), (int)strlen(ch));
    assert_int_equal(res.status, 503);
    assert_int_equal(res.reason_len, 0);
    assert_true(res.flags & MESH_HTTP_F_CHUNKED);
    assert_false(res.flags & MESH_HTTP_F_KEEP_ALIVE);
    const char *old = "HTTP/1.0 200 OK\r\n\r\n";
    assert_true(parse_res(old, strlen(old), &res) > 0);
    assert_false(res.flags & MESH_HTTP_F_KEEP_ALIVE);
    for (size_t i = 0; i < strlen(ok) - 5; i++)
        assert_int_equal(parse_res(ok, i, &res), -EAGAIN);
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 600 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1 200 OK\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", /* RFC 9112 6.1 */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x, transfer-encoding\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_res(bad[i], strlen(bad[i]), &res) != -EBADMSG)
            fail_msg("response case %zu accepted: %s", i, bad[i]);
    }
    assert_false(mesh_http_response_has_body("HEAD", 4, 200));
    assert_false(mesh_http_response_has_body("GET", 3, 304));
    assert_false(mesh_http_response_has_body("GET", 3, 101));
    assert_false(mesh_http_response_has_body("CONNECT", 7, 200));
    assert_true(mesh_http_response_has_body("GET", 3, 404));
}

static void test_chunked_scan_leaves_bytes(void **state)
{
    (void)state;
    char buf[64];
    const char *body = "3\r\nabc\r\n0\r\n\r\nX";
    strcpy(buf, body);
    struct mesh_http_chunked d;
    mesh_http_chunked_init(&d);
    size_t used;
    assert_int_equal(mesh_http_chunked_decode(&d, buf, strlen(buf), &used, NULL, NULL), 1);
    assert_int_equal(used, strlen(body) - 1);
    assert_string_equal(buf, body); /* untouched: forwarded as it came */
}

static void test_reason_and_status(void **state)
{
    (void)state;
    assert_string_equal(mesh_http_reason(404), "Not Found");
    assert_string_equal(mesh_http_reason(431), "Request Header Fields Too Large");
    assert_int_equal(mesh_http_error_status(-EMSGSIZE), 431);
    assert_int_equal(mesh_http_error_status(-ENAMETOOLONG), 414);
    assert_true(mesh_http_list_has("a, b ,c", 7, "b"));
    assert_false(mesh_http_list_has("ab", 2, "a"));
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_simple_get),
        UNIT_TEST(test_incremental),
        UNIT_TEST(test_connection_semantics),
        UNIT_TEST(test_targets_and_host),
        UNIT_TEST(test_malformed),
        UNIT_TEST(test_head_too_large),
        UNIT_TEST(test_garbage_refused_early),
        UNIT_TEST(test_chunked),
        UNIT_TEST(test_responses),
        UNIT_TEST(test_chunked_scan_leaves_bytes),
        UNIT_TEST(test_reason_and_status),
    };
    return cmocka_run_group_tests_name("http_parse", tests, NULL, NULL);
}
