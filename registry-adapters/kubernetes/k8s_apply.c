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
#include "common/names.h"
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
    if (kind == K8S_PODS)
        mesh_k8s__pods_index(k, old, obj);
    if (kind != K8S_SLICES && (!old || mesh_k8s__addrs_differ(kind, old, obj)))
        k->addrs_changed = true;
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
    if (kind == K8S_PODS)
        mesh_k8s__pods_index(k, old, NULL);
    if (kind != K8S_SLICES)
        k->addrs_changed = true;
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
const struct mesh_k8s_port *mesh_k8s__service_port(const struct mesh_k8s_service *svc)
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

/*
 * The service account group g's Service declares for its endpoints: its
 * mesh-agent.io/service-account annotation, else the Service's name (as for a VM's service).
 * An annotation that is no service account (a DNS label) is reported and counted once per
 * value, and the name stands: callers then want an ID no pod has unless its account is the
 * Service's name, never one nobody declared.
 */
static const char *declared_account(struct k8s_registry *k, const struct k8s_group *g,
                                    struct mesh_k8s_service *svc)
{
    const char *sa = svc ? svc->service_account : NULL;
    if (!sa)
        return g->name;
    if (mesh_name_is_dns_label(sa))
        return sa;
    if (!svc->reported) {
        svc->reported = true;
        k->bad_service_accounts++;
        mesh_log_warn("registry '%s': Service '%s': annotation '%s' value '%.128s' is not a "
                      "service account (a DNS label); callers want the default identity, "
                      "service account '%s'",
                      k->base.cfg->name, g->key, MESH_K8S_SERVICE_ACCOUNT_ANNOTATION, sa, g->name);
    }
    return g->name;
}

