#define MESH_LOG_MODULE "ca"

#include "controller/ca.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/x509.h"

#define PEM_MAX (256 * 1024)
#define ROOT_DAYS 3650

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok = e && X509_add_ext(cert, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

static int set_serial(X509 *x)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return 0;
    b[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

/* A new self-signed root for the trust domain. */
static int make_root(struct mesh_ca *ca)
{
    ca->key = mesh_x509_new_key();
    ca->cert = X509_new();
    if (!ca->key || !ca->cert || !set_serial(ca->cert))
        return -ENOMEM;
    X509_NAME *n = X509_get_subject_name(ca->cert);
    char cn[300];
    snprintf(cn, sizeof(cn), "%s root CA", ca->trust_domain);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"mesh", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    char uri[300];
    snprintf(uri, sizeof(uri), "URI:spiffe://%s", ca->trust_domain);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca->cert, ca->cert, NULL, NULL, 0);
    if (X509_set_version(ca->cert, 2) != 1 || X509_set_issuer_name(ca->cert, n) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(ca->cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(ca->cert), (long)ROOT_DAYS * 86400) ||
        X509_set_pubkey(ca->cert, ca->key) != 1 ||
        !add_ext(ca->cert, &ctx, NID_basic_constraints, "critical,CA:TRUE") ||
        !add_ext(ca->cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        !add_ext(ca->cert, &ctx, NID_subject_key_identifier, "hash") ||
        !add_ext(ca->cert, &ctx, NID_subject_alt_name, uri) ||
        X509_sign(ca->cert, ca->key, EVP_sha256()) <= 0)
        return -EINVAL;
    return 0;
}

static int read_pem(const char *path, char **data, size_t *len)
{
    int r = mesh_fs_read_file(path, PEM_MAX, data, len);
    if (r < 0)
        mesh_log_error("cannot read '%s': %s", path, strerror(-r));
    return r;
}

/* The operator's CA, or ours from the state dir, or a new one kept there. */
static int load_or_make(const struct mesh_controller_config *cfg, struct mesh_ca *ca)
{
    char cert_path[4200], key_path[4200];
    bool own = !cfg->ca_cert[0];
    snprintf(cert_path, sizeof(cert_path), "%s", own ? "" : cfg->ca_cert);
    snprintf(key_path, sizeof(key_path), "%s", own ? "" : cfg->ca_key);
    if (own) {
        snprintf(cert_path, sizeof(cert_path), "%s/ca.crt", cfg->state_dir);
        snprintf(key_path, sizeof(key_path), "%s/ca.key", cfg->state_dir);
        if (access(cert_path, F_OK) != 0 && access(key_path, F_OK) != 0) {
            int r = make_root(ca);
            size_t cl = 0, kl = 0;
            char *cp = r == 0 ? mesh_x509_cert_pem(ca->cert, &cl) : NULL;
            char *kp = r == 0 ? mesh_x509_key_pem(ca->key, &kl) : NULL;
            /* The key first: a certificate on disk always has its key. */
            if (!cp || !kp || (r = mesh_fs_write_atomic(key_path, kp, kl, 0600)) < 0 ||
                (r = mesh_fs_write_atomic(cert_path, cp, cl, 0644)) < 0) {
                mesh_log_error("cannot create the CA in %s: %s", cfg->state_dir,
                               strerror(r < 0 ? -r : ENOMEM));
                mesh_free(cp);
                mesh_free(kp);
                return r < 0 ? r : -ENOMEM;
            }
            mesh_free(kp);
            ca->bundle_pem = cp;
            ca->bundle_len = cl;
            mesh_log_info("created a root CA for %s in %s", ca->trust_domain, cert_path);
            return 0;
        }
    }
    char *kp = NULL;
    size_t kl = 0;
    int r = read_pem(cert_path, &ca->bundle_pem, &ca->bundle_len);
    if (r == 0)
        r = read_pem(key_path, &kp, &kl);
    if (r < 0) {
        mesh_free(kp);
        return r;
    }
    BIO *cb = BIO_new_mem_buf(ca->bundle_pem, (int)ca->bundle_len);
    BIO *kb = BIO_new_mem_buf(kp, (int)kl);
    ca->cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    ca->key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(cb);
    BIO_free(kb);
    mesh_free(kp);
    ERR_clear_error();
    if (!ca->cert || !ca->key) {
        mesh_log_error("'%s' or '%s' holds no PEM certificate or key", cert_path, key_path);
        return -EINVAL;
    }
    if (X509_check_ca(ca->cert) == 0 || X509_check_private_key(ca->cert, ca->key) != 1) {
        ERR_clear_error();
        mesh_log_error("'%s' is not a CA certificate with the key in '%s'", cert_path, key_path);
        return -EINVAL;
    }
    if (mesh_x509_not_after(ca->cert) <= time(NULL)) {
        mesh_log_error("the CA certificate '%s' has expired", cert_path);
        return -EINVAL;
    }
    return 0;
}

/*
 * Lets an expired client certificate through the handshake, and nothing else: enrollment
 * takes a node's certificate, even expired, as the proof that it is the same node. Every
 * other use checks SSL_get_verify_result() and refuses it (see mesh_api_node()).
 */
static int verify_allow_expired(int ok, X509_STORE_CTX *ctx)
{
    if (!ok && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_CERT_HAS_EXPIRED &&
        X509_STORE_CTX_get_error_depth(ctx) == 0)
        return 1;
    return ok;
}

/* The API's certificate: signed now, for the CA's lifetime or a year, whichever is less. */
static int make_tls(const struct mesh_controller_config *cfg, struct mesh_ca *ca)
{
    EVP_PKEY *key = mesh_x509_new_key();
    X509 *x = X509_new();
    int r = -ENOMEM;
    if (!key || !x || !set_serial(x))
        goto out;
    char sans[4096];
    size_t off =
        (size_t)snprintf(sans, sizeof(sans), "URI:spiffe://%s/mesh-controller", ca->trust_domain);
    bool defaults = cfg->server_names.n == 0;
    const char *def[] = {"127.0.0.1", "localhost"};
    size_t n = defaults ? 2 : cfg->server_names.n;
    for (size_t i = 0; i < n && off < sizeof(sans); i++) {
        const char *name = defaults ? def[i] : cfg->server_names.v[i];
        struct mesh_addr a;
        bool ip = mesh_addr_from_ip(name, 1, &a) == 0;
        off += (size_t)snprintf(sans + off, sizeof(sans) - off, ",%s:%s", ip ? "IP" : "DNS", name);
    }
    X509_NAME *subj = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(subj, "O", MBSTRING_ASC, (const unsigned char *)"mesh", -1, -1, 0);
    X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_ASC, (const unsigned char *)"mesh-controller",
                               -1, -1, 0);
    long life = 365L * 86400;
    time_t left = mesh_x509_not_after(ca->cert) - time(NULL);
    if (left < life)
        life = (long)left;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca->cert, x, NULL, NULL, 0);
    r = -EINVAL;
    if (X509_set_version(x, 2) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), life) || X509_set_pubkey(x, key) != 1 ||
        !add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature,keyAgreement") ||
        !add_ext(x, &ctx, NID_ext_key_usage, "serverAuth") ||
        !add_ext(x, &ctx, NID_subject_alt_name, sans) || X509_sign(x, ca->key, EVP_sha256()) <= 0) {
        mesh_log_error("cannot make the API's certificate (server_names: %s)", sans);
        goto out;
    }
    ca->tls = SSL_CTX_new(TLS_server_method());
    X509_STORE *store = ca->tls ? SSL_CTX_get_cert_store(ca->tls) : NULL;
    if (!ca->tls || !store || SSL_CTX_use_certificate(ca->tls, x) != 1 ||
        SSL_CTX_use_PrivateKey(ca->tls, key) != 1 || X509_STORE_add_cert(store, ca->cert) != 1)
        goto out;
    SSL_CTX_set_min_proto_version(ca->tls, TLS1_2_VERSION);
    SSL_CTX_set_options(ca->tls, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* A node authenticates with its certificate; enrollment and meshctl come without one. */
    SSL_CTX_set_verify(ca->tls, SSL_VERIFY_PEER, verify_allow_expired);
    SSL_CTX_set_session_id_context(ca->tls, (const unsigned char *)"mesh-controller", 15);
    r = 0;
out:
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(key);
    return r;
}

