/*
 * The controller's HTTPS API (JSON):
 *
 *   GET    /v1/bundle            the trust bundle (PEM), for anyone
 *   POST   /v1/enroll            {"token", "node", "csr"}: a node certificate, with a join token
 *   POST   /v1/sign              {"identity", "csr"}: an SVID, for an enrolled node (its
 *                                certificate authenticates it) entitled to the identity
 *   POST   /v1/tokens            admin: create a join token (its text is shown once)
 *   GET    /v1/tokens            admin: the tokens, without secrets
 *   DELETE /v1/tokens/<id>       admin: revoke one
 *   GET    /v1/certs             admin: the certificates issued, latest per identity
 *   GET    /v1/agents            admin: the enrolled nodes
 *
 * Admin calls carry "Authorization: Bearer <admin token>" (the token is in
 * <state_dir>/admin.token, made on first start, mode 0600).
 */
#ifndef MESH_CONTROLLER_API_H
#define MESH_CONTROLLER_API_H

#include "common/http_server.h"
#include "controller/ca.h"
#include "controller/store.h"

struct mesh_api {
    struct mesh_store *store;
    struct mesh_ca *ca;
    char admin_token[65];
    uint64_t issued;
    uint64_t refused;
};

void mesh_api_handle(struct mesh_http_exchange *ex, void *data);

#endif
