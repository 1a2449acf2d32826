#define MESH_LOG_MODULE "certs"

/*
 * The certificate manager's controller mode. The node enrolls once with its join token
 * (a CSR for spiffe://<td>/node/<name>); from then on the node's certificate authenticates
 * it: it renews itself and gets each local service's SVID the same way, also after a
 * restart past half of its lifetime. Only an expired node certificate needs a join token
 * again, and the errors say so. One call at a time; while the controller is away the calls
 * back off (1 s doubling to 60 s, with jitter) and what is held keeps serving. Keys never
 * leave the host.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "agent/certs-int.h"
#include "agent/ctl_client.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/x509.h"

struct ctl_state {
    char *url;         /* the controller, without a trailing '/' */
    char *first_trust; /* the CA given in the config, until the controller sends its bundle */
    char *token_file;
    struct mesh_ctl_req req; /* one call at a time */
    char *pending_id;        /* the identity the call is for */
    char *pending_key;       /* its new key (PEM) */
    bool pending_enroll;
    unsigned failures;
};

static void on_answer(struct mesh_ctl_req *req);

/* Cleanses and frees a secret (a key, a join token) and forgets it. */
static void drop_secret(char **p)
{
    if (*p)
        OPENSSL_cleanse(*p, strlen(*p));
    mesh_free(*p);
    *p = NULL;
}

int mesh_certs_controller_open(struct mesh_certs *c, const struct mesh_agent_identity_config *id)
{
    struct ctl_state *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    c->ctl = s;
    mesh_ctl_req_init(&s->req, on_answer, c);
    if (!c->ctl_client)
        return -EINVAL;
    size_t len = 0;
    int r = mesh_fs_read_file(id->controller_ca, PEM_MAX, &s->first_trust, &len);
    if (r < 0) {
        mesh_certs_fail(c, "identity.controller_ca '%s': %s", id->controller_ca, strerror(-r));
        return r;
    }
    if (!(s->url = mesh_strdup(id->controller)) ||
        !(s->token_file = mesh_strdup(id->join_token_file)))
        return -ENOMEM;
    size_t n = strlen(s->url);
    while (n && s->url[n - 1] == '/')
        s->url[--n] = '\0';
    /* The bundle the controller sent last time: what this node trusts while it is away. */
    char path[4200];
    snprintf(path, sizeof(path), "%s/bundle.pem", c->dir);
    if (mesh_fs_read_file(path, PEM_MAX, &c->bundle_pem, &c->bundle_len) < 0) {
        c->bundle_pem = NULL;
        c->bundle_len = 0;
    }
    return 0;
}

void mesh_certs_controller_close(struct mesh_certs *c)
{
    struct ctl_state *s = c->ctl;
    if (!s)
        return;
    mesh_ctl_req_done(&s->req); /* a call in flight ends now, without calling back */
    drop_secret(&s->pending_key);
    mesh_free(s->pending_id);
    mesh_free(s->url);
    mesh_free(s->first_trust);
    mesh_free(s->token_file);
    mesh_free(s);
    c->ctl = NULL;
}

static bool valid_now(const struct held *h, time_t now)
{
    return h->cert_pem && h->not_after > now;
}

/* When the node's certificate expired, held or kept in the state dir (0: none did). */
static time_t node_expired_at(const struct mesh_certs *c, time_t now)
{
    const struct held *node = &c->v[0];
    if (node->cert_pem)
        return node->not_after <= now ? node->not_after : 0;
    return node->expired_at;
}

/* What an enrollment failure means when the node had a certificate: "" or a sentence. */
static void expired_note(const struct mesh_certs *c, char *out, size_t size)
{
    time_t at = c->n ? node_expired_at(c, time(NULL)) : 0;
    char when[64];
    out[0] = '\0';
    if (!at)
        return;
    mesh_certs_format_time(at, when, sizeof(when));
    snprintf(out, size,
             "; the node certificate expired at %s, so only a new join token in "
             "identity.join_token_file lets this node back in",
             when);
}

