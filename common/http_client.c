#include "common/http_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "common/alloc.h"

#define DEFAULT_MAX_ANSWER (1024 * 1024)
#define MAX_HEAD (64 * 1024)

/* A socket curl wants watched. Freed in its close callback. */
struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct mesh_http_client *client;
    struct sock *next, *prev;
};

struct mesh_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct mesh_http_req *reqs; /* in flight */
    struct sock *socks;
    size_t n_socks;
    unsigned pending_closes; /* handles whose close callback has not run yet */
    bool closing;
    void (*closed_cb)(void *data);
    void *closed_data;
};

static uv_once_t once = UV_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- handles ---- */

static void maybe_closed(struct mesh_http_client *c)
{
    if (!c->closing || c->pending_closes)
        return;
    void (*cb)(void *) = c->closed_cb;
    void *data = c->closed_data;
    mesh_free(c);
    if (cb)
        cb(data);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct sock *s = container_of((uv_poll_t *)h, struct sock, poll);
    struct mesh_http_client *c = s->client;
    mesh_free(s);
    c->pending_closes--;
    maybe_closed(c);
}

static void sock_close(struct sock *s)
{
    struct mesh_http_client *c = s->client;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    c->n_socks--;
    c->pending_closes++;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct mesh_http_client *c = container_of((uv_timer_t *)h, struct mesh_http_client, timer);
    c->pending_closes--;
    maybe_closed(c);
}

/* ---- finishing requests ---- */

static void unlink_req(struct mesh_http_req *r)
{
    struct mesh_http_client *c = r->client;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

/* Detaches the easy handle; the request is no longer in flight. */
static void req_release(struct mesh_http_req *r)
{
    if (!r->easy)
        return;
    curl_multi_remove_handle(r->client->multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hlist);
    curl_slist_free_all(r->connect_to);
    r->easy = NULL;
    r->hlist = NULL;
    r->connect_to = NULL;
    unlink_req(r);
}

static int map_result(struct mesh_http_req *r, CURLcode code)
{
    switch (code) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return -ECONNREFUSED;
    case CURLE_WRITE_ERROR:
        return r->answer.err == -EMSGSIZE || r->head.err ? -EMSGSIZE : -ECANCELED;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        return -EPROTO;
    default:
        return -EIO;
    }
}

static void finish(struct mesh_http_req *r, CURLcode code, const char *errbuf)
{
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    r->result = map_result(r, code);
    r->status = code == CURLE_OK ? status : 0;
    r->head_status = status;
    if (code != CURLE_OK) {
        if (r->result == -EMSGSIZE)
            snprintf(r->error, sizeof(r->error), "the answer is larger than %zu bytes",
                     r->answer.max);
        else
            snprintf(r->error, sizeof(r->error), "%s",
                     errbuf[0] ? errbuf : curl_easy_strerror(code));
    }
    req_release(r);
    r->done(r);
}

static void check_done(struct mesh_http_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct mesh_http_req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        char errbuf[CURL_ERROR_SIZE];
        snprintf(errbuf, sizeof(errbuf), "%s", r->error);
        r->error[0] = '\0';
        finish(r, msg->data.result, errbuf);
    }
}

/* ---- curl's callbacks ---- */

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock *s = container_of(h, struct sock, poll);
    struct mesh_http_client *c = s->client;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    check_done(c);
}

static void on_timer(uv_timer_t *t)
{
    struct mesh_http_client *c = container_of(t, struct mesh_http_client, timer);
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct mesh_http_client *c = userp;
    struct sock *s = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(c->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        s = mesh_calloc(1, sizeof(*s));
        if (!s)
            return -1;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) < 0) {
            mesh_free(s);
            return -1;
        }
        s->fd = fd;
        s->client = c;
        s->next = c->socks;
        if (c->socks)
            c->socks->prev = s;
        c->socks = s;
        c->n_socks++;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct mesh_http_client *c = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *data)
{
    struct mesh_http_req *r = data;
    size_t len = size * n;
    /* A new status line (after 100 Continue or a redirect) starts a new head. */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        mesh_buf_reset(&r->head);
    return mesh_buf_append(&r->head, p, len) < 0 ? 0 : len;
}

static size_t on_write(char *p, size_t size, size_t n, void *data)
{
    struct mesh_http_req *r = data;
    size_t len = size * n;
    if (r->on_data) {
        long status = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300)
            return r->on_data(r, p, len) ? 0 : len;
    }
    return mesh_buf_append(&r->answer, p, len) < 0 ? 0 : len;
}

/* ---- public ---- */

int mesh_http_client_new(uv_loop_t *loop, const struct mesh_http_client_options *opts,
                         struct mesh_http_client **ret)
{
    uv_once(&once, global_init);
    struct mesh_http_client *c = mesh_calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        mesh_free(c);
        return -ENOMEM;
    }
    uv_timer_init(loop, &c->timer);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    if (opts && opts->max_host_connections)
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, opts->max_host_connections);
    if (opts && opts->max_total_connections)
        curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, opts->max_total_connections);
    *ret = c;
    return 0;
}

