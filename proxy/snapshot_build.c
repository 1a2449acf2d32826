#define MESH_LOG_MODULE "proxy"

/*
 * Building a snapshot (main loop): the listeners the local services ask for, the
 * destinations they lead to (services, label subsets of them, local workloads), the HTTP
 * virtual hosts with their routes, each with the shared state that outlives snapshots.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/claims.h"
#include "common/log.h"
#include "common/spiffe.h"
#include "proxy/proxy-int.h"

/* ---- shared state registries ---- */

struct mesh_dest_state *mesh_state_dest(struct mesh_state_regs *r, const char *key)
{
    struct mesh_dest_state *s = mesh_hmap_get(&r->dests, key);
    if (!s) {
        size_t len = strlen(key) + 1;
        s = mesh_calloc(1, sizeof(*s) + len);
        if (!s)
            return NULL;
        memcpy(s->key, key, len);
        atomic_init(&s->refs, 1);
        if (mesh_hmap_put(&r->dests, s->key, s) < 0) {
            mesh_free(s);
            return NULL;
        }
    }
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void mesh_state_regs_done(struct mesh_state_regs *r)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&r->dests, &i, &he)) {
        struct mesh_dest_state *d = he->value;
        for (size_t k = 0; k < d->n_eps; k++)
            mesh_ep_state_unref(d->eps[k]);
        d->n_eps = 0;
        mesh_dest_state_unref(d);
    }
    mesh_hmap_done(&r->dests);
}

static struct mesh_ep_state *ep_state_new(struct mesh_dest_state *dest,
                                          const struct mesh_ipport *addr)
{
    struct mesh_ep_state *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->addr = *addr;
    atomic_init(&s->refs, 1);
    atomic_init(&s->hc_healthy, 1);
    s->dest = dest;
    atomic_fetch_add(&dest->refs, 1);
    return s;
}

/*
 * Gives each endpoint of d (sorted by address) a reference to its state in `owner`, made
 * when new: one merge of two sorted lists, then one of the new states into the owner's.
 */
static int attach_states(struct mesh_dest_state *owner, struct snap_dest *d)
{
    size_t fresh = 0;
    for (size_t i = 0, j = 0; i < d->n; i++) {
        struct snap_endpoint *e = &d->eps[i];
        while (j < owner->n_eps && mesh_ipport_cmp(&owner->eps[j]->addr, &e->addr) < 0)
            j++;
        if (j < owner->n_eps && mesh_ipport_equal(&owner->eps[j]->addr, &e->addr)) {
            e->state = owner->eps[j];
            atomic_fetch_add(&e->state->refs, 1);
        } else {
            fresh++;
        }
    }
    if (!fresh)
        return 0;
    struct mesh_ep_state **all = mesh_calloc(owner->n_eps + fresh, sizeof(*all));
    if (!all)
        return -ENOMEM;
    int r = 0;
    size_t n = 0, j = 0;
    for (size_t i = 0; i < d->n; i++) {
        struct snap_endpoint *e = &d->eps[i];
        if (e->state)
            continue;
        while (j < owner->n_eps && mesh_ipport_cmp(&owner->eps[j]->addr, &e->addr) < 0)
            all[n++] = owner->eps[j++];
        if (!(e->state = ep_state_new(owner, &e->addr))) {
            r = -ENOMEM; /* the snapshot is dropped; the owner's list stays whole */
            break;
        }
        all[n++] = e->state;
        atomic_fetch_add(&e->state->refs, 1); /* the snapshot's */
    }
    while (j < owner->n_eps)
        all[n++] = owner->eps[j++];
    mesh_free(owner->eps);
    owner->eps = all;
    owner->n_eps = n;
    return r;
}

/* ---- listeners wanted ---- */

static void add_listener(struct want_listener *w, int kind, const struct mesh_addr *addr, bool http)
{
    memset(w, 0, sizeof(*w));
    w->kind = kind;
    w->addr = *addr;
    w->http = http;
    mesh_addr_format(&w->addr, w->key, sizeof(w->key));
}

