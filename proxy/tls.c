#include "proxy/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/spiffe.h"
#include "common/x509.h"

/* Every SSL made here carries these; no SSL_CTX points at the material. */
static int idx_material = -1; /* SSL: a reference to its material (released with the SSL) */
static int idx_as = -1;       /* SSL: the identity a client presents */
static int idx_expected = -1; /* SSL: the SPIFFE ID a client wants (owned) */
static int idx_peer = -1;     /* SSL: the peer's SPIFFE ID, once verified */
static int idx_refusal = -1;  /* SSL: why our checks refused the peer */
static int idx_cache = -1;    /* SSL: the struct mesh_tls_sessions its tickets go to */
static int idx_key = -1;      /* SSL: its key there (owned) */

/* Sessions kept for resumption live no longer than this (server tickets say the same), and
 * never past the notAfter of either certificate they were made with. */
#define SESSION_LIFETIME_S 300
/* A ticket key encrypts for this long and decrypts for as long again. */
#define TICKET_KEY_PERIOD_S 300
#define TICKET_APPDATA_LEN 16 /* our certificate's notAfter, the material's uid */

struct tls_cached {
    SSL_SESSION *session;
    uint64_t material; /* the uid of the material it was made with: other material, not offered */
    time_t expires;    /* its lifetime, capped by both certificates' notAfter */
    char key[];
};
static uv_once_t once = UV_ONCE_INIT;

/* OpenSSL's ex_data slots take void *; what we keep there is read-only. */
static void *unconst(const void *p)
{
    return (void *)(uintptr_t)p;
}

static void free_string(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    mesh_free(ptr);
}

static void free_material(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    mesh_tls_material_unref(ptr);
}

static void init_indexes(void)
{
    idx_material = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_material);
    idx_as = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    idx_expected = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_string);
    idx_peer = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_string);
    idx_refusal = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    idx_cache = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    idx_key = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_string);
}

static void set_err(char *err, size_t size, const char *what)
{
    unsigned long e = ERR_get_error();
    if (e)
        snprintf(err, size, "%s: %s", what, ERR_reason_error_string(e));
    else
        snprintf(err, size, "%s", what);
    ERR_clear_error();
}

/* ---- verification ---- */

/*
 * Whether id is the older form of the ID of the service a client's SNI
 * ("[<port>.]<service>.<namespace>") names, spiffe://<td>/ns/<namespace>/svc/<service>: an
 * agent not yet upgraded still presents it (the transition in docs/identity.md).
 */
