/* The HTTP/1.1 server, driven by raw TCP clients on the same loop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/buf.h"
#include "common/http_server.h"
#include "tests/unit/unit.h"

struct fixture {
    uv_loop_t loop;
    struct mesh_http_server *srv;
    struct mesh_addr addr;
    struct mesh_http_exchange *held; /* an exchange the handler did not answer */
    int aborts;
    int handled;
    bool server_done;
    char last_body[256];
    int answered; /* on_answered calls */
    int answered_status;
    char answered_path[32];
};

struct client {
    struct fixture *fx;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    struct mesh_buf in;
    const char *send;
    size_t send_len;
    const char *after_continue; /* sent once "100 Continue" arrives */
    bool closed;
};

static void on_request(struct mesh_http_exchange *ex, void *data)
{
    struct fixture *fx = data;
    const struct mesh_http_request *req = mesh_http_exchange_request(ex);
    size_t blen;
    const char *body = mesh_http_exchange_body(ex, &blen);
    fx->handled++;
    snprintf(fx->last_body, sizeof(fx->last_body), "%.*s", (int)blen, body ? body : "");
    char out[300];
    int n = snprintf(out, sizeof(out), "%.*s %.*s body=%.*s", (int)req->method_len, req->method,
                     (int)req->path_len, req->path, (int)blen, body ? body : "");
    mesh_http_respond(ex, 200, "text/plain", NULL, out, (size_t)n);
}

static void on_abort(void *data)
{
    struct fixture *fx = data;
    fx->aborts++;
    fx->held = NULL;
}

static void on_request_abortable(struct mesh_http_exchange *ex, void *data)
{
    struct fixture *fx = data;
    const struct mesh_http_request *req = mesh_http_exchange_request(ex);
    if (req->path_len == 5 && memcmp(req->path, "/hold", 5) == 0) {
        fx->handled++;
        fx->held = ex;
        mesh_http_exchange_on_abort(ex, on_abort, fx);
        return;
    }
    on_request(ex, data);
}

static void start(struct fixture *fx, const struct mesh_http_server_options *opts,
                  mesh_http_handler_cb handler)
{
    memset(fx, 0, sizeof(*fx));
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    if (opts)
        o = *opts;
    assert_int_equal(mesh_http_server_new(&fx->loop, &o, handler, fx, &fx->srv), 0);
    struct mesh_addr any;
    assert_int_equal(mesh_addr_parse("127.0.0.1:0", &any, NULL), 0);
    assert_int_equal(mesh_http_server_listen(fx->srv, &any), 0);
    assert_int_equal(mesh_http_server_address(fx->srv, &fx->addr), 0);
    assert_true(mesh_addr_port(&fx->addr) > 0);
}

static void on_server_done(void *data)
{
    ((struct fixture *)data)->server_done = true;
}

static void finish(struct fixture *fx)
{
    if (!fx->server_done)
        mesh_http_server_close(fx->srv, 100, on_server_done, fx);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_true(fx->server_done);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    c->closed = true;
}

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct client *c = h->data;
    (void)suggested;
    mesh_buf_reserve(&c->in, 4096);
    *buf = uv_buf_init(c->in.data + c->in.len, 4096);
}

static void on_client_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void client_send(struct client *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
    c->write.data = c;
    assert_int_equal(uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_client_written), 0);
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    (void)buf;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, on_client_closed);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0';
    if (c->after_continue && strstr(c->in.data, "100 Continue")) {
        const char *body = c->after_continue;
        c->after_continue = NULL;
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)body, (unsigned)strlen(body));
        uv_try_write(s, &b, 1);
    }
}

static void on_client_connected(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read);
    if (c->send_len)
        client_send(c, c->send, c->send_len);
}

static void client_start(struct fixture *fx, struct client *c, const char *send, size_t len)
{
    memset(c, 0, sizeof(*c));
    c->fx = fx;
    c->send = send;
    c->send_len = len;
    mesh_buf_init(&c->in, 1 << 20);
    uv_tcp_init(&fx->loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    assert_int_equal(uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&fx->addr.ss,
                                    on_client_connected),
                     0);
}

