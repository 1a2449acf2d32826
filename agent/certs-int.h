/*
 * Internals of the certificate manager. certs.c holds what every identity mode shares
 * (the identities wanted, the material, ages, status); each mode is one table of
 * operations in its own file: certs_local_ca.c ("standalone"), certs_files.c ("files"),
 * certs_controller.c ("controller"). "none" has a table too, and no manager.
 */
#ifndef MESH_AGENT_CERTS_INT_H
#define MESH_AGENT_CERTS_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/x509.h>
#include <uv.h>

#include "agent/config.h"
#include "common/macros.h"
#include "proxy/tls.h"

#define PEM_MAX (256 * 1024)

struct held;
struct mesh_certs;

/*
 * An identity mode. Every entry is set (the certs_default_* functions where a mode has
 * nothing of its own), so callers never check for NULL.
 */
struct certs_mode {
    bool mtls;            /* certificates, and the inbound mTLS listener ("none": false) */
    bool uses_controller; /* the agent also watches and reports to the controller */
    bool keeps_certs;     /* made here and kept in <state_dir>/certs; else read from cert_dir */
    bool own_backoff;     /* retries on its own: not refreshed at each change of local services */
    /* Adds an error for each key the mode needs and the identity section lacks. */
    void (*check_config)(struct mesh_cfg_ctx *ctx, const struct mesh_agent_identity_config *id);
    /* `mesh-agent validate`: adds an error for each file the mode reads that is not right. */
    void (*check_files)(const struct mesh_agent_config *cfg, struct mesh_cfg_errors *errors);
    /* Sets up the mode's state in c (c->dir is set). Returns 0 or -errno (logged). */
    int (*open)(struct mesh_certs *c, const struct mesh_agent_identity_config *id);
    /* Gets what is due or missing and swaps in new material; schedules the next refresh.
     * `force`: the identities wanted changed. */
    void (*refresh)(struct mesh_certs *c, bool force);
    /* Where h's certificate and key are kept or read. */
    void (*paths)(const struct mesh_certs *c, const struct held *h, char *crt, char *key,
                  size_t size);
    /* Stops what is in flight (the manager is being freed). */
    void (*close)(struct mesh_certs *c);
};

extern const struct certs_mode mesh_certs_mode_local_ca;
extern const struct certs_mode mesh_certs_mode_files;
extern const struct certs_mode mesh_certs_mode_controller;
/* The table of an identity.mode (enum mesh_identity_mode); never NULL. */
const struct certs_mode *mesh_certs_mode_of(int mode);
/* <dir>/node.crt|key and <dir>/svc.<namespace>.<name>.crt|key. */
void mesh_certs_default_paths(const struct mesh_certs *c, const struct held *h, char *crt,
                              char *key, size_t size);
void mesh_certs_default_close(struct mesh_certs *c);

struct held {
    char *id;
    char *ns; /* NULL: the node */
    char *name;
    char *cert_pem, *key_pem;
    size_t cert_len, key_len;
    time_t not_before, not_after, renew_at;
    time_t expired_at; /* the notAfter of what the state dir held when it had expired (0: none) */
    bool warned_overdue, warned_expired; /* said for this certificate: 80 % of its life, expiry */
    struct stat cert_st, key_st;         /* files mode: what was read */
};

struct mesh_certs {
    uv_loop_t *loop;
    uv_timer_t timer;     /* the mode's refresh */
    uv_timer_t age_timer; /* the next 80 % point or notAfter of a certificate held */
    int open_handles;
    int mode; /* enum mesh_identity_mode */
    const struct certs_mode *ops;
    char *dir; /* where certificates are kept (standalone) or read (files) */
    char *trust_domain;
    char *node;
    char *bundle_path; /* files */
    bool tls12;
    uint64_t ttl_s;
    X509 *ca;         /* standalone */
    EVP_PKEY *ca_key; /* standalone */
    char *bundle_pem;
    size_t bundle_len;
    struct stat bundle_st; /* files: what was read */
    struct held *v;
    size_t n;
    struct mesh_tls_material *material;
    void (*changed)(void *data);
    void *data;
    uint64_t issued;
    uint64_t errors;
    char last_error[512];
    struct ctl_state *ctl;               /* controller mode */
    struct mesh_http_client *ctl_client; /* how to call the controller (borrowed) */
    bool closing;
};

void mesh_certs_fail(struct mesh_certs *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mesh_certs_held_clear_pem(struct held *h);
/* Where h's certificate and key are kept (standalone, controller) or read (files). */
void mesh_certs_paths(const struct mesh_certs *c, const struct held *h, char *crt, char *key,
                      size_t size);
X509 *mesh_certs_parse_cert(const char *pem, size_t len);
/* Its validity and when to renew it: half of the lifetime, give or take a twentieth. */
void mesh_certs_set_times(struct held *h, X509 *x);
/*
 * Takes what the state dir holds for h when the CA signed it for h's ID and it has not
 * expired; it may be due for renewal (the caller renews it with what it holds). An expired
 * one is left, its notAfter noted in h->expired_at.
 */
bool mesh_certs_load_kept(struct mesh_certs *c, struct held *h);
/* t as "2006-01-02T15:04:05Z". */
void mesh_certs_format_time(time_t t, char *out, size_t size);
/* Warns about certificates past 80 % of their life or expired, and sets the timer for the
 * next such moment. */
void mesh_certs_check_ages(struct mesh_certs *c);
/* Material from the bundle and what is held; NULL (logged) when any piece is refused. */
struct mesh_tls_material *mesh_certs_build(struct mesh_certs *c, const char *bundle, size_t len,
                                           const struct held *v, size_t n);
/* Material from the bundle and every identity that has a certificate. */
void mesh_certs_rebuild(struct mesh_certs *c);
void mesh_certs_swap_in(struct mesh_certs *c, struct mesh_tls_material *m);
/* Runs the mode's refresh in ms. */
void mesh_certs_schedule_in(struct mesh_certs *c, uint64_t ms);

/* certs_controller.c */
int mesh_certs_controller_open(struct mesh_certs *c, const struct mesh_agent_identity_config *id);
void mesh_certs_controller_refresh(struct mesh_certs *c);
void mesh_certs_controller_close(struct mesh_certs *c);

/* config_files.c: for the modes' check_files. */
enum mesh_agent_pem_kind { MESH_AGENT_PEM_CERT, MESH_AGENT_PEM_KEY, MESH_AGENT_PEM_TOKEN };
/* Adds an error unless identity.<key> names a readable file holding `kind`. */
void mesh_agent__check_identity_file(struct mesh_cfg_errors *errors,
                                     const struct mesh_agent_config *cfg, const char *key,
                                     const char *path, enum mesh_agent_pem_kind kind);
/* Adds "<file>: $.identity.<key>: <message>". */
void mesh_agent__identity_error(struct mesh_cfg_errors *errors, const struct mesh_agent_config *cfg,
                                const char *key, const char *fmt, ...) MESH_PRINTF(4, 5);

#endif
