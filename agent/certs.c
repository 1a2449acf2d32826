#define MESH_LOG_MODULE "certs"

#include "agent/certs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "agent/certs-int.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/prom.h"
#include "common/spiffe.h"
#include "common/x509.h"

#define FILES_POLL_MS 2000

void certs_fail(struct mesh_certs *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
    va_end(ap);
    c->errors++;
    mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_CERT_FAILED, NULL, "%s", c->last_error);
}

void certs_held_clear_pem(struct held *h)
{
    mesh_free(h->cert_pem);
    mesh_free(h->key_pem);
    h->cert_pem = h->key_pem = NULL;
    h->cert_len = h->key_len = 0;
}

static void held_done(struct held *h)
{
    certs_held_clear_pem(h);
    mesh_free(h->id);
    mesh_free(h->ns);
    mesh_free(h->name);
}

void certs_paths(const struct mesh_certs *c, const struct held *h, char *crt, char *key,
                 size_t size)
{
    if (!h->ns) {
        snprintf(crt, size, "%s/node.crt", c->dir);
        snprintf(key, size, "%s/node.key", c->dir);
    } else if (c->mode == MESH_IDENTITY_FILES) {
        snprintf(crt, size, "%s/%s/%s.crt", c->dir, h->ns, h->name);
        snprintf(key, size, "%s/%s/%s.key", c->dir, h->ns, h->name);
    } else {
        snprintf(crt, size, "%s/svc.%s.%s.crt", c->dir, h->ns, h->name);
        snprintf(key, size, "%s/svc.%s.%s.key", c->dir, h->ns, h->name);
    }
}

X509 *certs_parse_cert(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return x;
}

/* Half of the lifetime, give or take a twentieth, so that agents do not renew in step. */
void certs_set_times(struct held *h, X509 *x)
{
    time_t not_after = mesh_x509_not_after(x);
    if (not_after != h->not_after) /* another certificate: its own warnings */
        h->warned_overdue = h->warned_expired = false;
    h->not_before = mesh_x509_not_before(x);
    h->not_after = not_after;
    time_t life = h->not_after - h->not_before;
    unsigned r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    time_t spread = life / 10;
    time_t jitter = spread ? (time_t)(r % (unsigned)(spread + 1)) - spread / 2 : 0;
    h->renew_at = h->not_before + life / 2 + jitter;
}

/* ---- standalone: a local CA ---- */

static int load_ca(struct mesh_certs *c, const struct mesh_agent_identity_config *id)
{
    char *pem = NULL, *kpem = NULL;
    size_t len = 0, klen = 0;
    int r = mesh_fs_read_file(id->ca_cert, PEM_MAX, &pem, &len);
    if (r < 0) {
        certs_fail(c, "identity.ca_cert '%s': %s", id->ca_cert, strerror(-r));
        return r;
    }
    r = mesh_fs_read_file(id->ca_key, PEM_MAX, &kpem, &klen);
    if (r < 0) {
        certs_fail(c, "identity.ca_key '%s': %s", id->ca_key, strerror(-r));
        mesh_free(pem);
        return r;
    }
    c->ca = certs_parse_cert(pem, len);
    BIO *kb = BIO_new_mem_buf(kpem, (int)klen);
    c->ca_key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    ERR_clear_error();
    mesh_free(kpem);
    c->bundle_pem = pem;
    c->bundle_len = len;
    if (!c->ca) {
        certs_fail(c, "identity.ca_cert '%s': no PEM certificate", id->ca_cert);
        return -EINVAL;
    }
    if (!c->ca_key) {
        certs_fail(c, "identity.ca_key '%s': no PEM private key", id->ca_key);
        return -EINVAL;
    }
    if (X509_check_ca(c->ca) == 0) {
        certs_fail(c, "identity.ca_cert '%s': not a CA certificate", id->ca_cert);
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
        certs_fail(c, "identity.ca_key '%s' is not the key of identity.ca_cert", id->ca_key);
        return -EINVAL;
    }
    if (mesh_x509_not_after(c->ca) <= time(NULL)) {
        certs_fail(c, "identity.ca_cert '%s' has expired", id->ca_cert);
        return -EINVAL;
    }
    return 0;
}

