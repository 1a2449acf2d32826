#define MESH_LOG_MODULE "config"

/*
 * What `mesh-agent validate` checks beyond the config itself: the files its identity
 * section names (each identity mode says which: its check_files in certs_*.c). A config
 * that parses but points at a CA or a join token that is not there would otherwise be
 * called valid, and the agent would then fail at start or retry its enrollment for ever.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "agent/certs-int.h"
#include "agent/config.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/macros.h"

#define PEM_FILE_MAX (1024 * 1024)

void mesh_agent__identity_error(struct mesh_cfg_errors *errors, const struct mesh_agent_config *cfg,
                                const char *key, const char *fmt, ...)
{
    char msg[1024];
    int n = snprintf(msg, sizeof(msg), "%s%s$.identity.%s: ", cfg->path ? cfg->path : "",
                     cfg->path ? ": " : "", key);
    if (n > 0 && (size_t)n < sizeof(msg)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    mesh_cfg_errors_add(errors, msg);
}

/* Whether `pem` holds what `kind` wants: a certificate, a private key, a non-blank token. */
static bool holds(const char *pem, size_t len, enum mesh_agent_pem_kind kind)
{
    if (kind == MESH_AGENT_PEM_TOKEN) {
        for (size_t i = 0; i < len; i++) {
            if (pem[i] != ' ' && pem[i] != '\n' && pem[i] != '\r' && pem[i] != '\t')
                return true;
        }
        return false;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    bool ok = false;
    if (b && kind == MESH_AGENT_PEM_CERT) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        ok = x != NULL;
        X509_free(x);
    } else if (b) {
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        ok = k != NULL;
        EVP_PKEY_free(k);
    }
    BIO_free(b);
    return ok;
}

void mesh_agent__check_identity_file(struct mesh_cfg_errors *errors,
                                     const struct mesh_agent_config *cfg, const char *key,
                                     const char *path, enum mesh_agent_pem_kind kind)
{
    char *data = NULL;
    size_t len = 0;
    int r = mesh_fs_read_file(path, PEM_FILE_MAX, &data, &len);
    if (r < 0)
        mesh_agent__identity_error(errors, cfg, key, "cannot read '%s': %s", path, strerror(-r));
    else if (holds(data, len, kind))
        ; /* what it should be */
    else if (kind == MESH_AGENT_PEM_TOKEN)
        mesh_agent__identity_error(errors, cfg, key, "'%s' is empty", path);
    else
        mesh_agent__identity_error(errors, cfg, key, "no PEM %s in '%s'",
                                   kind == MESH_AGENT_PEM_CERT ? "certificate" : "private key",
                                   path);
    if (data && kind != MESH_AGENT_PEM_CERT)
        OPENSSL_cleanse(data, len); /* a key or a token: secrets */
    mesh_free(data);
}

void mesh_agent_config_check_files(const struct mesh_agent_config *cfg,
                                   struct mesh_cfg_errors *errors)
{
    mesh_certs_mode_of(cfg->identity.mode)->check_files(cfg, errors);
}
