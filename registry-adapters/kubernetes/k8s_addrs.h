/*
 * The ClusterIPs of the Services the kubernetes registry knows, with the port the mesh uses,
 * so that a pod calling a Service by its ClusterIP can be captured to that service
 * (docs/capture.md, "Kubernetes node mode").
 */
#ifndef MESH_K8S_ADDRS_H
#define MESH_K8S_ADDRS_H

#include <stddef.h>

#include "catalog/registry.h"
#include "catalog/service_addr.h"

/*
 * Appends to *v (of *cap entries, grown with mesh_grow; the caller frees it) one entry per
 * ClusterIP of each Service of registry `r` that has one (headless ones have none), at the
 * Service port the mesh uses. The service names are borrowed until the registry next
 * applies a watch event (on its loop). Returns 0 (nothing when `r` is not a kubernetes
 * registry) or -ENOMEM.
 */
int mesh_k8s_service_addrs(const struct mesh_registry *r, struct mesh_service_addr **v, size_t *cap,
                           size_t *n);

/*
 * Appends one entry per running pod of this node with an IP and an identity the mesh can
 * name (k8s_pods.h): its IP borrowed as above, its SPIFFE ID malloc'd (the caller frees each
 * `identity`). Returns 0 (nothing when `r` is not a kubernetes registry or its Pod watch is
 * off) or -ENOMEM.
 */
int mesh_k8s_pod_identities(const struct mesh_registry *r, struct mesh_workload_identity **v,
                            size_t *cap, size_t *n);

#endif