/* Runs the loop until the client is closed (the server closes after "Connection: close"). */
static void run_until_closed(struct fixture *fx, struct client *c)
{
    while (!c->closed)
        uv_run(&fx->loop, UV_RUN_ONCE);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_keep_alive_and_pipelining(void **state)
{
    (void)state;
    struct fixture fx;
    struct client c;
    start(&fx, NULL, on_request);
    static const char req[] = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
                              "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                              "HEAD /three HTTP/1.1\r\nHost: h\r\n\r\n"
                              "GET /four HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    client_start(&fx, &c, req, sizeof(req) - 1);
    run_until_closed(&fx, &c);
    assert_int_equal(count(c.in.data, "HTTP/1.1 200 OK"), 4);
    const char *one = strstr(c.in.data, "GET /one body=");
    const char *two = strstr(c.in.data, "POST /two body=abc");
    const char *four = strstr(c.in.data, "GET /four body=");
    assert_non_null(one);
    assert_non_null(two);
    assert_non_null(four);
    assert_true(one < two && two < four);
    assert_null(strstr(c.in.data, "HEAD /three body")); /* HEAD: headers only */
    assert_int_equal(count(c.in.data, "Connection: close"), 1);
    mesh_buf_done(&c.in);
    finish(&fx);
}

static void test_chunked_body_and_continue(void **state)
{
    (void)state;
    struct fixture fx;
    struct client c;
    start(&fx, NULL, on_request);
    static const char head[] = "PUT /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    client_start(&fx, &c, head, sizeof(head) - 1);
    c.after_continue = "3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n";
    run_until_closed(&fx, &c);
    assert_non_null(strstr(c.in.data, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"));
    assert_non_null(strstr(c.in.data, "PUT /c body=abcdefg"));
    mesh_buf_done(&c.in);
    finish(&fx);
}

static void test_refusals(void **state)
{
    (void)state;
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    o.max_body = 4;
    o.limits.max_uri = 32;
    static const struct {
        const char *req;
        const char *status;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", "HTTP/1.1 400 Bad Request"},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "413"},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         "413"},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"},
        {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n",
         "414"},
        {"GET / HTTP/3.0\r\nHost: h\r\n\r\n", "505"},
        {"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: br\r\n\r\n", "501"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fixture fx;
        struct client c;
        start(&fx, &o, on_request);
        client_start(&fx, &c, cases[i].req, strlen(cases[i].req));
        run_until_closed(&fx, &c);
        if (!strstr(c.in.data, cases[i].status))
            fail_msg("case %zu: expected %s, got: %s", i, cases[i].status, c.in.data);
        assert_non_null(strstr(c.in.data, "Connection: close"));
        assert_int_equal(fx.handled, 0); /* never reached the handler */
        struct mesh_http_server_stats st;
        mesh_http_server_get_stats(fx.srv, &st);
        assert_int_equal(st.bad_requests, 1);
        mesh_buf_done(&c.in);
        finish(&fx);
    }
}

static void test_header_timeout(void **state)
{
    (void)state;
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    o.header_timeout_ms = 50;
    struct fixture fx;
    struct client c;
    start(&fx, &o, on_request);
    static const char partial[] = "GET / HTTP/1.1\r\nHost: slow";
    client_start(&fx, &c, partial, sizeof(partial) - 1);
    run_until_closed(&fx, &c);
    assert_non_null(strstr(c.in.data, "HTTP/1.1 408 Request Timeout"));
    mesh_buf_done(&c.in);
    finish(&fx);
}

static void test_abort_on_reset(void **state)
{
    (void)state;
    struct fixture fx;
    struct client c;
    start(&fx, NULL, on_request_abortable);
    static const char req[] = "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n";
    client_start(&fx, &c, req, sizeof(req) - 1);
    /* Reset only once the request is in the handler: an RST drops unread data. */
    while (!fx.held)
        uv_run(&fx.loop, UV_RUN_ONCE);
    uv_tcp_close_reset(&c.tcp, on_client_closed);
    while (fx.aborts == 0)
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_int_equal(fx.handled, 1);
    assert_null(fx.held);
    mesh_buf_done(&c.in);
    finish(&fx);
}

static void test_close_lets_exchange_finish(void **state)
{
    (void)state;
    struct fixture fx;
    struct client c;
    start(&fx, NULL, on_request_abortable);
    static const char req[] = "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n";
    client_start(&fx, &c, req, sizeof(req) - 1);
    while (!fx.held)
        uv_run(&fx.loop, UV_RUN_ONCE);
    mesh_http_server_close(fx.srv, 0, on_server_done, &fx);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    assert_false(fx.server_done); /* waits for the held exchange */
    mesh_http_respond(fx.held, 200, "text/plain", NULL, "late", 4);
    run_until_closed(&fx, &c);
    assert_non_null(strstr(c.in.data, "Connection: close"));
    assert_non_null(strstr(c.in.data, "late"));
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    assert_true(fx.server_done);
    mesh_buf_done(&c.in);
    assert_int_equal(uv_loop_close(&fx.loop), 0);
}

/* Runs the loop until the server has `n` connections open. */
static void run_until_active(struct fixture *fx, size_t n)
{
    struct mesh_http_server_stats st = {0};
    while (st.connections_active != n || st.connections_accepted < n) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        mesh_http_server_get_stats(fx->srv, &st);
    }
}

/* At the cap, a new connection takes the slot of the oldest one only waiting. */
static void test_connection_cap_evicts_the_oldest_waiting(void **state)
{
    (void)state;
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    o.max_connections = 2;
    struct fixture fx;
    struct client a, b, c;
    start(&fx, &o, on_request);
    client_start(&fx, &a, NULL, 0);
    run_until_active(&fx, 1);
    client_start(&fx, &b, "GET /b HTTP/1.1\r\nHost: h", 24); /* a head begun */
    run_until_active(&fx, 2);
    static const char req[] = "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    client_start(&fx, &c, req, sizeof(req) - 1);
    run_until_closed(&fx, &a); /* the oldest waiting made room */
    run_until_closed(&fx, &c);
    assert_non_null(strstr(c.in.data, "GET /c body="));
    assert_false(b.closed);
    struct mesh_http_server_stats st;
    mesh_http_server_get_stats(fx.srv, &st);
    assert_int_equal(st.connections_evicted, 1);
    assert_int_equal(st.connections_refused, 0);
    uv_close((uv_handle_t *)&b.tcp, on_client_closed);
    mesh_buf_done(&a.in);
    mesh_buf_done(&b.in);
    mesh_buf_done(&c.in);
    finish(&fx);
}

/* A client at its own limit makes room among its own connections only. */
static void test_per_client_limit(void **state)
{
    (void)state;
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    o.max_connections_per_client = 3;
    struct fixture fx;
    struct client idle[5];
    start(&fx, &o, on_request);
    for (size_t i = 0; i < 5; i++) {
        client_start(&fx, &idle[i], NULL, 0);
        run_until_active(&fx, MESH_MIN(i + 1, (size_t)3));
    }
    run_until_closed(&fx, &idle[0]);
    run_until_closed(&fx, &idle[1]);
    run_until_active(&fx, 3); /* the server's side of the two closes too */
    struct mesh_http_server_stats st;
    mesh_http_server_get_stats(fx.srv, &st);
    assert_int_equal(st.connections_evicted, 2);
    assert_int_equal(st.connections_active, 3);
    for (size_t i = 2; i < 5; i++)
        uv_close((uv_handle_t *)&idle[i].tcp, on_client_closed);
    for (size_t i = 0; i < 5; i++)
        mesh_buf_done(&idle[i].in);
    finish(&fx);
}

/* When every connection is busy, a new one is refused with a 503. */
static void test_connection_cap_refuses_when_all_are_busy(void **state)
{
    (void)state;
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    o.max_connections = 1;
    struct fixture fx;
    struct client a, b;
    start(&fx, &o, on_request_abortable);
    static const char hold[] = "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n";
    client_start(&fx, &a, hold, sizeof(hold) - 1);
    while (!fx.held)
        uv_run(&fx.loop, UV_RUN_ONCE);
    client_start(&fx, &b, NULL, 0);
    run_until_closed(&fx, &b);
    assert_non_null(strstr(b.in.data, "HTTP/1.1 503 Service Unavailable"));
    struct mesh_http_server_stats st;
    mesh_http_server_get_stats(fx.srv, &st);
    assert_int_equal(st.connections_refused, 1);
    mesh_http_respond(fx.held, 200, "text/plain", NULL, "ok", 2);
    uv_close((uv_handle_t *)&a.tcp, on_client_closed);
    mesh_buf_done(&a.in);
    mesh_buf_done(&b.in);
    finish(&fx);
}

/*
 * The total deadline: an unanswered request is aborted and answered 503, and a connection
 * kept busy with requests is closed all the same.
 */
static void test_total_deadline(void **state)
{
    (void)state;
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    o.total_timeout_ms = 100;
    struct fixture fx;
    struct client c;
    start(&fx, &o, on_request_abortable);
    static const char hold[] = "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n";
    client_start(&fx, &c, hold, sizeof(hold) - 1);
    run_until_closed(&fx, &c);
    assert_non_null(strstr(c.in.data, "HTTP/1.1 503 Service Unavailable"));
    assert_non_null(strstr(c.in.data, "Connection: close"));
    assert_int_equal(fx.aborts, 1);
    assert_null(fx.held);
    struct mesh_http_server_stats st;
    mesh_http_server_get_stats(fx.srv, &st);
    assert_int_equal(st.requests_cut, 1);
    mesh_buf_done(&c.in);
    /* Busy with one request after another: still closed once its life is over. */
    static const char one[] = "GET /again HTTP/1.1\r\nHost: h\r\n\r\n";
    client_start(&fx, &c, one, sizeof(one) - 1);
    size_t answers = 0;
    while (!c.closed) {
        uv_run(&fx.loop, UV_RUN_ONCE);
        if (c.in.data && (size_t)count(c.in.data, "HTTP/1.1 200 OK") > answers) {
            answers++;
            if (!strstr(c.in.data, "Connection: close"))
                client_send(&c, one, sizeof(one) - 1);
        }
    }
    assert_true(answers >= 1); /* and it ended: closed between two, or after "close" */
    mesh_buf_done(&c.in);
    finish(&fx);
}

static void on_answered(const struct mesh_http_exchange *ex, int status, uint64_t elapsed_ns,
                        void *data)
{
    struct fixture *fx = data;
    const struct mesh_http_request *req = mesh_http_exchange_request(ex);
    assert_true(elapsed_ns < 60ull * 1000000000);
    fx->answered++;
    fx->answered_status = status;
    snprintf(fx->answered_path, sizeof(fx->answered_path), "%.*s", (int)req->path_len, req->path);
}

/* Every answer is reported once, with its request still readable: a handler's, a held one
 * answered later, and one cut at the total deadline; never a request the parser refused. */
static void test_answered_hook(void **state)
{
    (void)state;
    struct mesh_http_server_options o;
    mesh_http_server_options_default(&o);
    o.on_answered = on_answered;
    struct fixture fx;
    struct client c;
    start(&fx, &o, on_request_abortable);
    static const char two[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                              "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n";
    client_start(&fx, &c, two, sizeof(two) - 1);
    run_until_closed(&fx, &c);
    assert_int_equal(fx.answered, 2);
    assert_int_equal(fx.answered_status, 200);
    assert_string_equal(fx.answered_path, "/b");
    mesh_buf_done(&c.in);
    static const char bad[] = "GET / HTTP/9.9\r\nHost: h\r\n\r\n";
    client_start(&fx, &c, bad, sizeof(bad) - 1);
    run_until_closed(&fx, &c);
    assert_int_equal(fx.answered, 2);
    mesh_buf_done(&c.in);
    static const char hold[] = "GET /hold HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    client_start(&fx, &c, hold, sizeof(hold) - 1);
    while (!fx.held)
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_int_equal(fx.answered, 2);
    mesh_http_respond(fx.held, 202, "text/plain", NULL, "late", 4);
    run_until_closed(&fx, &c);
    assert_int_equal(fx.answered, 3);
    assert_int_equal(fx.answered_status, 202);
    assert_string_equal(fx.answered_path, "/hold");
    mesh_buf_done(&c.in);
    finish(&fx);
    /* Cut at the total deadline: reported as the 503 it is. */
    o.total_timeout_ms = 100;
    start(&fx, &o, on_request_abortable);
    client_start(&fx, &c, hold, sizeof(hold) - 1);
    run_until_closed(&fx, &c);
    assert_int_equal(fx.answered, 1);
    assert_int_equal(fx.answered_status, 503);
    mesh_buf_done(&c.in);
    finish(&fx);
}

/* The body's bytes for a size: a pattern that shows shifted or stale bytes. */
static char body_byte(size_t i)
{
    return (char)('a' + (i * 7 + i / 26) % 26);
}

/*
 * Checks what the parser gave against what the client sent ("/size/<n>", "X-Size: <n>", n
 * pattern bytes); a request head read from a freed or moved buffer fails here (and under
 * ASan at the first stale read).
 */
static void on_request_sized(struct mesh_http_exchange *ex, void *data)
{
    struct fixture *fx = data;
    const struct mesh_http_request *req = mesh_http_exchange_request(ex);
    size_t blen;
    const char *body = mesh_http_exchange_body(ex, &blen);
    const struct mesh_http_header *h =
        mesh_http_find_header(req->headers, req->num_headers, "x-size");
    char want[64], got[64];
    snprintf(want, sizeof(want), "/size/%zu", blen);
    snprintf(got, sizeof(got), "%.*s", (int)MESH_MIN(req->path_len, (size_t)63), req->path);
    bool ok = strcmp(want, got) == 0 && h && (size_t)strtoull(h->value, NULL, 10) == blen &&
              req->method_len == 4 && memcmp(req->method, "POST", 4) == 0;
    for (size_t i = 0; ok && i < blen; i++)
        ok = body[i] == body_byte(i);
    fx->handled++;
    if (!ok)
        snprintf(fx->last_body, sizeof(fx->last_body), "path '%s', %zu body bytes", got, blen);
    mesh_http_respond(ex, ok ? 200 : 400, "text/plain", NULL, ok ? "same\n" : "changed\n",
                      ok ? 5 : 8);
}

/* One request with an n-byte body (Content-Length or chunked) on a new connection. */
static void sized_request(struct fixture *fx, size_t n, bool chunked)
{
    struct mesh_buf req;
    mesh_buf_init(&req, MESH_BUF_UNLIMITED);
    mesh_buf_appendf(&req, "POST /size/%zu HTTP/1.1\r\nHost: h\r\nX-Size: %zu\r\n", n, n);
    if (chunked)
        mesh_buf_append_str(&req, "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    else
        mesh_buf_appendf(&req, "Content-Length: %zu\r\nConnection: close\r\n\r\n", n);
    /* Chunks of varied sizes, so chunk lines fall anywhere across reads. */
    for (size_t i = 0, chunk = 1; i < n; i += chunk, chunk = chunk * 3 + 1) {
        size_t len = MESH_MIN(chunk, n - i);
        if (chunked)
            mesh_buf_appendf(&req, "%zx\r\n", len);
        for (size_t j = i; j < i + len; j++)
            mesh_buf_append(&req, (char[]){body_byte(j)}, 1);
        if (chunked)
            mesh_buf_append_str(&req, "\r\n");
    }
    if (chunked)
        mesh_buf_append_str(&req, "0\r\n\r\n");
    assert_int_equal(req.err, 0);
    struct client c;
    int before = fx->handled;
    client_start(fx, &c, req.data, req.len);
    run_until_closed(fx, &c);
    if (fx->handled != before + 1 || !strstr(c.in.data, "HTTP/1.1 200 OK"))
        fail_msg("%s body of %zu bytes: %s (%s)", chunked ? "chunked" : "sized", n,
                 c.in.data ? c.in.data : "no answer", fx->last_body);
    mesh_buf_done(&c.in);
    mesh_buf_done(&req);
}

/*
 * Bodies of every size across the sizes where the input buffer grows (a 16 KiB read, then
 * each doubling): the parsed head points into that buffer, and must survive its growth.
 */
static void test_bodies_across_buffer_growth(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx, NULL, on_request_sized);
    static const size_t edges[] = {256, 512, 1024, 4096, 8192, 16384, 32768, 65536, 131072};
    for (size_t n = 0; n < 64; n++)
        sized_request(&fx, n, n % 2);
    for (size_t e = 0; e < sizeof(edges) / sizeof(edges[0]); e++) {
        size_t lo = edges[e] > 200 ? edges[e] - 200 : 0, hi = edges[e] + 40;
        for (size_t n = lo; n <= hi; n++)
            sized_request(&fx, n, false);
        for (size_t n = lo; n <= hi; n += 7)
            sized_request(&fx, n, true);
    }
    sized_request(&fx, 125 * 1024, false); /* the size of the file that failed to apply */
    sized_request(&fx, 1024 * 1024, false);
    finish(&fx);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_keep_alive_and_pipelining),
        UNIT_TEST(test_chunked_body_and_continue),
        UNIT_TEST(test_refusals),
        UNIT_TEST(test_header_timeout),
        UNIT_TEST(test_abort_on_reset),
        UNIT_TEST(test_close_lets_exchange_finish),
        UNIT_TEST(test_connection_cap_evicts_the_oldest_waiting),
        UNIT_TEST(test_per_client_limit),
        UNIT_TEST(test_connection_cap_refuses_when_all_are_busy),
        UNIT_TEST(test_total_deadline),
        UNIT_TEST(test_bodies_across_buffer_growth),
        UNIT_TEST(test_answered_hook),
    };
    return cmocka_run_group_tests_name("http_server", tests, NULL, NULL);
}
