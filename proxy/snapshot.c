#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "proxy/proxy-int.h"

/* Fixed keys: every agent must place the same client on the same ring position. */
#define RING_K0 0x6d6573682d72696eULL
#define RING_K1 0x672d686173682d31ULL

static struct mesh_http_stats oom_sink;

struct mesh_http_stats *mesh_dest_http(struct mesh_dest_state *s)
{
    struct mesh_http_stats *h = atomic_load_explicit(&s->http, memory_order_acquire);
    if (h)
        return h;
    struct mesh_http_stats *mine = mesh_calloc(1, sizeof(*mine));
    if (!mine)
        mine = &oom_sink;
    else
        atomic_flag_clear(&mine->bucket_lock);
    if (atomic_compare_exchange_strong_explicit(&s->http, &h, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;
    if (mine != &oom_sink) /* another thread was first */
        mesh_free(mine);
    return h;
}

const struct mesh_http_stats *mesh_dest_http_if_any(const struct mesh_dest_state *s)
{
    return atomic_load_explicit(&((struct mesh_dest_state *)(uintptr_t)s)->http,
                                memory_order_acquire);
}

void mesh_dest_state_unref(struct mesh_dest_state *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        mesh_free(s->eps); /* empty by now: each endpoint state holds a reference */
        struct mesh_http_stats *h = atomic_load(&s->http);
        if (h != &oom_sink)
            mesh_free(h);
        mesh_free(s);
    }
}

static atomic_ullong states_released;

uint64_t mesh_ep_states_released(void)
{
    return atomic_load_explicit(&states_released, memory_order_acquire);
}

void mesh_ep_state_unref(struct mesh_ep_state *s)
{
    if (!s)
        return;
    if (atomic_load_explicit(&s->refs, memory_order_relaxed) == 2) {
        /* The registry's will be the last: tell the next sweep where to look. Done before the
         * decrement, after which the sweep may free s (a rare miss only delays a sweep). */
        atomic_store_explicit(&s->dest->sweep, true, memory_order_relaxed);
        atomic_fetch_add_explicit(&states_released, 1, memory_order_release);
    }
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        mesh_dest_state_unref(s->dest);
        mesh_free(s);
    }
}

void mesh_snap_eps_unref(struct snap_eps *e)
{
    if (!e || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t k = 0; k < e->n; k++)
        mesh_ep_state_unref(e->v[k].state);
    mesh_free(e);
}

void mesh_snapshot_ref(struct mesh_proxy_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* Any thread may drop the last reference: freeing only touches the snapshot and atomics. */
void mesh_snapshot_unref(struct mesh_proxy_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < s->n_listeners; i++) {
        mesh_free(s->listeners[i].key);
        mesh_free(s->listeners[i].description);
        mesh_free(s->listeners[i].istio);
        mesh_free(s->listeners[i].trace_service);
    }
    for (size_t i = 0; i < s->n_dests; i++) {
        struct snap_dest *d = &s->dests[i];
        mesh_snap_eps_unref(d->block);
        mesh_free(d->ring);
        mesh_dest_state_unref(d->state);
        mesh_free(d->key);
        mesh_free(d->service);
        mesh_free(d->sni);
        mesh_free(d->peer_id);
        mesh_free(d->istio);
    }
    for (size_t i = 0; i < s->n_vhosts; i++) {
        struct snap_vhost *v = &s->vhosts[i];
        for (size_t k = 0; k < v->n_rules; k++) {
            mesh_free(v->rules[k].dests);
            mesh_dest_state_unref(v->rules[k].state);
        }
        mesh_free(v->rules);
        mesh_free(v->key);
        mesh_free(v->namespace);
        mesh_free(v->name);
        mesh_free(v->route_name);
    }
    for (size_t i = 0; i < s->n_files; i++)
        mesh_resource_file_unref(s->files[i]);
    mesh_tls_material_unref(s->tls);
    mesh_hmap_done(&s->listener_index);
    mesh_hmap_done(&s->dest_index);
    mesh_hmap_done(&s->vhost_index);
    mesh_hmap_done(&s->vhost_names);
    mesh_capture_index_done(s);
    mesh_free(s->listeners);
    mesh_free(s->dests);
    mesh_free(s->vhosts);
    mesh_free(s->files);
    mesh_free(s);
}

struct snap_listener *mesh_snapshot_listener(const struct mesh_proxy_snapshot *s, const char *key)
{
    return mesh_hmap_get(&s->listener_index, key);
}

