#define MESH_LOG_MODULE "health"

/*
 * Health queries from other agents, on the inbound mTLS port. A caller's agent that checks
 * one of our endpoints does not probe our workload (it may not reach it: the workload may
 * listen on an address only this host has); it connects to our mTLS port with the
 * service's SNI and ALPN "mesh-health", and asks, one query per connection:
 *
 *   GET <path> HTTP/1.1        (the check's http_path; "/" for a TCP check)
 *   Host: <service>
 *   x-mesh-health-check: tcp   (a TCP check; absent: an HTTP one)
 *
 * We check our workload now, from here: a TCP connect, or that GET sent to it and its status
 * line read. The answer is the status: 200 (connected) or the workload's own status, or 503
 * with x-mesh-upstream-failure: connect-failure when it cannot be reached within
 * QUERY_DEADLINE_MS. Then the connection closes. Only node identities may ask; an HTTP
 * check's GET meets the service's deny rules (not its allow rules, which name callers).
 *
 * States: READING the query, PROBING the workload, ANSWERING (the answer being written),
 * CLOSING (handles closing; the object is freed by the last close callback). The worker
 * waits for queries like connections (n_conns) and aborts them with mTLS handshakes.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/health_check-int.h"
#include "proxy/worker-int.h"
#include "resources/authz.h"

#define QUERY_DEADLINE_MS 3000
#define QUERY_MAX_HEADERS 16

enum query_state { READING, PROBING, ANSWERING, CLOSING };

struct mesh_health_query {
    struct mesh_health_query *prev, *next;
    struct mesh_worker *w;
    enum query_state state;
    int open; /* handles not closed yet */
    struct mesh_io *io;
    uv_timer_t timer;
    uv_tcp_t probe;
    bool probe_inited;
    uv_connect_t connect;
    uv_write_t probe_write;
    uv_write_t answer_write;
    uv_shutdown_t shutdown;
    struct mesh_addr workload;
    bool tcp_check;
    size_t in_len, req_len, got;
    char in[2048];  /* the query */
    char req[1280]; /* the GET for the workload */
    char buf[256];  /* the workload's status line */
    char out[256];  /* our answer */
};

static void on_closed(uv_handle_t *h)
{
    struct mesh_health_query *q = h->data;
    if (--q->open > 0)
        return;
    struct mesh_worker *w = q->w;
    if (q->prev)
        q->prev->next = q->next;
    else
        w->health_queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    mesh_free(q);
    w->n_conns--;
    atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
    mesh_worker_maybe_exit(w);
}

static void finish(struct mesh_health_query *q)
{
    if (q->state == CLOSING)
        return;
    q->state = CLOSING;
    uv_close((uv_handle_t *)&q->timer, on_closed);
    if (q->probe_inited && !uv_is_closing((uv_handle_t *)&q->probe))
        uv_close((uv_handle_t *)&q->probe, on_closed);
    mesh_io_close(q->io, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    finish(container_of(req, struct mesh_health_query, shutdown));
}

static void on_answered(uv_write_t *req, int status)
{
    struct mesh_health_query *q = container_of(req, struct mesh_health_query, answer_write);
    if (q->state != ANSWERING)
        return;
    if (status < 0 || mesh_io_shutdown(&q->shutdown, q->io, on_shutdown) < 0)
        finish(q);
}

/* Writes our answer (once); `mark`: the failure header, or NULL. */
static void answer(struct mesh_health_query *q, int status, const char *why, const char *mark)
{
    if (q->state != READING && q->state != PROBING)
        return;
    q->state = ANSWERING;
    if (q->probe_inited && !uv_is_closing((uv_handle_t *)&q->probe))
        uv_close((uv_handle_t *)&q->probe, on_closed);
    mesh_io_read_stop(q->io);
    int n = snprintf(q->out, sizeof(q->out),
                     "HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n"
                     "x-mesh-health: %s\r\n%s\r\n",
                     status, mesh_http_reason(status), why, mark ? mark : "");
    uv_buf_t b = uv_buf_init(q->out, (unsigned)n);
    if (mesh_io_write(&q->answer_write, q->io, &b, 1, on_answered) < 0)
        finish(q);
}

static void unreachable(struct mesh_health_query *q, const char *why)
{
    answer(q, 503, why, "x-mesh-upstream-failure: connect-failure\r\n");
}

static void on_timer(uv_timer_t *t)
{
    struct mesh_health_query *q = t->data;
    if (q->state == READING)
        finish(q); /* the caller did not finish its query */
    else if (q->state == PROBING)
        unreachable(q, "the workload did not answer in time");
    else
        finish(q); /* the answer could not be written */
}

/* ---- the workload ---- */

static void on_probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mesh_health_query *q = h->data;
    (void)suggested;
    *buf = uv_buf_init(q->buf + q->got, (unsigned)(sizeof(q->buf) - q->got));
}