static void retry_later(struct mesh_certs *c)
{
    mesh_certs_schedule_in(c, mesh_ctl_backoff_ms(c->ctl->failures++));
}

static struct held *held_by_id(struct mesh_certs *c, const char *id)
{
    for (size_t i = 0; id && i < c->n; i++) {
        if (strcmp(c->v[i].id, id) == 0)
            return &c->v[i];
    }
    return NULL;
}

/* Keeps the answer: key and certificate in the state dir, the bundle when it changed. */
static int keep(struct mesh_certs *c, struct held *h, const char *cert, const char *bundle)
{
    struct ctl_state *s = c->ctl;
    X509 *x = mesh_certs_parse_cert(cert, strlen(cert));
    if (!x) {
        mesh_certs_fail(c, "controller: the certificate for %s is not PEM", h->id);
        return -EINVAL;
    }
    if (bundle && (!c->bundle_pem || strcmp(bundle, c->bundle_pem) != 0)) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/bundle.pem", c->dir);
        char *copy = mesh_strdup(bundle);
        if (!copy || mesh_fs_write_atomic(path, bundle, strlen(bundle), 0644) < 0) {
            mesh_free(copy);
            X509_free(x);
            mesh_certs_fail(c, "cannot keep the trust bundle in %s", path);
            return -EIO;
        }
        mesh_free(c->bundle_pem);
        c->bundle_pem = copy;
        c->bundle_len = strlen(copy);
    }
    char crt[4200], key[4200];
    mesh_certs_paths(c, h, crt, key, sizeof(crt));
    char *cp = mesh_strdup(cert);
    int r = cp ? mesh_fs_write_atomic(key, s->pending_key, strlen(s->pending_key), 0600) : -ENOMEM;
    if (r == 0)
        r = mesh_fs_write_atomic(crt, cert, strlen(cert), 0600);
    if (r < 0) {
        mesh_free(cp);
        X509_free(x);
        mesh_certs_fail(c, "cannot keep the certificate of %s in %s: %s", h->id, c->dir,
                        strerror(-r));
        return r;
    }
    mesh_certs_held_clear_pem(h);
    h->cert_pem = cp;
    h->cert_len = strlen(cp);
    h->key_pem = s->pending_key;
    h->key_len = strlen(s->pending_key);
    s->pending_key = NULL;
    mesh_certs_set_times(h, x);
    X509_free(x);
    return 0;
}

static void on_answer(struct mesh_ctl_req *req)
{
    struct mesh_certs *c = req->data;
    struct ctl_state *s = c->ctl;
    long status = req->http.status;
    struct held *h = held_by_id(c, s->pending_id);
    json_t *doc = mesh_ctl_req_json(req);
    const char *cert = json_string_value(json_object_get(doc, "certificate"));
    const char *bundle = json_string_value(json_object_get(doc, "bundle"));
    const char *why = json_string_value(json_object_get(doc, "error"));
    if (status == 200 && cert && h && keep(c, h, cert, bundle) == 0) {
        s->failures = 0;
        c->issued++;
        char svc[200];
        snprintf(svc, sizeof(svc), "%s/%s", h->ns ? h->ns : "", h->name ? h->name : "");
        mesh_log_id(MESH_LOG_INFO, MESH_MSGID_CERT_ISSUED,
                    h->ns ? MESH_LOG_FIELDS({"service", svc}) : NULL,
                    "the controller issued %s, valid until %lld", h->id, (long long)h->not_after);
        c->last_error[0] = '\0';
        mesh_certs_rebuild(c);
        mesh_certs_schedule_in(c, 0); /* the next identity, if any */
    } else if (h || status != 200) {
        char note[256] = "";
        if (s->pending_enroll && status >= 400 && status < 500)
            expired_note(c, note, sizeof(note));
        if (status)
            mesh_certs_fail(c, "controller %s: %ld %s (for %s)%s", s->url, status,
                            why ? why : "without a reason", s->pending_id, note);
        else
            mesh_certs_fail(c, "controller %s unreachable: %s (for %s; retrying)", s->url,
                            req->http.error, s->pending_id);
        retry_later(c);
    } else {
        mesh_certs_schedule_in(c, 0); /* the identity went away meanwhile */
    }
    json_decref(doc);
}

