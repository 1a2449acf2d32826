/*
 * The caches, and what goes from them to the catalog. A service is what its EndpointSlices
 * say (joined by the kubernetes.io/service-name label; several slices merge), on one port:
 * the one the mesh.io/port annotation names, else the Service's first port, else the
 * slice's first. Endpoint conditions become health: ready, serving, terminating (drain).
 * A Service without slices (or whose last slice went) is in the catalog with no endpoints.
 * Services whose endpoints run on this node are local services, with the identity of their
 * pods' service account.
 */
#define MESH_LOG_MODULE "kubernetes"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "registry-adapters/kubernetes/k8s-int.h"

static void local_free(struct mesh_local_service *ls)
{
    if (ls) {
        mesh_local_service_done(ls);
        mesh_free(ls);
    }
}

/* ---- groups ---- */

static void mark(struct k8s_registry *k, struct k8s_group *g)
{
    if (g->dirty)
        return;
    if (mesh_grow((void **)&k->dirty, &k->cap_dirty, k->n_dirty + 1, sizeof(*k->dirty)) < 0) {
        mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory tracking changes");
        return;
    }
    g->dirty = true;
    k->dirty[k->n_dirty++] = g;
}

static struct k8s_group *group_get(struct k8s_registry *k, const char *ns, const char *name)
{
    char key[512];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    struct k8s_group *g = mesh_hmap_get(&k->groups, key);
    if (g)
        return g;
    g = mesh_calloc(1, sizeof(*g));
    if (!g || !(g->key = mesh_strdup(key)) || !(g->namespace = mesh_strdup(ns)) ||
        !(g->name = mesh_strdup(name)) || mesh_hmap_put(&k->groups, g->key, g) < 0) {
        if (g) {
            mesh_free(g->key);
            mesh_free(g->namespace);
            mesh_free(g->name);
        }
        mesh_free(g);
        return NULL;
    }
    return g;
}

static void group_unlink(struct k8s_registry *k, const struct mesh_k8s_slice *s)
{
    char key[512];
    if (!s->service)
        return;
    snprintf(key, sizeof(key), "%s/%s", s->namespace, s->service);
    struct k8s_group *g = mesh_hmap_get(&k->groups, key);
    for (size_t i = 0; g && i < g->n_slices; i++) {
        if (g->slices[i] == s) {
            g->slices[i] = g->slices[--g->n_slices];
            mark(k, g);
            return;
        }
    }
}

static int group_link(struct k8s_registry *k, struct mesh_k8s_slice *s)
{
    if (!s->service)
        return 0;
    struct k8s_group *g = group_get(k, s->namespace, s->service);
    if (!g ||
        mesh_grow((void **)&g->slices, &g->cap_slices, g->n_slices + 1, sizeof(*g->slices)) < 0)
        return -ENOMEM;
    g->slices[g->n_slices++] = s;
    mark(k, g);
    return 0;
}

/* ---- the caches ---- */

static void touched(struct k8s_registry *k, enum k8s_kind kind, const void *obj)
{
    if (kind == K8S_SERVICES) {
        const struct mesh_k8s_service *s = obj;
        struct k8s_group *g = group_get(k, s->namespace, s->name);
        if (g)
            mark(k, g);
    } else if (kind == K8S_PODS) {
        k->pods_dirty = true; /* a service account may have changed */
    }
}

int mesh_k8s__upsert(struct k8s_registry *k, enum k8s_kind kind, void *obj)
{
    const char *key = ((const struct mesh_k8s_head *)obj)->key;
    void *old = mesh_hmap_get(&k->cache[kind], key);
    if (kind == K8S_SLICES && old)
        group_unlink(k, old);
    if (mesh_hmap_put(&k->cache[kind], key, obj) < 0) {
        if (kind == K8S_SLICES && old)
            group_link(k, old);
        return -ENOMEM;
    }
    if (kind == K8S_SLICES) {
        if (group_link(k, obj) < 0)
            mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory indexing slices");
    }
    touched(k, kind, obj);
    mesh_k8s__obj_free(kind, old);
    return 0;
}