static void on_probe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mesh_health_query *q = s->data;
    (void)buf;
    if (q->state != PROBING)
        return;
    if (nread < 0) {
        answer(q, 503, "the workload closed before a status", "x-mesh-upstream-failure: reset\r\n");
        return;
    }
    q->got += (size_t)nread;
    int st = mesh_health_status_of(q->buf, q->got);
    if (st == -EAGAIN && q->got < sizeof(q->buf))
        return;
    if (st < 0)
        answer(q, 502, "the workload sent no valid status line", NULL);
    else
        answer(q, st, "the workload's status", NULL);
}

static void on_probe_written(uv_write_t *req, int status)
{
    struct mesh_health_query *q = container_of(req, struct mesh_health_query, probe_write);
    if (status < 0 && q->state == PROBING)
        answer(q, 503, "the workload closed before a status", "x-mesh-upstream-failure: reset\r\n");
}

static void on_probe_connect(uv_connect_t *req, int status)
{
    struct mesh_health_query *q = container_of(req, struct mesh_health_query, connect);
    if (q->state != PROBING)
        return;
    if (status < 0) {
        unreachable(q, "the workload refused the connection");
        return;
    }
    if (q->tcp_check) {
        answer(q, 200, "the workload took a connection", NULL);
        return;
    }
    uv_buf_t b = uv_buf_init(q->req, (unsigned)q->req_len);
    if (uv_write(&q->probe_write, (uv_stream_t *)&q->probe, &b, 1, on_probe_written) < 0 ||
        uv_read_start((uv_stream_t *)&q->probe, on_probe_alloc, on_probe_read) < 0)
        unreachable(q, "the workload's connection failed");
}

static void probe(struct mesh_health_query *q)
{
    q->state = PROBING;
    uv_tcp_init(&q->w->loop, &q->probe);
    q->probe.data = q;
    q->probe_inited = true;
    q->open++;
    if (uv_tcp_connect(&q->connect, &q->probe, (const struct sockaddr *)&q->workload.ss,
                       on_probe_connect) < 0)
        unreachable(q, "no connection to the workload");
}

/* ---- the query ---- */

bool mesh_health_plain_target(const char *s, size_t n)
{
    if (!n || s[0] != '/')
        return false;
    bool query = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || strchr("-._~", ch) || (!query && ch == '/') ||
                  (query && strchr("=&%+,", ch));
        if (ch == '?' && !query) {
            query = true;
            continue;
        }
        if (!ok || ch == '\0')
            return false;
        if (!query && ch == '/' && i + 1 < n && s[i + 1] == '/')
            return false;
        if (!query && ch == '.' && s[i - 1] == '/' &&
            (i + 1 == n || s[i + 1] == '/' || s[i + 1] == '?' ||
             (s[i + 1] == '.' && (i + 2 == n || s[i + 2] == '/' || s[i + 2] == '?'))))
            return false; /* a dot segment */
    }
    return true;
}