/* Whether our CA (standalone) or one of the bundle's (controller) signed x. */
static bool issued_by_us(struct mesh_certs *c, X509 *x)
{
    if (c->ca)
        return X509_verify(x, X509_get0_pubkey(c->ca)) == 1;
    BIO *b = c->bundle_pem ? BIO_new_mem_buf(c->bundle_pem, (int)c->bundle_len) : NULL;
    X509 *ca;
    bool ok = false;
    while (!ok && b && (ca = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        ok = X509_verify(x, X509_get0_pubkey(ca)) == 1;
        X509_free(ca);
    }
    BIO_free(b);
    ERR_clear_error();
    return ok;
}

/* What the state dir holds for h, when our CA signed it for h's ID and it is not due. */
bool certs_load_kept(struct mesh_certs *c, struct held *h)
{
    char crt[4200], key[4200];
    certs_paths(c, h, crt, key, sizeof(crt));
    char *cp = NULL, *kp = NULL;
    size_t cl = 0, kl = 0;
    if (mesh_fs_read_file(crt, PEM_MAX, &cp, &cl) < 0 ||
        mesh_fs_read_file(key, PEM_MAX, &kp, &kl) < 0) {
        mesh_free(cp);
        return false;
    }
    X509 *x = certs_parse_cert(cp, cl);
    char got[MESH_SPIFFE_ID_MAX + 1];
    const char *why;
    bool ok = x && issued_by_us(c, x) &&
              mesh_spiffe_check_leaf(x, c->trust_domain, got, sizeof(got), &why) &&
              strcmp(got, h->id) == 0;
    ERR_clear_error();
    /* Valid, even when due: it renews itself (a node certificate signs the node in; only
     * an expired one needs a join token again). */
    time_t not_after = ok ? mesh_x509_not_after(x) : 0;
    if (ok && not_after <= time(NULL)) {
        h->expired_at = not_after;
        ok = false;
    }
    if (ok)
        certs_set_times(h, x);
    X509_free(x);
    if (!ok) {
        mesh_free(cp);
        mesh_free(kp);
        return false;
    }
    certs_held_clear_pem(h);
    h->cert_pem = cp;
    h->cert_len = cl;
    h->key_pem = kp;
    h->key_len = kl;
    return true;
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
        certs_paths(c, h, crt, kpath, sizeof(crt));
        /* The key first: a certificate on disk always has its key. */
        r = mesh_fs_write_atomic(kpath, kp, kl, 0600);
        if (r == 0)
            r = mesh_fs_write_atomic(crt, cp, cl, 0600);
        if (r < 0)
            certs_fail(c, "cannot keep the certificate of %s in %s: %s (serving it from memory)",
                       h->id, c->dir, strerror(-r));
        certs_set_times(h, x);
        certs_held_clear_pem(h);
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
        certs_fail(c, "cannot issue a certificate for %s: %s", h->id, err);
    }
    X509_free(x);
    mesh_free(cp);
    mesh_free(kp);
    return r;
}

/* ---- files: an external PKI ---- */

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
        certs_paths(c, &c->v[i], crt, key, sizeof(crt));
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
        certs_fail(c, "identity.trust_bundle '%s': %s", c->bundle_path, strerror(-r));
        return r;
    }
    for (size_t i = 0; i < n; i++) {
        char crt[4200], key[4200];
        certs_paths(c, &v[i], crt, key, sizeof(crt));
        certs_held_clear_pem(&v[i]);
        if ((r = mesh_fs_read_file_stat(crt, PEM_MAX, &v[i].cert_pem, &v[i].cert_len,
                                        &v[i].cert_st)) < 0 ||
            (r = mesh_fs_read_file_stat(key, PEM_MAX, &v[i].key_pem, &v[i].key_len, &v[i].key_st)) <
                0) {
            certs_fail(c, "%s: %s: %s", v[i].id, r == -ENOENT ? "missing" : "unreadable",
                       strerror(-r));
            return r;
        }
        X509 *x = certs_parse_cert(v[i].cert_pem, v[i].cert_len);
        if (x)
            certs_set_times(&v[i], x);
        X509_free(x);
    }
    return 0;
}

