/*
 * The certificate manager: holds an X509-SVID for the node and for every local service,
 * and turns them into TLS material for the data plane.
 *
 *   standalone  keys are made here (EC P-256, 0600 in <state_dir>/certs), CSRs carry the
 *               SPIFFE ID, and the local CA (identity.ca_cert/ca_key) signs them; each is
 *               renewed at half of its lifetime, with jitter; the old one serves until the
 *               new one is in place
 *   files       an external PKI writes <cert_dir>/node.crt|key and
 *               <cert_dir>/<namespace>/<service>.crt|key and the trust bundle; they are
 *               re-read when they change (checked every few seconds), and a bad set is
 *               refused with the old one kept
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
#include "agent/service.h"
#include "common/buf.h"
#include "proxy/tls.h"

struct mesh_certs;
struct mesh_http_client;

/* Calls changed(data) on the loop whenever the material changes. In controller mode it calls
 * the controller through `ctl` (borrowed; it must outlive the manager; NULL in other modes).
 * Returns 0 or -errno. */
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

#endif