/*
 * The SNI of one instance of a local service on the mTLS port, "<port>.<name>.<namespace>",
 * where port is that of its endpoint (its inbound port, else the workload's): a caller names
 * the instance it picked. Returns 0 or -ENOMEM.
 */
static int add_instance_sni(struct want_listener **v, size_t *cap, size_t *n,
                            struct mesh_claims *seen, const struct mesh_local_service *ls)
{
    uint16_t port = mesh_addr_port(&ls->inbound);
    char sni[200];
    int r = 0;
    if (!port)
        port = mesh_addr_port(&ls->addr);
    if (!port || (r = mesh_grow((void **)v, cap, *n + 1, sizeof(**v))) < 0)
        return r;
    struct want_listener *w = &(*v)[*n];
    memset(w, 0, sizeof(*w));
    w->kind = MESH_LISTENER_SNI;
    w->http = ls->protocol == MESH_PROTO_HTTP;
    w->local = ls;
    snprintf(sni, sizeof(sni), "%s.%s", ls->name, ls->namespace);
    memcpy(w->key, "sni:", 4);
    mesh_tls_instance_sni(w->key + 4, sizeof(w->key) - 4, sni, port);
    snprintf(w->ns, sizeof(w->ns), "%s", ls->namespace);
    snprintf(w->name, sizeof(w->name), "%s", ls->name);
    snprintf(w->description, sizeof(w->description), "mTLS -> %s/%s port %u", ls->namespace,
             ls->name, (unsigned)port);
    if (!mesh_claims_take(seen, w->key, w->description, &r) && r == 0)
        (*n)++;
    return r;
}

int mesh_want_listeners(const struct mesh_proxy_inputs *in, struct want_listener **ret,
                        size_t *ret_n)
{
    size_t cap = 0, n = 0;
    struct want_listener *v = NULL;
    struct mesh_claims seen; /* address -> description of its first claim */
    mesh_claims_init(&seen);
    int r = 0;
    bool shared = mesh_addr_port(&in->http_listener) != 0;
    if (shared) {
        if ((r = mesh_grow((void **)&v, &cap, 1, sizeof(*v))) < 0)
            goto out;
        add_listener(&v[0], MESH_LISTENER_HTTP_SHARED, &in->http_listener, true);
        snprintf(v[0].description, sizeof(v[0].description), "outbound HTTP, by Host");
        mesh_claims_take(&seen, v[0].key, v[0].description, &r);
        n = 1;
    }
    for (size_t i = 0; i < in->n_locals && r == 0; i++) {
        const struct mesh_local_service *ls = in->locals[i];
        for (size_t u = 0; u <= ls->n_upstreams && r == 0; u++) {
            bool inbound = u == ls->n_upstreams;
            if (inbound && !mesh_addr_port(&ls->inbound))
                break;
            if ((r = mesh_grow((void **)&v, &cap, n + 1, sizeof(*v))) < 0)
                break;
            struct want_listener *w = &v[n];
            if (inbound) {
                add_listener(w, MESH_LISTENER_INBOUND, &ls->inbound,
                             ls->protocol == MESH_PROTO_HTTP);
                w->local = ls;
                snprintf(w->ns, sizeof(w->ns), "%s", ls->namespace);
                snprintf(w->name, sizeof(w->name), "%s", ls->name);
                snprintf(w->description, sizeof(w->description), "inbound -> %s/%s", ls->namespace,
                         ls->name);
            } else {
                const struct mesh_upstream *up = &ls->upstreams[u];
                add_listener(w, MESH_LISTENER_OUTBOUND, &up->bind, up->protocol == MESH_PROTO_HTTP);
                w->from = ls;
                snprintf(w->ns, sizeof(w->ns), "%s", up->namespace);
                snprintf(w->name, sizeof(w->name), "%s", up->service);
                snprintf(w->description, sizeof(w->description), "%s/%s -> %s/%s", ls->namespace,
                         ls->name, up->namespace, up->service);
            }
            const char *first = mesh_claims_take(&seen, w->key, w->description, &r);
            if (r < 0)
                break;
            if (first) {
                mesh_log_warn("%s (%s) is already used by %s; ignoring it", w->key, w->description,
                              first);
                continue;
            }
            n++;
        }
    }
    /* The mTLS port, and what each local service's SNI leads to there. */
    if (r == 0 && in->tls && mesh_addr_port(&in->mtls_listener)) {
        for (size_t i = 0; i <= in->n_locals && r == 0; i++) {
            if ((r = mesh_grow((void **)&v, &cap, n + 1, sizeof(*v))) < 0)
                break;
            struct want_listener *w = &v[n];
            if (i == in->n_locals) {
                add_listener(w, MESH_LISTENER_MTLS, &in->mtls_listener, false);
                snprintf(w->description, sizeof(w->description), "inbound mTLS, by SNI");
            } else {
                const struct mesh_local_service *ls = in->locals[i];
                memset(w, 0, sizeof(*w));
                w->kind = MESH_LISTENER_SNI;
                w->http = ls->protocol == MESH_PROTO_HTTP;
                w->local = ls;
                snprintf(w->key, sizeof(w->key), "sni:%s.%s", ls->name, ls->namespace);
                snprintf(w->ns, sizeof(w->ns), "%s", ls->namespace);
                snprintf(w->name, sizeof(w->name), "%s", ls->name);
                snprintf(w->description, sizeof(w->description), "mTLS -> %s/%s", ls->namespace,
                         ls->name);
            }
            const char *first = mesh_claims_take(&seen, w->key, w->description, &r);
            if (r == 0 && !first)
                n++;
            else if (first && w->kind == MESH_LISTENER_MTLS)
                mesh_log_warn("%s (%s) is already used by %s; ignoring it", w->key, w->description,
                              first);
            if (r == 0 && i < in->n_locals)
                r = add_instance_sni(&v, &cap, &n, &seen, in->locals[i]);
        }
    }
    if (r == 0 && in->capture)
        r = mesh_capture_want(in, &v, &cap, &n);
out:
    mesh_claims_done(&seen);
    *ret = v;
    *ret_n = n;
    return r;
}

