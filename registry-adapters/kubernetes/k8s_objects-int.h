/*
 * The Kubernetes objects the adapter keeps, decoded from API JSON (tokenized with
 * common/json_tok.h: watch streams and list pages are the hot path) into the few fields it
 * needs: EndpointSlices (discovery.k8s.io/v1), Services and Pods (v1). Pure; fuzzed through
 * the watch stream target. Each object is one allocation owner; _free accepts NULL.
 */
#ifndef MESH_K8S_OBJECTS_H
#define MESH_K8S_OBJECTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/service.h"
#include "common/json_tok.h"

#define MESH_K8S_SERVICE_NAME_LABEL "kubernetes.io/service-name"
#define MESH_K8S_PROTOCOL_ANNOTATION "mesh.io/protocol"
#define MESH_K8S_PORT_ANNOTATION "mesh.io/port"
/* The service account of a Service's endpoints, as callers are to verify it (default: the
 * Service's name, as for a VM's service). */
#define MESH_K8S_SERVICE_ACCOUNT_ANNOTATION "mesh-agent.io/service-account"

struct mesh_k8s_port {
    char *name; /* "" when unnamed */
    uint16_t port;
    char *app_protocol; /* NULL when unset */
};

/* What a cached endpoint keeps (40 bytes): a cluster's worth of them stays in memory. */
struct mesh_k8s_endpoint {
    struct mesh_ipport addr; /* port 0: the slice's port applies */
    uint8_t health;          /* MESH_EP_* from the conditions */
    const char *zone, *node; /* atoms (common/atom.h), or NULL */
};

/* What every cached object starts with, so that the cache handles all kinds alike. */
struct mesh_k8s_head {
    char *key;     /* "namespace/name" */
    uint64_t seen; /* the list generation that last saw it (the adapter's) */
};

struct mesh_k8s_slice {
    struct mesh_k8s_head head;
    char *namespace;
    char *service; /* kubernetes.io/service-name; NULL: belongs to none */
    struct mesh_k8s_port *ports;
    size_t n_ports;
    struct mesh_k8s_endpoint *eps;
    size_t n_eps;
    char **pods; /* by endpoint: targetRef's name, for endpoints on this node; NULL: none */
};

struct mesh_k8s_service {
    struct mesh_k8s_head head;
    char *namespace, *name;
    struct mesh_k8s_port *ports; /* spec.ports in order; port is the Service's port */
    size_t n_ports;
    char *protocol_hint;   /* the mesh.io/protocol annotation */
    char *port_hint;       /* the mesh.io/port annotation: which port the mesh uses */
    char *service_account; /* the mesh-agent.io/service-account annotation, as given */
    bool reported;         /* a bad service_account was reported (k8s_apply.c) */
    /* spec.clusterIPs (else spec.clusterIP), port 0; none for a headless Service ("None")
     * or one without (ExternalName). At most two: one per family. */
    struct mesh_ipport cluster_ips[2];
    size_t n_cluster_ips;
};

struct mesh_k8s_pod {
    struct mesh_k8s_head head;
    char *namespace, *name;
    /* spec.serviceAccountName, "default" when unset; NULL when it is one the mesh cannot
     * name (not a DNS label): such a pod gets no identity. */
    char *service_account;
    /* status.podIP, normalized ("10.0.0.1", "fd00::1"); NULL: none yet, or the pod may not
     * hold it: neither Pending nor Running (ended: its IP may be another pod's now), being
     * deleted
     * (metadata.deletionTimestamp), or on the host's network (spec.hostNetwork, or a podIP
     * that is status.hostIP: the node's address). */
    char *ip;
    char *ip2;    /* a dual-stack pod's address of the other family (status.podIPs); NULL: none */
    bool pending; /* phase Pending: its IPs are claimed (so no other pod is named by them)
                     but name nothing until it is Running */
};

/* The object's metadata.namespace, .name and .resourceVersion, each copied into its buffer
 * of MESH_K8S_NAME_MAX bytes ("" when absent or too long). */
#define MESH_K8S_NAME_MAX 256
void mesh_k8s_meta(const struct mesh_jdoc *d, size_t obj, char *ret_ns, char *ret_name,
                   char *ret_rv);

/* Each decodes object token `obj`; returns 0, -EINVAL with the reason in `err`, or -ENOMEM.
 * A slice keeps its endpoints' pod names only for those on node `node` (NULL: on every
 * node): that is all the local services need. */
int mesh_k8s_slice_decode(const struct mesh_jdoc *d, size_t obj, const char *node,
                          struct mesh_k8s_slice **ret, char *err, size_t errlen);
int mesh_k8s_service_decode(const struct mesh_jdoc *d, size_t obj, struct mesh_k8s_service **ret,
                            char *err, size_t errlen);
int mesh_k8s_pod_decode(const struct mesh_jdoc *d, size_t obj, struct mesh_k8s_pod **ret, char *err,
                        size_t errlen);
void mesh_k8s_slice_free(struct mesh_k8s_slice *s);
void mesh_k8s_service_free(struct mesh_k8s_service *s);
void mesh_k8s_pod_free(struct mesh_k8s_pod *p);

/* The protocol a port speaks, from appProtocol, then the port name's prefix (http-, grpc-,
 * h2c-, http2-), then `hint`; TCP otherwise. */
enum mesh_protocol mesh_k8s_protocol(const struct mesh_k8s_port *p, const char *hint);

#endif
