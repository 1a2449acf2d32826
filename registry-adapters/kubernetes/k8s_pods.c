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

/* The one pod of the cache holding `ip`, or NULL: none, more than one, or a pod not Running
 * yet (Pending: its init containers may call, and must not be taken for the address's last
 * owner). */
static struct mesh_k8s_pod *sole_holder(const struct k8s_registry *k, const char *ip)
{
    struct mesh_k8s_pod *found = NULL;
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&k->cache[K8S_PODS], &i, &e);) {
        struct mesh_k8s_pod *p = e->value;
        if ((p->ip && strcmp(p->ip, ip) == 0) || (p->ip2 && strcmp(p->ip2, ip) == 0)) {
            if (found)
                return NULL;
            found = p;
        }
    }
    return found && !found->pending ? found : NULL;
}

void mesh_k8s__pods_index(struct k8s_registry *k, const struct mesh_k8s_pod *old,
                          struct mesh_k8s_pod *pod)
{
    /* An IP names a pod only while that pod alone claims it. Two live pods with one IP
     * (a new pod got the address of one whose deletion has not reached the watch yet, or a
     * late status update of the old one) name neither until one of them gives it up: a
     * caller is better unknown than taken for another. Pods that may not hold an IP (ended,
     * being deleted, hostNetwork) claim none (k8s_objects.c). The cache already holds pod
     * in place of old; a node has some 100 pods, so each change scans them. A dual-stack pod
     * is found by either of its addresses. */
    const char *const ips[] = {old ? old->ip : NULL, old ? old->ip2 : NULL, pod ? pod->ip : NULL,
                               pod ? pod->ip2 : NULL};
    for (size_t i = 0; i < 4; i++) {
        if (!ips[i])
            continue;
        struct mesh_k8s_pod *holder = sole_holder(k, ips[i]);
        if (!holder) {
            mesh_hmap_remove(&k->pods_by_ip, ips[i]);
        } else if (mesh_hmap_put(&k->pods_by_ip,
                                 holder->ip && strcmp(holder->ip, ips[i]) == 0 ? holder->ip
                                                                               : holder->ip2,
                                 holder) < 0) {
            mesh_hmap_remove(&k->pods_by_ip, ips[i]); /* never a stale pod */
            mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory indexing pod '%s' by its IP",
                              holder->head.key);
        }
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
