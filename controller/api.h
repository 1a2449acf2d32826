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

#include <stdbool.h>

#include "common/http_server.h"
#include "controller/ca.h"
#include "controller/store.h"

struct resource_waiter;

struct mesh_api {
    uv_loop_t *loop;
    struct mesh_store *store;
    struct mesh_ca *ca;
    char admin_token[65];
    uint64_t issued;
    uint64_t refused;
    uint64_t res_index;              /* the resources' version, for blocking queries */
    struct resource_waiter *waiters; /* blocking queries parked until a change */
    struct mesh_hmap reports;        /* node -> its last report (memory only) */
};

void mesh_api_handle(struct mesh_http_exchange *ex, void *data);
/* Sets the resources' index from the store (at start). */
void mesh_api_resources_init(struct mesh_api *api);
/* Answers every parked query now (a stop). */
void mesh_api_resources_close(struct mesh_api *api);

/* api.c, for resources_api.c */
bool mesh_api_is_admin(struct mesh_api *api, const struct mesh_http_request *r);
/* The enrolled node that presented its certificate, or NULL (then answered). */
const char *mesh_api_node(struct mesh_api *api, struct mesh_http_exchange *ex, char *buf,
                          size_t size);
void mesh_api_fail(struct mesh_api *api, struct mesh_http_exchange *ex, int status,
                   const char *why);
/* agents_api.c: POST /v1/report, GET /v1/agents */
void mesh_api_report(struct mesh_api *api, struct mesh_http_exchange *ex);
void mesh_api_agents(struct mesh_api *api, struct mesh_http_exchange *ex);
void mesh_api_agents_close(struct mesh_api *api);
/* resources_api.c: /v1/resources... */
void mesh_api_resources(struct mesh_api *api, struct mesh_http_exchange *ex,
                        const struct mesh_http_request *r);

#endif
