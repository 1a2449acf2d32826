/*
 * Sessions and certificate lifetimes of the mTLS contexts (proxy/tls.c), handshaking in
 * memory: a resumed session lives no longer than either certificate it was made with (on
 * the server, even against a client that offers an old ticket anyway; on the client, in
 * what it offers), tickets of other material are refused, and a certificate past its
 * notAfter is never presented.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/x509.h"
#include "proxy/tls.h"
#include "tests/unit/unit.h"

/* Writable: SSL_set_tlsext_host_name() casts its name to void *. */
static char sni_api_shop[] = "api.shop";

#define TD "td"
#define API "spiffe://" TD "/ns/shop/svc/api"
#define WEB "spiffe://" TD "/ns/shop/svc/web"
#define NODE "spiffe://" TD "/node/n"
#define SHORT_S 5 /* the short-lived certificates' lifetime: the valid phase fits in it */

struct pki {
    X509 *ca;
    EVP_PKEY *ca_key;
    char *ca_pem;
    size_t ca_len;
};

struct svid {
    char *cert, *key;
    size_t cert_len, key_len;
    time_t not_after;
};

static void make_ca(struct pki *p)
{
    p->ca_key = mesh_x509_new_key();
    p->ca = X509_new();
    X509_set_version(p->ca, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(p->ca), 1);
    X509_NAME *n = X509_get_subject_name(p->ca);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"ca", -1, -1, 0);
    X509_set_issuer_name(p->ca, n);
    X509_gmtime_adj(X509_getm_notBefore(p->ca), -3600);
    X509_gmtime_adj(X509_getm_notAfter(p->ca), 86400);
    X509_set_pubkey(p->ca, p->ca_key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, p->ca, p->ca, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(p->ca, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
    X509_add_ext(p->ca, e, -1);
    X509_EXTENSION_free(e);
    assert_true(X509_sign(p->ca, p->ca_key, EVP_sha256()) > 0);
    p->ca_pem = mesh_x509_cert_pem(p->ca, &p->ca_len);
}

static void free_ca(struct pki *p)
{
    X509_free(p->ca);
    EVP_PKEY_free(p->ca_key);
    mesh_free(p->ca_pem);
}

static struct svid issue(const struct pki *p, const char *id, uint64_t ttl_s)
{
    struct svid s = {0};
    EVP_PKEY *k = mesh_x509_new_key();
    size_t csr_len = 0;
    char *csr = mesh_x509_csr_pem(k, id, &csr_len);
    char err[256];
    X509 *x = mesh_x509_sign_csr(p->ca, p->ca_key, csr, csr_len, id, ttl_s, err, sizeof(err));
    if (!x)
        fail_msg("signing %s: %s", id, err);
    s.cert = mesh_x509_cert_pem(x, &s.cert_len);
    s.key = mesh_x509_key_pem(k, &s.key_len);
    s.not_after = mesh_x509_not_after(x);
    X509_free(x);
    EVP_PKEY_free(k);
    mesh_free(csr);
    return s;
}

static void svid_done(struct svid *s)
{
    mesh_free(s->cert);
    mesh_free(s->key);
}

/* Material with the node's SVID and, when svc is given, a local service's (shop/<name>). */
static struct mesh_tls_material *material(const struct pki *p, const struct svid *svc,
                                          const char *id, const char *name)
{
    struct mesh_tls_material *m = NULL;
    char err[512];
    assert_int_equal(mesh_tls_material_new(TD, false, p->ca_pem, p->ca_len, &m, err, sizeof(err)),
                     0);
    struct svid node = issue(p, NODE, 3600);
    if (mesh_tls_material_add(m, NODE, NULL, NULL, node.cert, node.cert_len, node.key, node.key_len,
                              err, sizeof(err)) < 0)
        fail_msg("node: %s", err);
    svid_done(&node);
    if (svc && mesh_tls_material_add(m, id, "shop", name, svc->cert, svc->cert_len, svc->key,
                                     svc->key_len, err, sizeof(err)) < 0)
        fail_msg("%s: %s", id, err);
    return m;
}

static int accept_any(int ok, X509_STORE_CTX *x)
{
    (void)ok, (void)x;
    return 1;
}

/* A plain OpenSSL context with an SVID that accepts any peer: an attacker's client, or a
 * peer agent that resumes whatever it is offered. */
static SSL_CTX *raw_ctx(bool server, const struct svid *s)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    BIO *cb = BIO_new_mem_buf(s->cert, (int)s->cert_len);
    BIO *kb = BIO_new_mem_buf(s->key, (int)s->key_len);
    X509 *x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    if (server) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any);
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"raw", 3);
    }
    return ctx;
}