/* ---- destinations ---- */

struct builder {
    struct mesh_proxy_snapshot *s;
    const struct mesh_proxy_snapshot *prev; /* whose endpoint blocks may be reused; or NULL */
    uint64_t inputs_gen;
    struct mesh_state_regs *regs;
    const struct mesh_proxy_inputs *in;
    const struct mesh_dest_policy *defaults;
    size_t cap_dests;
    const struct mesh_service *listed; /* the catalog service whose vhost is being made */
};

/* "<prefix><ns>/<name>" into out (of `size` bytes, truncated): the keys of the hot path,
 * 10,000 a snapshot for a large catalog, without snprintf's cost. */
static void make_key(char *out, size_t size, const char *prefix, const char *ns, const char *name);

/*
 * The key of a local workload's destination and virtual host: "inbound:<ns>/<name>", and
 * "inbound:<ns>/<name>:<port>" for a further instance of the same service on this host (its
 * workload's port), so that each instance leads to its own workload.
 */
static void local_key(const struct mesh_proxy_inputs *in, const struct mesh_local_service *local,
                      char *out, size_t size)
{
    make_key(out, size, "inbound:", local->namespace, local->name);
    for (size_t i = 0; i < in->n_locals; i++) {
        const struct mesh_local_service *l = in->locals[i];
        if (strcmp(l->name, local->name) != 0 || strcmp(l->namespace, local->namespace) != 0)
            continue;
        if (l != local) {
            size_t len = strlen(out);
            snprintf(out + len, size - len, ":%u", (unsigned)mesh_addr_port(&local->addr));
        }
        return; /* the first instance keeps the plain key */
    }
}

