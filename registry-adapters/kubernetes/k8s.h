/*
 * The Kubernetes registry adapter: Services, EndpointSlices and this node's Pods from the
 * API server (list, then watch), into the catalog. See docs/kubernetes.md.
 */
#ifndef MESH_K8S_H
#define MESH_K8S_H

#include <stdbool.h>
#include <stdint.h>

#include "catalog/registry.h"
#include "common/cfg.h"

/* The "kubernetes" keys of a registries[] entry (docs/kubernetes.md). */
struct mesh_k8s_config {
    char *kubeconfig;                   /* "": in-cluster, then $KUBECONFIG */
    char *context;                      /* "": the kubeconfig's current-context */
    char *service_account_dir;          /* in-cluster token, ca.crt */
    struct mesh_cfg_strings namespaces; /* none: all */
    char *node_name;                    /* "": $NODE_NAME, then node.name */
    int page_size;
    uint64_t watch_timeout_ms;
    bool pods;
};

extern const struct mesh_registry_ops mesh_k8s_registry_ops;

#endif
