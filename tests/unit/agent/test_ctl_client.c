/*
 * The agent's calls to the controller (agent/ctl_client.c) against a real TLS server on
 * loopback (OpenSSL, one thread per connection) that answers with the connection's number
 * and the identity its client presented: a kept connection carries calls of its own identity
 * only (the node's certificate, another one after a renewal, none for enrollment), a fresh
 * one is never reused, plain http is refused, freeing a call in flight ends it without a
 * callback, and calls that wait hold no thread of libuv's pool.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "agent/ctl_client.h"
#include "common/x509.h"
#include "tests/unit/unit.h"

#define ID_A "spiffe://td/node/a"
#define ID_B "spiffe://td/node/b"
#define MAX_CONNS 32
#define HOLDERS 4 /* long calls at once: as many as libuv's default pool has threads */

/* ---- certificates ---- */

struct pem {
    char *cert, *key;
};

struct pki {
    X509 *ca;
    EVP_PKEY *ca_key;
    char *ca_pem;
    struct pem server, a, a2, b; /* a2: a's renewed certificate */
};

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(e);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

/* A certificate for key signed by the CA (self-signed when ca is NULL). */
static X509 *make_cert(X509 *ca, EVP_PKEY *ca_key, EVP_PKEY *key, const char *cn, long serial)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    if (!ca) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, ca, NID_subject_alt_name, "IP:127.0.0.1");
        add_ext(x, ca, NID_ext_key_usage, "serverAuth");
    }
    assert_true(X509_sign(x, ca_key ? ca_key : key, EVP_sha256()) > 0);
    return x;
}

/* A node SVID for id, as the controller issues it. */
static struct pem issue(const struct pki *p, const char *id)
{
    EVP_PKEY *k = mesh_x509_new_key();
    size_t len = 0;
    char *csr = mesh_x509_csr_pem(k, id, &len);
    char err[256];
    X509 *x = mesh_x509_sign_csr(p->ca, p->ca_key, csr, len, id, 3600, err, sizeof(err));
    if (!x)
        fail_msg("signing %s: %s", id, err);
    struct pem out = {mesh_x509_cert_pem(x, NULL), mesh_x509_key_pem(k, NULL)};
    X509_free(x);
    EVP_PKEY_free(k);
    mesh_free(csr);
    return out;
}

static void make_pki(struct pki *p)
{
    p->ca_key = mesh_x509_new_key();
    p->ca = make_cert(NULL, NULL, p->ca_key, "ca", 1);
    p->ca_pem = mesh_x509_cert_pem(p->ca, NULL);
    EVP_PKEY *sk = mesh_x509_new_key();
    X509 *s = make_cert(p->ca, p->ca_key, sk, "controller", 2);
    p->server = (struct pem){mesh_x509_cert_pem(s, NULL), mesh_x509_key_pem(sk, NULL)};
    X509_free(s);
    EVP_PKEY_free(sk);
    p->a = issue(p, ID_A);
    p->a2 = issue(p, ID_A);
    p->b = issue(p, ID_B);
}

static void pem_done(struct pem *p)
{
    mesh_free(p->cert);
    mesh_free(p->key);
}

static void free_pki(struct pki *p)
{
    X509_free(p->ca);
    EVP_PKEY_free(p->ca_key);
    mesh_free(p->ca_pem);
    pem_done(&p->server);
    pem_done(&p->a);
    pem_done(&p->a2);
    pem_done(&p->b);
}

/* ---- the server ---- */

struct server {
    int fd;
    int port;
    SSL_CTX *ctx;
    pthread_t acceptor;
    pthread_t conns[MAX_CONNS];
    atomic_int n_conns;
    atomic_int held; /* requests for /hold received (never answered) */
};

struct conn {
    struct server *s;
    int fd;
    int number;
};

static int accept_any(int ok, X509_STORE_CTX *x)
{
    (void)ok, (void)x;
    return 1;
}

/* The URI SAN of the client's certificate and the start of its SHA-256, or "none". */
static void peer_name(SSL *ssl, char *out, size_t size)
{
    snprintf(out, size, "none");
    X509 *x = SSL_get0_peer_certificate(ssl);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!x || X509_digest(x, EVP_sha256(), md, &mdlen) != 1)
        return;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_URI)
            snprintf(out, size, "%.*s#%02x%02x%02x%02x",
                     ASN1_STRING_length(g->d.uniformResourceIdentifier),
                     (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), md[0],
                     md[1], md[2], md[3]);
    }
    GENERAL_NAMES_free(names);
}

