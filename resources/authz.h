/*
 * AuthorizationPolicy: who may call a local service, checked on its inbound listeners: per
 * request for HTTP, per connection for TCP.
 *
 *   {"kind": "AuthorizationPolicy", "name": "api", "spec": {"service": "api",
 *    "deny":  [{"match": [...], "principals": ["spiffe://td/ns/x/sa/web"]}],
 *    "allow": [{"namespaces": ["shop"]}]}}
 *
 * A request matching a deny rule is refused; when allow rules exist, a request must match
 * one. A rule holds when any of its matches holds (the Route match syntax: path, methods,
 * headers, query; none: every request), when it names principals the caller's SPIFFE ID
 * matches one, and when it names namespaces the caller's is one. The identity comes from
 * mutual TLS; a plain caller has none, and rules naming principals or namespaces never
 * hold for it. The older form of a VM service's ID (.../ns/<ns>/svc/<name>), in a policy or
 * presented by a caller, is read as .../ns/<ns>/sa/<name> (docs/identity.md).
 */
#ifndef MESH_AUTHZ_H
#define MESH_AUTHZ_H

#include <stdbool.h>

#include "common/http_parse.h"
#include "resources/route.h"

struct mesh_authz_rule {
    struct mesh_route_match *matches;
    size_t n_matches;
    struct mesh_cfg_strings principals; /* SPIFFE IDs or patterns with one '*' */
    struct mesh_cfg_strings namespaces; /* the caller's namespace, from its SPIFFE ID */
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
/* Whether `identity` (NULL or "": none) may make request r; r NULL: open a connection (a
 * TCP service), where deny rules hold whatever their matches and allow rules with matches
 * never do. */
bool mesh_authz_allows(const struct mesh_authz *a, const struct mesh_http_request *r,
                       const char *identity);

#endif
