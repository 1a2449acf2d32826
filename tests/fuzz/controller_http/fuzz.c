/*
 * Fuzzes the controller's HTTP server from outside, before any credential: the real API
 * handler (store and CA in a temporary directory, an admin token no input can know) on the
 * project's HTTP server with the controller's limits, plain TCP on loopback. Each input is
 * one client connection:
 *
 *   byte 0, high bit clear: the rest is sent as it is, in pieces whose sizes (1 to 97
 *     bytes) follow from byte 0;
 *   byte 0, high bit set: a request the driver builds, so that bodies of every size come
 *     up however short the input: bytes 1-3 give the body size (up to 256 KiB, over the
 *     server's input buffer's growth points), byte 0 the endpoint and whether the body is
 *     chunked, the rest the body's bytes (repeated); sent in pieces of 1 to 17 KiB.
 *
 * The client then half-closes. Every request must be answered (none cut at the
 * connection's deadline), every answer must be a well-formed HTTP/1.1 response, and
 * nothing may crash or leak (ASan).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/http_parse.h"
#include "common/http_server.h"
#include "common/log.h"
#include "controller/api.h"
#include "controller/ca.h"
#include "controller/config.h"
#include "controller/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    uv_loop_t loop;
    struct mesh_store *store;
    struct mesh_ca ca;
    struct mesh_api api;
    struct mesh_http_server *server;
    struct mesh_addr addr;
    char dir[64];
} F;

struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
    struct mesh_buf in;
    bool connected, closed;
};

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", F.dir);
}

static void setup(void)
{
    static const char *const kinds[] = {"tokens", "agents", "certs", "resources", NULL};
    struct mesh_cfg_errors errors = {0};
    struct mesh_controller_config *cfg = NULL;
    snprintf(F.dir, sizeof(F.dir), "/tmp/mesh-fuzz-ctl-XXXXXX");
    if (!mkdtemp(F.dir) || mesh_controller_config_load(NULL, &errors, &cfg) < 0)
        abort();
    atexit(cleanup);
    mesh_free(cfg->state_dir);
    cfg->state_dir = mesh_strdup(F.dir);
    unsigned char secret[32];
    if (!cfg->state_dir || mesh_store_open(F.dir, kinds, &F.store) < 0 ||
        mesh_ca_open(cfg, &F.ca) < 0 || RAND_bytes(secret, sizeof(secret)) != 1)
        abort();
    for (size_t i = 0; i < sizeof(secret); i++)
        snprintf(F.api.admin_token + 2 * i, 3, "%02x", secret[i]);
    uv_loop_init(&F.loop);
    mesh_log_set_level(MESH_LOG_ERROR); /* refusals are the normal case here */
    F.api.store = F.store;
    F.api.ca = &F.ca;
    F.api.loop = &F.loop;
    mesh_api_init(&F.api);
    mesh_api_resources_init(&F.api);
    struct mesh_http_server_options opts;
    mesh_http_server_options_default(&opts);
    opts.max_connections = (size_t)cfg->max_connections;
    opts.max_connections_per_client = (size_t)cfg->max_connections_per_client;
    opts.header_timeout_ms = 2000;
    opts.total_timeout_ms = 4000;
    struct mesh_addr any;
    if (mesh_addr_parse("127.0.0.1:0", &any, NULL) < 0 ||
        mesh_http_server_new(&F.loop, &opts, mesh_api_handle, &F.api, &F.server) < 0 ||
        mesh_http_server_listen(F.server, &any) < 0 ||
        mesh_http_server_address(F.server, &F.addr) < 0)
        abort();
    F.api.server = F.server;
    mesh_controller_config_free(cfg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct client *c = h->data;
    (void)suggested;
    if (mesh_buf_reserve(&c->in, 65536) < 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, 65536);
}

static void on_closed(uv_handle_t *h)
{
    ((struct client *)h->data)->closed = true;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    (void)buf;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    c->in.len += (size_t)n;
}

static void on_connected(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (status < 0)
        abort(); /* loopback, our own server: it must take us */
    c->connected = true;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    mesh_free(w);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

/* Sends buf in pieces of sizes from `seed`, between lo and hi bytes, letting the server
 * read between them. */
static void send_pieces(struct client *c, const char *buf, size_t len, unsigned seed, size_t lo,
                        size_t hi)
{
    for (size_t off = 0; off < len && !c->closed;) {
        seed = seed * 1103515245u + 12345u;
        size_t n = MESH_MIN(len - off, lo + (seed >> 8) % (hi - lo + 1));
        uv_write_t *w = mesh_malloc(sizeof(*w) + n);
        if (!w)
            abort();
        memcpy(w + 1, buf + off, n);
        uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
        if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
            mesh_free(w);
            break;
        }
        off += n;
        uv_run(&F.loop, UV_RUN_NOWAIT);
        uv_run(&F.loop, UV_RUN_NOWAIT);
    }
}

