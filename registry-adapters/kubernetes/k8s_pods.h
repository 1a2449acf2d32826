/*
 * This node's Pods by IP address, as the kubernetes registry's Pod watch knows them
 * (fieldSelector spec.nodeName=<node>): so that a caller on this node can be named by the
 * address it calls from (docs/kubernetes.md, "This node's Pods").
 */
#ifndef MESH_K8S_PODS_H
#define MESH_K8S_PODS_H

#include <stdbool.h>
#include <stddef.h>

#include "catalog/registry.h"

/* A pod, borrowed from the registry: valid until the registry next applies a watch event
 * (on the loop), so copy what must outlive the call. */
struct mesh_k8s_pod_ref {
    const char *namespace;
    const char *name;
    const char *service_account; /* NULL: one the mesh cannot name (no identity) */
};

/*
 * The pod of this node holding IP literal `ip` ("10.0.0.7", "fd00::7") in registry `r`.
 * Returns true and fills *ret; false when `r` is not a kubernetes registry, its Pod watch is
 * off, or no running pod of this node has that IP. On the loop the registry runs on.
 */
bool mesh_k8s_pod_by_ip(const struct mesh_registry *r, const char *ip,
                        struct mesh_k8s_pod_ref *ret);

/*
 * The same pod's SPIFFE ID, spiffe://<trust domain>/ns/<namespace>/sa/<service account>,
 * into out (size bytes). Returns 0, -ENOENT (no such pod), -EPERM (the pod has no identity
 * the mesh can name) or -ENOBUFS.
 */
int mesh_k8s_pod_identity(const struct mesh_registry *r, const char *ip, char *out, size_t size);

#endif