void mesh_k8s__delete(struct k8s_registry *k, enum k8s_kind kind, const char *key)
{
    void *old = mesh_hmap_remove(&k->cache[kind], key);
    if (!old)
        return;
    if (kind == K8S_SLICES)
        group_unlink(k, old);
    touched(k, kind, old);
    mesh_k8s__obj_free(kind, old);
}

static bool in_namespace(const char *key, const char *ns)
{
    size_t n = strlen(ns);
    return strncmp(key, ns, n) == 0 && key[n] == '/';
}

void mesh_k8s__sweep(struct k8s_registry *k, enum k8s_kind kind, const char *ns, uint64_t gen)
{
    const struct mesh_hmap_entry *e;
    const char *gone[256];
    size_t n;
    do { /* deleting edits the map: collect, then delete */
        n = 0;
        for (size_t i = 0; n < MESH_ARRAY_SIZE(gone) && mesh_hmap_next(&k->cache[kind], &i, &e);) {
            uint64_t seen = ((const struct mesh_k8s_head *)e->value)->seen;
            if (seen != gen && (!ns || in_namespace(e->key, ns)))
                gone[n++] = e->key;
        }
        for (size_t i = 0; i < n; i++) {
            char key[512];
            snprintf(key, sizeof(key), "%s", gone[i]);
            mesh_k8s__delete(k, kind, key);
        }
    } while (n == MESH_ARRAY_SIZE(gone));
}

/* ---- to the catalog ---- */

/* The port of the service the mesh uses: a name to find in each slice, or NULL (first). */
static const struct mesh_k8s_port *service_port(const struct mesh_k8s_service *svc)
{
    if (!svc || !svc->n_ports)
        return NULL;
    for (size_t i = 0; svc->port_hint && i < svc->n_ports; i++) {
        char num[8];
        snprintf(num, sizeof(num), "%u", svc->ports[i].port);
        if (strcmp(svc->ports[i].name, svc->port_hint) == 0 || strcmp(num, svc->port_hint) == 0)
            return &svc->ports[i];
    }
    return &svc->ports[0];
}

static const struct mesh_k8s_port *slice_port(const struct mesh_k8s_slice *s,
                                              const struct mesh_k8s_port *want)
{
    for (size_t i = 0; want && i < s->n_ports; i++) {
        if (strcmp(s->ports[i].name, want->name) == 0)
            return &s->ports[i];
    }
    return !want && s->n_ports ? &s->ports[0] : NULL;
}

static void push(struct k8s_registry *k, struct k8s_group *g)
{
    const struct mesh_k8s_service *svc = mesh_hmap_get(&k->cache[K8S_SERVICES], g->key);
    const struct mesh_k8s_port *want = service_port(svc), *proto_port = want;
    size_t total = 0;
    for (size_t i = 0; i < g->n_slices; i++)
        total += g->slices[i]->n_eps;
    struct mesh_endpoint *eps = mesh_calloc(total + 1, sizeof(*eps));
    size_t n = 0;
    if (!eps) {
        mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory building service '%s'", g->key);
        return;
    }
    for (size_t i = 0; i < g->n_slices; i++) {
        const struct mesh_k8s_slice *s = g->slices[i];
        const struct mesh_k8s_port *p = slice_port(s, want);
        if (!p)
            continue;
        if (!proto_port)
            proto_port = p;
        for (size_t j = 0; j < s->n_eps; j++) {
            const struct mesh_k8s_endpoint *e = &s->eps[j];
            struct mesh_endpoint *o = &eps[n++];
            o->addr = e->addr;
            o->addr.port = p->port;
            o->weight = 1;
            o->health = e->health;
            o->zone = e->zone; /* borrowed: the catalog copies */
            o->node = e->node;
        }
    }
    struct mesh_service_update u = {
        .namespace = g->namespace,
        .name = g->name,
        .protocol = mesh_k8s_protocol(proto_port, svc ? svc->protocol_hint : NULL),
        .endpoints = eps,
        .n_endpoints = n,
        .exists = svc != NULL, /* a Service whose slices are all gone is still there */
    };
    k->base.sink.set_service(k->base.sink.data, &k->base, &u);
    mesh_free(eps);
}