static bool legacy_of_sni(SSL *ssl, const char *td, const char *id)
{
    const char *sni = mesh_tls_sni_service(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    const char *dot = sni ? strchr(sni, '.') : NULL;
    char name[256], legacy[MESH_SPIFFE_ID_MAX + 1];
    if (!dot || dot == sni || (size_t)(dot - sni) >= sizeof(name) || !td)
        return false;
    memcpy(name, sni, (size_t)(dot - sni));
    name[dot - sni] = '\0';
    mesh_spiffe_legacy_service_id(legacy, sizeof(legacy), td, dot + 1, name);
    return strcmp(legacy, id) == 0;
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
    if (!ok || X509_STORE_CTX_get_error_depth(x) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    const struct mesh_tls_material *m = SSL_get_ex_data(ssl, idx_material);
    const struct mesh_tls_identity *as = SSL_get_ex_data(ssl, idx_as);
    char id[MESH_SPIFFE_ID_MAX + 1];
    const char *why = NULL;
    /* A client verifies the server before it sends its own certificate: one that expired
     * (renewal keeps failing) is not presented. */
    if (as && as->not_after <= time(NULL)) {
        SSL_set_ex_data(ssl, idx_refusal,
                        unconst("our own certificate has expired (renewal keeps failing): "
                                "not presenting it"));
        X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (!m || !mesh_spiffe_check_leaf(X509_STORE_CTX_get_current_cert(x), m->trust_domain, id,
                                      sizeof(id), &why)) {
        SSL_set_ex_data(ssl, idx_refusal, unconst(why));
        X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    const char *expected = SSL_get_ex_data(ssl, idx_expected);
    if (expected && strcmp(expected, id) != 0 && !legacy_of_sni(ssl, m->trust_domain, id)) {
        SSL_set_ex_data(ssl, idx_refusal, unconst("the peer is not the expected SPIFFE ID"));
        X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    char *copy = mesh_strdup(id);
    if (!copy)
        return 0;
    mesh_free(SSL_get_ex_data(ssl, idx_peer));
    SSL_set_ex_data(ssl, idx_peer, copy);
    return 1;
}

const char *mesh_tls_peer_id(SSL *ssl)
{
    const char *id = ssl ? SSL_get_ex_data(ssl, idx_peer) : NULL;
    if (id || !ssl || !SSL_session_reused(ssl))
        return id ? id : "";
    /* Resumed: no certificate was exchanged; the session holds the one first verified. */
    X509 *cert = SSL_get0_peer_certificate(ssl);
    const struct mesh_tls_material *m = SSL_get_ex_data(ssl, idx_material);
    char buf[MESH_SPIFFE_ID_MAX + 1];
    const char *why;
    char *copy = NULL;
    if (cert && m && mesh_spiffe_check_leaf(cert, m->trust_domain, buf, sizeof(buf), &why))
        copy = mesh_strdup(buf);
    if (!copy)
        return "";
    SSL_set_ex_data(ssl, idx_peer, copy);
    return copy;
}

/* ---- client sessions ---- */

void mesh_tls_sessions_init(struct mesh_tls_sessions *c)
{
    mesh_hmap_init(&c->map);
    c->resumed = 0;
}

static void cached_free(struct tls_cached *t)
{
    SSL_SESSION_free(t->session);
    mesh_free(t);
}

void mesh_tls_sessions_done(struct mesh_tls_sessions *c)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&c->map, &i, &e))
        cached_free(e->value);
    mesh_hmap_done(&c->map);
}

/* A ticket arrived (after the handshake, in TLS 1.3): keep it for the next connection. */
static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    struct mesh_tls_sessions *c = SSL_get_ex_data(ssl, idx_cache);
    const char *key = SSL_get_ex_data(ssl, idx_key);
    const struct mesh_tls_identity *as = SSL_get_ex_data(ssl, idx_as);
    const X509 *peer = SSL_SESSION_get0_peer(session);
    if (!c || !key || !as || !peer)
        return 0;
    /* No longer than the ticket says, nor past either certificate's notAfter. */
    time_t expires = (time_t)(SSL_SESSION_get_time(session) + SSL_SESSION_get_timeout(session));
    time_t peer_end = mesh_x509_not_after(peer);
    if (as->not_after < expires)
        expires = as->not_after;
    if (peer_end < expires)
        expires = peer_end;
    if (expires <= time(NULL))
        return 0;
    struct tls_cached *old = mesh_hmap_get(&c->map, key);
    if (old) {
        mesh_hmap_remove(&c->map, key);
        cached_free(old);
    } else if (c->map.n >= MESH_TLS_SESSIONS_MAX) {
        return 0; /* full: endpoints already kept go on resuming */
    }
    size_t len = strlen(key) + 1;
    struct tls_cached *t = mesh_malloc(sizeof(*t) + len);
    if (!t)
        return 0;
    memcpy(t->key, key, len);
    t->session = session;
    t->material = as->material->uid;
    t->expires = expires;
    if (mesh_hmap_put(&c->map, t->key, t) < 0) {
        mesh_free(t);
        return 0;
    }
    return 1; /* the reference is ours */
}

const char *mesh_tls_refusal(SSL *ssl)
{
    return ssl ? SSL_get_ex_data(ssl, idx_refusal) : NULL;
}

const char *mesh_tls_sni_service(const char *sni)
{
    size_t digits = 0;
    while (sni && sni[digits] >= '0' && sni[digits] <= '9')
        digits++;
    return digits && digits <= 5 && sni[digits] == '.' ? sni + digits + 1 : sni;
}

void mesh_tls_instance_sni(char *out, size_t size, const char *service_sni, uint16_t port)
{
    if (port)
        snprintf(out, size, "%u.%s", (unsigned)port, service_sni);
    else
        snprintf(out, size, "%s", service_sni);
}

/* SNI "[<port>.]<service>.<namespace>": the service's certificate. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)arg;
    const struct mesh_tls_material *m = SSL_get_ex_data(ssl, idx_material);
    const char *sni = mesh_tls_sni_service(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    const char *dot = sni ? strchr(sni, '.') : NULL;
    char name[64];
    if (!dot || (size_t)(dot - sni) >= sizeof(name)) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        SSL_set_ex_data(ssl, idx_refusal, unconst("no SNI naming a local service"));
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    memcpy(name, sni, (size_t)(dot - sni));
    name[dot - sni] = '\0';
    const struct mesh_tls_identity *id = mesh_tls_find(m, dot + 1, name);
    if (!id) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        SSL_set_ex_data(ssl, idx_refusal, unconst("the SNI names no local service"));
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (id->not_after <= time(NULL)) {
        *alert = SSL_AD_HANDSHAKE_FAILURE;
        SSL_set_ex_data(ssl, idx_refusal,
                        unconst("our certificate for the SNI's service has expired (renewal "
                                "keeps failing): not presenting it"));
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    SSL_set_SSL_CTX(ssl, id->server);
    return SSL_TLSEXT_ERR_OK;
}

/* ---- server tickets ---- */

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* A ticket key of the material for one period: HMAC-SHA256(secret, label || period). */
static bool ticket_key(const struct mesh_tls_material *m, const char *label, uint64_t period,
                       unsigned char out[32])
{
    unsigned char in[16];
    size_t n = strlen(label);
    memcpy(in, label, n);
    put_u64(in + n, period);
    unsigned int len = 0;
    return HMAC(EVP_sha256(), m->ticket_secret, sizeof(m->ticket_secret), in, n + 8, out, &len) &&
           len == 32;
}

/*
 * Session ticket keys (SSL_CTX_set_tlsext_ticket_key_evp_cb(3)): derived from the material's
 * secret per period of TICKET_KEY_PERIOD_S, so they rotate with no shared state between
 * workers. The key name is the material's uid and the period: a ticket of other material,
 * or two periods old, is not recognised (a full handshake follows).
 */
static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    const struct mesh_tls_material *m = SSL_get_ex_data(ssl, idx_material);
    uint64_t now = (uint64_t)time(NULL) / TICKET_KEY_PERIOD_S, period = now;
    if (!m)
        return enc ? -1 : 0;
    if (enc) {
        put_u64(name, m->uid);
        put_u64(name + 8, period);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
    } else {
        period = get_u64(name + 8);
        if (get_u64(name) != m->uid || (period != now && period + 1 != now))
            return 0;
    }
    unsigned char aes[32], mac[32];
    char digest[] = "SHA256";
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, mac, sizeof(mac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[2] = OSSL_PARAM_construct_end();
    int r = -1;
    if (ticket_key(m, "aes", period, aes) && ticket_key(m, "mac", period, mac) &&
        EVP_MAC_CTX_set_params(hctx, params) == 1 &&
        (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes, iv)
             : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes, iv)) == 1)
        r = enc || period == now ? 1 : 2; /* 2: valid, but renew it */
    OPENSSL_cleanse(aes, sizeof(aes));
    OPENSSL_cleanse(mac, sizeof(mac));
    return r;
}

