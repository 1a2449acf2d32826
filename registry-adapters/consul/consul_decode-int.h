/*
 * Decoders for the Consul HTTP API answers the adapter reads. Pure functions over bytes
 * from the network: strict, bounded, fuzzed (tests/fuzz/consul_health).
 *
 *   GET /v1/catalog/services       {"name": ["tag", ...], ...}
 *   GET /v1/health/service/<name>  [{"Node": {...}, "Service": {...}, "Checks": [...]}, ...]
 */
#ifndef MESH_CONSUL_DECODE_H
#define MESH_CONSUL_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/service.h"
#include "registry-adapters/consul/consul_meta-int.h"

/* Service metadata keys with a meaning to the mesh (written by our registration too). */
#define MESH_CONSUL_META_PORT "mesh-port"          /* the host agent's mTLS port */
#define MESH_CONSUL_META_MANAGER "mesh-managed-by" /* "mesh-agent/<node>" on our own */
#define MESH_CONSUL_META_PROTOCOL "protocol"       /* tcp, http, http2, grpc */

struct mesh_consul_names {
    char **v; /* sorted */
    size_t n;
    size_t skipped; /* names that are not DNS labels */
    char first_skipped[64];
};

/*
 * Decodes a catalog services answer: the names carrying `tag` (NULL: all), sorted. Names the
 * catalog cannot hold (not DNS labels) are counted in `skipped`. Returns 0, -EINVAL with the
 * reason in `err`, or -ENOMEM.
 */
int mesh_consul_decode_services(const char *data, size_t len, const char *tag,
                                struct mesh_consul_names *ret, char *err, size_t errlen);
void mesh_consul_names_done(struct mesh_consul_names *n);

struct mesh_consul_health_options {
    bool include_warning;     /* instances with a warning check count (at their warning weight) */
    const char *zone_key;     /* Service.Meta, then Node.Meta key naming the zone */
    const char *namespace;    /* of instances whose Meta names none (the registry's) */
    const char *trust_domain; /* of the "mesh-identity" IDs taken (NULL: none is) */
    const char *service;      /* the name asked for: its default ID is no news */
};

/* The instances of one mesh namespace: one service of the catalog. */
struct mesh_consul_group {
    char *namespace;
    enum mesh_protocol protocol; /* from the first of its instances in the answer */
    char *identity;              /* the same way; NULL: the default ID, sa/<service> */
    size_t first, n;             /* its endpoints: v[first .. first + n) */
};

struct mesh_consul_instances {
    struct mesh_endpoint *v; /* by namespace, then sorted by address, unique in each */
    size_t n;
    struct mesh_consul_group *groups; /* sorted by namespace */
    size_t n_groups;
    enum mesh_protocol protocol; /* of the first group (TCP without one) */
    size_t unhealthy;            /* left out for a failing check */
    size_t skipped;              /* left out for an unusable address or port */
    size_t bad_namespace;        /* left out: their mesh-namespace is not a DNS label */
    char first_bad_namespace[64];
    size_t bad_identity; /* left out: their mesh-identity is not one the mesh gives */
    char first_bad_identity[160];
    size_t identity_conflicts; /* left out: their mesh-identity is not their service's */
    char first_conflict[160];
};

/*
 * Decodes a health service answer into endpoints: the address is Service.Address or, when
 * empty, Node.Address (an IP literal); the weight Weights.Passing; health from every check
 * of the instance and its node; the namespace Service.Meta's "mesh-namespace" (a DNS label,
 * else the instance is left out), or opts->namespace without one; labels from the rest of
 * Service.Meta (consul_meta-int.h). A namespace's protocol and identity are those of its
 * first instance in the answer; an instance whose "mesh-identity" is not valid
 * (mesh_consul_meta_identity), or names another ID than that first one, is left out: a
 * caller must never expect an ID the registry did not give. Returns 0, -EINVAL with the reason in
 * `err`, or -ENOMEM.
 */
int mesh_consul_decode_health(const char *data, size_t len,
                              const struct mesh_consul_health_options *opts,
                              struct mesh_consul_instances *ret, char *err, size_t errlen);
void mesh_consul_instances_done(struct mesh_consul_instances *in);

/*
 * Keyed digests (SipHash-1-3 with `key`) of what an answer says, so that an answer equal to
 * the previous one (churn elsewhere, a query that timed out) is known without keeping the
 * previous one. Two results are equal when their digests are, except with negligible
 * probability for a key that Consul does not know.
 */
uint64_t mesh_consul_names_digest(const struct mesh_consul_names *n, const uint64_t key[2]);
uint64_t mesh_consul_instances_digest(const struct mesh_consul_instances *in,
                                      const uint64_t key[2]);

#endif