/* A request with a body of the size bytes 1-3 say, to an endpoint byte 0 picks. */
static void build(struct mesh_buf *b, const uint8_t *data, size_t size)
{
    static const char *const targets[] = {
        "PUT /v1/resources",   "POST /v1/enroll", "POST /v1/report",         "POST /v1/tokens",
        "DELETE /v1/tokens/x", "POST /v1/sign",   "POST /v1/agents/a/reset", "GET /healthz"};
    size_t n = size > 3 ? ((size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3]) % 262145 : 0;
    const uint8_t *fill = size > 4 ? data + 4 : (const uint8_t *)"{}";
    size_t fill_len = size > 4 ? size - 4 : 2;
    bool chunked = data[0] & 0x08;
    mesh_buf_appendf(b, "%s HTTP/1.1\r\nHost: ctl\r\nContent-Type: application/json\r\n",
                     targets[data[0] & 7]);
    if (chunked)
        mesh_buf_append_str(b, "Transfer-Encoding: chunked\r\n\r\n");
    else
        mesh_buf_appendf(b, "Content-Length: %zu\r\n\r\n", n);
    for (size_t off = 0; off < n;) {
        size_t chunk = MESH_MIN(n - off, (size_t)4096 + (data[0] >> 4) * 997);
        if (chunked)
            mesh_buf_appendf(b, "%zx\r\n", chunk);
        for (size_t i = 0; i < chunk; i++)
            mesh_buf_append(b, &fill[(off + i) % fill_len], 1);
        if (chunked)
            mesh_buf_append_str(b, "\r\n");
        off += chunk;
    }
    if (chunked)
        mesh_buf_append_str(b, "0\r\n\r\n");
    mesh_buf_append_str(b, "GET /healthz HTTP/1.1\r\nHost: ctl\r\n\r\n");
}

/*
 * What came back must be HTTP/1.1 responses: the first one parses (it may be cut short
 * when the server closed on a refused request while the client was still sending, and the
 * reset dropped the rest).
 */
static void check(const struct client *c)
{
    if (c->in.len == 0)
        return; /* nothing sent, or only part of a head: nothing to answer */
    struct mesh_http_limits lim = {65536, 64, 8192};
    struct mesh_http_header h[64];
    struct mesh_http_response res;
    int r = mesh_http_parse_response(c->in.data, c->in.len, &lim, h, &res);
    if ((r < 0 && r != -EAGAIN) || memcmp(c->in.data, "HTTP/1.1 ", MESH_MIN(c->in.len, 9)) != 0) {
        fprintf(stderr, "not an HTTP/1.1 response: %.200s\n", c->in.data);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!F.server)
        setup();
    /* Each input starts afresh: no source slowed down by the inputs before. */
    mesh_auth_limit_done(&F.api.limit);
    mesh_auth_limit_init(&F.api.limit);
    struct client c = {0};
    mesh_buf_init(&c.in, 16 * 1024 * 1024);
    uv_tcp_init(&F.loop, &c.tcp);
    c.tcp.data = &c;
    c.connect.data = &c;
    if (uv_tcp_connect(&c.connect, &c.tcp, (const struct sockaddr *)&F.addr.ss, on_connected) < 0)
        abort();
    while (!c.connected)
        uv_run(&F.loop, UV_RUN_ONCE);
    struct mesh_buf req;
    mesh_buf_init(&req, MESH_BUF_UNLIMITED);
    if (data[0] & 0x80) {
        build(&req, data, size);
        send_pieces(&c, req.data, req.len, data[0], 1024, 17 * 1024);
    } else {
        send_pieces(&c, (const char *)data + 1, size - 1, data[0], 1, 97);
    }
    mesh_buf_done(&req);
    if (!c.closed)
        uv_shutdown(&c.shutdown, (uv_stream_t *)&c.tcp, on_shutdown);
    while (!c.closed)
        uv_run(&F.loop, UV_RUN_ONCE);
    struct mesh_http_server_stats st;
    mesh_http_server_get_stats(F.server, &st);
    if (st.requests_cut) {
        fprintf(stderr, "a request was not answered\n");
        abort();
    }
    check(&c);
    mesh_buf_done(&c.in);
    return 0;
}
