/*
 * Policy resources: {"kind": ..., "name": ..., "namespace": ..., "spec": {...}}, in files
 * (standalone) or, later, from the controller. A file holds one resource or
 * {"resources": [...]}. Each kind has a schema for its spec; the same validators serve the
 * agent and the controller. Pure parsing: no I/O, no loop.
 */
#ifndef MESH_RESOURCE_H
#define MESH_RESOURCE_H

#include <stdatomic.h>
#include <stddef.h>

#include "common/cfg.h"
#include "common/claims.h"
#include "common/hmap.h"
#include "resources/authz.h"
#include "resources/policy.h"
#include "resources/route.h"

enum mesh_resource_kind {
    MESH_RESOURCE_DESTINATION_POLICY,
    MESH_RESOURCE_ROUTE,
    MESH_RESOURCE_AUTHORIZATION_POLICY,
    MESH_RESOURCE_KINDS
};

extern const char *const mesh_resource_kind_names[];

struct mesh_resource {
    int kind;
    char *name;
    char *namespace;
    void *spec; /* struct mesh_dest_policy, struct mesh_route, struct mesh_authz */
};

/*
 * Reference-counted so that a view may outlive the files' watcher, and snapshots (any
 * thread drops them) may borrow the routes and policies inside.
 */
struct mesh_resource_file {
    atomic_int refs;
    struct mesh_resource *v;
    size_t n;
};

#define MESH_RESOURCES_PER_FILE_MAX 1000

/* Parses one file; same contract as mesh_service_file_parse. */
int mesh_resource_file_parse(const char *name, const char *data, size_t len,
                             struct mesh_cfg_errors *errors, struct mesh_resource_file **ret);
struct mesh_resource_file *mesh_resource_file_ref(struct mesh_resource_file *f);
void mesh_resource_file_unref(struct mesh_resource_file *f);

/*
 * The resources in effect, indexed by kind and "namespace/service". Built from files in
 * order; a later resource that repeats a kind/namespace/name, or one for a service that
 * already has one of its kind, is reported through `conflict` and ignored. Holds a
 * reference to each file it was given.
 */
struct mesh_resource_view {
    struct mesh_hmap by_service[MESH_RESOURCE_KINDS]; /* "ns/service" -> entry with spec */
    struct mesh_claims names; /* "kind/ns/name", claimed by the file first defining it */
    struct mesh_resource_file **files;
    size_t n_files;
    size_t count;
};

typedef void (*mesh_resource_conflict_cb)(void *data, const char *file, const char *message);

int mesh_resource_view_init(struct mesh_resource_view *v);
/*
 * Adds a file's resources (taking a reference); `file` names it in conflict messages and
 * must outlive the calls to add on this view. Returns 0 or -ENOMEM.
 */
int mesh_resource_view_add(struct mesh_resource_view *v, const char *file,
                           struct mesh_resource_file *f, mesh_resource_conflict_cb cb, void *data);
void mesh_resource_view_done(struct mesh_resource_view *v);
/* The policy for a service, or NULL (then the defaults apply). */
const struct mesh_dest_policy *mesh_resource_view_policy(const struct mesh_resource_view *v,
                                                         const char *ns, const char *service);
/* The AuthorizationPolicy for a service, or NULL (every caller may call it). */
const struct mesh_authz *mesh_resource_view_authz(const struct mesh_resource_view *v,
                                                  const char *ns, const char *service);
/* The name of the Route resource for a service, or NULL. */
const char *mesh_resource_view_route_name(const struct mesh_resource_view *v, const char *ns,
                                          const char *service);
/* The route for a service, or NULL (then every request goes to the service). */
const struct mesh_route *mesh_resource_view_route(const struct mesh_resource_view *v,
                                                  const char *ns, const char *service);

#endif