/* Reads one request head and body; puts its path in `path` (256 bytes). Returns 0, or -1 at
 * the end of the connection. */
static int read_request(SSL *ssl, char *path)
{
    char buf[16384];
    size_t len = 0;
    char *end = NULL;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
        if (len == sizeof(buf))
            return -1;
        int n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - len));
        if (n <= 0)
            return -1;
        len += (size_t)n;
    }
    size_t head = (size_t)(end - buf) + 4, body = 0;
    for (char *p = buf; p < end; p = strstr(p, "\r\n") + 2) {
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            body = strtoul(p + 15, NULL, 10);
    }
    for (size_t have = len - head; have < body;) { /* a body past the buffer: drop it */
        int n = SSL_read(ssl, buf, (int)sizeof(buf));
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    buf[head - 1] = '\0';
    return sscanf(buf, "%*s %255s", path) == 1 ? 0 : -1;
}

static void *serve_conn(void *arg)
{
    struct conn *c = arg;
    SSL *ssl = SSL_new(c->s->ctx);
    SSL_set_fd(ssl, c->fd);
    char path[256], who[256], answer[512];
    if (SSL_accept(ssl) == 1) {
        peer_name(ssl, who, sizeof(who));
        while (read_request(ssl, path) == 0) {
            if (strcmp(path, "/hold") == 0) {
                atomic_fetch_add(&c->s->held, 1);
                continue; /* never answered: the next read ends when the client goes */
            }
            char body[300];
            int n = snprintf(body, sizeof(body), "{\"conn\":%d,\"peer\":\"%s\"}", c->number, who);
            int m = snprintf(answer, sizeof(answer),
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: %d\r\n\r\n%s",
                             n, body);
            if (SSL_write(ssl, answer, m) <= 0)
                break;
        }
    }
    SSL_free(ssl);
    close(c->fd);
    free(c);
    ERR_clear_error();
    return NULL;
}

static void *serve(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0)
            break; /* shut down */
        int i = atomic_load(&s->n_conns);
        if (i == MAX_CONNS) {
            close(fd);
            continue;
        }
        /* A test that goes wrong ends in a failure, not a hang. */
        struct timeval tv = {.tv_sec = 60};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        struct conn *c = calloc(1, sizeof(*c));
        assert_non_null(c);
        *c = (struct conn){s, fd, i + 1};
        assert_int_equal(pthread_create(&s->conns[i], NULL, serve_conn, c), 0);
        atomic_store(&s->n_conns, i + 1);
    }
    return NULL;
}

static void server_start(struct server *s, const struct pki *p)
{
    memset(s, 0, sizeof(*s));
    s->ctx = SSL_CTX_new(TLS_server_method());
    BIO *cb = BIO_new_mem_buf(p->server.cert, -1), *kb = BIO_new_mem_buf(p->server.key, -1);
    X509 *x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    assert_int_equal(SSL_CTX_use_certificate(s->ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(s->ctx, k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, accept_any); /* asks; does not require */
    SSL_CTX_set_session_id_context(s->ctx, (const unsigned char *)"ctl", 3);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->fd, 64), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->acceptor, NULL, serve, s), 0);
}

/* Call after every connection was closed by the client (its client closed). */
static void server_stop(struct server *s)
{
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    close(s->fd);
    for (int i = 0; i < atomic_load(&s->n_conns); i++)
        pthread_join(s->conns[i], NULL);
    SSL_CTX_free(s->ctx);
}

/* ---- the loop ---- */

struct fixture {
    uv_loop_t loop;
    struct mesh_http_client *client;
    struct pki pki;
    struct server server;
    char url[128];
};

struct call {
    struct mesh_ctl_req req;
    int done;
};

static void on_done(struct mesh_ctl_req *req)
{
    struct call *c = req->data;
    c->done++;
}