static void make_key(char *out, size_t size, const char *prefix, const char *ns, const char *name)
{
    size_t lp = strlen(prefix), ln = strlen(ns), lm = strlen(name);
    if (lp + ln + lm + 2 > size) {
        snprintf(out, size, "%s%s/%s", prefix, ns, name);
        return;
    }
    memcpy(out, prefix, lp);
    memcpy(out + lp, ns, ln);
    out[lp + ln] = '/';
    memcpy(out + lp + ln + 1, name, lm + 1);
}

static bool in_subset(const struct mesh_service *s, const struct mesh_endpoint *e,
                      const struct mesh_labels *subset)
{
    for (size_t i = 0; subset && i < subset->n; i++) {
        /* An endpoint several registries report is in each one's subset. */
        if (strcmp(subset->v[i].key, MESH_CATALOG_REGISTRY_LABEL) == 0) {
            if (!mesh_service_ep_from(s, e, subset->v[i].value))
                return false;
            continue;
        }
        const char *v = mesh_service_ep_label(s, e, subset->v[i].key);
        if (!v || strcmp(v, subset->v[i].value) != 0)
            return false;
    }
    return true;
}

/*
 * When no endpoint is ready and some are terminating but still serving (a rollout where
 * every old pod is draining before a new one is ready), the serving ones take traffic rather
 * than none: as kube-proxy does (ProxyTerminatingEndpoints). In this snapshot only.
 */
static void serve_from_terminating(struct snap_endpoint *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((v[i].health & MESH_EP_READY) && !(v[i].health & MESH_EP_TERMINATING))
            return;
    }
    for (size_t i = 0; i < n; i++) {
        if ((v[i].health & MESH_EP_SERVING) && (v[i].health & MESH_EP_TERMINATING))
            v[i].health = MESH_EP_READY | MESH_EP_SERVING;
    }
}

/* What depends on d's policy as well as on its endpoints. */
static int finish_dest(const struct builder *b, struct snap_dest *d)
{
    d->zone_aware = d->policy->zone_aware.enabled && d->block->zones && b->in->node_zone[0];
    if (d->policy->lb == MESH_LB_RING_HASH)
        return mesh_ring_build(d);
    return 0;
}

/* d's endpoints as the previous snapshot had them, when nothing they come from changed. */
static struct snap_eps *reusable(const struct builder *b, const struct snap_dest *d,
                                 const struct mesh_service *svc)
{
    const struct snap_dest *old = b->prev ? mesh_hmap_get(&b->prev->dest_index, d->key) : NULL;
    if (!svc || !old || !old->block || old->block->service_id != svc->id ||
        old->block->inputs_gen != b->inputs_gen)
        return NULL;
    atomic_fetch_add_explicit(&old->block->refs, 1, memory_order_relaxed);
    return old->block;
}

/*
 * Fills d's endpoints from the catalog (optionally a label subset) or the local workload.
 * The endpoints' shared state belongs to the service, so that a subset's endpoint is the
 * same endpoint for outlier detection and health checks.
 */