/*
 * A ticket is about to be made: its lifetime (which OpenSSL also enforces when it comes
 * back, from inside the ticket) ends at the earliest of SESSION_LIFETIME_S and both
 * certificates' notAfter; our notAfter and the material go into it too.
 */
static int on_ticket_generate(SSL *ssl, void *arg)
{
    (void)arg;
    SSL_SESSION *sess = SSL_get_session(ssl);
    const struct mesh_tls_material *m = SSL_get_ex_data(ssl, idx_material);
    const X509 *own = SSL_get_certificate(ssl);
    const X509 *peer = sess ? SSL_SESSION_get0_peer(sess) : NULL;
    if (!sess)
        return 1;
    time_t start = (time_t)SSL_SESSION_get_time(sess), end = start + SESSION_LIFETIME_S;
    time_t own_end = own ? mesh_x509_not_after(own) : 0,
           peer_end = peer ? mesh_x509_not_after(peer) : 0;
    if (own_end < end)
        end = own_end;
    if (peer_end < end)
        end = peer_end;
    SSL_SESSION_set_timeout(sess, end > start ? (long)(end - start) : 0);
    unsigned char data[TICKET_APPDATA_LEN];
    put_u64(data, (uint64_t)own_end);
    put_u64(data + 8, m ? m->uid : 0);
    return SSL_SESSION_set1_ticket_appdata(sess, data, sizeof(data));
}

