/*
 * The catalog as its readers see it: the merged services and how to look them up, without
 * a way to change anything. The data plane's snapshot builders include this header alone;
 * the agent, which feeds the catalog, includes catalog/catalog.h.
 *
 * Lookups are main-loop only; a published service is immutable and any thread may ref and
 * read it.
 */
#ifndef MESH_CATALOG_VIEW_H
#define MESH_CATALOG_VIEW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/service.h"

#define MESH_CATALOG_REGISTRY_LABEL "mesh/registry"

struct mesh_catalog_eps;

/* A merged service. Immutable once published. */
struct mesh_service {
    atomic_int refs;
    uint64_t id; /* unique in the process: a changed service is a new one */
    char *key;   /* "namespace/name" */
    char *namespace;
    char *name;
    enum mesh_protocol protocol;
    char *identity; /* the SPIFFE ID its workloads present, from its first source; or NULL:
                       the default, spiffe://<td>/ns/<namespace>/sa/<name> */
    struct mesh_endpoint *endpoints; /* sorted by address; each one's source indexes sources */
    size_t n_endpoints;
    struct mesh_catalog_eps *eps; /* owns endpoints; shared with the view of a lone source */
    char **sources;               /* reporting sources, highest precedence first */
    size_t n_sources;
    bool merged; /* false when rule 3 applied */
};

struct mesh_catalog;

/* The merged service, or NULL; borrowed until the next change (ref it to keep it). */
struct mesh_service *mesh_catalog_get(const struct mesh_catalog *c, const char *namespace,
                                      const char *name);
size_t mesh_catalog_count(const struct mesh_catalog *c);
/* Incremented on every change of a merged service. */
uint64_t mesh_catalog_version(const struct mesh_catalog *c);

/* All merged services sorted by key; the array is the caller's (mesh_free), entries borrowed. */
int mesh_catalog_list(const struct mesh_catalog *c, struct mesh_service ***ret, size_t *n);

/* Whether `source` reports endpoint ep of s (it may be one of several that do). */
bool mesh_service_ep_from(const struct mesh_service *s, const struct mesh_endpoint *ep,
                          const char *source);

/* The value of label `key` of an endpoint of s, the "mesh/registry" label included; or NULL. */
const char *mesh_service_ep_label(const struct mesh_service *s, const struct mesh_endpoint *ep,
                                  const char *key);

struct mesh_service *mesh_service_ref(struct mesh_service *s);
void mesh_service_unref(struct mesh_service *s);

#endif