static int fill_dest(struct builder *b, struct snap_dest *d, struct mesh_dest_state *owner,
                     const struct mesh_labels *subset, const struct mesh_local_service *local)
{
    const struct mesh_service *svc = NULL;
    if (!local && b->listed && strcmp(b->listed->key, d->service) == 0) {
        svc = b->listed; /* the list's own: no lookup */
    } else if (!local) {
        char ns[64];
        const char *slash = strchr(d->service, '/');
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - d->service), d->service);
        svc = mesh_catalog_get(b->in->catalog, ns, slash + 1);
    }
    struct snap_eps *block = reusable(b, d, svc);
    d->block = block;
    if (block) {
        d->eps = block->v;
        d->n = block->n;
        return finish_dest(b, d);
    }
    size_t n = local ? 1 : (svc ? svc->n_endpoints : 0);
    if (!(block = mesh_calloc(1, sizeof(*block) + n * sizeof(block->v[0]))))
        return -ENOMEM;
    atomic_init(&block->refs, 1);
    block->service_id = svc ? svc->id : 0;
    block->inputs_gen = b->inputs_gen;
    d->block = block;
    d->eps = block->v;
    for (size_t i = 0; i < n; i++) {
        struct snap_endpoint *e = &block->v[d->n];
        if (local) {
            if (mesh_ipport_from_addr(&local->addr, &e->addr) < 0)
                continue; /* workloads listen on IPs (the registries check) */
            e->weight = 1;
            e->health = MESH_EP_READY | MESH_EP_SERVING;
        } else {
            const struct mesh_endpoint *src = &svc->endpoints[i];
            if (!in_subset(svc, src, subset))
                continue;
            e->addr = src->addr;
            e->mesh_port = b->in->tls ? src->mesh_port : 0;
            if (b->in->tls && !e->mesh_port && b->in->members) {
                char ip[MESH_ADDR_STRLEN];
                mesh_ipport_ip(&src->addr, ip, sizeof(ip));
                e->mesh_port = (uint16_t)(uintptr_t)mesh_hmap_get(b->in->members, ip);
            }
            e->weight = src->weight;
            e->health = src->health;
            block->zones |= src->zone != NULL;
            e->local_zone =
                src->zone && b->in->node_zone[0] && strcmp(src->zone, b->in->node_zone) == 0;
        }
        d->n++;
    }
    block->n = d->n;
    serve_from_terminating(block->v, block->n);
    /* The catalog's endpoints are sorted already; a local one is alone. */
    if (attach_states(owner, d) < 0)
        return -ENOMEM;
    return finish_dest(b, d);
}

/* Borrowed: a resource file the snapshot holds, the defaults, or the snapshot's own. */
static void set_policy(struct builder *b, struct snap_dest *d, const char *ns, const char *name,
                       bool inbound)
{
    const struct mesh_dest_policy *pol = NULL;
    if (!inbound && b->in->resources)
        pol = mesh_resource_view_policy(b->in->resources, ns, name);
    d->policy = pol ? pol : inbound ? &b->s->inbound_policy : b->defaults;
}

/* "k=v,k2=v2" of a subset; empty for none. */
static void subset_suffix(const struct mesh_labels *subset, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; subset && i < subset->n && len < size; i++)
        len += (size_t)snprintf(out + len, size - len, "%s%s=%s", i ? "," : "{", subset->v[i].key,
                                subset->v[i].value);
    if (len && len + 1 < size)
        memcpy(out + len, "}", 2);
}

/* The index of the destination for a service (subset) or local workload; made when new. */
static int dest_for(struct builder *b, const char *ns, const char *name,
                    const struct mesh_labels *subset, const struct mesh_local_service *local)
{
    char key[1300], service[200], sub[1024];
    subset_suffix(subset, sub, sizeof(sub));
    if (local)
        local_key(b->in, local, service, sizeof(service));
    else
        make_key(service, sizeof(service), "", ns, name);
    if (sub[0])
        snprintf(key, sizeof(key), "%s%s", service, sub);
    else
        memcpy(key, service, strlen(service) + 1);
    struct mesh_proxy_snapshot *s = b->s;
    struct snap_dest *found = mesh_hmap_get(&s->dest_index, key);
    if (found)
        return (int)found->index;
    if (s->n_dests == b->cap_dests)
        return -ENOMEM; /* counted ahead: cannot happen */
    struct snap_dest *d = &s->dests[s->n_dests];
    d->index = s->n_dests;
    s->n_dests++; /* counted now: freeing covers a half-built one */
    if (!(d->key = mesh_strdup(key)) || !(d->service = mesh_strdup(service)) ||
        mesh_hmap_put(&s->dest_index, d->key, d) < 0 || !(d->state = mesh_state_dest(b->regs, key)))
        return -ENOMEM;
    set_policy(b, d, ns, name, local != NULL);
    if (!local && b->in->tls) {
        /* The ID its registry gives, else the default: its service account is its name. */
        char id[MESH_SPIFFE_ID_MAX + 1];
        const struct mesh_service *svc = mesh_catalog_get(b->in->catalog, ns, name);
        if (svc && svc->identity)
            snprintf(id, sizeof(id), "%s", svc->identity);
        else
            mesh_spiffe_service_id(id, sizeof(id), b->in->tls->trust_domain, ns, name);
        snprintf(service, sizeof(service), "%s.%s", name, ns);
        if (!(d->sni = mesh_strdup(service)) || !(d->peer_id = mesh_strdup(id)))
            return -ENOMEM;
        snprintf(service, sizeof(service), "%s/%s", ns, name);
    }
    if (!sub[0])
        return fill_dest(b, d, d->state, NULL, local) < 0 ? -ENOMEM : (int)d->index;
    /* The service's state owns a subset's endpoints; the registry keeps it alive. */
    struct mesh_dest_state *owner = mesh_state_dest(b->regs, service);
    if (!owner)
        return -ENOMEM;
    int r = fill_dest(b, d, owner, subset, NULL);
    mesh_dest_state_unref(owner);
    return r < 0 ? r : (int)d->index;
}