/* A ticket came back and decrypted: refused (a full handshake) when made under other
 * material or when either certificate has expired since. */
static SSL_TICKET_RETURN on_ticket_decrypted(SSL *ssl, SSL_SESSION *sess,
                                             const unsigned char *keyname, size_t keyname_len,
                                             SSL_TICKET_STATUS status, void *arg)
{
    (void)keyname, (void)keyname_len, (void)arg;
    if (status == SSL_TICKET_FATAL_ERR_MALLOC || status == SSL_TICKET_FATAL_ERR_OTHER)
        return SSL_TICKET_RETURN_ABORT;
    if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    const struct mesh_tls_material *m = SSL_get_ex_data(ssl, idx_material);
    const X509 *peer = SSL_SESSION_get0_peer(sess);
    void *data = NULL;
    size_t len = 0;
    time_t now = time(NULL);
    if (!m || !peer || SSL_SESSION_get0_ticket_appdata(sess, &data, &len) != 1 ||
        len != TICKET_APPDATA_LEN || get_u64((const unsigned char *)data + 8) != m->uid ||
        (time_t)get_u64(data) <= now || mesh_x509_not_after(peer) <= now)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    return status == SSL_TICKET_SUCCESS_RENEW ? SSL_TICKET_RETURN_USE_RENEW : SSL_TICKET_RETURN_USE;
}

/* ---- material ---- */