static bool want(SSL *ssl, int r)
{
    int e = SSL_get_error(ssl, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* Runs a handshake between c and s over a BIO pair (each SSL is freed by the caller), then
 * lets the client read what follows it (TLS 1.3 tickets, the server's verdict). Returns 0,
 * -1 when the client failed, -2 when the server did. */
static int handshake(SSL *c, SSL *s)
{
    BIO *bc = NULL, *bs = NULL;
    assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
    SSL_set_bio(c, bc, bc);
    SSL_set_bio(s, bs, bs);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    int rc = 0, rs = 0, failed = 0;
    for (int i = 0; i < 100 && !failed && (rc != 1 || rs != 1); i++) {
        if (rc != 1 && (rc = SSL_do_handshake(c)) != 1 && !want(c, rc))
            failed = -1;
        else if (rs != 1 && (rs = SSL_do_handshake(s)) != 1 && !want(s, rs))
            failed = -2;
    }
    if (failed) {
        ERR_clear_error();
        return failed;
    }
    char b;
    for (int i = 0; i < 3; i++) {
        if (SSL_read(c, &b, 1) <= 0 && !want(c, 0))
            break;
    }
    ERR_clear_error();
    return rc == 1 && rs == 1 ? 0 : -3;
}

/* Ends a connection as it ends cleanly (a session of one freed without a shutdown is
 * marked not resumable by OpenSSL) and frees both sides. */
static void finish(SSL *c, SSL *s)
{
    SSL_shutdown(c);
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();
}

static void wait_past(time_t t)
{
    while (time(NULL) <= t)
        usleep(100 * 1000);
}

/* A ticket's lifetime ends with the earlier certificate, the client's or the server's. */
static void test_ticket_lifetime_is_capped_by_both_certificates(void **state)
{
    (void)state;
    struct pki p;
    make_ca(&p);
    for (int which = 0; which < 2; which++) {
        uint64_t api_ttl = which ? 60 : 3600, web_ttl = which ? 3600 : 40;
        struct svid api = issue(&p, API, api_ttl), web = issue(&p, WEB, web_ttl);
        struct mesh_tls_material *server = material(&p, &api, API, "api");
        SSL_CTX *client = raw_ctx(false, &web);
        SSL *c = SSL_new(client), *s = mesh_tls_server_session(server);
        SSL_set_tlsext_host_name(c, sni_api_shop);
        assert_int_equal(handshake(c, s), 0);
        SSL_SESSION *sess = SSL_get1_session(c);
        assert_non_null(sess);
        uint64_t life = SSL_SESSION_get_ticket_lifetime_hint(sess);
        time_t cap = (which ? api.not_after : web.not_after) - time(NULL);
        if (life > (uint64_t)cap + 1 || life + 5 < (uint64_t)cap)
            fail_msg("ticket lifetime %lu s; the %s certificate has %ld s left",
                     (unsigned long)life, which ? "server's" : "client's", (long)cap);
        SSL_SESSION_free(sess);
        SSL_free(c);
        SSL_free(s);
        SSL_CTX_free(client);
        mesh_tls_material_unref(server);
        svid_done(&api);
        svid_done(&web);
    }
    free_ca(&p);
}

/*
 * Both sides once certificates expire: a client whose certificate expired offers its
 * ticket anyway (its clock set to claim a fresh ticket) and is not resumed; our client does
 * not offer a session with a peer whose certificate expired; neither side presents an
 * expired certificate of its own. One wait for the short-lived certificates serves all.
 */
static void test_expired_certificates_end_sessions_and_are_not_presented(void **state)
{
    (void)state;
    struct pki p;
    make_ca(&p);
    struct svid api = issue(&p, API, 3600), web = issue(&p, WEB, 3600);
    struct mesh_tls_material *server = material(&p, &api, API, "api");
    struct mesh_tls_material *client = material(&p, &web, WEB, "web");
    SSL_CTX *other = raw_ctx(true, &api); /* sees whether a client presents a certificate */
    /* Short-lived (5 s): the attacker's client, a peer agent's server (one that resumes
     * whatever it is offered), and our own service's two certificates. */
    struct svid probe = issue(&p, "spiffe://" TD "/ns/shop/svc/probe", SHORT_S);
    struct svid peer_api = issue(&p, API, SHORT_S);
    struct svid our_api = issue(&p, API, SHORT_S), our_web = issue(&p, WEB, SHORT_S);
    struct mesh_tls_material *expiring_server = material(&p, &our_api, API, "api");
    struct mesh_tls_material *expiring_client = material(&p, &our_web, WEB, "web");
    SSL_CTX *attacker = raw_ctx(false, &probe);
    SSL_CTX *peer = raw_ctx(true, &peer_api);
    struct mesh_tls_sessions cache;
    mesh_tls_sessions_init(&cache);
    const struct mesh_tls_identity *as = mesh_tls_find(client, "shop", "web");
    const struct mesh_tls_identity *as_expiring = mesh_tls_find(expiring_client, "shop", "web");

    /* While everything is valid: sessions are made and resumed. */
    SSL *c = SSL_new(attacker), *s = mesh_tls_server_session(server);
    SSL_set_tlsext_host_name(c, sni_api_shop);
    assert_int_equal(handshake(c, s), 0);
    SSL_SESSION *stolen = SSL_get1_session(c);
    finish(c, s);
    c = SSL_new(attacker);
    s = mesh_tls_server_session(server);
    SSL_set_tlsext_host_name(c, sni_api_shop);
    SSL_set_session(c, stolen);
    assert_int_equal(handshake(c, s), 0);
    assert_true(SSL_session_reused(s)); /* the path the attack takes exists */
    SSL_SESSION_free(stolen);
    stolen = SSL_get1_session(c);
    finish(c, s);

    c = mesh_tls_client_session(as, "api.shop", API, &cache, "10.0.0.1:15008");
    s = SSL_new(peer);
    assert_int_equal(handshake(c, s), 0);
    finish(c, s);
    c = mesh_tls_client_session(as, "api.shop", API, &cache, "10.0.0.1:15008");
    s = SSL_new(peer);
    assert_int_equal(handshake(c, s), 0);
    assert_true(SSL_session_reused(c));
    finish(c, s);

    time_t last = probe.not_after;
    const time_t ends[] = {peer_api.not_after, our_api.not_after, our_web.not_after};
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        last = ends[i] > last ? ends[i] : last;
    wait_past(last);

    /* The server: the attacker's ticket is refused; the full handshake then fails. */
    c = SSL_new(attacker);
    s = mesh_tls_server_session(server);
    SSL_set_tlsext_host_name(c, sni_api_shop);
    SSL_SESSION_set_time(stolen, (long)time(NULL)); /* so that its client offers it */
    SSL_set_session(c, stolen);
    int r = handshake(c, s);
    assert_false(SSL_session_reused(s));
    assert_int_not_equal(r, 0);
    finish(c, s);

    /* The client: the session kept with the peer whose certificate expired is not offered;
     * the full handshake fails on that certificate. */
    c = mesh_tls_client_session(as, "api.shop", API, &cache, "10.0.0.1:15008");
    s = SSL_new(peer);
    r = handshake(c, s);
    assert_false(SSL_session_reused(s));
    assert_int_not_equal(r, 0);
    finish(c, s);

    /* Our own expired certificate, as a server: refused before it is sent. */
    c = SSL_new(attacker);
    s = mesh_tls_server_session(expiring_server);
    SSL_set_tlsext_host_name(c, sni_api_shop);
    assert_int_not_equal(handshake(c, s), 0);
    assert_null(SSL_get0_peer_certificate(c));
    assert_contains(mesh_tls_refusal(s), "expired");
    finish(c, s);

    /* ... and as a client: the handshake ends before our certificate is sent. */
    c = mesh_tls_client_session(as_expiring, "api.shop", API, NULL, NULL);
    s = SSL_new(other);
    assert_int_not_equal(handshake(c, s), 0);
    assert_null(SSL_get0_peer_certificate(s));
    assert_contains(mesh_tls_refusal(c), "expired");
    finish(c, s);

    SSL_SESSION_free(stolen);
    mesh_tls_sessions_done(&cache);
    SSL_CTX_free(attacker);
    SSL_CTX_free(peer);
    SSL_CTX_free(other);
    mesh_tls_material_unref(server);
    mesh_tls_material_unref(client);
    mesh_tls_material_unref(expiring_server);
    mesh_tls_material_unref(expiring_client);
    struct svid *all[] = {&probe, &peer_api, &our_api, &our_web, &api, &web};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        svid_done(all[i]);
    free_ca(&p);
}

/* New material (a rotation, a new trust bundle) does not resume the old one's tickets,
 * and an SSL keeps its material alive after the last other reference goes. */
static void test_tickets_of_other_material_are_refused(void **state)
{
    (void)state;
    struct pki p;
    make_ca(&p);
    struct svid api = issue(&p, API, 3600), probe = issue(&p, WEB, 3600);
    struct mesh_tls_material *m1 = material(&p, &api, API, "api");
    SSL_CTX *attacker = raw_ctx(false, &probe);
    SSL *c = SSL_new(attacker), *s = mesh_tls_server_session(m1);
    mesh_tls_material_unref(m1); /* s holds it */
    SSL_set_tlsext_host_name(c, sni_api_shop);
    assert_int_equal(handshake(c, s), 0);
    SSL_SESSION *sess = SSL_get1_session(c);
    finish(c, s);
    struct mesh_tls_material *m2 = material(&p, &api, API, "api");
    c = SSL_new(attacker);
    s = mesh_tls_server_session(m2);
    SSL_set_tlsext_host_name(c, sni_api_shop);
    SSL_set_session(c, sess);
    assert_int_equal(handshake(c, s), 0);
    assert_false(SSL_session_reused(s));
    finish(c, s);
    SSL_SESSION_free(sess);
    SSL_CTX_free(attacker);
    mesh_tls_material_unref(m2);
    svid_done(&api);
    svid_done(&probe);
    free_ca(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_ticket_lifetime_is_capped_by_both_certificates),
        UNIT_TEST(test_expired_certificates_end_sessions_and_are_not_presented),
        UNIT_TEST(test_tickets_of_other_material_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