/* ---- material ---- */

/* Material from the bundle and what is held; NULL (logged) when any piece is refused. */
struct mesh_tls_material *certs_build(struct mesh_certs *c, const char *bundle, size_t len,
                                      const struct held *v, size_t n)
{
    char err[512];
    struct mesh_tls_material *m = NULL;
    if (mesh_tls_material_new(c->trust_domain, c->tls12, bundle, len, &m, err, sizeof(err)) < 0) {
        certs_fail(c, "%s", err);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (mesh_tls_material_add(m, v[i].id, v[i].ns, v[i].name, v[i].cert_pem, v[i].cert_len,
                                  v[i].key_pem, v[i].key_len, err, sizeof(err)) < 0) {
            certs_fail(c, "the certificate of %s %s; keeping the previous certificates", v[i].id,
                       err);
            mesh_tls_material_unref(m);
            return NULL;
        }
    }
    return m;
}

void certs_swap_in(struct mesh_certs *c, struct mesh_tls_material *m)
{
    mesh_tls_material_unref(c->material);
    c->material = m;
    c->last_error[0] = '\0';
    certs_check_ages(c);
    if (c->changed)
        c->changed(c->data);
}

void certs_format_time(time_t t, char *out, size_t size)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, size, "%lld", (long long)t);
}

static void on_age_timer(uv_timer_t *t)
{
    certs_check_ages(t->data);
}

/* When 80 % of h's lifetime has passed. */
static time_t overdue_at(const struct held *h)
{
    return h->not_before + (h->not_after - h->not_before) / 10 * 8;
}

void certs_check_ages(struct mesh_certs *c)
{
    time_t now = time(NULL), next = 0;
    const char *why = c->last_error[0] ? c->last_error : "no new certificate yet";
    for (size_t i = 0; i < c->n; i++) {
        struct held *h = &c->v[i];
        if (!h->cert_pem)
            continue;
        char when[64], svc[200];
        certs_format_time(h->not_after, when, sizeof(when));
        snprintf(svc, sizeof(svc), "%s/%s", h->ns ? h->ns : "", h->name ? h->name : "");
        if (now >= h->not_after && !h->warned_expired) {
            h->warned_expired = h->warned_overdue = true;
            mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_CERT_EXPIRED,
                        h->ns ? MESH_LOG_FIELDS({"service", svc}) : NULL,
                        "the certificate of %s expired at %s and is no longer presented; "
                        "renewal keeps failing: %s",
                        h->id, when, why);
        } else if (now >= overdue_at(h) && !h->warned_overdue) {
            h->warned_overdue = true;
            mesh_log_id(MESH_LOG_WARNING, MESH_MSGID_CERT_EXPIRING,
                        h->ns ? MESH_LOG_FIELDS({"service", svc}) : NULL,
                        "the certificate of %s is past 80%% of its lifetime (it expires at "
                        "%s) and renewal keeps failing: %s",
                        h->id, when, why);
        }
        time_t at = !h->warned_overdue ? overdue_at(h) : !h->warned_expired ? h->not_after : 0;
        if (at && (!next || at < next))
            next = at;
    }
    if (next && !c->closing)
        uv_timer_start(&c->age_timer, on_age_timer, next > now ? (uint64_t)(next - now) * 1000 : 0,
                       0);
    else
        uv_timer_stop(&c->age_timer);
}

static void on_timer(uv_timer_t *t);
static void refresh(struct mesh_certs *c, bool force);

