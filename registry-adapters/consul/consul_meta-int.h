/*
 * Service.Meta as the mesh uses it: what registration writes for a local service (its
 * namespace and labels besides the mesh's own keys) and how discovery reads an instance's
 * Meta back into its namespace and endpoint labels. Pure functions, no loop.
 *
 * Consul's rules for service Meta (structs.ValidateServiceMetadata): at most 64 pairs, keys 1
 * to 128 of [A-Za-z0-9_-] not starting with the reserved "consul-", values at most 512
 * characters. Mesh labels are Kubernetes labels: a value always fits, a key fits unless it has
 * a prefix ("app.kubernetes.io/name": '.' and '/' are refused).
 */
#ifndef MESH_CONSUL_META_H
#define MESH_CONSUL_META_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/labels.h"

#define MESH_CONSUL_META_NAMESPACE "mesh-namespace" /* the service's mesh namespace */
#define MESH_CONSUL_META_IDENTITY "mesh-identity"   /* the workload's SPIFFE ID */
#define MESH_CONSUL_META_MAX_PAIRS 64
#define MESH_CONSUL_META_KEY_MAX 128
#define MESH_CONSUL_META_VALUE_MAX 512

/* NULL when Consul accepts `key` in a service's Meta, else why not (a constant string). */
const char *mesh_consul_meta_key_check(const char *key);

/* True for the keys the mesh gives a meaning ("protocol" and every "mesh-" key): they are
 * never labels, neither written from one nor read into one. */
bool mesh_consul_meta_key_reserved(const char *key);

/* Called for each label that cannot be carried, with why (a constant string). */
typedef void (*mesh_consul_meta_skip_cb)(void *data, const char *key, const char *why);

/*
 * Adds `labels` to `meta`, a JSON object that already holds the mesh's own keys, each label
 * under its own key with its value, in key order while Consul's pair limit allows. A label
 * whose key Consul refuses, that is reserved, or that no longer fits is left out and passed to
 * `skip`. Returns the number left out, or -ENOMEM.
 */
int mesh_consul_meta_add_labels(json_t *meta, const struct mesh_labels *labels,
                                mesh_consul_meta_skip_cb skip, void *data);

/*
 * The endpoint labels an instance's Service.Meta gives: every entry whose key and value are
 * valid label syntax, except the reserved keys. Returns 0 or -ENOMEM (`l` then holds a part).
 */
int mesh_consul_meta_labels(json_t *meta, struct mesh_labels *l);

/*
 * The mesh namespace an instance's Service.Meta names: 0 with *ret NULL when it names none,
 * 0 with *ret pointing into `meta` when it names a DNS label, -EINVAL when the value is not
 * one (*ret then points to it, for messages, or is NULL when it is not a string).
 */
int mesh_consul_meta_namespace(json_t *meta, const char **ret);

/*
 * The SPIFFE ID an instance's Service.Meta "mesh-identity" names for the workloads of service
 * `service` in namespace `ns`. Only what the mesh itself writes is taken: a valid SPIFFE ID
 * of `trust_domain` (NULL: none is taken) of the form /ns/<ns>/sa/<account>, with `ns` the
 * instance's own namespace and the account a DNS label, or the older form /ns/<ns>/svc/<name>
 * (docs/identity.md), read as /sa/<name>. Returns 0 when Meta names none or the default ID
 * (/sa/<service>), 1 with the ID in `out` (size bytes, at least MESH_SPIFFE_ID_MAX + 1), or
 * -EINVAL when the value is not such an ID (*ret_bad then points to it, for messages, or to
 * "(not a string)").
 */
int mesh_consul_meta_identity(json_t *meta, const char *trust_domain, const char *ns,
                              const char *service, char *out, size_t size, const char **ret_bad);

#endif
