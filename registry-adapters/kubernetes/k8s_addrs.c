/* The ClusterIPs of the cached Services and this node's pods' identities (k8s_addrs.h). */
#include "registry-adapters/kubernetes/k8s_addrs.h"

#include <errno.h>

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
