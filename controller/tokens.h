/*
 * Join tokens: what lets a new agent enroll. A token reads "mesh1.<id>.<secret>"; only the
 * SHA-256 of the secret is stored, with its scope: a pattern the node name must match, the
 * service identities the node may later ask for (SPIFFE ID patterns), an expiry and a
 * number of uses. meshctl creates, lists and revokes them.
 */
#ifndef MESH_CONTROLLER_TOKENS_H
#define MESH_CONTROLLER_TOKENS_H

#include <stddef.h>

#include <jansson.h>

#include "controller/store.h"

/*
 * Creates a token from a request ({"node": pattern, "services": [patterns], "ttl": "1h",
 * "uses": 1, "description": "...", "addresses": ["10.0.0.0/24"]}). The node pattern is
 * required ("*" must be asked for); service patterns must be of trust_domain and name
 * workloads only: no node identity, not the controller's, not the whole trust domain.
 * "addresses" are what a node enrolled with it may report besides the address it connects
 * from. Returns the stored record (a new reference, without the secret) and the token text
 * (*ret_token, caller frees), or NULL with why in err (a 400).
 */
json_t *mesh_token_create(struct mesh_store *s, const char *trust_domain, json_t *req,
                          char **ret_token, char *err, size_t err_size);

/*
 * Checks a list of service identity patterns (a token's, or a node's set by an operator):
 * an array of at most 100 SPIFFE ID patterns of trust_domain, one '*' each, naming
 * workloads only: no node identity, not the controller's, not the whole trust domain.
 * Returns 0, or -EINVAL with why in err (naming the entry and `where`, e.g. "on a token").
 */
int mesh_token_services_check(json_t *services, const char *trust_domain, const char *where,
                              char *err, size_t err_size);

/*
 * Checks token for node: known, not revoked, expired or used up, and for this node name.
 * Returns the record (borrowed, valid until the store changes), or NULL with why in err.
 */
json_t *mesh_token_check(struct mesh_store *s, const char *token, const char *node, char *err,
                         size_t err_size);
/* Consumes one use of a checked token (durably). Returns 0, or a negative errno with why in
 * err. */
int mesh_token_consume(struct mesh_store *s, json_t *rec, char *err, size_t err_size);

/* mesh_token_check, then mesh_token_consume. Returns the record after the use, or NULL. */
json_t *mesh_token_use(struct mesh_store *s, const char *token, const char *node, char *err,
                       size_t err_size);

/* Whether the pattern (at most one '*') matches s. */
int mesh_pattern_match(const char *pattern, const char *s);

#endif
