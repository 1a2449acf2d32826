#define MESH_LOG_MODULE "certs"

#include "agent/certs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "agent/certs-int.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/prom.h"
#include "common/spiffe.h"
#include "common/x509.h"

void mesh_certs_fail(struct mesh_certs *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
    va_end(ap);
    c->errors++;
    mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_CERT_FAILED, NULL, "%s", c->last_error);
}

void mesh_certs_held_clear_pem(struct held *h)
{
    mesh_free(h->cert_pem);
    mesh_free(h->key_pem);
    h->cert_pem = h->key_pem = NULL;
    h->cert_len = h->key_len = 0;
}

static void held_done(struct held *h)
{
    mesh_certs_held_clear_pem(h);
    mesh_free(h->id);
    mesh_free(h->ns);
    mesh_free(h->name);
}

void mesh_certs_paths(const struct mesh_certs *c, const struct held *h, char *crt, char *key,
                      size_t size)
{
    c->ops->paths(c, h, crt, key, size);
}

/* ---- the modes' defaults and table ---- */

void mesh_certs_default_paths(const struct mesh_certs *c, const struct held *h, char *crt,
                              char *key, size_t size)
{
    if (!h->ns) {
        snprintf(crt, size, "%s/node.crt", c->dir);
        snprintf(key, size, "%s/node.key", c->dir);
    } else {
        snprintf(crt, size, "%s/svc.%s.%s.crt", c->dir, h->ns, h->name);
        snprintf(key, size, "%s/svc.%s.%s.key", c->dir, h->ns, h->name);
    }
}

void mesh_certs_default_close(struct mesh_certs *c)
{
    (void)c;
}

static void check_nothing(struct mesh_cfg_ctx *ctx, const struct mesh_agent_identity_config *id)
{
    (void)ctx;
    (void)id;
}

static void check_no_files(const struct mesh_agent_config *cfg, struct mesh_cfg_errors *errors)
{
    (void)cfg;
    (void)errors;
}

/* "none": no certificate manager (mesh_certs_new makes none), nothing to check. */
static const struct certs_mode certs_mode_none = {
    .check_config = check_nothing,
    .check_files = check_no_files,
};

const struct certs_mode *mesh_certs_mode_of(int mode)
{
    static const struct certs_mode *const modes[] = {
        [MESH_IDENTITY_NONE] = &certs_mode_none,
        [MESH_IDENTITY_STANDALONE] = &mesh_certs_mode_local_ca,
        [MESH_IDENTITY_FILES] = &mesh_certs_mode_files,
        [MESH_IDENTITY_CONTROLLER] = &mesh_certs_mode_controller,
    };
    return mode >= 0 && (size_t)mode < MESH_ARRAY_SIZE(modes) ? modes[mode] : &certs_mode_none;
}

bool mesh_certs_mode_uses_controller(int mode)
{
    return mesh_certs_mode_of(mode)->uses_controller;
}

void mesh_certs_mode_check_config(struct mesh_cfg_ctx *ctx,
                                  const struct mesh_agent_identity_config *id)
{
    mesh_certs_mode_of(id->mode)->check_config(ctx, id);
}

/* ---- what the modes share ---- */

X509 *mesh_certs_parse_cert(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return x;
}

/* Half of the lifetime, give or take a twentieth, so that agents do not renew in step. */
void mesh_certs_set_times(struct held *h, X509 *x)
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
bool mesh_certs_load_kept(struct mesh_certs *c, struct held *h)
{
    char crt[4200], key[4200];
    mesh_certs_paths(c, h, crt, key, sizeof(crt));
    char *cp = NULL, *kp = NULL;
    size_t cl = 0, kl = 0;
    if (mesh_fs_read_file(crt, PEM_MAX, &cp, &cl) < 0 ||
        mesh_fs_read_file(key, PEM_MAX, &kp, &kl) < 0) {
        mesh_free(cp);
        return false;
    }
    X509 *x = mesh_certs_parse_cert(cp, cl);
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
        mesh_certs_set_times(h, x);
    X509_free(x);
    if (!ok) {
        mesh_free(cp);
        mesh_free(kp);
        return false;
    }
    mesh_certs_held_clear_pem(h);
    h->cert_pem = cp;
    h->cert_len = cl;
    h->key_pem = kp;
    h->key_len = kl;
    return true;
}

/* ---- material ---- */