void mesh_http_client_close(struct mesh_http_client *c, void (*done)(void *data), void *data)
{
    c->closing = true;
    c->closed_cb = done;
    c->closed_data = data;
    while (c->reqs)
        req_release(c->reqs);
    /* Cleanup closes the cached connections, which may still call on_curl_socket. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks)
        sock_close(c->socks);
    c->pending_closes++;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void set_tls(CURL *e, const struct mesh_http_tls *t)
{
    if (!t)
        return;
    if (t->ca_pem) {
        struct curl_blob b = {.data = (void *)(uintptr_t)t->ca_pem,
                              .len = strlen(t->ca_pem),
                              .flags = CURL_BLOB_COPY};
        curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b);
    } else if (t->ca_file) {
        curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file);
    }
#if LIBCURL_VERSION_NUM >= 0x075700
    /* A rotated CA file must count at the next connection, not a day later. */
    curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, 0L);
#endif
    if (t->cert_pem && t->key_pem) {
        struct curl_blob c = {.data = (void *)(uintptr_t)t->cert_pem,
                              .len = strlen(t->cert_pem),
                              .flags = CURL_BLOB_COPY};
        struct curl_blob k = {.data = (void *)(uintptr_t)t->key_pem,
                              .len = strlen(t->key_pem),
                              .flags = CURL_BLOB_NOCOPY};
        curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &c);
        curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &k);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    } else if (t->cert_file) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, t->cert_file);
        curl_easy_setopt(e, CURLOPT_SSLKEY, t->key_file ? t->key_file : t->cert_file);
    }
    if (t->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

/*
 * For tls->server_name and an https URL: the URL with that name as its host (what curl sends
 * as SNI and verifies), and a CONNECT_TO entry that still takes the connection to the URL's
 * own host and port. Returns 0 (the entry in r->connect_to), -EINVAL for a URL curl cannot parse,
 * or -ENOMEM.
 */
static int set_server_name(CURL *e, struct mesh_http_req *r)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *url = NULL, *line = NULL;
    int result = -ENOMEM;
    if (!u)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, r->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        result = -EINVAL;
        goto out;
    }
    if (strcmp(scheme, "https") != 0) { /* no TLS: nothing to name */
        result = 0;
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        curl_url_set(u, CURLUPART_HOST, r->tls->server_name, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK) {
        result = -EINVAL;
        goto out;
    }
    size_t n = strlen(r->tls->server_name) + strlen(host) + 2 * strlen(port) + 4;
    line = mesh_malloc(n);
    if (!line)
        goto out;
    snprintf(line, n, "%s:%s:%s:%s", r->tls->server_name, port, host, port);
    r->connect_to = curl_slist_append(NULL, line);
    if (!r->connect_to)
        goto out;
    curl_easy_setopt(e, CURLOPT_URL, url); /* copied */
    curl_easy_setopt(e, CURLOPT_CONNECT_TO, r->connect_to);
    result = 0;
out:
    mesh_free(line);
    curl_free(url);
    curl_free(port);
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return result;
}

int mesh_http_req_start(struct mesh_http_client *c, struct mesh_http_req *r)
{
    if (r->easy)
        return -EBUSY;
    if (!r->url || !r->done || c->closing)
        return -EINVAL;
    CURL *e = curl_easy_init();
    if (!e)
        return -ENOMEM;
    struct curl_slist *h = NULL;
    for (size_t i = 0; r->headers && r->headers[i]; i++) {
        struct curl_slist *n = curl_slist_append(h, r->headers[i]);
        if (!n) {
            curl_slist_free_all(h);
            curl_easy_cleanup(e);
            return -ENOMEM;
        }
        h = n;
    }
    mesh_buf_done(&r->answer);
    mesh_buf_init(&r->answer, r->max_answer ? r->max_answer : DEFAULT_MAX_ANSWER);
    mesh_buf_done(&r->head);
    mesh_buf_init(&r->head, MAX_HEAD);
    r->status = 0;
    r->result = 0;
    r->error[0] = '\0';
    r->client = c;
    r->easy = e;
    r->hlist = h;

    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* A list curl refuses would leave every protocol allowed: refuse the request instead. */
    CURLcode pc =
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, r->protocols ? r->protocols : "http,https");
    if (r->fresh_connection) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     r->connect_timeout_ms ? r->connect_timeout_ms : 5000L);
    if (r->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    if (h)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (r->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    }
    if (r->method)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    set_tls(e, r->tls);
    if (r->unix_socket)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, r->unix_socket);
    if (pc != CURLE_OK || (r->tls && r->tls->server_name)) {
        int err = pc != CURLE_OK ? -EINVAL : set_server_name(e, r);
        if (err < 0) {
            curl_slist_free_all(r->connect_to);
            curl_slist_free_all(h);
            curl_easy_cleanup(e);
            r->connect_to = NULL;
            r->hlist = NULL;
            r->easy = NULL;
            return err;
        }
    }

    r->prev = NULL;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        req_release(r);
        return -ENOMEM;
    }
    return 0;
}

void mesh_http_req_cancel(struct mesh_http_req *r)
{
    req_release(r);
}

bool mesh_http_req_active(const struct mesh_http_req *r)
{
    return r->easy != NULL;
}

void mesh_http_req_done(struct mesh_http_req *r)
{
    req_release(r);
    mesh_buf_done(&r->answer);
    mesh_buf_done(&r->head);
}

const char *mesh_http_req_header(const struct mesh_http_req *r, const char *name, size_t *ret_len)
{
    size_t nlen = strlen(name);
    const char *p = r->head.data, *end = p ? p + r->head.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (ret_len)
                *ret_len = (size_t)(ve - v);
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}

size_t mesh_http_client_sockets(const struct mesh_http_client *c)
{
    return c->n_socks;
}

int mesh_http_escape(struct mesh_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            mesh_buf_append(out, s, 1);
        } else {
            char pct[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            mesh_buf_append(out, pct, 3);
        }
    }
    return out->err;
}
