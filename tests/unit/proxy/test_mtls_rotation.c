/*
 * Certificate rotation under load (issue #25): the real proxy with two worker threads
 * serves an inbound mTLS listener while the main loop swaps in new TLS material every few
 * milliseconds and client threads make thousands of handshakes, half of them resuming
 * sessions. Every handshake must succeed and reach the workload; under ASan a handshake
 * that outlives the material it started with is a use after free, under TSan a race.
 * (Also labelled integration, so that `make test-tsan` runs it.)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "catalog/catalog.h"
#include "common/x509.h"
#include "proxy/proxy.h"
#include "proxy/tls.h"
#include "tests/unit/unit.h"

#define TD "stress.test"
#define CLIENTS 4
#define HANDSHAKES_PER_CLIENT 500
#define ROTATE_EVERY_MS 3
#define CALM_MS 100
#define SETS 4 /* certificate sets issued ahead, taken in turn: a rotation costs no signing */

struct cert_set {
    char *pem[2][2]; /* [node, api][cert, key] */
    size_t len[2][2];
};

struct pki {
    X509 *ca;
    EVP_PKEY *ca_key;
    char *ca_pem;
    size_t ca_len;
};

struct stress {
    uv_loop_t loop;
    struct pki pki;
    struct cert_set sets[SETS];
    struct mesh_catalog *catalog;
    struct mesh_local_service api;
    const struct mesh_local_service *locals[1];
    struct mesh_proxy *proxy;
    struct mesh_proxy_inputs in;
    uv_tcp_t backend;
    uv_timer_t rotate;
    uv_async_t finished;
    uint16_t mtls_port;
    SSL_CTX *client;
    atomic_int clients_left;
    atomic_long ok, failed, resumed;
    long rotations;
    bool stopped;
    char first_failure[256];
    atomic_flag failure_taken;
};

static void make_ca(struct pki *p)
{
    p->ca_key = mesh_x509_new_key();
    p->ca = X509_new();
    assert_non_null(p->ca_key);
    assert_non_null(p->ca);
    X509_set_version(p->ca, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(p->ca), 1);
    X509_NAME *n = X509_get_subject_name(p->ca);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"stress ca", -1, -1,
                               0);
    X509_set_issuer_name(p->ca, n);
    X509_gmtime_adj(X509_getm_notBefore(p->ca), -3600);
    X509_gmtime_adj(X509_getm_notAfter(p->ca), 86400);
    X509_set_pubkey(p->ca, p->ca_key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, p->ca, p->ca, NULL, NULL, 0);
    const struct {
        int nid;
        const char *value;
    } ext[] = {{NID_basic_constraints, "critical,CA:TRUE"},
               {NID_key_usage, "critical,keyCertSign,cRLSign"},
               {NID_subject_key_identifier, "hash"}};
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, ext[i].nid, ext[i].value);
        assert_non_null(e);
        X509_add_ext(p->ca, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(p->ca, p->ca_key, EVP_sha256()) > 0);
    p->ca_pem = mesh_x509_cert_pem(p->ca, &p->ca_len);
    assert_non_null(p->ca_pem);
}

/* A new key and SVID for id, as PEM (both malloc'ed through mesh_malloc). */
static void issue(const struct pki *p, const char *id, char **cert, size_t *cert_len, char **key,
                  size_t *key_len)
{
    EVP_PKEY *k = mesh_x509_new_key();
    size_t csr_len = 0;
    char *csr = mesh_x509_csr_pem(k, id, &csr_len);
    char err[256];
    X509 *x = mesh_x509_sign_csr(p->ca, p->ca_key, csr, csr_len, id, 3600, err, sizeof(err));
    if (!x)
        fail_msg("signing %s: %s", id, err);
    *cert = mesh_x509_cert_pem(x, cert_len);
    *key = mesh_x509_key_pem(k, key_len);
    assert_non_null(*cert);
    assert_non_null(*key);
    X509_free(x);
    EVP_PKEY_free(k);
    mesh_free(csr);
}

static const char *const ids[2] = {"spiffe://" TD "/node/stress",
                                   "spiffe://" TD "/ns/shop/svc/api"};

static void make_sets(struct stress *s)
{
    for (int i = 0; i < SETS; i++) {
        for (int k = 0; k < 2; k++)
            issue(&s->pki, ids[k], &s->sets[i].pem[k][0], &s->sets[i].len[k][0],
                  &s->sets[i].pem[k][1], &s->sets[i].len[k][1]);
    }
}

static void free_sets(struct stress *s)
{
    for (int i = 0; i < SETS; i++) {
        for (int k = 0; k < 4; k++)
            mesh_free(s->sets[i].pem[k / 2][k % 2]);
    }
}

/* New material (other certificates and keys, new contexts) swapped into the proxy: a
 * rotation. */