/* Material from the bundle and what is held; NULL (logged) when any piece is refused. */
struct mesh_tls_material *mesh_certs_build(struct mesh_certs *c, const char *bundle, size_t len,
                                           const struct held *v, size_t n)
{
    char err[512];
    struct mesh_tls_material *m = NULL;
    if (mesh_tls_material_new(c->trust_domain, c->tls12, bundle, len, &m, err, sizeof(err)) < 0) {
        mesh_certs_fail(c, "%s", err);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (mesh_tls_material_add(m, v[i].id, v[i].ns, v[i].name, v[i].cert_pem, v[i].cert_len,
                                  v[i].key_pem, v[i].key_len, err, sizeof(err)) < 0) {
            mesh_certs_fail(c, "the certificate of %s %s; keeping the previous certificates",
                            v[i].id, err);
            mesh_tls_material_unref(m);
            return NULL;
        }
    }
    return m;
}

void mesh_certs_swap_in(struct mesh_certs *c, struct mesh_tls_material *m)
{
    mesh_tls_material_unref(c->material);
    c->material = m;
    c->last_error[0] = '\0';
    mesh_certs_check_ages(c);
    if (c->changed)
        c->changed(c->data);
}

void mesh_certs_format_time(time_t t, char *out, size_t size)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, size, "%lld", (long long)t);
}

static void on_age_timer(uv_timer_t *t)
{
    mesh_certs_check_ages(t->data);
}

/* When 80 % of h's lifetime has passed. */
static time_t overdue_at(const struct held *h)
{
    return h->not_before + (h->not_after - h->not_before) / 10 * 8;
}

void mesh_certs_check_ages(struct mesh_certs *c)
{
    time_t now = time(NULL), next = 0;
    const char *why = c->last_error[0] ? c->last_error : "no new certificate yet";
    for (size_t i = 0; i < c->n; i++) {
        struct held *h = &c->v[i];
        if (!h->cert_pem)
            continue;
        char when[64], svc[200];
        mesh_certs_format_time(h->not_after, when, sizeof(when));
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

void mesh_certs_schedule_in(struct mesh_certs *c, uint64_t ms)
{
    if (!c->closing)
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

void mesh_certs_rebuild(struct mesh_certs *c)
{
    struct held *ok = mesh_calloc(c->n ? c->n : 1, sizeof(*ok));
    size_t k = 0;
    for (size_t i = 0; ok && i < c->n; i++) {
        if (c->v[i].cert_pem)
            ok[k++] = c->v[i]; /* shallow: build only reads */
    }
    /* The node's certificate first: material wants it at [0]. */
    struct mesh_tls_material *m = ok && k && !ok[0].ns && c->bundle_pem
                                      ? mesh_certs_build(c, c->bundle_pem, c->bundle_len, ok, k)
                                      : NULL;
    mesh_free(ok);
    if (m)
        mesh_certs_swap_in(c, m);
}

static void on_timer(uv_timer_t *t)
{
    struct mesh_certs *c = t->data;
    c->ops->refresh(c, false);
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
        mesh_certs_fail(c, "out of memory");
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
    if (differs || (!c->material && !c->ops->own_backoff))
        c->ops->refresh(c, true);
}

int mesh_certs_new(uv_loop_t *loop, struct mesh_http_client *ctl,
                   const struct mesh_agent_config *cfg, void (*changed)(void *data), void *data,
                   struct mesh_certs **ret)
{
    const struct mesh_agent_identity_config *id = &cfg->identity;
    const struct certs_mode *ops = mesh_certs_mode_of(id->mode);
    *ret = NULL;
    if (!ops->mtls)
        return 0;
    struct mesh_certs *c = mesh_calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->ctl_client = ctl;
    c->mode = id->mode;
    c->ops = ops;
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
        !(c->dir = mesh_strdup(ops->keeps_certs ? dir : id->cert_dir)))
        goto fail;
    if (ops->keeps_certs && (r = mesh_fs_mkdir_private(c->dir, 0700)) < 0) {
        mesh_certs_fail(c, "cannot create '%s': %s", c->dir, strerror(-r));
        goto fail;
    }
    if ((r = ops->open(c, id)) < 0)
        goto fail;
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
    json_t *ids = json_array();
    for (size_t i = 0; c->material && i < c->material->n; i++)
        json_array_append_new(ids,
                              json_pack("{s:s, s:I}", "id", c->material->ids[i].id, "not_after",
                                        (json_int_t)c->material->ids[i].not_after));
    return json_pack("{s:s, s:s, s:o, s:s?}", "mode", mesh_identity_mode_names[c->mode],
                     "trust_domain", c->trust_domain, "certificates", ids, "error",
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
    c->ops->close(c); /* a call in flight frees nothing of ours when it ends */
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    uv_close((uv_handle_t *)&c->age_timer, on_timer_closed);
}
