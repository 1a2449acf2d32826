/*
 * The certificate manager: holds an X509-SVID for the node and for every local service,
 * and turns them into TLS material for the data plane. Each identity.mode is one table of
 * operations (certs-int.h) in its own file:
 *
 *   standalone  (certs_local_ca.c) keys are made here (EC P-256, 0600 in <state_dir>/certs), CSRs
 * carry the SPIFFE ID, and the local CA (identity.ca_cert/ca_key) signs them; each is renewed at
 * half of its lifetime, with jitter; the old one serves until the new one is in place files
 * (certs_files.c) an external PKI writes <cert_dir>/node.crt|key and
 *               <cert_dir>/<namespace>/<service>.crt|key and the trust bundle; they are
 *               re-read when they change (checked every few seconds), and a bad set is
 *               refused with the old one kept
 *   controller  (certs_controller.c) a mesh-controller signs them, after enrollment
 *
 * Certificates persist in the state dir: an agent restarted while its CA or PKI is away
 * serves with what it holds while it is valid.
 */
#ifndef MESH_AGENT_CERTS_H
#define MESH_AGENT_CERTS_H

#include <stdbool.h>
#include <time.h>

#include <jansson.h>
#include <uv.h>

#include "agent/config.h"
#include "catalog/service.h"
#include "common/buf.h"
#include "proxy/tls.h"

struct mesh_certs;
struct mesh_http_client;

/*
 * A manager for cfg's identity section; *ret is NULL for identity.mode "none". Calls
 * changed(data) on the loop whenever the material changes. A mode that talks to the
 * controller calls it through `ctl` (borrowed; it must outlive the manager; NULL in other
 * modes). Returns 0 or -errno.
 */
int mesh_certs_new(uv_loop_t *loop, struct mesh_http_client *ctl,
                   const struct mesh_agent_config *cfg, void (*changed)(void *data), void *data,
                   struct mesh_certs **ret);
/* The identities wanted: the node's and these services'. Issues or loads what is missing. */
void mesh_certs_set_locals(struct mesh_certs *c, const struct mesh_local_service *const *locals,
                           size_t n);
/* The current material (borrowed), or NULL when there is none yet. */
struct mesh_tls_material *mesh_certs_material(const struct mesh_certs *c);
/* The node's certificate and key and the trust bundle (borrowed until the next change), or
 * false when the node has none yet. */
bool mesh_certs_node_credentials(const struct mesh_certs *c, const char **cert, const char **key,
                                 const char **bundle);

/* Whether a certificate in use has expired (readiness turns false). */
bool mesh_certs_expired(const struct mesh_certs *c);
void mesh_certs_metrics(const struct mesh_certs *c, struct mesh_buf *b);
json_t *mesh_certs_status(const struct mesh_certs *c);
/* Stops the timers and ends a call to the controller in flight (no callback after it); the
 * manager is freed once the timers are closed. */
void mesh_certs_free(struct mesh_certs *c);

/* What the agent and its config need of an identity mode (each mode's table decides). */
/* Whether identity.mode `mode` also talks to the controller (watch and reports). */
bool mesh_certs_mode_uses_controller(int mode);
/* Adds an error for each key the mode of `id` needs and lacks (a config check). */
void mesh_certs_mode_check_config(struct mesh_cfg_ctx *ctx,
                                  const struct mesh_agent_identity_config *id);

#endif