static void rotate_once(struct stress *s)
{
    struct mesh_tls_material *m = NULL;
    char err[512];
    const struct cert_set *set = &s->sets[s->rotations % SETS];
    if (mesh_tls_material_new(TD, false, s->pki.ca_pem, s->pki.ca_len, &m, err, sizeof(err)) < 0)
        fail_msg("material: %s", err);
    for (int k = 0; k < 2; k++) {
        if (mesh_tls_material_add(m, ids[k], k ? "shop" : NULL, k ? "api" : NULL, set->pem[k][0],
                                  set->len[k][0], set->pem[k][1], set->len[k][1], err,
                                  sizeof(err)) < 0)
            fail_msg("material: %s", err);
    }
    s->in.tls = m;
    assert_int_equal(mesh_proxy_update(s->proxy, &s->in), 0);
    s->in.tls = NULL;
    mesh_tls_material_unref(m); /* the snapshots hold it now, and only they */
    s->rotations++;
}

static void on_rotate(uv_timer_t *t)
{
    struct stress *s = t->data;
    if (s->stopped)
        return;
    rotate_once(s);
    /* Now and then a calm moment, in which sessions are resumed (tickets of the material
     * in use): those handshakes meet the rotations too. */
    if (s->rotations % 64 == 0)
        uv_timer_start(t, on_rotate, CALM_MS, ROTATE_EVERY_MS);
}

/* ---- the workload: says "ok" and closes ---- */

static void on_backend_closed(uv_handle_t *h)
{
    mesh_free(h);
}

static void on_backend_written(uv_write_t *req, int status)
{
    (void)status;
    uv_close((uv_handle_t *)req->handle, on_backend_closed);
    mesh_free(req);
}

static void on_backend_conn(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    uv_tcp_t *c = mesh_malloc(sizeof(*c));
    uv_write_t *req = mesh_malloc(sizeof(*req));
    assert_non_null(c);
    assert_non_null(req);
    uv_tcp_init(server->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) < 0) {
        mesh_free(req);
        uv_close((uv_handle_t *)c, on_backend_closed);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)(uintptr_t) "ok\n", 3);
    if (uv_write(req, (uv_stream_t *)c, &b, 1, on_backend_written) < 0) {
        mesh_free(req);
        uv_close((uv_handle_t *)c, on_backend_closed);
    }
}

/* ---- the clients: blocking OpenSSL on their own threads ---- */

static void note_failure(struct stress *s, const char *what)
{
    atomic_fetch_add(&s->failed, 1);
    if (!atomic_flag_test_and_set(&s->failure_taken)) {
        unsigned long e = ERR_peek_last_error();
        snprintf(s->first_failure, sizeof(s->first_failure), "%s (%s)", what,
                 e ? ERR_reason_error_string(e) : "no OpenSSL error");
    }
    ERR_clear_error();
}

static int connect_port(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

/* One connection: handshake (resuming `*session` when given), read "ok", EOF. */
static void one_call(struct stress *s, unsigned *seed, SSL_SESSION **session)
{
    int fd = connect_port(s->mtls_port);
    if (fd < 0) {
        note_failure(s, "connect");
        return;
    }
    /* Sometimes wait a little between accept and ClientHello: the window in which a
     * snapshot swap used to free the material under the handshake. */
    if (rand_r(seed) % 4 == 0)
        usleep((useconds_t)(rand_r(seed) % 2000));
    SSL *ssl = SSL_new(s->client);
    assert_non_null(ssl);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "api.shop");
    if (session && *session)
        SSL_set_session(ssl, *session);
    char buf[16];
    size_t got = 0;
    if (SSL_connect(ssl) != 1) {
        note_failure(s, "handshake");
    } else {
        int n;
        while (got < sizeof(buf) && (n = SSL_read(ssl, buf + got, (int)(sizeof(buf) - got))) > 0)
            got += (size_t)n;
        if (got != 3 || memcmp(buf, "ok\n", 3) != 0) {
            note_failure(s, "no answer from the workload through the mTLS port");
        } else {
            atomic_fetch_add(&s->ok, 1);
            if (SSL_session_reused(ssl))
                atomic_fetch_add(&s->resumed, 1);
            if (session) {
                SSL_SESSION_free(*session);
                *session = SSL_get1_session(ssl);
            }
        }
    }
    SSL_shutdown(ssl); /* freed without it, the session would be marked not resumable */
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
}

static void client_main(void *arg)
{
    struct stress *s = arg;
    static atomic_uint seq;
    unsigned seed = atomic_fetch_add(&seq, 1) + 1;
    bool resume = seed % 2 == 0;
    SSL_SESSION *session = NULL;
    for (int i = 0; i < HANDSHAKES_PER_CLIENT; i++)
        one_call(s, &seed, resume ? &session : NULL);
    SSL_SESSION_free(session);
    if (atomic_fetch_sub(&s->clients_left, 1) == 1)
        uv_async_send(&s->finished);
}