static void group_free(struct k8s_group *g)
{
    local_free(g->local);
    mesh_free(g->slices);
    mesh_free(g->key);
    mesh_free(g->namespace);
    mesh_free(g->name);
    mesh_free(g);
}

/*
 * This node's workload of group g: the first ready endpoint on this node, with its pod's
 * service account. Returns 0 with *ret NULL when there is none, or -ENOMEM.
 */
static int local_of(struct k8s_registry *k, const struct k8s_group *g,
                    struct mesh_local_service **ret)
{
    *ret = NULL;
    const struct mesh_k8s_service *svc = mesh_hmap_get(&k->cache[K8S_SERVICES], g->key);
    const struct mesh_k8s_port *want = service_port(svc);
    const struct mesh_k8s_endpoint *mine = NULL;
    const char *mine_pod = NULL;
    const struct mesh_k8s_port *port = NULL;
    for (size_t s = 0; s < g->n_slices && !mine; s++) {
        const struct mesh_k8s_port *p = slice_port(g->slices[s], want);
        for (size_t j = 0; p && j < g->slices[s]->n_eps && !mine; j++) {
            const struct mesh_k8s_endpoint *ep = &g->slices[s]->eps[j];
            if (ep->node && strcmp(ep->node, k->conn.node_name) == 0 &&
                (ep->health & MESH_EP_READY)) {
                mine = ep;
                mine_pod = g->slices[s]->pods ? g->slices[s]->pods[j] : NULL;
                port = p;
            }
        }
    }
    if (!mine)
        return 0;
    char podkey[512], id[600];
    snprintf(podkey, sizeof(podkey), "%s/%s", g->namespace, mine_pod ? mine_pod : "");
    const struct mesh_k8s_pod *pod = mesh_hmap_get(&k->cache[K8S_PODS], podkey);
    snprintf(id, sizeof(id), "spiffe://%s/ns/%s/sa/%s", k->base.env->trust_domain, g->namespace,
             pod ? pod->service_account : "default");
    struct mesh_local_service *ls = mesh_calloc(1, sizeof(*ls));
    if (!ls)
        return -ENOMEM;
    struct mesh_ipport at = mine->addr;
    at.port = port->port;
    mesh_ipport_to_addr(&at, &ls->addr);
    ls->protocol = mesh_k8s_protocol(port, svc ? svc->protocol_hint : NULL);
    if (!(ls->name = mesh_strdup(g->name)) || !(ls->namespace = mesh_strdup(g->namespace)) ||
        !(ls->source = mesh_strdup("kubernetes")) || !(ls->identity = mesh_strdup(id))) {
        mesh_local_service_done(ls);
        mesh_free(ls);
        return -ENOMEM;
    }
    *ret = ls;
    return 0;
}

static bool local_equal(const struct mesh_local_service *a, const struct mesh_local_service *b)
{
    if (!a || !b)
        return a == b;
    return a->protocol == b->protocol && mesh_addr_equal(&a->addr, &b->addr) &&
           strcmp(a->identity, b->identity) == 0;
}

/*
 * Recomputes group g's workload on this node (its slices, Service or pods changed): work in
 * proportion to the group, never to the cluster. Notes when the set of local services moved.
 */
static void refresh_local(struct k8s_registry *k, struct k8s_group *g)
{
    struct mesh_local_service *ls;
    if (!k->cfg->pods)
        return;
    if (local_of(k, g, &ls) < 0) {
        mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory finding local services");
        return;
    }
    if (local_equal(ls, g->local)) {
        local_free(ls);
        return;
    }
    if (ls && !g->local) {
        if (mesh_grow((void **)&k->local_groups, &k->cap_local_groups, k->n_local_groups + 1,
                      sizeof(*k->local_groups)) < 0) {
            local_free(ls);
            mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory finding local services");
            return;
        }
        k->local_groups[k->n_local_groups++] = g;
    } else if (!ls) {
        for (size_t i = 0; i < k->n_local_groups; i++) {
            if (k->local_groups[i] == g) {
                k->local_groups[i] = k->local_groups[--k->n_local_groups];
                break;
            }
        }
    }
    local_free(g->local);
    g->local = ls;
    k->locals_changed = true;
}