static void setup(struct fixture *f)
{
    make_pki(&f->pki);
    server_start(&f->server, &f->pki);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(mesh_http_client_new(&f->loop, NULL, &f->client), 0);
    snprintf(f->url, sizeof(f->url), "https://127.0.0.1:%d", f->server.port);
}

static void on_client_closed(void *data)
{
    *(bool *)data = true;
}

static void teardown(struct fixture *f)
{
    bool closed = false;
    mesh_http_client_close(f->client, on_client_closed, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(closed);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* nothing left open */
    server_stop(&f->server);
    free_pki(&f->pki);
}

static void run_until_done(struct fixture *f, struct call *c)
{
    while (!c->done)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* Runs one call to `path` as `who` (NULL: nobody); returns the answer's {"conn", "peer"}. */
static json_t *call_as(struct fixture *f, const char *path, const struct pem *who, bool fresh)
{
    struct call c = {0};
    char url[256];
    snprintf(url, sizeof(url), "%s%s", f->url, path);
    mesh_ctl_req_init(&c.req, on_done, &c);
    struct mesh_ctl_call call = {.url = url,
                                 .body = "{}",
                                 .ca_pem = f->pki.ca_pem,
                                 .cert_pem = who ? who->cert : NULL,
                                 .key_pem = who ? who->key : NULL,
                                 .fresh_connection = fresh};
    assert_int_equal(mesh_ctl_req_start(f->client, &c.req, &call), 0);
    run_until_done(f, &c);
    if (c.req.http.status != 200)
        fail_msg("%s: status %ld, %s", path, c.req.http.status, c.req.http.error);
    json_t *doc = mesh_ctl_req_json(&c.req);
    assert_non_null(doc);
    mesh_ctl_req_done(&c.req);
    return doc;
}

static int conn_of(json_t *doc)
{
    return (int)json_integer_value(json_object_get(doc, "conn"));
}

static const char *peer_of(json_t *doc)
{
    return json_string_value(json_object_get(doc, "peer"));
}

/* Kept connections carry the calls of the identity they were made with, and only those. */
static void test_connections_follow_identity(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    json_t *a1 = call_as(&f, "/sign", &f.pki.a, false);
    json_t *a2 = call_as(&f, "/report", &f.pki.a, false);
    assert_contains(peer_of(a1), ID_A);
    assert_int_equal(conn_of(a2), conn_of(a1)); /* kept and shared: same identity */
    json_t *b = call_as(&f, "/sign", &f.pki.b, false);
    assert_contains(peer_of(b), ID_B);
    assert_int_not_equal(conn_of(b), conn_of(a1));
    json_t *renewed = call_as(&f, "/report", &f.pki.a2, false); /* a's next certificate */
    assert_int_not_equal(conn_of(renewed), conn_of(a1));
    assert_int_not_equal(conn_of(renewed), conn_of(b));
    assert_string_not_equal(peer_of(renewed), peer_of(a1)); /* another serial */
    json_t *nobody = call_as(&f, "/enroll", NULL, false);
    assert_string_equal(peer_of(nobody), "none");
    int seen[] = {conn_of(a1), conn_of(b), conn_of(renewed)};
    for (size_t i = 0; i < 3; i++)
        assert_int_not_equal(conn_of(nobody), seen[i]);
    json_t *docs[] = {a1, a2, b, renewed, nobody};
    for (size_t i = 0; i < 5; i++)
        json_decref(docs[i]);
    teardown(&f);
}

/* A fresh connection is made for the call and closed after it: no call shares it. */
static void test_fresh_connections_are_never_shared(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    json_t *kept = call_as(&f, "/sign", &f.pki.a, false);
    json_t *e1 = call_as(&f, "/enroll", &f.pki.a, true);
    json_t *e2 = call_as(&f, "/enroll", &f.pki.a, true);
    json_t *after = call_as(&f, "/sign", &f.pki.a, false);
    assert_int_not_equal(conn_of(e1), conn_of(kept));
    assert_int_not_equal(conn_of(e2), conn_of(e1));
    assert_int_not_equal(conn_of(e2), conn_of(kept));
    assert_int_not_equal(conn_of(after), conn_of(e1));
    assert_int_not_equal(conn_of(after), conn_of(e2));
    json_decref(kept);
    json_decref(e1);
    json_decref(e2);
    json_decref(after);
    teardown(&f);
}

/* An http:// URL is refused by libcurl itself: nothing reaches the port. */
static void test_plain_http_is_refused(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/sign", f.server.port);
    struct call c = {0};
    mesh_ctl_req_init(&c.req, on_done, &c);
    struct mesh_ctl_call call = {.url = url, .body = "{}", .ca_pem = f.pki.ca_pem};
    assert_int_equal(mesh_ctl_req_start(f.client, &c.req, &call), 0);
    run_until_done(&f, &c);
    assert_int_equal(c.req.http.status, 0);
    assert_contains(c.req.http.error, "http");
    assert_int_equal(atomic_load(&f.server.n_conns), 0);
    mesh_ctl_req_done(&c.req);
    /* Without a CA, or with half an identity, nothing starts. */
    call.url = f.url;
    call.ca_pem = NULL;
    assert_int_equal(mesh_ctl_req_start(f.client, &c.req, &call), -EINVAL);
    call.ca_pem = f.pki.ca_pem;
    call.cert_pem = f.pki.a.cert;
    assert_int_equal(mesh_ctl_req_start(f.client, &c.req, &call), -EINVAL);
    teardown(&f);
}

struct waiter {
    uv_timer_t timer;
    struct server *server;
    int want_held;
    int work_done;
};

static void on_check(uv_timer_t *t)
{
    struct waiter *w = t->data;
    if (atomic_load(&w->server->held) >= w->want_held)
        uv_stop(t->loop);
}

static void on_work(uv_work_t *req)
{
    (void)req;
}

static void on_work_done(uv_work_t *req, int status)
{
    struct waiter *w = req->data;
    assert_int_equal(status, 0);
    w->work_done = 1;
}

/*
 * Long calls in flight (a blocking query each) hold no thread of libuv's pool: work queued
 * there while they wait is done at once, and they are still waiting. Then freeing them ends
 * them without a callback, and the loop closes clean.
 */
static void test_waiting_calls_hold_no_pool_thread(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    struct call calls[HOLDERS];
    char url[256];
    snprintf(url, sizeof(url), "%s/hold", f.url);
    struct mesh_ctl_call call = {.url = url,
                                 .ca_pem = f.pki.ca_pem,
                                 .cert_pem = f.pki.a.cert,
                                 .key_pem = f.pki.a.key,
                                 .timeout_ms = 600000};
    for (int i = 0; i < HOLDERS; i++) {
        calls[i] = (struct call){0};
        mesh_ctl_req_init(&calls[i].req, on_done, &calls[i]);
        assert_int_equal(mesh_ctl_req_start(f.client, &calls[i].req, &call), 0);
    }
    struct waiter w = {.server = &f.server, .want_held = HOLDERS};
    uv_timer_init(&f.loop, &w.timer);
    w.timer.data = &w;
    uv_timer_start(&w.timer, on_check, 10, 10);
    uv_run(&f.loop, UV_RUN_DEFAULT); /* until the server holds them all */
    uv_timer_stop(&w.timer);
    uv_work_t work = {.data = &w};
    assert_int_equal(uv_queue_work(&f.loop, &work, on_work, on_work_done), 0);
    while (!w.work_done)
        uv_run(&f.loop, UV_RUN_ONCE);
    for (int i = 0; i < HOLDERS; i++) {
        assert_true(mesh_ctl_req_active(&calls[i].req));
        assert_int_equal(calls[i].done, 0);
    }
    for (int i = 0; i < HOLDERS; i++) {
        mesh_ctl_req_done(&calls[i].req); /* what freeing its owner does */
        assert_false(mesh_ctl_req_active(&calls[i].req));
    }
    uv_close((uv_handle_t *)&w.timer, NULL);
    teardown(&f);
    for (int i = 0; i < HOLDERS; i++)
        assert_int_equal(calls[i].done, 0);
}

int main(void)
{
    /* One thread in libuv's pool: a call that held it would starve everything else. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_connections_follow_identity),
        UNIT_TEST(test_fresh_connections_are_never_shared),
        UNIT_TEST(test_plain_http_is_refused),
        UNIT_TEST(test_waiting_calls_hold_no_pool_thread),
    };
    return cmocka_run_group_tests_name("ctl_client", tests, NULL, NULL);
}