static void push(struct k8s_registry *k, struct k8s_group *g)
{
    struct mesh_k8s_service *svc = mesh_hmap_get(&k->cache[K8S_SERVICES], g->key);
    const char *account = declared_account(k, g, svc);
    char id[600];
    snprintf(id, sizeof(id), "spiffe://%s/ns/%s/sa/%s", k->base.env->trust_domain, g->namespace,
             account);
    const struct mesh_k8s_port *want = mesh_k8s__service_port(svc), *proto_port = want;
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
        .identity = strcmp(account, g->name) != 0 ? id : NULL,
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
 * service account. Returns 0 with *ret NULL when there is none, or -ENOMEM. *ret_why says
 * what is wrong with it ("mismatch": its pod's account is not the declared one; else why
 * it has none), with the pod's key in ret_pod (2 * MESH_K8S_NAME_MAX bytes); NULL: nothing.
 */
static int local_of(struct k8s_registry *k, const struct k8s_group *g,
                    struct mesh_local_service **ret, const char **ret_why, char *ret_pod)
{
    *ret = NULL;
    *ret_why = NULL;
    const struct mesh_k8s_service *svc = mesh_hmap_get(&k->cache[K8S_SERVICES], g->key);
    const struct mesh_k8s_port *want = mesh_k8s__service_port(svc);
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
    /* Fail closed: a pod not seen yet, or whose account the mesh cannot name, has no
     * identity the agent could issue for it; it is a local service once it has one. */
    if (!pod || !pod->service_account) {
        *ret_why = pod ? "its service account is not a DNS label" : "its Pod is not known yet";
        snprintf(ret_pod, MESH_K8S_NAME_MAX * 2, "%s", podkey);
        return 0;
    }
    /* The identity is the pod's own account, never the one its Service declares: a pod of
     * another account is reported, and callers wanting the declared one refuse it. */
    const char *declared = declared_account(k, g, mesh_hmap_get(&k->cache[K8S_SERVICES], g->key));
    if (strcmp(declared, pod->service_account) != 0) {
        *ret_why = "mismatch";
        snprintf(ret_pod, MESH_K8S_NAME_MAX * 2, "%s", podkey);
    }
    snprintf(id, sizeof(id), "spiffe://%s/ns/%s/sa/%s", k->base.env->trust_domain, g->namespace,
             pod->service_account);
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
 * Says, once per change, what keeps a local endpoint from the identity its Service declares:
 * a pod of another service account (counted), or no identity to issue at all.
 */
static void report_local(struct k8s_registry *k, struct k8s_group *g,
                         const struct mesh_local_service *ls, const char *why, const char *pod)
{
    char said[MESH_K8S_NAME_MAX * 3];
    snprintf(said, sizeof(said), "%s %s %s", why ? why : "", pod, ls ? ls->identity : "");
    if (!why) {
        g->said[0] = '\0';
        return;
    }
    if (strcmp(said, g->said) == 0)
        return;
    snprintf(g->said, sizeof(g->said), "%s", said);
    struct mesh_k8s_service *svc = mesh_hmap_get(&k->cache[K8S_SERVICES], g->key);
    if (strcmp(why, "mismatch") == 0) {
        k->identity_mismatches++;
        mesh_log_warn("registry '%s': Service '%s' declares service account '%s' but its "
                      "endpoint on this node, Pod '%s', runs as '%s': the agent presents only "
                      "the pod's own identity '%s', which callers of '%s' refuse",
                      k->base.cfg->name, g->key, declared_account(k, g, svc), pod,
                      strrchr(ls->identity, '/') + 1, ls->identity, g->key);
    } else {
        mesh_log_warn("registry '%s': Service '%s': its endpoint on this node, Pod '%s', gets no "
                      "identity: %s; not a local service until it has one",
                      k->base.cfg->name, g->key, pod, why);
    }
}

/*
 * Recomputes group g's workload on this node (its slices, Service or pods changed): work in
 * proportion to the group, never to the cluster. Notes when the set of local services moved.
 */
static void refresh_local(struct k8s_registry *k, struct k8s_group *g)
{
    struct mesh_local_service *ls;
    const char *why;
    char pod[MESH_K8S_NAME_MAX * 2];
    if (!k->cfg->pods)
        return;
    if (local_of(k, g, &ls, &why, pod) < 0) {
        mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory finding local services");
        return;
    }
    report_local(k, g, ls, why, pod);
    /* A workload here without an identity yet stays among the local groups, so that a pod
     * change (its Pod arriving) looks at it again. */
    bool here = ls || (why && strcmp(why, "mismatch") != 0);
    if (here && !g->here) {
        if (mesh_grow((void **)&k->local_groups, &k->cap_local_groups, k->n_local_groups + 1,
                      sizeof(*k->local_groups)) < 0) {
            local_free(ls);
            mesh_k8s__problem(k, K8S_ERR_DECODE, "out of memory finding local services");
            return;
        }
        k->local_groups[k->n_local_groups++] = g;
    } else if (!here && g->here) {
        for (size_t i = 0; i < k->n_local_groups; i++) {
            if (k->local_groups[i] == g) {
                k->local_groups[i] = k->local_groups[--k->n_local_groups];
                break;
            }
        }
    }
    g->here = here;
    if (local_equal(ls, g->local)) {
        local_free(ls);
        return;
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
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (k->local_groups[i]->local)
            v[m++] = *k->local_groups[i]->local; /* borrowed for the call */
    }
    k->base.sink.set_local(k->base.sink.data, &k->base, v, m);
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
    if (k->addrs_changed && k->base.sink.addresses)
        k->base.sink.addresses(k->base.sink.data, &k->base);
    k->addrs_changed = false;
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
    mesh_hmap_done(&k->pods_by_ip); /* borrows from the Pod cache, freed below */
    for (int kind = 0; kind < K8S_KINDS; kind++) {
        for (size_t i = 0; mesh_hmap_next(&k->cache[kind], &i, &e);)
            mesh_k8s__obj_free((enum k8s_kind)kind, e->value);
        mesh_hmap_done(&k->cache[kind]);
    }
    mesh_free(k->dirty);
    mesh_free(k->local_groups);
}