static void on_proxy_stopped(void *data)
{
    struct stress *s = data;
    s->proxy = NULL;
}

static void on_finished(uv_async_t *a)
{
    struct stress *s = a->data;
    s->stopped = true;
    uv_timer_stop(&s->rotate);
    uv_close((uv_handle_t *)&s->rotate, NULL);
    uv_close((uv_handle_t *)&s->finished, NULL);
    uv_close((uv_handle_t *)&s->backend, NULL);
    mesh_proxy_stop(s->proxy, 0, on_proxy_stopped, s);
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static SSL_CTX *client_ctx(const struct pki *p)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), p->ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    char *cert, *key;
    size_t cert_len, key_len;
    issue(p, "spiffe://" TD "/ns/shop/svc/web", &cert, &cert_len, &key, &key_len);
    BIO *cb = BIO_new_mem_buf(cert, (int)cert_len), *kb = BIO_new_mem_buf(key, (int)key_len);
    X509 *x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    mesh_free(cert);
    mesh_free(key);
    return ctx;
}

static void test_rotation_during_handshakes(void **state)
{
    (void)state;
    struct stress *s = mesh_calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    make_ca(&s->pki);
    make_sets(s);
    s->client = client_ctx(&s->pki);

    /* The workload, on the main loop. */
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    uv_tcp_init(&s->loop, &s->backend);
    assert_int_equal(uv_tcp_bind(&s->backend, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->backend, 511, on_backend_conn), 0);
    int len = sizeof(sa);
    uv_tcp_getsockname(&s->backend, (struct sockaddr *)&sa, &len);
    char where[64];

    /* One local TCP service, "shop/api", reached through the mTLS port by SNI api.shop. */
    assert_int_equal(mesh_catalog_new(&s->catalog), 0);
    char api_name[] = "api", api_ns[] = "shop";
    s->api.name = api_name;
    s->api.namespace = api_ns;
    s->api.protocol = MESH_PROTO_TCP;
    snprintf(where, sizeof(where), "127.0.0.1:%u", ntohs(sa.sin_port));
    assert_int_equal(mesh_addr_parse(where, &s->api.addr, NULL), 0);
    s->locals[0] = &s->api;
    s->mtls_port = free_port();
    snprintf(where, sizeof(where), "127.0.0.1:%u", s->mtls_port);
    s->in = (struct mesh_proxy_inputs){
        .catalog = s->catalog, .locals = s->locals, .n_locals = 1, .node_zone = ""};
    assert_int_equal(mesh_addr_parse(where, &s->in.mtls_listener, NULL), 0);

    struct mesh_proxy_options opts = {.workers = 2, .max_connections = 10000, .buffer_size = 16384};
    assert_int_equal(mesh_proxy_new(&s->loop, &opts, &s->proxy), 0);
    assert_int_equal(mesh_proxy_start(s->proxy), 0);
    rotate_once(s);
    uv_timer_init(&s->loop, &s->rotate);
    s->rotate.data = s;
    uv_timer_start(&s->rotate, on_rotate, ROTATE_EVERY_MS, ROTATE_EVERY_MS);
    uv_async_init(&s->loop, &s->finished, on_finished);
    s->finished.data = s;

    /* The listener is bound by the first update; the clients start once it accepts. */
    int fd;
    while ((fd = connect_port(s->mtls_port)) < 0)
        uv_run(&s->loop, UV_RUN_NOWAIT);
    close(fd);
    atomic_init(&s->clients_left, CLIENTS);
    uv_thread_t threads[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(uv_thread_create(&threads[i], client_main, s), 0);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < CLIENTS; i++)
        uv_thread_join(&threads[i]);

    long ok = atomic_load(&s->ok), failed = atomic_load(&s->failed);
    printf("%ld handshakes ok (%ld resumed), %ld failed, %ld rotations\n", ok,
           atomic_load(&s->resumed), failed, s->rotations);
    if (failed)
        fail_msg("%ld of %d handshakes failed; the first: %s", failed,
                 CLIENTS * HANDSHAKES_PER_CLIENT, s->first_failure);
    assert_int_equal(ok, CLIENTS * HANDSHAKES_PER_CLIENT);
    assert_true(s->rotations > 20);
    assert_null(s->proxy);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    mesh_catalog_free(s->catalog);
    free_sets(s);
    SSL_CTX_free(s->client);
    X509_free(s->pki.ca);
    EVP_PKEY_free(s->pki.ca_key);
    mesh_free(s->pki.ca_pem);
    mesh_free(s);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the agent does: a write to a closed peer is an error */
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_rotation_during_handshakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
