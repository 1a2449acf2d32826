/*
 * The service data model shared by registries, the catalog and the proxy.
 */
#ifndef MESH_SERVICE_H
#define MESH_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/labels.h"

enum mesh_protocol {
    MESH_PROTO_TCP,
    MESH_PROTO_HTTP,
    MESH_PROTO_HTTP2,
    MESH_PROTO_GRPC,
};

/* NULL-terminated names, indexed by enum mesh_protocol (for config enums). */
extern const char *const mesh_protocol_names[];

/* Endpoint conditions, as Kubernetes EndpointSlices define them. */
#define MESH_EP_READY 0x1u       /* may take new traffic */
#define MESH_EP_SERVING 0x2u     /* answers, even while terminating */
#define MESH_EP_TERMINATING 0x4u /* going away: drain, send nothing new */
#define MESH_EP_HEALTHY (MESH_EP_READY | MESH_EP_SERVING)

#define MESH_WEIGHT_MAX 10000
#define MESH_ENDPOINTS_MAX 100000 /* per service and registry */

/*
 * 72 bytes: a catalog holds one per endpoint and source (docs/kubernetes.md, "Cost").
 *
 * An endpoint a registry gives by host name has `host` set and, as the registry reports it,
 * no address yet (addr.family 0, addr.port set). The agent resolves it and hands the catalog
 * one endpoint per address of the answer, each keeping `host`; the catalog and the proxy
 * see addresses only (docs/catalog.md, "Host names").
 */
struct mesh_endpoint {
    struct mesh_ipport addr;
    uint16_t mesh_port; /* a mesh agent's inbound mTLS port on its host; 0: none */
    uint8_t health;     /* MESH_EP_* */
    uint8_t source;     /* in a merged service: its index in sources[] (0 elsewhere) */
    uint32_t weight;    /* 1..MESH_WEIGHT_MAX */
    uint32_t also;      /* in a merged service: the other sources[] reporting it, as bits */
    const char *zone;   /* an atom (common/atom.h); NULL when unknown */
    const char *node;   /* an atom; NULL when unknown */
    const char *host;   /* an atom: the host name the registry gave; NULL for an IP address */
    struct mesh_labels labels;
};

/* A host name still to be resolved into addresses. */
static inline bool mesh_endpoint_unresolved(const struct mesh_endpoint *ep)
{
    return ep->host && ep->addr.family == 0;
}

/* What one registry says about one service: the full endpoint set. */
struct mesh_service_update {
    const char *namespace;
    const char *name;
    enum mesh_protocol protocol;
    const struct mesh_endpoint *endpoints;
    size_t n_endpoints;
    /* With no endpoints: the service exists and has none (true), or is gone (false). */
    bool exists;
    /* The SPIFFE ID its workloads present, when the registry knows it (a service file's
     * service_account); NULL: the default, spiffe://<td>/ns/<namespace>/sa/<name>. */
    const char *identity;
};

/* An upstream a local service calls: a local bind address leading to a service. */
struct mesh_upstream {
    char *service;
    char *namespace;
    struct mesh_addr bind;
    enum mesh_protocol protocol;
};

/* A service whose workload runs on this host. */
struct mesh_local_service {
    char *name;
    char *namespace;
    enum mesh_protocol protocol;
    struct mesh_addr addr;    /* where the workload listens */
    struct mesh_addr inbound; /* where the agent accepts for it; port 0: nowhere */
    struct mesh_upstream *upstreams;
    size_t n_upstreams;
    char *source;              /* where it was defined (a file), for messages */
    char *identity;            /* its SPIFFE ID when not spiffe://<td>/ns/<ns>/sa/<name>; or NULL */
    struct mesh_labels labels; /* on the endpoint this host publishes for it */
};

/* Sets ep->host to host name `name` (common/names.h), lowercased and without a trailing dot,
 * so that one host is one atom. Returns 0, -EINVAL (not a host name) or -ENOMEM. */
int mesh_endpoint_set_host(struct mesh_endpoint *ep, const char *name);
int mesh_endpoint_copy(struct mesh_endpoint *dst, const struct mesh_endpoint *src);
void mesh_endpoint_done(struct mesh_endpoint *ep);
bool mesh_endpoint_equal(const struct mesh_endpoint *a, const struct mesh_endpoint *b);
/* Orders endpoints by address family, address, port; unresolved ones then by host name. */
int mesh_endpoint_addr_cmp(const struct mesh_endpoint *a, const struct mesh_endpoint *b);
const char *mesh_endpoint_health_name(unsigned health);

int mesh_local_service_copy(struct mesh_local_service *dst, const struct mesh_local_service *src);
void mesh_local_service_done(struct mesh_local_service *s);

#endif