int mesh_tls_material_new(const char *trust_domain, bool tls12, const char *bundle_pem,
                          size_t bundle_len, struct mesh_tls_material **ret, char *err,
                          size_t err_size)
{
    uv_once(&once, init_indexes);
    struct mesh_tls_material *m = mesh_calloc(1, sizeof(*m));
    if (!m || !(m->trust_domain = mesh_strdup(trust_domain)) || !(m->bundle = X509_STORE_new())) {
        if (m)
            mesh_free(m->trust_domain);
        mesh_free(m);
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    atomic_init(&m->refs, 1);
    m->tls12 = tls12;
    unsigned char uid[8];
    if (RAND_bytes(uid, sizeof(uid)) != 1 ||
        RAND_bytes(m->ticket_secret, sizeof(m->ticket_secret)) != 1) {
        set_err(err, err_size, "no random bytes for session ticket keys");
        mesh_tls_material_unref(m);
        return -EIO;
    }
    m->uid = get_u64(uid);
    BIO *bio = BIO_new_mem_buf(bundle_pem, (int)bundle_len);
    int n = 0;
    X509 *ca;
    while (bio && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        if (!(X509_get_extension_flags(ca) & EXFLAG_CA)) {
            X509_free(ca);
            snprintf(err, err_size, "trust bundle: certificate %d is not a CA", n + 1);
            n = -1;
            break;
        }
        X509_STORE_add_cert(m->bundle, ca);
        X509_free(ca);
        n++;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (n <= 0) {
        if (n == 0)
            snprintf(err, err_size, "trust bundle: no PEM certificate");
        mesh_tls_material_unref(m);
        return -EINVAL;
    }
    *ret = m;
    return 0;
}

static SSL_CTX *make_ctx(struct mesh_tls_material *m, bool server, X509 *leaf, EVP_PKEY *key,
                         STACK_OF(X509) * chain, char *err, size_t err_size)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        set_err(err, err_size, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, m->tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle connections hold no buffers */
    bool ok = SSL_CTX_use_certificate(ctx, leaf) == 1 && SSL_CTX_use_PrivateKey(ctx, key) == 1 &&
              SSL_CTX_check_private_key(ctx) == 1;
    for (int i = 0; ok && chain && i < sk_X509_num(chain); i++)
        ok = SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) == 1;
    if (!ok) {
        set_err(err, err_size, "the certificate and key do not go together");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set1_cert_store(ctx, m->bundle);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_timeout(ctx, SESSION_LIFETIME_S);
    if (!server) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
        return ctx;
    }
    /* Resumption by tickets only (no server-side cache that our checks would not see). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"mesh", 4);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_alpn_select_cb(ctx, mesh_tls_alpn_select, NULL);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key) != 1 ||
        SSL_CTX_set_session_ticket_cb(ctx, on_ticket_generate, on_ticket_decrypted, NULL) != 1) {
        set_err(err, err_size, "cannot set the session ticket callbacks");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Checks that leaf chains to the bundle (with chain) and is an SVID for id (or, for the
 * service ns/name, the older form of its ID: the transition in docs/identity.md). */
static bool check_leaf(struct mesh_tls_material *m, X509 *leaf, STACK_OF(X509) * chain,
                       const char *id, const char *ns, const char *name, char *err, size_t err_size)
{
    X509_STORE_CTX *x = X509_STORE_CTX_new();
    if (!x || X509_STORE_CTX_init(x, m->bundle, leaf, chain) != 1) {
        X509_STORE_CTX_free(x);
        snprintf(err, err_size, "out of memory");
        return false;
    }
    int ok = X509_verify_cert(x);
    int e = X509_STORE_CTX_get_error(x);
    X509_STORE_CTX_free(x);
    ERR_clear_error();
    if (ok != 1) {
        snprintf(err, err_size, "does not chain to the trust bundle: %s",
                 X509_verify_cert_error_string(e));
        return false;
    }
    char got[MESH_SPIFFE_ID_MAX + 1];
    const char *why;
    if (!mesh_spiffe_check_leaf(leaf, m->trust_domain, got, sizeof(got), &why)) {
        snprintf(err, err_size, "not a valid SVID: %s", why);
        return false;
    }
    char legacy[MESH_SPIFFE_ID_MAX + 1] = "";
    if (ns && name)
        mesh_spiffe_legacy_service_id(legacy, sizeof(legacy), m->trust_domain, ns, name);
    if (strcmp(got, id) != 0 && strcmp(got, legacy) != 0) {
        snprintf(err, err_size, "is for %s, not %s", got, id);
        return false;
    }
    return true;
}

int mesh_tls_material_add(struct mesh_tls_material *m, const char *id, const char *ns,
                          const char *name, const char *cert_pem, size_t cert_len,
                          const char *key_pem, size_t key_len, char *err, size_t err_size)
{
    BIO *cb = BIO_new_mem_buf(cert_pem, (int)cert_len);
    BIO *kb = BIO_new_mem_buf(key_pem, (int)key_len);
    X509 *leaf = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509 *c;
    while (cb && chain && (c = PEM_read_bio_X509(cb, NULL, NULL, NULL)))
        sk_X509_push(chain, c);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    int r = -EINVAL;
    struct mesh_tls_identity idn = {0};
    if (!leaf)
        snprintf(err, err_size, "no PEM certificate");
    else if (!key)
        snprintf(err, err_size, "no PEM private key");
    else if (!chain)
        snprintf(err, err_size, "out of memory");
    else if (check_leaf(m, leaf, chain, id, ns, name, err, err_size) &&
             (idn.server = make_ctx(m, true, leaf, key, chain, err, err_size)) &&
             (idn.client = make_ctx(m, false, leaf, key, chain, err, err_size))) {
        const ASN1_TIME *na = X509_get0_notAfter(leaf);
        struct tm tm;
        idn.not_after = ASN1_TIME_to_tm(na, &tm) == 1 ? timegm(&tm) : 0;
        r = -ENOMEM;
        struct mesh_tls_identity *v = mesh_realloc(m->ids, (m->n + 1) * sizeof(*v));
        if (v) {
            m->ids = v;
            if ((idn.id = mesh_strdup(id)) && (!ns || (idn.namespace = mesh_strdup(ns))) &&
                (!name || (idn.name = mesh_strdup(name)))) {
                idn.material = m;
                m->ids[m->n++] = idn;
                idn = (struct mesh_tls_identity){0};
                r = 0;
            }
        }
        if (r < 0)
            snprintf(err, err_size, "out of memory");
    }
    SSL_CTX_free(idn.server);
    SSL_CTX_free(idn.client);
    mesh_free(idn.id);
    mesh_free(idn.namespace);
    mesh_free(idn.name);
    X509_free(leaf);
    EVP_PKEY_free(key);
    sk_X509_pop_free(chain, X509_free);
    return r;
}

struct mesh_tls_material *mesh_tls_material_ref(struct mesh_tls_material *m)
{
    if (m)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

void mesh_tls_material_unref(struct mesh_tls_material *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    for (size_t i = 0; i < m->n; i++) {
        SSL_CTX_free(m->ids[i].server);
        SSL_CTX_free(m->ids[i].client);
        mesh_free(m->ids[i].id);
        mesh_free(m->ids[i].namespace);
        mesh_free(m->ids[i].name);
    }
    mesh_free(m->ids);
    OPENSSL_cleanse(m->ticket_secret, sizeof(m->ticket_secret));
    X509_STORE_free(m->bundle);
    mesh_free(m->trust_domain);
    mesh_free(m);
}

const struct mesh_tls_identity *mesh_tls_find(const struct mesh_tls_material *m, const char *ns,
                                              const char *name)
{
    for (size_t i = 0; m && i < m->n; i++) {
        const struct mesh_tls_identity *id = &m->ids[i];
        if (id->name && strcmp(id->name, name) == 0 && strcmp(id->namespace, ns) == 0)
            return id;
    }
    return NULL;
}

const struct mesh_tls_identity *mesh_tls_find_id(const struct mesh_tls_material *m, const char *id)
{
    for (size_t i = 0; m && id && i < m->n; i++) {
        if (strcmp(m->ids[i].id, id) == 0)
            return &m->ids[i];
    }
    return NULL;
}

time_t mesh_tls_earliest_expiry(const struct mesh_tls_material *m)
{
    time_t t = 0;
    for (size_t i = 0; m && i < m->n; i++) {
        if (!t || m->ids[i].not_after < t)
            t = m->ids[i].not_after;
    }
    return t;
}

/* Gives ssl a reference to m, released when ssl is freed. */
static bool hold_material(SSL *ssl, const struct mesh_tls_material *m)
{
    struct mesh_tls_material *ref = mesh_tls_material_ref(unconst(m));
    if (SSL_set_ex_data(ssl, idx_material, ref) == 1)
        return true;
    mesh_tls_material_unref(ref);
    return false;
}

SSL *mesh_tls_server_session(const struct mesh_tls_material *m)
{
    if (!m->n)
        return NULL;
    SSL *ssl = SSL_new(m->ids[0].server);
    if (ssl && !hold_material(ssl, m)) {
        SSL_free(ssl);
        return NULL;
    }
    if (ssl)
        SSL_set_accept_state(ssl);
    return ssl;
}

SSL *mesh_tls_client_session(const struct mesh_tls_identity *as, const char *sni,
                             const char *expected_id, struct mesh_tls_sessions *cache,
                             const char *peer)
{
    SSL *ssl = SSL_new(as->client);
    if (!ssl)
        return NULL;
    if (!hold_material(ssl, as->material) || SSL_set_ex_data(ssl, idx_as, unconst(as)) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    if (cache) {
        /* The expected ID is part of the key: a resumed session skips the peer's checks, so
         * a session verified against one ID never stands for another. */
        char key[3 * MESH_SPIFFE_ID_MAX + 600];
        snprintf(key, sizeof(key), "%s|%s|%s|%s", as->id, sni, expected_id ? expected_id : "",
                 peer);
        char *copy = mesh_strdup(key);
        if (!copy) {
            SSL_free(ssl);
            return NULL;
        }
        SSL_set_ex_data(ssl, idx_cache, cache);
        SSL_set_ex_data(ssl, idx_key, copy);
        struct tls_cached *t = mesh_hmap_get(&cache->map, key);
        if (t && (t->material != as->material->uid || t->expires <= time(NULL) ||
                  !SSL_SESSION_is_resumable(t->session))) {
            /* Rotated, new trust bundle, or stale (a certificate expired): a full handshake. */
            mesh_hmap_remove(&cache->map, key);
            cached_free(t);
            t = NULL;
        }
        if (t)
            SSL_set_session(ssl, t->session);
    }
    /* SSL_set_tlsext_host_name() without its cast of a const string. */
    if (SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, unconst(sni)) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    /* A copy: the snapshot that names it may go before the handshake ends. */
    char *expected = expected_id ? mesh_strdup(expected_id) : NULL;
    if ((expected_id && !expected) || SSL_set_ex_data(ssl, idx_expected, expected) != 1) {
        mesh_free(expected);
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}