/* A complete query head: checks it and starts the probe, or answers why not. */
static void on_query(struct mesh_health_query *q, const struct mesh_http_request *r,
                     const struct snap_listener *l, const char *peer)
{
    /* Agents ask as their node; a workload's SVID may not (it would get round the allow
     * rules below). */
    const struct mesh_tls_material *m = q->w->snap ? q->w->snap->tls : NULL;
    char node[300];
    snprintf(node, sizeof(node), "spiffe://%s/node/", m ? m->trust_domain : "");
    if (!m || !peer || strncmp(peer, node, strlen(node)) != 0) {
        answer(q, 403, "only an agent (a node identity) may ask", NULL);
        return;
    }
    if (r->method_len != 3 || memcmp(r->method, "GET", 3) != 0) {
        answer(q, 405, "a health query is a GET", NULL);
        return;
    }
    const struct mesh_http_header *kind =
        mesh_http_find_header(r->headers, r->num_headers, "x-mesh-health-check");
    q->tcp_check = kind && kind->value_len == 3 && memcmp(kind->value, "tcp", 3) == 0;
    if (!q->tcp_check && !mesh_health_plain_target(r->target, r->target_len)) {
        answer(q, 400, "the path must be plain (no dot segments, '//' or odd characters)", NULL);
        return;
    }
    /* The deny rules hold for an agent's check as for a call (a GET has effects); allow
     * rules name the workloads that may call and are not about agents. */
    if (!q->tcp_check && l->authz) {
        struct mesh_authz deny_only = *l->authz;
        deny_only.allow = NULL;
        deny_only.n_allow = 0;
        if (!mesh_authz_allows(&deny_only, r, peer)) {
            answer(q, 403, "AuthorizationPolicy denies it", NULL);
            return;
        }
    }
    const char *svc = l->dest->service ? strchr(l->dest->service, '/') : NULL;
    svc = svc ? svc + 1 : l->dest->service ? l->dest->service : "";
    int n = snprintf(q->req, sizeof(q->req),
                     "GET %.*s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mesh-agent-health-check\r\n"
                     "Connection: close\r\n\r\n",
                     (int)r->target_len, r->target, svc);
    if (n < 0 || (size_t)n >= sizeof(q->req)) {
        answer(q, 414, "the path is too long", NULL);
        return;
    }
    q->req_len = (size_t)n;
    if (!l->dest->n) {
        unreachable(q, "the service has no workload here");
        return;
    }
    mesh_ipport_to_addr(&l->dest->eps[0].addr, &q->workload);
    probe(q);
}

static void on_query_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mesh_health_query *q = h->data;
    (void)suggested;
    *buf = uv_buf_init(q->in + q->in_len, (unsigned)(sizeof(q->in) - q->in_len));
}

static void on_query_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mesh_health_query *q = s->data;
    (void)buf;
    if (q->state != READING || nread == 0)
        return;
    if (nread < 0) {
        finish(q);
        return;
    }
    q->in_len += (size_t)nread;
    struct mesh_http_header headers[QUERY_MAX_HEADERS];
    struct mesh_http_limits lim = {
        .max_head = sizeof(q->in), .max_headers = QUERY_MAX_HEADERS, .max_uri = 1024};
    struct mesh_http_request r;
    int n = mesh_http_parse_request(q->in, q->in_len, &lim, headers, &r);
    if (n == -EAGAIN && q->in_len < sizeof(q->in))
        return;
    if (n < 0) {
        answer(q, n == -EAGAIN ? 431 : mesh_http_error_status(n), "a bad health query", NULL);
        return;
    }
    /* Our snapshot may be newer than the handshake's: the listener is looked up again. */
    SSL *ssl = mesh_io_ssl(q->io);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct snap_listener *l = q->w->snap ? mesh_snapshot_sni_listener(q->w->snap, sni) : NULL;
    if (!l || !l->dest) {
        answer(q, 404, "no such local service", NULL);
        return;
    }
    on_query(q, &r, l, mesh_tls_peer_id(ssl));
}

void mesh_health_serve(struct mesh_worker *w, struct mesh_io *io)
{
    struct mesh_health_query *q = mesh_calloc(1, sizeof(*q));
    if (!q) {
        mesh_io_close(io, NULL);
        return;
    }
    q->w = w;
    q->io = io;
    io->tcp.data = q;
    uv_timer_init(&w->loop, &q->timer);
    q->timer.data = q;
    q->open = 2;
    q->next = w->health_queries;
    if (q->next)
        q->next->prev = q;
    w->health_queries = q;
    w->n_conns++;
    atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shared->health_queries, 1, memory_order_relaxed);
    uv_timer_start(&q->timer, on_timer, QUERY_DEADLINE_MS, 0);
    if (mesh_io_read_start(io, on_query_alloc, on_query_read) < 0)
        finish(q);
}

void mesh_health_serve_close_all(struct mesh_worker *w)
{
    for (struct mesh_health_query *q = w->health_queries; q; q = q->next)
        finish(q);
}
