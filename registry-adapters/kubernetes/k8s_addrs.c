/* The ClusterIPs of the cached Services and this node's pods' identities (k8s_addrs.h). */
#include "registry-adapters/kubernetes/k8s_addrs.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "registry-adapters/kubernetes/k8s-int.h"
#include "registry-adapters/kubernetes/k8s_pods.h"

int mesh_k8s_service_addrs(const struct mesh_registry *r, struct mesh_service_addr **v, size_t *cap,
                           size_t *n)
{
    if (!r || r->ops != &mesh_k8s_registry_ops)
        return 0;
    const struct k8s_registry *k = (const struct k8s_registry *)r;
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&k->cache[K8S_SERVICES], &i, &e);) {
        const struct mesh_k8s_service *svc = e->value;
        const struct mesh_k8s_port *port = mesh_k8s__service_port(svc);
        for (size_t j = 0; port && j < svc->n_cluster_ips; j++) {
            if (mesh_grow((void **)v, cap, *n + 1, sizeof(**v)) < 0)
                return -ENOMEM;
            struct mesh_service_addr *a = &(*v)[(*n)++];
            a->addr = svc->cluster_ips[j];
            a->addr.port = port->port;
            a->service = svc->head.key;
        }
    }
    return 0;
}

int mesh_k8s_pod_identities(const struct mesh_registry *r, struct mesh_workload_identity **v,
                            size_t *cap, size_t *n)
{
    if (!r || r->ops != &mesh_k8s_registry_ops)
        return 0;
    const struct k8s_registry *k = (const struct k8s_registry *)r;
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&k->pods_by_ip, &i, &e);) {
        char id[600];
        if (mesh_k8s_pod_identity(r, e->key, id, sizeof(id)) < 0)
            continue; /* no account the mesh can name */
        char *copy = mesh_strdup(id);
        if (!copy || mesh_grow((void **)v, cap, *n + 1, sizeof(**v)) < 0) {
            mesh_free(copy);
            return -ENOMEM;
        }
        (*v)[(*n)++] = (struct mesh_workload_identity){e->key, copy};
    }
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

bool mesh_k8s__addrs_differ(enum k8s_kind kind, const void *old, const void *obj)
{
    if (kind == K8S_PODS) {
        const struct mesh_k8s_pod *a = old, *b = obj;
        return !same_str(a->ip, b->ip) || !same_str(a->ip2, b->ip2) || a->pending != b->pending ||
               !same_str(a->service_account, b->service_account);
    }
    if (kind != K8S_SERVICES)
        return false;
    const struct mesh_k8s_service *a = old, *b = obj;
    const struct mesh_k8s_port *pa = mesh_k8s__service_port(a), *pb = mesh_k8s__service_port(b);
    if (a->n_cluster_ips != b->n_cluster_ips || !pa != !pb || (pa && pa->port != pb->port))
        return true;
    for (size_t i = 0; i < a->n_cluster_ips; i++) {
        if (!mesh_ipport_equal(&a->cluster_ips[i], &b->cluster_ips[i]))
            return true;
    }
    return false;
}