int mesh_ca_open(const struct mesh_controller_config *cfg, struct mesh_ca *ca)
{
    memset(ca, 0, sizeof(*ca));
    ca->ttl_s = cfg->cert_ttl_ms / 1000;
    if (!(ca->trust_domain = mesh_strdup(cfg->trust_domain)))
        return -ENOMEM;
    int r = load_or_make(cfg, ca);
    if (r == 0)
        r = make_tls(cfg, ca);
    return r;
}

void mesh_ca_close(struct mesh_ca *ca)
{
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    SSL_CTX_free(ca->tls);
    mesh_free(ca->bundle_pem);
    mesh_free(ca->trust_domain);
    memset(ca, 0, sizeof(*ca));
}

/*
 * Why the key of a CSR is refused, in err, or 0 when it is acceptable: EC P-256 or P-384,
 * Ed25519, or RSA of at least 2048 bits. A CSR that does not parse is left to the signer.
 */
static int check_key(const char *csr, size_t csr_len, char *err, size_t err_size)
{
    BIO *b = BIO_new_mem_buf(csr, (int)csr_len);
    X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    EVP_PKEY *pub = req ? X509_REQ_get0_pubkey(req) : NULL;
    int r = 0;
    if (pub) {
        int type = EVP_PKEY_get_base_id(pub), bits = EVP_PKEY_get_bits(pub);
        char group[80] = "";
        size_t len = 0;
        int nid = NID_undef;
        if (type == EVP_PKEY_EC && EVP_PKEY_get_group_name(pub, group, sizeof(group), &len) == 1)
            nid = OBJ_sn2nid(group) != NID_undef ? OBJ_sn2nid(group) : EC_curve_nist2nid(group);
        if ((type == EVP_PKEY_RSA || type == EVP_PKEY_RSA_PSS) && bits < 2048) {
            snprintf(err, err_size, "the request's key is RSA of %d bits: at least 2048", bits);
            r = -EINVAL;
        } else if (type == EVP_PKEY_EC && nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) {
            snprintf(err, err_size, "the request's key is on curve %s: P-256 or P-384 only",
                     group[0] ? group : "(explicit parameters)");
            r = -EINVAL;
        } else if (type != EVP_PKEY_RSA && type != EVP_PKEY_RSA_PSS && type != EVP_PKEY_EC &&
                   type != EVP_PKEY_ED25519) {
            snprintf(err, err_size,
                     "the request's key is of type %s: expected EC P-256 or P-384, Ed25519, or "
                     "RSA of 2048 bits or more",
                     OBJ_nid2sn(type));
            r = -EINVAL;
        }
    }
    X509_REQ_free(req);
    ERR_clear_error();
    return r;
}

char *mesh_ca_sign(struct mesh_ca *ca, const char *csr, size_t csr_len, const char *id, char *err,
                   size_t err_size, char *serial, size_t serial_size, int64_t *not_after)
{
    if (check_key(csr, csr_len, err, err_size) < 0)
        return NULL;
    X509 *x = mesh_x509_sign_csr(ca->cert, ca->key, csr, csr_len, id, ca->ttl_s, err, err_size);
    if (!x)
        return NULL;
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    snprintf(serial, serial_size, "%s", hex ? hex : "");
    OPENSSL_free(hex);
    BN_free(bn);
    *not_after = mesh_x509_not_after(x);
    size_t len = 0;
    char *pem = mesh_x509_cert_pem(x, &len);
    X509_free(x);
    if (!pem)
        snprintf(err, err_size, "out of memory");
    return pem;
}