static int cmp_group_key(const void *a, const void *b)
{
    return strcmp((*(struct k8s_group *const *)a)->key, (*(struct k8s_group *const *)b)->key);
}

/* Services whose endpoints run on this node, with their pods' service accounts: a copy of
 * what the local groups hold, by key. */
static void push_locals(struct k8s_registry *k)
{
    k->locals_changed = false;
    if (!k->cfg->pods)
        return;
    size_t n = k->n_local_groups;
    struct mesh_local_service *v = mesh_calloc(n ? n : 1, sizeof(*v));
    if (!v) {
        mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory finding local services");
        return;
    }
    if (n)
        qsort(k->local_groups, n, sizeof(*k->local_groups), cmp_group_key);
    for (size_t i = 0; i < n; i++)
        v[i] = *k->local_groups[i]->local; /* borrowed for the call */
    k->base.sink.set_local(k->base.sink.data, &k->base, v, n);
    mesh_free(v);
}

void mesh_k8s__flush(struct k8s_registry *k)
{
    if (!k->synced)
        return; /* the first full sync sends everything at once */
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < k->n_dirty; i++) {
        struct k8s_group *g = k->dirty[i];
        g->dirty = false;
        push(k, g);
        refresh_local(k, g);
        if (g->n_slices == 0 && !mesh_hmap_get(&k->cache[K8S_SERVICES], g->key)) {
            mesh_hmap_remove(&k->groups, g->key);
            group_free(g);
        }
    }
    k->n_dirty = 0;
    if (k->pods_dirty) {
        /* A pod's service account: only the groups with a workload here can use it. */
        k->pods_dirty = false;
        for (size_t i = k->n_local_groups; i > 0; i--)
            refresh_local(k, k->local_groups[i - 1]);
    }
    if (k->locals_changed)
        push_locals(k);
    k->apply_seconds_sum += (double)(uv_hrtime() - t0) / 1e9;
    k->apply_count++;
}

void mesh_k8s__full_sync(struct k8s_registry *k)
{
    const struct mesh_hmap_entry *e;
    k->base.sink.sync_begin(k->base.sink.data, &k->base);
    for (size_t i = 0; mesh_hmap_next(&k->groups, &i, &e);) {
        struct k8s_group *g = e->value;
        if (g->n_slices || mesh_hmap_get(&k->cache[K8S_SERVICES], g->key))
            push(k, g);
    }
    k->base.sink.sync_end(k->base.sink.data, &k->base);
    k->synced = true;
    /* Everything is in: what was marked is sent already. */
    for (size_t i = 0; i < k->n_dirty; i++)
        k->dirty[i]->dirty = false;
    k->n_dirty = 0;
    k->pods_dirty = false;
    for (size_t i = 0; mesh_hmap_next(&k->groups, &i, &e);)
        refresh_local(k, e->value);
    push_locals(k);
    /* Groups left with neither slices nor a Service (a relist saw them go) are dropped:
     * collected first, as removing edits the map. */
    struct k8s_group **gone = NULL;
    size_t n_gone = 0, cap = 0;
    for (size_t i = 0; mesh_hmap_next(&k->groups, &i, &e);) {
        struct k8s_group *g = e->value;
        if (!g->n_slices && !mesh_hmap_get(&k->cache[K8S_SERVICES], g->key) &&
            mesh_grow((void **)&gone, &cap, n_gone + 1, sizeof(*gone)) == 0)
            gone[n_gone++] = g;
    }
    for (size_t i = 0; i < n_gone; i++) {
        mesh_hmap_remove(&k->groups, gone[i]->key);
        group_free(gone[i]);
    }
    mesh_free(gone);
}

void mesh_k8s__caches_done(struct k8s_registry *k)
{
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&k->groups, &i, &e);)
        group_free(e->value);
    mesh_hmap_done(&k->groups);
    for (int kind = 0; kind < K8S_KINDS; kind++) {
        for (size_t i = 0; mesh_hmap_next(&k->cache[kind], &i, &e);)
            mesh_k8s__obj_free((enum k8s_kind)kind, e->value);
        mesh_hmap_done(&k->cache[kind]);
    }
    mesh_free(k->dirty);
    mesh_free(k->local_groups);
}
