#define MESH_LOG_MODULE "certs"

/*
 * The certificate manager's files mode: an external PKI writes <cert_dir>/node.crt|key,
 * <cert_dir>/<namespace>/<service>.crt|key and the trust bundle. They are re-read when
 * they change (checked every few seconds); a set that does not make valid material is
 * refused and the old one kept.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/certs-int.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"

#define FILES_POLL_MS 2000

static int open_files(struct mesh_certs *c, const struct mesh_agent_identity_config *id)
{
    return (c->bundle_path = mesh_strdup(id->trust_bundle)) ? 0 : -ENOMEM;
}

static void paths(const struct mesh_certs *c, const struct held *h, char *crt, char *key,
                  size_t size)
{
    if (!h->ns) {
        mesh_certs_default_paths(c, h, crt, key, size);
        return;
    }
    snprintf(crt, size, "%s/%s/%s.crt", c->dir, h->ns, h->name);
    snprintf(key, size, "%s/%s/%s.key", c->dir, h->ns, h->name);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static bool files_changed(struct mesh_certs *c)
{
    struct stat st;
    if (stat(c->bundle_path, &st) < 0 || !same_file(&st, &c->bundle_st))
        return true;
    for (size_t i = 0; i < c->n; i++) {
        char crt[4200], key[4200];
        mesh_certs_paths(c, &c->v[i], crt, key, sizeof(crt));
        if (stat(crt, &st) < 0 || !same_file(&st, &c->v[i].cert_st) || stat(key, &st) < 0 ||
            !same_file(&st, &c->v[i].key_st))
            return true;
    }
    return false;
}

/* Reads the bundle and every identity's files. Returns 0 or a negative errno (logged). */
static int files_read(struct mesh_certs *c, char **bundle, size_t *bundle_len, struct stat *bst,
                      struct held *v, size_t n)
{
    int r = mesh_fs_read_file_stat(c->bundle_path, PEM_MAX, bundle, bundle_len, bst);
    if (r < 0) {
        mesh_certs_fail(c, "identity.trust_bundle '%s': %s", c->bundle_path, strerror(-r));
        return r;
    }
    for (size_t i = 0; i < n; i++) {
        char crt[4200], key[4200];
        mesh_certs_paths(c, &v[i], crt, key, sizeof(crt));
        mesh_certs_held_clear_pem(&v[i]);
        if ((r = mesh_fs_read_file_stat(crt, PEM_MAX, &v[i].cert_pem, &v[i].cert_len,
                                        &v[i].cert_st)) < 0 ||
            (r = mesh_fs_read_file_stat(key, PEM_MAX, &v[i].key_pem, &v[i].key_len, &v[i].key_st)) <
                0) {
            mesh_certs_fail(c, "%s: %s: %s", v[i].id, r == -ENOENT ? "missing" : "unreadable",
                            strerror(-r));
            return r;
        }
        X509 *x = mesh_certs_parse_cert(v[i].cert_pem, v[i].cert_len);
        if (x)
            mesh_certs_set_times(&v[i], x);
        X509_free(x);
    }
    return 0;
}

/* Re-reads everything when anything changed; a bad set keeps the old material. */
static void refresh(struct mesh_certs *c, bool force)
{
    if (!force && !files_changed(c)) {
        mesh_certs_schedule_in(c, FILES_POLL_MS);
        return;
    }
    char *bundle = NULL;
    size_t len = 0;
    struct stat bst;
    struct mesh_tls_material *m = NULL;
    if (files_read(c, &bundle, &len, &bst, c->v, c->n) == 0)
        m = mesh_certs_build(c, bundle, len, c->v, c->n);
    /* What was read is remembered either way: the same bad files are not re-reported. */
    memset(&c->bundle_st, 0, sizeof(c->bundle_st));
    if (bundle)
        c->bundle_st = bst;
    mesh_free(bundle);
    if (m) {
        mesh_log_info("loaded %zu certificates from %s", c->n, c->dir);
        mesh_certs_swap_in(c, m);
    }
    mesh_certs_schedule_in(c, FILES_POLL_MS);
}

static void check_config(struct mesh_cfg_ctx *ctx, const struct mesh_agent_identity_config *id)
{
    if (!id->cert_dir[0] || !id->trust_bundle[0])
        mesh_cfg_error(ctx, "mode \"files\" needs cert_dir and trust_bundle");
}

static void check_files(const struct mesh_agent_config *cfg, struct mesh_cfg_errors *errors)
{
    const struct mesh_agent_identity_config *id = &cfg->identity;
    struct stat st;
    mesh_agent__check_identity_file(errors, cfg, "trust_bundle", id->trust_bundle,
                                    MESH_AGENT_PEM_CERT);
    if (stat(id->cert_dir, &st) < 0)
        mesh_agent__identity_error(errors, cfg, "cert_dir", "cannot read '%s': %s", id->cert_dir,
                                   strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        mesh_agent__identity_error(errors, cfg, "cert_dir", "'%s' is not a directory",
                                   id->cert_dir);
}

/* Certificates are read from identity.cert_dir, never written. */
const struct certs_mode mesh_certs_mode_files = {
    .mtls = true,
    .keeps_certs = false,
    .check_config = check_config,
    .check_files = check_files,
    .open = open_files,
    .refresh = refresh,
    .paths = paths,
    .close = mesh_certs_default_close,
};