/* ---- virtual hosts and routes ---- */

static int add_vhost(struct builder *b, const char *ns, const char *name,
                     const struct mesh_local_service *local)
{
    struct mesh_proxy_snapshot *s = b->s;
    char key[200];
    if (local)
        local_key(b->in, local, key, sizeof(key));
    else
        make_key(key, sizeof(key), "", ns, name);
    if (mesh_hmap_get(&s->vhost_index, key))
        return 0;
    struct snap_vhost *v = &s->vhosts[s->n_vhosts++];
    if (!(v->key = mesh_strdup(key)) || !(v->namespace = mesh_strdup(ns)) ||
        !(v->name = mesh_strdup(name)) || mesh_hmap_put(&s->vhost_index, v->key, v) < 0)
        return -ENOMEM;
    v->inbound = local != NULL;
    int di = dest_for(b, ns, name, NULL, local);
    if (di < 0)
        return di;
    v->dest = (struct snap_dest *)(uintptr_t)di; /* an index until every dest is made */
    s->dests[di].http = true;
    if (local && b->in->resources)
        v->authz = mesh_resource_view_authz(b->in->resources, ns, name);
    const struct mesh_route *route =
        local || !b->in->resources ? NULL : mesh_resource_view_route(b->in->resources, ns, name);
    if (!route)
        return 0;
    const char *rname = mesh_resource_view_route_name(b->in->resources, ns, name);
    if (!(v->route_name = mesh_strdup(rname ? rname : name)))
        return -ENOMEM;
    v->rules = mesh_calloc(route->n_rules ? route->n_rules : 1, sizeof(*v->rules));
    if (!v->rules)
        return -ENOMEM;
    for (size_t i = 0; i < route->n_rules; i++) {
        struct snap_rule *sr = &v->rules[v->n_rules++];
        const struct mesh_route_rule *rule = &route->rules[i];
        sr->rule = rule;
        char skey[300];
        /* A named rule keeps its counters when rules are inserted before it. */
        if (rule->name)
            snprintf(skey, sizeof(skey), "route:%s/%s#%s", ns, v->route_name, rule->name);
        else
            snprintf(skey, sizeof(skey), "route:%s/%s#%zu", ns, v->route_name, i);
        if (!(sr->state = mesh_state_dest(b->regs, skey)))
            return -ENOMEM;
        sr->dests = mesh_calloc(rule->n_dests ? rule->n_dests : 1, sizeof(*sr->dests));
        if (!sr->dests)
            return -ENOMEM;
        for (size_t k = 0; k < rule->n_dests; k++) {
            const struct mesh_route_destination *rd = &rule->dests[k];
            int dk =
                dest_for(b, rd->namespace ? rd->namespace : ns, rd->service, &rd->subset, NULL);
            if (dk < 0)
                return dk;
            sr->dests[k] = (struct snap_dest *)(uintptr_t)dk;
            s->dests[dk].http = true;
            sr->total_weight += (uint64_t)rd->weight;
        }
    }
    return 0;
}