struct snap_listener *mesh_snapshot_sni_listener(const struct mesh_proxy_snapshot *s,
                                                 const char *sni)
{
    char key[300];
    snprintf(key, sizeof(key), "sni:%s", sni ? sni : "");
    struct snap_listener *l = mesh_hmap_get(&s->listener_index, key);
    if (!l && sni && mesh_tls_sni_service(sni) != sni) {
        snprintf(key, sizeof(key), "sni:%s", mesh_tls_sni_service(sni));
        l = mesh_hmap_get(&s->listener_index, key);
    }
    return l;
}

/*
 * Host is "name", "name.namespace", "name.namespace.svc[.cluster.local]", each with an
 * optional ":port"; case does not matter.
 */
struct snap_vhost *mesh_snapshot_vhost_by_host(const struct mesh_proxy_snapshot *s,
                                               const char *host, size_t len)
{
    char h[256];
    if (len == 0 || len >= sizeof(h))
        return NULL;
    for (size_t i = 0; i < len; i++)
        h[i] = (char)tolower((unsigned char)host[i]);
    h[len] = '\0';
    char *colon = strrchr(h, ':');
    if (colon && !strchr(h, ']'))
        *colon = '\0';
    char *dot = strchr(h, '.');
    if (!dot)
        return mesh_hmap_get(&s->vhost_names, h);
    *dot = '\0';
    char *ns = dot + 1, *rest = strchr(ns, '.');
    if (rest) {
        if (strcmp(rest, ".svc") != 0 && strcmp(rest, ".svc.cluster.local") != 0)
            return NULL;
        *rest = '\0';
    }
    char key[260];
    snprintf(key, sizeof(key), "%s/%s", ns, h);
    return mesh_hmap_get(&s->vhost_index, key);
}

struct snap_dest *mesh_snapshot_dest(const struct mesh_proxy_snapshot *s, const char *key)
{
    return mesh_hmap_get(&s->dest_index, key);
}

struct snap_endpoint *mesh_snapshot_find_ep(const struct snap_dest *d, const struct mesh_ipport *a)
{
    size_t lo = 0, hi = d->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = mesh_ipport_cmp(&d->eps[mid].addr, a);
        if (c == 0)
            return &d->eps[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void mesh_ep_sockaddr(const struct snap_endpoint *e, bool mtls, struct mesh_addr *ret)
{
    mesh_ipport_to_addr(&e->addr, ret);
    if (mtls && e->mesh_port)
        mesh_addr_set_port(ret, e->mesh_port);
}

/* The IP alone: one client keeps its endpoint whatever source port it uses. */
uint64_t mesh_hash_client(const struct mesh_addr *client)
{
    if (client->ss.ss_family == AF_INET)
        return mesh_siphash13(&((const struct sockaddr_in *)&client->ss)->sin_addr, 4, RING_K0,
                              RING_K1);
    if (client->ss.ss_family == AF_INET6)
        return mesh_siphash13(&((const struct sockaddr_in6 *)&client->ss)->sin6_addr, 16, RING_K0,
                              RING_K1);
    return 0;
}

static int cmp_point(const void *a, const void *b)
{
    const struct ring_point *pa = a, *pb = b;
    if (pa->hash != pb->hash)
        return pa->hash < pb->hash ? -1 : 1;
    return pa->ep < pb->ep ? -1 : pa->ep > pb->ep;
}

/*
 * Ketama-style ring: each endpoint gets points in proportion to its weight, at least
 * min_ring_size in all, each the hash of "ip:port_i". Endpoints keep their points when
 * others come and go, so only their share of clients moves.
 */
int mesh_ring_build(struct snap_dest *d)
{
    uint64_t total_weight = 0;
    for (size_t i = 0; i < d->n; i++)
        total_weight += d->eps[i].weight;
    if (!total_weight)
        return 0;
    size_t target = (size_t)d->policy->min_ring_size;
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++) {
        size_t k = (size_t)((target * d->eps[i].weight + total_weight - 1) / total_weight);
        n += k ? k : 1;
    }
    d->ring = mesh_calloc(n, sizeof(*d->ring));
    if (!d->ring)
        return -ENOMEM;
    for (size_t i = 0; i < d->n; i++) {
        size_t k = (size_t)((target * d->eps[i].weight + total_weight - 1) / total_weight);
        char ip[MESH_ADDR_STRLEN], name[MESH_ADDR_STRLEN + 32];
        mesh_ipport_format(&d->eps[i].addr, ip, sizeof(ip));
        for (size_t j = 0; j < (k ? k : 1); j++) {
            int len = snprintf(name, sizeof(name), "%s_%zu", ip, j);
            d->ring[d->n_ring++] = (struct ring_point){
                mesh_siphash13(name, (size_t)len, RING_K0, RING_K1), (uint32_t)i};
        }
    }
    qsort(d->ring, d->n_ring, sizeof(*d->ring), cmp_point);
    return 0;
}
