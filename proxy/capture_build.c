#define MESH_LOG_MODULE "proxy"

/*
 * Transparent capture in a snapshot (main loop): the capture listeners, a CAPTURED route
 * per catalog service ("capture:<ns>/<name>", built like an explicit outbound listener of
 * the node's: its HTTP virtual host and routes when the service speaks HTTP, mTLS to the
 * remote agents) and per local workload port ("capture-in:<port>", built like an inbound
 * listener), and the index from an original destination to the route.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "catalog/vip.h"
#include "common/alloc.h"
#include "common/log.h"
#include "proxy/proxy-int.h"

static struct want_listener *grow(struct want_listener **v, size_t *cap, size_t n)
{
    if (mesh_grow((void **)v, cap, n + 1, sizeof(**v)) < 0)
        return NULL;
    memset(&(*v)[n], 0, sizeof(**v));
    return &(*v)[n];
}

/* A bound capture listener, unless its address is taken by one already wanted. */
static int want_bound(struct want_listener **v, size_t *cap, size_t *n, int kind,
                      const struct mesh_addr *addr, const char *what)
{
    if (!mesh_addr_port(addr))
        return 0;
    char key[MESH_ADDR_STRLEN];
    mesh_addr_format(addr, key, sizeof(key));
    for (size_t i = 0; i < *n; i++) {
        if (!MESH_LISTENER_UNBOUND((*v)[i].kind) && strcmp((*v)[i].key, key) == 0) {
            mesh_log_warn("%s (%s) is already used by %s; ignoring it", key, what,
                          (*v)[i].description);
            return 0;
        }
    }
    struct want_listener *w = grow(v, cap, *n);
    if (!w)
        return -ENOMEM;
    w->kind = kind;
    w->addr = *addr;
    snprintf(w->key, sizeof(w->key), "%s", key);
    snprintf(w->description, sizeof(w->description), "%s", what);
    (*n)++;
    return 0;
}

int mesh_capture_want(const struct mesh_proxy_inputs *in, struct want_listener **v, size_t *cap,
                      size_t *n)
{
    const struct mesh_proxy_capture *c = in->capture;
    int r = 0;
    if ((r = want_bound(v, cap, n, MESH_LISTENER_CAPTURE_OUT, &c->outbound, "outbound capture")) <
            0 ||
        (r = want_bound(v, cap, n, MESH_LISTENER_CAPTURE_OUT, &c->outbound6, "outbound capture")) <
            0 ||
        (r = want_bound(v, cap, n, MESH_LISTENER_CAPTURE_IN, &c->inbound, "inbound capture")) < 0 ||
        (r = want_bound(v, cap, n, MESH_LISTENER_CAPTURE_IN, &c->inbound6, "inbound capture")) < 0)
        return r;
    if (mesh_addr_port(&c->outbound) || mesh_addr_port(&c->outbound6)) {
        struct mesh_service **services = NULL;
        size_t n_services = 0;
        if (mesh_catalog_list(in->catalog, &services, &n_services) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < n_services && r == 0; i++) {
            const struct mesh_service *svc = services[i];
            struct want_listener *w = grow(v, cap, *n);
            if (!w) {
                r = -ENOMEM;
                break;
            }
            w->kind = MESH_LISTENER_CAPTURED;
            w->http = svc->protocol == MESH_PROTO_HTTP;
            snprintf(w->key, sizeof(w->key), "capture:%s/%s", svc->namespace, svc->name);
            snprintf(w->ns, sizeof(w->ns), "%s", svc->namespace);
            snprintf(w->name, sizeof(w->name), "%s", svc->name);
            snprintf(w->description, sizeof(w->description), "capture -> %s/%s", svc->namespace,
                     svc->name);
            (*n)++;
        }
        mesh_free(services);
    }
    if (!mesh_addr_port(&c->inbound) && !mesh_addr_port(&c->inbound6))
        return r;
    for (size_t i = 0; i < in->n_locals && r == 0; i++) {
        const struct mesh_local_service *ls = in->locals[i];
        uint16_t port = mesh_addr_port(&ls->addr);
        char key[MESH_ADDR_STRLEN];
        snprintf(key, sizeof(key), "capture-in:%u", (unsigned)port);
        bool seen = false;
        for (size_t k = 0; k < *n && !seen; k++)
            seen = strcmp((*v)[k].key, key) == 0;
        if (!port || seen)
            continue; /* two workloads on one port: the first one's */
        struct want_listener *w = grow(v, cap, *n);
        if (!w)
            return -ENOMEM;
        w->kind = MESH_LISTENER_CAPTURED;
        w->http = ls->protocol == MESH_PROTO_HTTP;
        w->local = ls;
        snprintf(w->key, sizeof(w->key), "%s", key);
        snprintf(w->ns, sizeof(w->ns), "%s", ls->namespace);
        snprintf(w->name, sizeof(w->name), "%s", ls->name);
        snprintf(w->description, sizeof(w->description), "capture inbound -> %s/%s port %u",
                 ls->namespace, ls->name, (unsigned)port);
        (*n)++;
    }
    return r;
}

