/*
 * The controller's HTTPS API (JSON):
 *
 *   GET    /v1/bundle            the trust bundle (PEM), for anyone
 *   POST   /v1/enroll            {"token", "node", "csr"}: a node certificate, with a join token
 *                                (a node already enrolled also proves it is that node, see
 *                                enroll.c)
 *   POST   /v1/sign              {"identity", "csr"}: an SVID, for an enrolled node (its
 *                                certificate authenticates it) entitled to the identity
 *   POST   /v1/tokens            admin: create a join token (its text is shown once)
 *   GET    /v1/tokens            admin: the tokens, without secrets
 *   DELETE /v1/tokens/<id>       admin: revoke one
 *   GET    /v1/certs             admin: the certificates issued, latest per identity
 *   GET    /v1/agents            admin: the enrolled nodes
 *   POST   /v1/agents/<node>/reset  admin: forget a node's certificates; it may enroll anew
 *   PUT    /v1/agents/<node>/services  admin: the service identities the node may get
 *   GET    /v1/graph             admin: the service graph with rates (traffic.h)
 *   GET    /ui/                  the console (static files; its calls carry the admin token)
 *   GET    /metrics              Prometheus counters (no names, no addresses), for anyone
 *
 * Admin calls carry "Authorization: Bearer <admin token>" (the token is in
 * <state_dir>/admin.token, made on first start, mode 0600). Wrong admin tokens and join
 * tokens count against their source, which is then slowed down (controller/auth_limit.h):
 * its attempts are answered 429 with Retry-After, unchecked.
 */
#ifndef MESH_CONTROLLER_API_H
#define MESH_CONTROLLER_API_H

#include <stdbool.h>

#include "common/http_server.h"
#include "controller/api_latency.h"
#include "controller/auth_limit.h"
#include "controller/ca.h"
#include "controller/catalog.h"
#include "controller/store.h"
#include "controller/traffic.h"
#include "resources/resource.h"

struct resource_waiter;

/* Why a certificate was not issued (POST /v1/sign and /v1/enroll), for /metrics. */
enum mesh_api_cert_failure {
    MESH_API_CERT_INVALID_REQUEST, /* a body or identity that does not parse */
    MESH_API_CERT_UNAUTHENTICATED, /* no valid node certificate, or join token, or its proof */
    MESH_API_CERT_NOT_ALLOWED,     /* an identity the node may not have */
    MESH_API_CERT_INVALID_CSR,     /* a CSR the CA does not sign */
    MESH_API_CERT_INTERNAL,        /* the store could not record it */
    MESH_API_CERT_FAILURES
};

/* What /metrics shows besides the HTTP server's own statistics. */
struct mesh_api_counters {
    uint64_t issued;
    uint64_t refused;              /* answers 401 and 403 */
    uint64_t enrollments;          /* node certificates issued to a join token */
    uint64_t enroll_failures;      /* bad join tokens; enrollments as a node without its proof */
    uint64_t admin_failures;       /* wrong admin tokens */
    uint64_t rate_limited;         /* attempts answered 429 without a check */
    uint64_t reports_refused;      /* reports of an address the node does not own */
    uint64_t members_joined;       /* a node reporting for the first time, or again after 60 s */
    uint64_t members_moved;        /* a node reporting another address or port */
    uint64_t members_left;         /* a node not reporting for 60 s */
    uint64_t reports_members_sent; /* reports answered with the membership */
    uint64_t reports_members_unchanged; /* ... without it: the node holds the current one */
    uint64_t cert_failures[MESH_API_CERT_FAILURES];
    uint64_t token_uses;      /* join token uses spent (enrollments) */
    uint64_t tokens_created;  /* join tokens made */
    uint64_t tokens_revoked;  /* join tokens revoked */
    uint64_t traffic_dropped; /* reports whose traffic passed the cap on edges kept (traffic.h) */
    /* Resources written, by kind (enum mesh_resource_kind): applied (PUT) and deleted. */
    uint64_t resources_applied[MESH_RESOURCE_KINDS];
    uint64_t resources_deleted[MESH_RESOURCE_KINDS];
};

struct mesh_api {
    uv_loop_t *loop;
    struct mesh_store *store;
    struct mesh_ca *ca;
    struct mesh_http_server *server; /* for its statistics (NULL: none) */
    char admin_token[65];
    struct mesh_api_counters n;
    struct mesh_api_latency latency; /* by route, from the server's on_answered */
    struct mesh_auth_limit limit;
    uint64_t res_index;               /* the resources' version, for blocking queries */
    struct resource_waiter *waiters;  /* blocking queries parked until a change */
    struct mesh_hmap reports;         /* node -> its last report (memory only) */
    struct mesh_ctl_catalog *catalog; /* the nodes' services (controller/catalog.h) */
    char *members_text;               /* the membership answered to reports, built once */
    bool members_dirty;               /* ... per change of it */
    char members_tag[48];             /* names members_text: "<start>-<version>" */
    uint64_t members_start, members_version;
    struct mesh_ctl_traffic traffic; /* the nodes' traffic, for GET /v1/graph (traffic.h) */
};