/* How many destinations and vhosts a snapshot may need, counted ahead (arrays never move). */
static void count_ahead(const struct mesh_proxy_inputs *in, const struct want_listener *wl,
                        size_t n, struct mesh_service **services, size_t n_services,
                        size_t *ret_dests, size_t *ret_vhosts)
{
    size_t vhosts = n + n_services, dests = n + n_services;
    for (size_t i = 0; in->resources && i < n + n_services; i++) {
        const char *ns = i < n ? wl[i].ns : services[i - n]->namespace;
        const char *name = i < n ? wl[i].name : services[i - n]->name;
        const struct mesh_route *r = mesh_resource_view_route(in->resources, ns, name);
        for (size_t k = 0; r && k < r->n_rules; k++)
            dests += r->rules[k].n_dests;
    }
    *ret_dests = dests;
    *ret_vhosts = vhosts;
}

/* Turns the build-time indexes into pointers, and indexes vhosts by bare name. */
static int link_snapshot(struct mesh_proxy_snapshot *s)
{
    for (size_t i = 0; i < s->n_vhosts; i++) {
        struct snap_vhost *v = &s->vhosts[i];
        v->dest = &s->dests[(uintptr_t)v->dest];
        for (size_t k = 0; k < v->n_rules; k++) {
            for (size_t j = 0; j < v->rules[k].rule->n_dests; j++)
                v->rules[k].dests[j] = &s->dests[(uintptr_t)v->rules[k].dests[j]];
        }
        if (v->inbound)
            continue;
        /* A bare name means "default" first, else the only namespace having it. */
        struct snap_vhost *old = mesh_hmap_get(&s->vhost_names, v->name);
        bool is_default = strcmp(v->namespace, "default") == 0;
        if (!old) {
            if (mesh_hmap_put(&s->vhost_names, v->name, v) < 0)
                return -ENOMEM;
        } else if (is_default || strcmp(old->namespace, "default") != 0) {
            /* Two namespaces and neither is "default": the name alone is ambiguous. */
            mesh_hmap_remove(&s->vhost_names, v->name);
            if (is_default && mesh_hmap_put(&s->vhost_names, v->name, v) < 0)
                return -ENOMEM;
        }
    }
    for (size_t i = 0; i < s->n_listeners; i++) {
        struct snap_listener *l = &s->listeners[i];
        if (l->kind != MESH_LISTENER_HTTP_SHARED && l->kind != MESH_LISTENER_MTLS &&
            l->kind != MESH_LISTENER_CAPTURE_OUT && l->kind != MESH_LISTENER_CAPTURE_IN)
            l->dest = &s->dests[(uintptr_t)l->dest];
        if (l->vhost)
            l->vhost = &s->vhosts[(uintptr_t)l->vhost - 1];
        if (mesh_hmap_put(&s->listener_index, l->key, l) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int hold_files(struct mesh_proxy_snapshot *s, const struct mesh_resource_view *v)
{
    if (!v || !v->n_files)
        return 0;
    s->files = mesh_calloc(v->n_files, sizeof(*s->files));
    if (!s->files)
        return -ENOMEM;
    for (size_t i = 0; i < v->n_files; i++)
        s->files[s->n_files++] = mesh_resource_file_ref(v->files[i]);
    return 0;
}

int mesh_snapshot_build(struct mesh_state_regs *regs, uint64_t version,
                        const struct mesh_dest_policy *defaults, const struct mesh_proxy_inputs *in,
                        uint64_t inputs_gen, const struct mesh_proxy_snapshot *prev,
                        const struct want_listener *wl, size_t n, struct mesh_proxy_snapshot **ret)
{
    struct mesh_service **services = NULL;
    size_t n_services = 0;
    bool shared = n > 0 && wl[0].kind == MESH_LISTENER_HTTP_SHARED;
    if (shared && mesh_catalog_list(in->catalog, &services, &n_services) < 0)
        return -ENOMEM;
    struct mesh_proxy_snapshot *s = mesh_calloc(1, sizeof(*s));
    if (!s) {
        mesh_free(services);
        return -ENOMEM;
    }
    atomic_init(&s->refs, 1);
    s->version = version;
    mesh_hmap_init(&s->listener_index);
    mesh_hmap_init(&s->dest_index);
    mesh_hmap_init(&s->vhost_index);
    mesh_hmap_init(&s->vhost_names);
    mesh_hmap_init(&s->capture_index);
    mesh_hmap_init(&s->capture_sources);
    struct builder b = {.s = s,
                        .prev = prev,
                        .inputs_gen = inputs_gen,
                        .regs = regs,
                        .in = in,
                        .defaults = defaults};
    size_t cap_vhosts;
    count_ahead(in, wl, n, services, n_services, &b.cap_dests, &cap_vhosts);
    s->listeners = mesh_calloc(n ? n : 1, sizeof(*s->listeners));
    s->dests = mesh_calloc(b.cap_dests ? b.cap_dests : 1, sizeof(*s->dests));
    s->vhosts = mesh_calloc(cap_vhosts ? cap_vhosts : 1, sizeof(*s->vhosts));
    if (!s->listeners || !s->dests || !s->vhosts || hold_files(s, in->resources) < 0)
        goto oom;
    s->tls = mesh_tls_material_ref(in->tls);
    /* A shallow copy (what it points to, the agent's defaults, outlives the snapshot). One
     * local workload: a retry or an ejection could only pick it again. */
    s->inbound_policy = *defaults;
    s->inbound_policy.connect_retries = 0;
    s->inbound_policy.outlier.enabled = false;
    for (size_t i = 0; i < n_services; i++) {
        b.listed = services[i];
        if (add_vhost(&b, services[i]->namespace, services[i]->name, NULL) < 0)
            goto oom;
    }
    b.listed = NULL;
    for (size_t i = 0; i < n; i++) {
        struct snap_listener *l = &s->listeners[s->n_listeners++];
        l->addr = wl[i].addr;
        l->kind = wl[i].kind;
        l->http = wl[i].http;
        if (!(l->key = mesh_strdup(wl[i].key)) ||
            !(l->description = mesh_strdup(wl[i].description)))
            goto oom;
        if (in->tls && in->tls->n) {
            const struct mesh_local_service *from = wl[i].from;
            l->tls_as = from ? mesh_tls_find(in->tls, from->namespace, from->name) : NULL;
            if (!l->tls_as)
                l->tls_as = &in->tls->ids[0]; /* the node's */
        }
        if (l->kind == MESH_LISTENER_HTTP_SHARED || l->kind == MESH_LISTENER_MTLS ||
            l->kind == MESH_LISTENER_CAPTURE_OUT || l->kind == MESH_LISTENER_CAPTURE_IN) {
            l->dest = NULL;
            continue;
        }
        int di = dest_for(&b, wl[i].ns, wl[i].name, NULL, wl[i].local);
        if (di < 0)
            goto oom;
        if (wl[i].local && in->resources)
            l->authz = mesh_resource_view_authz(in->resources, wl[i].ns, wl[i].name);
        l->dest = (struct snap_dest *)(uintptr_t)di;
        if (l->http) {
            if (add_vhost(&b, wl[i].ns, wl[i].name, wl[i].local) < 0)
                goto oom;
            char key[200];
            if (wl[i].local)
                local_key(in, wl[i].local, key, sizeof(key));
            else
                snprintf(key, sizeof(key), "%s/%s", wl[i].ns, wl[i].name);
            struct snap_vhost *v = mesh_hmap_get(&s->vhost_index, key);
            l->vhost = (struct snap_vhost *)(uintptr_t)(v - s->vhosts + 1);
        }
    }
    if (link_snapshot(s) < 0 || (in->capture && mesh_capture_index(s, regs, in) < 0) ||
        mesh_istio_snapshot_labels(s, in, wl, n) < 0 || mesh_trace_snapshot_names(s, wl, n) < 0)
        goto oom;
    mesh_free(services);
    *ret = s;
    return 0;
oom:
    mesh_free(services); /* unref frees what was made, and follows no index as a pointer */
    mesh_snapshot_unref(s);
    return -ENOMEM;
}
