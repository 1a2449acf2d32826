/*
 * This node's Pods by IP: an index kept beside the Pod cache (k8s_apply.c keeps it as pods
 * come and go), and the lookups of k8s_pods.h.
 */
#include "registry-adapters/kubernetes/k8s_pods.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/addr.h"
#include "registry-adapters/kubernetes/k8s-int.h"

void mesh_k8s__pods_index(struct k8s_registry *k, const struct mesh_k8s_pod *old,
                          struct mesh_k8s_pod *pod)
{
    /* An IP holds one pod: the last one seen with it (a pod that ended gave its IP up). A
     * dual-stack pod is found by either of its addresses. */
    const char *const was[] = {old ? old->ip : NULL, old ? old->ip2 : NULL};
    const char *const is[] = {pod ? pod->ip : NULL, pod ? pod->ip2 : NULL};
    for (size_t i = 0; i < 2; i++) {
        if (was[i] && mesh_hmap_get(&k->pods_by_ip, was[i]) == old)
            mesh_hmap_remove(&k->pods_by_ip, was[i]);
    }
    for (size_t i = 0; i < 2; i++) {
        if (is[i] && mesh_hmap_put(&k->pods_by_ip, is[i], pod) < 0)
            mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory indexing pod '%s' by its IP",
                              pod->head.key);
    }
}

static const struct mesh_k8s_pod *find(const struct mesh_registry *r, const char *ip)
{
    char norm[MESH_ADDR_STRLEN];
    struct mesh_ipport a;
    if (!r || r->ops != &mesh_k8s_registry_ops || !ip || mesh_ipport_from_ip(ip, 0, &a) < 0)
        return NULL;
    const struct k8s_registry *k = (const struct k8s_registry *)r;
    mesh_ipport_ip(&a, norm, sizeof(norm));
    return mesh_hmap_get(&k->pods_by_ip, norm);
}

bool mesh_k8s_pod_by_ip(const struct mesh_registry *r, const char *ip, struct mesh_k8s_pod_ref *ret)
{
    const struct mesh_k8s_pod *p = find(r, ip);
    if (!p)
        return false;
    *ret = (struct mesh_k8s_pod_ref){p->namespace, p->name, p->service_account};
    return true;
}

int mesh_k8s_pod_identity(const struct mesh_registry *r, const char *ip, char *out, size_t size)
{
    const struct mesh_k8s_pod *p = find(r, ip);
    if (!p)
        return -ENOENT;
    if (!p->service_account)
        return -EPERM;
    int n = snprintf(out, size, "spiffe://%s/ns/%s/sa/%s", r->env->trust_domain, p->namespace,
                     p->service_account);
    return n < 0 || (size_t)n >= size ? -ENOBUFS : 0;
}