/* Sets up what the API keeps in memory (store, ca and loop set by the caller). */
void mesh_api_init(struct mesh_api *api);
/* Frees it (after the server closed). */
void mesh_api_done(struct mesh_api *api);

void mesh_api_handle(struct mesh_http_exchange *ex, void *data);
/* Sets the resources' index from the store (at start). */
void mesh_api_resources_init(struct mesh_api *api);
/* Answers every parked query now (a stop). */
void mesh_api_resources_close(struct mesh_api *api);

/* api.c, for the other parts of the API */
/* Whether the request carries the admin token; when not, it is answered (401, or 429 for a
 * source slowed down) and a wrong token counts against its source. */
bool mesh_api_admin(struct mesh_api *api, struct mesh_http_exchange *ex);
/* Whether the source may try a credential now; when not, answers 429 with Retry-After. */
bool mesh_api_may_try(struct mesh_api *api, struct mesh_http_exchange *ex);
/* A failed credential: counts it in *counter and against the source. */
void mesh_api_auth_failed(struct mesh_api *api, struct mesh_http_exchange *ex, uint64_t *counter);
void mesh_api_fail(struct mesh_api *api, struct mesh_http_exchange *ex, int status,
                   const char *why);
/* mesh_api_fail for a certificate not issued, counted under `reason`. */
void mesh_api_cert_failed(struct mesh_api *api, struct mesh_http_exchange *ex,
                          enum mesh_api_cert_failure reason, int status, const char *why);
/* The body as JSON, or NULL. */
json_t *mesh_api_body_json(struct mesh_http_exchange *ex);
/* Signs a CSR for id: the PEM (caller frees) and its serial and expiry, or NULL and why. */
char *mesh_api_sign(struct mesh_api *api, const char *csr, const char *id, char *err,
                    size_t err_size, char serial[80], int64_t *not_after);
/* Records a certificate issued to node for id, answers with it and the bundle; frees pem. */
void mesh_api_issued(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node,
                     const char *id, char *pem, const char *serial, int64_t not_after);

/* enroll.c: POST /v1/enroll, node authentication, POST /v1/agents/<node>/reset */
void mesh_api_enroll(struct mesh_api *api, struct mesh_http_exchange *ex);
/* The enrolled node that presented its current, valid certificate, or NULL (then
 * answered). */
const char *mesh_api_node(struct mesh_api *api, struct mesh_http_exchange *ex, char *buf,
                          size_t size);
/* Notes a new certificate of node's own identity, asked for on ex (a renewal), as one that
 * speaks for it. */
void mesh_api_node_renewed(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node,
                           const char *serial);
void mesh_api_node_reset(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node);
/* node_services.c: PUT /v1/agents/<node>/services, the identities a node may get */
void mesh_api_node_services(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node);

/* agents_api.c: POST /v1/report, POST /v1/leave, GET /v1/agents */
void mesh_api_report(struct mesh_api *api, struct mesh_http_exchange *ex);
void mesh_api_leave(struct mesh_api *api, struct mesh_http_exchange *ex);
void mesh_api_catalog(struct mesh_api *api, struct mesh_http_exchange *ex,
                      const struct mesh_http_request *r);
void mesh_api_agents(struct mesh_api *api, struct mesh_http_exchange *ex);
void mesh_api_agents_close(struct mesh_api *api);
/* The enrolled nodes by the state GET /v1/agents shows: SYNCED, STALE, OFFLINE. */
void mesh_api_agent_states(struct mesh_api *api, uint64_t ret[3]);
/* Drops a node from the membership at once (a reset), as if it had left. */
void mesh_api_member_forget(struct mesh_api *api, const char *node);
/* graph.c: GET /v1/graph (admin), the service graph */
void mesh_api_graph(struct mesh_api *api, struct mesh_http_exchange *ex);
/* console.c: GET /ui/..., the console's static files (for anyone: the data needs a token) */
void mesh_api_console(struct mesh_api *api, struct mesh_http_exchange *ex,
                      const struct mesh_http_request *r);
/* metrics.c: GET /metrics */
void mesh_api_metrics(struct mesh_api *api, struct mesh_http_exchange *ex);
/* The server's on_answered (data: the api): counts the answer's latency by route. */
void mesh_api_answered(const struct mesh_http_exchange *ex, int status, uint64_t elapsed_ns,
                       void *data);
/* resources_api.c: /v1/resources... */
void mesh_api_resources(struct mesh_api *api, struct mesh_http_exchange *ex,
                        const struct mesh_http_request *r);

#endif