/*
 * Reads the node certificate and key the state dir kept into *ret_cert and *ret_key (both or
 * neither), expired as they are, so that enrolling again proves this is the node that held
 * the name. Nothing when they are gone.
 */
static void kept_proof(struct mesh_certs *c, char **ret_cert, char **ret_key)
{
    char crt[4200], key[4200];
    mesh_certs_paths(c, &c->v[0], crt, key, sizeof(crt));
    size_t cl = 0, kl = 0;
    if (mesh_fs_read_file(crt, PEM_MAX, ret_cert, &cl) < 0) {
        *ret_cert = NULL;
        return;
    }
    if (mesh_fs_read_file(key, PEM_MAX, ret_key, &kl) < 0) {
        *ret_key = NULL;
        mesh_free(*ret_cert);
        *ret_cert = NULL;
    }
}

/* Starts the call that gets h a certificate: enrollment, or signing with the node's. */
static void ask(struct mesh_certs *c, struct held *h, bool enroll)
{
    struct ctl_state *s = c->ctl;
    char *token = NULL;
    size_t tlen = 0;
    if (enroll) {
        int r = mesh_fs_read_file(s->token_file, 4096, &token, &tlen);
        while (r == 0 && tlen && (token[tlen - 1] == '\n' || token[tlen - 1] == '\r'))
            token[--tlen] = '\0';
        char note[256];
        expired_note(c, note, sizeof(note));
        if (r < 0 || !tlen) {
            mesh_certs_fail(c, "cannot enroll: identity.join_token_file '%s': %s%s", s->token_file,
                            r < 0 ? strerror(-r) : "empty", note);
            mesh_free(token);
            retry_later(c);
            return;
        }
        time_t gone = node_expired_at(c, time(NULL));
        if (gone) {
            char when[64];
            mesh_certs_format_time(gone, when, sizeof(when));
            mesh_log_warn("the node certificate expired at %s: enrolling again with the join "
                          "token, which spends one of its uses (only an expired node "
                          "certificate needs one)",
                          when);
        }
    }
    EVP_PKEY *key = mesh_x509_new_key();
    size_t klen = 0, csr_len = 0;
    char *kp = key ? mesh_x509_key_pem(key, &klen) : NULL;
    char *csr = key ? mesh_x509_csr_pem(key, h->id, &csr_len) : NULL;
    EVP_PKEY_free(key);
    json_t *body = !csr ? NULL
                   : enroll
                       ? json_pack("{s:s, s:s, s:s}", "token", token, "node", c->node, "csr", csr)
                       : json_pack("{s:s, s:s}", "identity", h->id, "csr", csr);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    char url[4200];
    snprintf(url, sizeof(url), "%s/v1/%s", s->url, enroll ? "enroll" : "sign");
    const struct held *node = &c->v[0];
    struct mesh_ctl_call call = {
        .url = url,
        .body = text,
        .ca_pem = c->bundle_pem ? c->bundle_pem : s->first_trust,
        /* Nobody yet, or a certificate that expired: on a connection no other call shares. */
        .fresh_connection = enroll,
    };
    /*
     * Enrolling again, the node shows the certificate it holds, even expired: the
     * controller enrolls a name already enrolled only for the node that proves it is it.
     * One that expired while the agent was off is not held (it serves nothing), so it is
     * read back from the state dir for this alone.
     */
    char *proof_cert = NULL, *proof_key = NULL;
    if (!enroll || (node->cert_pem && node->key_pem)) {
        call.cert_pem = node->cert_pem;
        call.key_pem = node->key_pem;
    } else if (node->expired_at) {
        kept_proof(c, &proof_cert, &proof_key);
        call.cert_pem = proof_cert;
        call.key_pem = proof_key;
    }
    int r = kp && text ? mesh_ctl_req_start(c->ctl_client, &s->req, &call) : -ENOMEM;
    drop_secret(&token);
    drop_secret(&proof_key);
    mesh_free(proof_cert);
    json_decref(body);
    drop_secret(&text); /* it holds the join token */
    mesh_free(csr);
    if (r < 0) {
        drop_secret(&kp);
        if (r == -ENOMEM)
            mesh_certs_fail(c, "out of memory asking for %s", h->id);
        else
            mesh_certs_fail(c, "cannot start a call to the controller: %s", strerror(-r));
        retry_later(c);
        return;
    }
    drop_secret(&s->pending_key);
    mesh_free(s->pending_id);
    s->pending_key = kp;
    s->pending_id = mesh_strdup(h->id);
    s->pending_enroll = enroll;
    mesh_log_info("%s %s from the controller", enroll ? "enrolling: asking for" : "asking for",
                  h->id);
}

