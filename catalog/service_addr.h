/*
 * An address a mesh service is called at besides its endpoints: a Kubernetes Service's
 * ClusterIP and port. A registry that knows them reports them (the kubernetes one:
 * registry-adapters/kubernetes/k8s_addrs.h); the agent captures calls to them and the proxy
 * maps them to the service (docs/capture.md, "Kubernetes node mode"). Also the identities
 * of this host's workloads by address.
 */
#ifndef MESH_CATALOG_SERVICE_ADDR_H
#define MESH_CATALOG_SERVICE_ADDR_H

#include "common/addr.h"

struct mesh_service_addr {
    struct mesh_ipport addr; /* IP and port */
    const char *service;     /* "namespace/name", borrowed from its owner */
};

/* A workload on this host by the address it calls from, and its SPIFFE ID (a Kubernetes
 * pod of this node, registry-adapters/kubernetes/k8s_addrs.h): what names the caller of a
 * connection captured from it. */
struct mesh_workload_identity {
    const char *ip;       /* normalized IP literal */
    const char *identity; /* spiffe://<td>/ns/<namespace>/sa/<account> */
};

#endif
