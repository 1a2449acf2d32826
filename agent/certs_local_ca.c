#define MESH_LOG_MODULE "certs"

/*
 * The certificate manager's standalone mode: a local CA (identity.ca_cert, ca_key) signs
 * what the agent asks for. Keys are made here and kept with their certificates in
 * <state_dir>/certs; each certificate is renewed at half of its lifetime.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "agent/certs-int.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/x509.h"

static int open_local_ca(struct mesh_certs *c, const struct mesh_agent_identity_config *id)
{
    char *pem = NULL, *kpem = NULL;
    size_t len = 0, klen = 0;
    int r = mesh_fs_read_file(id->ca_cert, PEM_MAX, &pem, &len);
    if (r < 0) {
        mesh_certs_fail(c, "identity.ca_cert '%s': %s", id->ca_cert, strerror(-r));
        return r;
    }
    r = mesh_fs_read_file(id->ca_key, PEM_MAX, &kpem, &klen);
    if (r < 0) {
        mesh_certs_fail(c, "identity.ca_key '%s': %s", id->ca_key, strerror(-r));
        mesh_free(pem);
        return r;
    }
    c->ca = mesh_certs_parse_cert(pem, len);
    BIO *kb = BIO_new_mem_buf(kpem, (int)klen);
    c->ca_key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    ERR_clear_error();
    mesh_free(kpem);
    c->bundle_pem = pem;
    c->bundle_len = len;
    if (!c->ca) {
        mesh_certs_fail(c, "identity.ca_cert '%s': no PEM certificate", id->ca_cert);
        return -EINVAL;
    }
    if (!c->ca_key) {
        mesh_certs_fail(c, "identity.ca_key '%s': no PEM private key", id->ca_key);
        return -EINVAL;
    }
    if (X509_check_ca(c->ca) == 0) {
        mesh_certs_fail(c, "identity.ca_cert '%s': not a CA certificate", id->ca_cert);
        return -EINVAL;
    }
    int crit = -1;
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(c->ca, NID_key_usage, &crit, NULL);
    if (!ku || crit != 1 || !(X509_get_key_usage(c->ca) & KU_KEY_CERT_SIGN))
        mesh_log_warn("identity.ca_cert '%s' has no critical keyUsage with keyCertSign, as the "
                      "X509-SVID specification wants of a signing certificate; peers that check "
                      "it will refuse this mesh's certificates",
                      id->ca_cert);
    ASN1_BIT_STRING_free(ku);
    if (X509_check_private_key(c->ca, c->ca_key) != 1) {
        ERR_clear_error();
        mesh_certs_fail(c, "identity.ca_key '%s' is not the key of identity.ca_cert", id->ca_key);
        return -EINVAL;
    }
    if (mesh_x509_not_after(c->ca) <= time(NULL)) {
        mesh_certs_fail(c, "identity.ca_cert '%s' has expired", id->ca_cert);
        return -EINVAL;
    }
    return 0;
}

/* A new key and certificate for h, signed by the local CA and kept in the state dir. */
static int issue(struct mesh_certs *c, struct held *h)
{
    EVP_PKEY *key = mesh_x509_new_key();
    size_t kl = 0, csr_len = 0, cl = 0;
    char *kp = key ? mesh_x509_key_pem(key, &kl) : NULL;
    char *csr = key ? mesh_x509_csr_pem(key, h->id, &csr_len) : NULL;
    char err[256] = "out of memory";
    X509 *x =
        csr ? mesh_x509_sign_csr(c->ca, c->ca_key, csr, csr_len, h->id, c->ttl_s, err, sizeof(err))
            : NULL;
    char *cp = x ? mesh_x509_cert_pem(x, &cl) : NULL;
    EVP_PKEY_free(key);
    mesh_free(csr);
    int r = -ENOMEM;
    if (cp) {
        char crt[4200], kpath[4200];
        mesh_certs_paths(c, h, crt, kpath, sizeof(crt));
        /* The key first: a certificate on disk always has its key. */
        r = mesh_fs_write_atomic(kpath, kp, kl, 0600);
        if (r == 0)
            r = mesh_fs_write_atomic(crt, cp, cl, 0600);
        if (r < 0)
            mesh_certs_fail(c,
                            "cannot keep the certificate of %s in %s: %s (serving it from memory)",
                            h->id, c->dir, strerror(-r));
        mesh_certs_set_times(h, x);
        mesh_certs_held_clear_pem(h);
        h->cert_pem = cp;
        h->cert_len = cl;
        h->key_pem = kp;
        h->key_len = kl;
        cp = kp = NULL;
        c->issued++;
        r = 0;
        char svc[200];
        snprintf(svc, sizeof(svc), "%s/%s", h->ns ? h->ns : "", h->name ? h->name : "");
        mesh_log_id(MESH_LOG_INFO, MESH_MSGID_CERT_ISSUED,
                    h->ns ? MESH_LOG_FIELDS({"service", svc}) : NULL, "issued %s, valid until %lld",
                    h->id, (long long)h->not_after);
    } else {
        mesh_certs_fail(c, "cannot issue a certificate for %s: %s", h->id, err);
    }
    X509_free(x);
    mesh_free(cp);
    mesh_free(kp);
    return r;
}

/* The next renewal, or in a few seconds after a failure. */
static void schedule(struct mesh_certs *c)
{
    time_t now = time(NULL), due = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!due || c->v[i].renew_at < due)
            due = c->v[i].renew_at;
    }
    /* A failed issue is retried in a few seconds, however far the renewal was. */
    mesh_certs_schedule_in(c, !due || c->last_error[0] ? 5000
                              : due > now              ? (uint64_t)(due - now) * 1000
                                                       : 0);
}

/* Renews what is due (or missing) and swaps in new material. */
static void refresh(struct mesh_certs *c, bool force)
{
    bool changed = force;
    time_t now = time(NULL);
    for (size_t i = 0; i < c->n; i++) {
        struct held *h = &c->v[i];
        if (!h->cert_pem && mesh_certs_load_kept(c, h))
            changed = true;
        if (h->cert_pem && now < h->renew_at)
            continue;
        if (issue(c, h) == 0)
            changed = true;
    }
    if (changed)
        mesh_certs_rebuild(c);
    schedule(c);
}

static void check_config(struct mesh_cfg_ctx *ctx, const struct mesh_agent_identity_config *id)
{
    if (!id->ca_cert[0] || !id->ca_key[0])
        mesh_cfg_error(ctx, "mode \"standalone\" needs ca_cert and ca_key");
}

static void check_files(const struct mesh_agent_config *cfg, struct mesh_cfg_errors *errors)
{
    mesh_agent__check_identity_file(errors, cfg, "ca_cert", cfg->identity.ca_cert,
                                    MESH_AGENT_PEM_CERT);
    mesh_agent__check_identity_file(errors, cfg, "ca_key", cfg->identity.ca_key,
                                    MESH_AGENT_PEM_KEY);
}

const struct certs_mode mesh_certs_mode_local_ca = {
    .mtls = true,
    .keeps_certs = true,
    .check_config = check_config,
    .check_files = check_files,
    .open = open_local_ca,
    .refresh = refresh,
    .paths = mesh_certs_default_paths,
    .close = mesh_certs_default_close,
};