void mesh_certs_controller_refresh(struct mesh_certs *c)
{
    struct ctl_state *s = c->ctl;
    if (!s || mesh_ctl_req_active(&s->req) || c->closing || c->n == 0)
        return;
    time_t now = time(NULL);
    /* What the state dir holds serves first, even while the controller is away. */
    bool loaded = false;
    for (size_t i = 0; c->bundle_pem && i < c->n; i++) {
        if (!c->v[i].cert_pem && mesh_certs_load_kept(c, &c->v[i]))
            loaded = true;
    }
    if (loaded || !c->material)
        mesh_certs_rebuild(c);
    struct held *node = &c->v[0];
    if (!node->cert_pem || now >= node->renew_at) {
        ask(c, node, !valid_now(node, now));
        return;
    }
    time_t due = node->renew_at;
    for (size_t i = 1; i < c->n; i++) {
        struct held *h = &c->v[i];
        if (!h->cert_pem || now >= h->renew_at) {
            ask(c, h, false);
            return;
        }
        if (h->renew_at < due)
            due = h->renew_at;
    }
    mesh_certs_schedule_in(c, due > now ? (uint64_t)(due - now) * 1000 : 0);
}

/* ---- the mode's table ---- */

static void refresh(struct mesh_certs *c, bool force)
{
    (void)force; /* what is wanted changed: the next call asks for it */
    mesh_certs_controller_refresh(c);
}

static void check_config(struct mesh_cfg_ctx *ctx, const struct mesh_agent_identity_config *id)
{
    if (!id->controller[0] || !id->controller_ca[0] || !id->join_token_file[0])
        mesh_cfg_error(ctx, "mode \"controller\" needs controller, controller_ca and "
                            "join_token_file");
}

static void check_files(const struct mesh_agent_config *cfg, struct mesh_cfg_errors *errors)
{
    const struct mesh_agent_identity_config *id = &cfg->identity;
    mesh_agent__check_identity_file(errors, cfg, "controller_ca", id->controller_ca,
                                    MESH_AGENT_PEM_CERT);
    /* The token is read once, to enroll: a node that holds its certificate is past it. */
    char node_crt[4200];
    struct stat st;
    snprintf(node_crt, sizeof(node_crt), "%s/certs/node.crt", cfg->state_dir);
    if (stat(node_crt, &st) < 0)
        mesh_agent__check_identity_file(errors, cfg, "join_token_file", id->join_token_file,
                                        MESH_AGENT_PEM_TOKEN);
}

const struct certs_mode mesh_certs_mode_controller = {
    .mtls = true,
    .uses_controller = true,
    .keeps_certs = true,
    .own_backoff = true,
    .check_config = check_config,
    .check_files = check_files,
    .open = mesh_certs_controller_open,
    .refresh = refresh,
    .paths = mesh_certs_default_paths,
    .close = mesh_certs_controller_close,
};