const struct mesh_tls_identity *mesh_capture_source_as(const struct mesh_proxy_snapshot *s,
                                                       const char *id)
{
    const struct mesh_tls_identity *as = s->tls ? mesh_tls_find_id(s->tls, id) : NULL;
    return as && as->namespace ? as : NULL;
}

static int index_put(struct mesh_proxy_snapshot *s, const char *key, struct snap_listener *l)
{
    if (mesh_hmap_get(&s->capture_index, key))
        return 0; /* an endpoint of two services: the first (by key) takes it */
    char *k = mesh_strdup(key);
    if (!k || mesh_hmap_put(&s->capture_index, k, l) < 0) {
        mesh_free(k);
        return -ENOMEM;
    }
    return 0;
}

int mesh_capture_index(struct mesh_proxy_snapshot *s, struct mesh_state_regs *regs,
                       const struct mesh_proxy_inputs *in)
{
    const struct mesh_proxy_capture *c = in->capture;
    s->capture_refuse_unknown = c->refuse_unknown;
    s->capture_permissive = c->permissive;
    s->capture_pods = c->pods;
    if (!(s->passthrough = mesh_state_dest(regs, "capture:passthrough")))
        return -ENOMEM;
    for (size_t i = 0; i < s->n_listeners; i++) {
        struct snap_listener *l = &s->listeners[i];
        if (l->kind != MESH_LISTENER_CAPTURED || strncmp(l->key, "capture:", 8) != 0)
            continue;
        const char *slash = strchr(l->key + 8, '/');
        char ns[128], key[MESH_ADDR_STRLEN + 8];
        snprintf(ns, sizeof(ns), "%.*s", slash ? (int)(slash - l->key - 8) : 0, l->key + 8);
        const struct mesh_service *svc =
            slash ? mesh_catalog_get(in->catalog, ns, slash + 1) : NULL;
        for (size_t k = 0; svc && k < svc->n_endpoints; k++) {
            if (!svc->endpoints[k].addr.family)
                continue; /* a host name not resolved yet */
            mesh_ipport_format(&svc->endpoints[k].addr, key, sizeof(key));
            if (index_put(s, key, l) < 0)
                return -ENOMEM;
        }
        struct mesh_vip_pair vip;
        if (!svc || !c->vips || mesh_vip_lookup_service(c->vips, l->key + 8, &vip) < 0)
            continue;
        const struct mesh_ipport *both[] = {&vip.v4, &vip.v6};
        for (size_t f = 0; f < 2; f++) {
            if (!both[f]->family)
                continue;
            memcpy(key, "vip:", 4);
            mesh_ipport_ip(both[f], key + 4, sizeof(key) - 4);
            if (index_put(s, key, l) < 0)
                return -ENOMEM;
        }
    }
    for (size_t i = 0; i < c->n_sources; i++) {
        const struct mesh_workload_identity *src = &c->sources[i];
        if (mesh_hmap_get(&s->capture_sources, src->ip))
            continue;
        size_t len = strlen(src->identity) + 1;
        char *k = mesh_strdup(src->ip);
        struct snap_capture_source *v = mesh_malloc(sizeof(*v) + len);
        if (v) {
            /* The pod calls as itself when the agent holds its account's certificate (a
             * local service of that account); never the node's under the pod's name. */
            v->as = mesh_capture_source_as(s, src->identity);
            memcpy(v->id, src->identity, len);
        }
        if (!k || !v || mesh_hmap_put(&s->capture_sources, k, v) < 0) {
            mesh_free(k);
            mesh_free(v);
            return -ENOMEM;
        }
    }
    /* ClusterIP:port -> the service, as an endpoint is (after the endpoints: an address that
     * is both is the endpoint's). */
    for (size_t i = 0; i < c->n_service_addrs; i++) {
        char key[MESH_ADDR_STRLEN + 16];
        snprintf(key, sizeof(key), "capture:%s", c->service_addrs[i].service);
        struct snap_listener *l = mesh_snapshot_listener(s, key);
        if (!l || l->kind != MESH_LISTENER_CAPTURED)
            continue; /* not a mesh service (or no outbound capture) */
        mesh_ipport_format(&c->service_addrs[i].addr, key, sizeof(key));
        if (index_put(s, key, l) < 0)
            return -ENOMEM;
    }
    return 0;
}

void mesh_capture_index_done(struct mesh_proxy_snapshot *s)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&s->capture_index, &i, &he))
        mesh_free((void *)(uintptr_t)he->key);
    mesh_hmap_done(&s->capture_index);
    i = 0;
    while (mesh_hmap_next(&s->capture_sources, &i, &he)) {
        mesh_free((void *)(uintptr_t)he->key);
        mesh_free(he->value);
    }
    mesh_hmap_done(&s->capture_sources);
    mesh_dest_state_unref(s->passthrough);
}
