#include "common/x509.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/alloc.h"

EVP_PKEY *mesh_x509_new_key(void)
{
    return EVP_EC_gen("P-256");
}

static char *bio_text(BIO *b, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = n > 0 ? mesh_malloc((size_t)n + 1) : NULL;
    if (out) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    BIO_free(b);
    return out;
}

char *mesh_x509_key_pem(EVP_PKEY *key, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) != 1) {
        BIO_free(b);
        return NULL;
    }
    return bio_text(b, len);
}

char *mesh_x509_cert_pem(X509 *cert, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || PEM_write_bio_X509(b, cert) != 1) {
        BIO_free(b);
        return NULL;
    }
    return bio_text(b, len);
}

static X509_EXTENSION *uri_san(const char *id)
{
    char value[2100];
    snprintf(value, sizeof(value), "URI:%s", id);
    return X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, value);
}

char *mesh_x509_csr_pem(EVP_PKEY *key, const char *id, size_t *len)
{
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *san = uri_san(id);
    char *out = NULL;
    if (req && exts && san && sk_X509_EXTENSION_push(exts, san) &&
        X509_REQ_set_version(req, 0) == 1 && X509_REQ_set_pubkey(req, key) == 1 &&
        X509_REQ_add_extensions(req, exts) == 1 && X509_REQ_sign(req, key, EVP_sha256()) > 0) {
        san = NULL; /* the stack owns it */
        BIO *b = BIO_new(BIO_s_mem());
        if (b && PEM_write_bio_X509_REQ(b, req) == 1)
            out = bio_text(b, len);
        else
            BIO_free(b);
    }
    X509_EXTENSION_free(san);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    ERR_clear_error();
    return out;
}

/* The URI SANs a CSR asks for: 0, or 1 with *uri set to a copy (caller frees). */
static int csr_uri(X509_REQ *req, char **uri)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    int n = 0;
    *uri = NULL;
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_subject_alt_name)
            continue;
        GENERAL_NAMES *names = X509V3_EXT_d2i(e);
        for (int k = 0; names && k < sk_GENERAL_NAME_num(names); k++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, k);
            n++;
            if (g->type == GEN_URI && n == 1) {
                const ASN1_IA5STRING *s = g->d.uniformResourceIdentifier;
                *uri = mesh_strndup((const char *)ASN1_STRING_get0_data(s),
                                    (size_t)ASN1_STRING_length(s));
            }
        }
        GENERAL_NAMES_free(names);
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return n;
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok = e && X509_add_ext(cert, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

time_t mesh_x509_not_before(const X509 *c)
{
    struct tm tm;
    return ASN1_TIME_to_tm(X509_get0_notBefore(c), &tm) == 1 ? timegm(&tm) : 0;
}

time_t mesh_x509_not_after(const X509 *c)
{
    struct tm tm;
    return ASN1_TIME_to_tm(X509_get0_notAfter(c), &tm) == 1 ? timegm(&tm) : 0;
}

X509 *mesh_x509_sign_csr(X509 *ca, EVP_PKEY *ca_key, const char *csr_pem, size_t csr_len,
                         const char *id, uint64_t ttl_s, char *err, size_t err_size)
{
    BIO *b = BIO_new_mem_buf(csr_pem, (int)csr_len);
    X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    X509 *cert = NULL;
    EVP_PKEY *pub = req ? X509_REQ_get0_pubkey(req) : NULL;
    char *uri = NULL;
    if (!req) {
        snprintf(err, err_size, "not a PEM certificate request");
        goto out;
    }
    if (!pub || X509_REQ_verify(req, pub) != 1) {
        snprintf(err, err_size, "the request's signature does not verify");
        goto out;
    }
    int n = csr_uri(req, &uri);
    if (n > 1 || (n == 1 && (!uri || strcmp(uri, id) != 0))) {
        snprintf(err, err_size, "the request asks for another identity than %s", id);
        goto out;
    }
    time_t now = time(NULL), ca_end = mesh_x509_not_after(ca);
    int64_t secs = (int64_t)ttl_s;
    if (ca_end && now + secs > ca_end)
        secs = ca_end - now;
    if (secs <= 0) {
        snprintf(err, err_size, "the CA certificate has expired");
        goto out;
    }
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    cert = X509_new();
    if (!cert || RAND_bytes(serial, sizeof(serial)) != 1)
        goto fail;
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    X509_NAME *subj = X509_NAME_new();
    bool ok = bn && subj && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) &&
              X509_set_version(cert, 2) == 1 &&
              X509_set_issuer_name(cert, X509_get_subject_name(ca)) &&
              X509_NAME_add_entry_by_txt(subj, "O", MBSTRING_ASC, (const unsigned char *)"mesh", -1,
                                         -1, 0) == 1 &&
              X509_set_subject_name(cert, subj) == 1 && X509_set_pubkey(cert, pub) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(cert), -(secs / 10 < 60 ? secs / 10 + 1 : 60)) &&
              X509_gmtime_adj(X509_getm_notAfter(cert), (long)secs);
    X509_NAME_free(subj);
    BN_free(bn);
    if (!ok)
        goto fail;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca, cert, NULL, NULL, 0);
    char san[2100];
    snprintf(san, sizeof(san), "URI:%s", id);
    if (!add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_ext(cert, &ctx, NID_key_usage, "critical,digitalSignature,keyAgreement") ||
        !add_ext(cert, &ctx, NID_ext_key_usage, "serverAuth,clientAuth") ||
        !add_ext(cert, &ctx, NID_subject_key_identifier, "hash") ||
        (X509_get0_subject_key_id(ca) && /* an operator's CA may have none */
         !add_ext(cert, &ctx, NID_authority_key_identifier, "keyid")) ||
        !add_ext(cert, &ctx, NID_subject_alt_name, san) ||
        X509_sign(cert, ca_key, EVP_sha256()) <= 0)
        goto fail;
    goto out;
fail:
    snprintf(err, err_size, "signing failed: %s", ERR_reason_error_string(ERR_peek_last_error()));
    X509_free(cert);
    cert = NULL;
out:
    mesh_free(uri);
    X509_REQ_free(req);
    ERR_clear_error();
    return cert;
}