void certs_schedule_in(struct mesh_certs *c, uint64_t ms)
{
    if (!c->closing)
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

void certs_schedule(struct mesh_certs *c)
{
    uint64_t ms = FILES_POLL_MS;
    if (c->mode == MESH_IDENTITY_STANDALONE) {
        time_t now = time(NULL), due = 0;
        for (size_t i = 0; i < c->n; i++) {
            if (!due || c->v[i].renew_at < due)
                due = c->v[i].renew_at;
        }
        /* A failed issue is retried in a few seconds, however far the renewal was. */
        ms = !due || c->last_error[0] ? 5000 : due > now ? (uint64_t)(due - now) * 1000 : 0;
    }
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

void certs_rebuild(struct mesh_certs *c)
{
    struct held *ok = mesh_calloc(c->n ? c->n : 1, sizeof(*ok));
    size_t k = 0;
    for (size_t i = 0; ok && i < c->n; i++) {
        if (c->v[i].cert_pem)
            ok[k++] = c->v[i]; /* shallow: build only reads */
    }
    /* The node's certificate first: material wants it at [0]. */
    struct mesh_tls_material *m = ok && k && !ok[0].ns && c->bundle_pem
                                      ? certs_build(c, c->bundle_pem, c->bundle_len, ok, k)
                                      : NULL;
    mesh_free(ok);
    if (m)
        certs_swap_in(c, m);
}

/* Standalone: renews what is due (or missing) and swaps in new material. */
static void refresh_standalone(struct mesh_certs *c, bool force)
{
    bool changed = force;
    time_t now = time(NULL);
    for (size_t i = 0; i < c->n; i++) {
        struct held *h = &c->v[i];
        if (!h->cert_pem && certs_load_kept(c, h))
            changed = true;
        if (h->cert_pem && now < h->renew_at)
            continue;
        if (issue(c, h) == 0)
            changed = true;
    }
    if (changed)
        certs_rebuild(c);
    certs_schedule(c);
}

/* Files: re-reads everything when anything changed; a bad set keeps the old material. */
static void refresh_files(struct mesh_certs *c, bool force)
{
    if (!force && !files_changed(c)) {
        certs_schedule(c);
        return;
    }
    char *bundle = NULL;
    size_t len = 0;
    struct stat bst;
    struct mesh_tls_material *m = NULL;
    if (files_read(c, &bundle, &len, &bst, c->v, c->n) == 0)
        m = certs_build(c, bundle, len, c->v, c->n);
    /* What was read is remembered either way: the same bad files are not re-reported. */
    memset(&c->bundle_st, 0, sizeof(c->bundle_st));
    if (bundle)
        c->bundle_st = bst;
    mesh_free(bundle);
    if (m) {
        mesh_log_info("loaded %zu certificates from %s", c->n, c->dir);
        certs_swap_in(c, m);
    }
    certs_schedule(c);
}

static void refresh(struct mesh_certs *c, bool force)
{
    if (c->mode == MESH_IDENTITY_STANDALONE)
        refresh_standalone(c, force);
    else if (c->mode == MESH_IDENTITY_FILES)
        refresh_files(c, force);
    else
        certs_controller_refresh(c);
}

static void on_timer(uv_timer_t *t)
{
    struct mesh_certs *c = t->data;
    refresh(c, false);
}

/* The SPIFFE ID of a local service (`given` when its registry names one), or the node's. */
static void identity_of(char *id, size_t size, const char *td, const char *ns, const char *name,
                        const char *given, const char *node)
{
    if (ns && given)
        snprintf(id, size, "%s", given);
    else if (ns)
        mesh_spiffe_service_id(id, size, td, ns, name);
    else
        mesh_spiffe_node_id(id, size, td, node);
}

static int held_init(struct held *h, const char *id, const char *ns, const char *name)
{
    memset(h, 0, sizeof(*h));
    if (!(h->id = mesh_strdup(id)) || (ns && !(h->ns = mesh_strdup(ns))) ||
        (name && !(h->name = mesh_strdup(name)))) {
        held_done(h);
        return -ENOMEM;
    }
    return 0;
}

void mesh_certs_set_locals(struct mesh_certs *c, const struct mesh_local_service *const *locals,
                           size_t n)
{
    struct held *v = mesh_calloc(n + 1, sizeof(*v));
    if (!v) {
        certs_fail(c, "out of memory");
        return;
    }
    size_t k = 0;
    bool differs = false;
    for (size_t i = 0; i <= n; i++) { /* the node first: material wants it at [0] */
        const char *ns = i ? locals[i - 1]->namespace : NULL;
        const char *name = i ? locals[i - 1]->name : NULL;
        char id[MESH_SPIFFE_ID_MAX + 1];
        identity_of(id, sizeof(id), c->trust_domain, ns, name, i ? locals[i - 1]->identity : NULL,
                    c->node);
        bool dup = false;
        for (size_t j = 1; ns && j < k && !dup; j++)
            dup = strcmp(v[j].ns, ns) == 0 && strcmp(v[j].name, name) == 0;
        if (dup)
            continue;
        /* Keep what is held for an identity still wanted. */
        struct held *old = NULL;
        for (size_t j = 0; j < c->n && !old; j++) {
            const struct held *h = &c->v[j];
            if (h->id && strcmp(h->id, id) == 0)
                old = &c->v[j];
        }
        if (old) {
            v[k++] = *old;
            *old = (struct held){0};
        } else if (held_init(&v[k], id, ns, name) == 0) {
            k++;
            differs = true;
        }
    }
    for (size_t j = 0; j < c->n; j++) {
        differs |= c->v[j].id != NULL; /* one no longer wanted */
        held_done(&c->v[j]);
    }
    mesh_free(c->v);
    c->v = v;
    c->n = k;
    /* (A controller that is away is retried on its own backoff, not at every update.) */
    if (differs || (!c->material && c->mode != MESH_IDENTITY_CONTROLLER))
        refresh(c, true);
}

int mesh_certs_new(uv_loop_t *loop, struct mesh_http_client *ctl,
                   const struct mesh_agent_config *cfg, void (*changed)(void *data), void *data,
                   struct mesh_certs **ret)
{
    const struct mesh_agent_identity_config *id = &cfg->identity;
    struct mesh_certs *c = mesh_calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->ctl_client = ctl;
    c->mode = id->mode;
    c->tls12 = id->tls_min_version == 1;
    c->ttl_s = id->cert_ttl_ms / 1000;
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->age_timer);
    c->timer.data = c->age_timer.data = c;
    c->open_handles = 2;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/certs", cfg->state_dir);
    int r = -ENOMEM;
    if (!(c->trust_domain = mesh_strdup(cfg->trust_domain)) ||
        !(c->node = mesh_strdup(cfg->node.name)) ||
        !(c->dir = mesh_strdup(c->mode == MESH_IDENTITY_FILES ? id->cert_dir : dir)))
        goto fail;
    if (c->mode != MESH_IDENTITY_FILES && (r = mesh_fs_mkdir_private(c->dir, 0700)) < 0) {
        certs_fail(c, "cannot create '%s': %s", c->dir, strerror(-r));
        goto fail;
    }
    if (c->mode == MESH_IDENTITY_STANDALONE) {
        if ((r = load_ca(c, id)) < 0)
            goto fail;
    } else if (c->mode == MESH_IDENTITY_CONTROLLER) {
        if ((r = certs_controller_open(c, id)) < 0)
            goto fail;
    } else if (!(c->bundle_path = mesh_strdup(id->trust_bundle))) {
        goto fail;
    }
    c->changed = changed;
    c->data = data;
    *ret = c;
    return 0;
fail:
    mesh_certs_free(c);
    return r;
}

struct mesh_tls_material *mesh_certs_material(const struct mesh_certs *c)
{
    return c ? c->material : NULL;
}

bool mesh_certs_node_credentials(const struct mesh_certs *c, const char **cert, const char **key,
                                 const char **bundle)
{
    /* An expired certificate is not presented, to the controller either. */
    if (!c || !c->n || c->v[0].ns || !c->v[0].cert_pem || !c->bundle_pem ||
        c->v[0].not_after <= time(NULL))
        return false;
    *cert = c->v[0].cert_pem;
    *key = c->v[0].key_pem;
    *bundle = c->bundle_pem;
    return true;
}

bool mesh_certs_expired(const struct mesh_certs *c)
{
    time_t t = c ? mesh_tls_earliest_expiry(c->material) : 0;
    return t && t <= time(NULL);
}

void mesh_certs_metrics(const struct mesh_certs *c, struct mesh_buf *b)
{
    if (!c)
        return;
    time_t now = time(NULL), earliest = mesh_tls_earliest_expiry(c->material);
    mesh_prom_family(b, "mesh_cert_expiry_timestamp_seconds", "gauge",
                     "When each certificate in use expires (Unix time).");
    for (size_t i = 0; c->material && i < c->material->n; i++) {
        struct mesh_prom_label l[] = {{"identity", c->material->ids[i].id}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_cert_expiry_timestamp_seconds", l,
                         (double)c->material->ids[i].not_after);
    }
    mesh_prom_family(b, "mesh_cert_seconds_left", "gauge",
                     "Seconds before the earliest certificate in use expires.");
    mesh_prom_sample(b, "mesh_cert_seconds_left", NULL, earliest ? (double)(earliest - now) : 0);
    double overdue = 0, expired = 0;
    for (size_t i = 0; i < c->n; i++) {
        const struct held *h = &c->v[i];
        overdue += h->cert_pem && now >= overdue_at(h);
        expired += h->cert_pem && now >= h->not_after;
    }
    mesh_prom_family(b, "mesh_cert_renewal_overdue", "gauge",
                     "Certificates held past 80 % of their lifetime (expired ones included): "
                     "renewal keeps failing.");
    mesh_prom_sample(b, "mesh_cert_renewal_overdue", NULL, overdue);
    mesh_prom_family(b, "mesh_cert_expired", "gauge",
                     "Certificates held that have expired: they are no longer presented.");
    mesh_prom_sample(b, "mesh_cert_expired", NULL, expired);
    mesh_prom_family(b, "mesh_cert_issued_total", "counter",
                     "Certificates issued by this agent (standalone mode).");
    mesh_prom_sample(b, "mesh_cert_issued_total", NULL, (double)c->issued);
    mesh_prom_family(b, "mesh_cert_errors_total", "counter",
                     "Failures to issue, load or use certificates.");
    mesh_prom_sample(b, "mesh_cert_errors_total", NULL, (double)c->errors);
}

json_t *mesh_certs_status(const struct mesh_certs *c)
{
    static const char *const modes[] = {"none", "standalone", "files", "controller"};
    json_t *ids = json_array();
    for (size_t i = 0; c->material && i < c->material->n; i++)
        json_array_append_new(ids,
                              json_pack("{s:s, s:I}", "id", c->material->ids[i].id, "not_after",
                                        (json_int_t)c->material->ids[i].not_after));
    return json_pack("{s:s, s:s, s:o, s:s?}", "mode", modes[c->mode], "trust_domain",
                     c->trust_domain, "certificates", ids, "error",
                     c->last_error[0] ? c->last_error : NULL);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct mesh_certs *c = h->data;
    if (--c->open_handles > 0)
        return;
    for (size_t i = 0; i < c->n; i++)
        held_done(&c->v[i]);
    mesh_free(c->v);
    mesh_tls_material_unref(c->material);
    X509_free(c->ca);
    EVP_PKEY_free(c->ca_key);
    mesh_free(c->bundle_pem);
    mesh_free(c->bundle_path);
    mesh_free(c->dir);
    mesh_free(c->trust_domain);
    mesh_free(c->node);
    mesh_free(c);
}

void mesh_certs_free(struct mesh_certs *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    certs_controller_close(c); /* a call in flight frees nothing of ours when it ends */
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    uv_close((uv_handle_t *)&c->age_timer, on_timer_closed);
}
