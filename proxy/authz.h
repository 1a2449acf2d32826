/*
 * AuthorizationPolicy: who may call a service, checked on its inbound HTTP listener.
 *
 *   {"kind": "AuthorizationPolicy", "name": "api", "spec": {"service": "api",
 *    "deny":  [{"match": [...], "principals": ["spiffe://td/ns/x/sa/y"]}],
 *    "allow": [{"match": [...]}]}}
 *
 * A request matching a deny rule is refused; when allow rules exist, a request must match
 * one. A rule holds when any of its matches holds (the Route match syntax: path, methods,
 * headers, query; none: every request) and, when it names principals, the caller's
 * identity is one of them. The identity comes from mutual TLS (issue 5); until then a
 * caller has none, and rules naming principals never hold for it.
 */
#ifndef MESH_AUTHZ_H
#define MESH_AUTHZ_H

#include <stdbool.h>

#include "common/http_parse.h"
#include "proxy/route.h"

struct mesh_authz_rule {
    struct mesh_route_match *matches;
    size_t n_matches;
    struct mesh_cfg_strings principals;
};

struct mesh_authz {
    char *service; /* NULL: the resource name */
    struct mesh_authz_rule *allow;
    size_t n_allow;
    struct mesh_authz_rule *deny;
    size_t n_deny;
};

extern const struct mesh_cfg_schema mesh_authz_schema;

int mesh_authz_defaults(struct mesh_authz *a);
void mesh_authz_done(struct mesh_authz *a);
/* Whether `identity` (NULL: none) may make request r. */
bool mesh_authz_allows(const struct mesh_authz *a, const struct mesh_http_request *r,
                       const char *identity);

#endif
