#define MESH_LOG_MODULE "catalog"

#include "catalog/catalog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/registry.h"
#include "common/alloc.h"
#include "common/atom.h"
#include "common/hmap.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/names.h"

struct source {
    char *name;
    int rank; /* type rank * 1000 + position: lower wins */
    bool merge;
    bool synced;
    size_t services, endpoints; /* what its views hold, kept as they change */
};

/* An endpoint array, shared by a source's view and a merged service of that source alone
 * (the common case), so that it is held once; freed by whichever thread drops it last. */
struct mesh_catalog_eps {
    atomic_int refs;
    size_t n;
    struct mesh_endpoint v[]; /* sorted by address, no duplicates */
};

/* One source's view of one service. */
struct view {
    struct source *src;
    enum mesh_protocol protocol;
    struct mesh_catalog_eps *eps;
    char *identity; /* the SPIFFE ID its workloads present, when the source says; or NULL */
    bool stale;
};

struct entry {
    char *key; /* "namespace/name"; namespace and name are copies beside it */
    char *namespace;
    char *name;
    struct view *views;
    size_t n_views;
    struct mesh_service *merged;
    char *conflict[MESH_CATALOG_CONFLICT_KINDS]; /* what the sources disagree on, or NULL */
};

struct mesh_catalog {
    struct mesh_hmap entries;
    struct entry **sorted; /* the entries by key, kept as services come and go: listing the
                              catalog (each snapshot does) then costs no sort */
    size_t n_sorted, cap_sorted;
    struct source *sources;
    size_t n_sources;
    const char **source_names; /* the names of `sources`, for callers */
    uint64_t version;
    mesh_catalog_change_cb change_cb;
    void *change_data;
    uint64_t conflicts_total[MESH_CATALOG_CONFLICT_KINDS];
    size_t conflicts_now[MESH_CATALOG_CONFLICT_KINDS];
};

const char *const mesh_catalog_conflict_names[MESH_CATALOG_CONFLICT_KINDS] = {"port", "labels"};

/* Every merged service gets the next: the proxy tells an unchanged service by its id. */
static atomic_ullong service_ids;

static struct mesh_catalog_eps *eps_new(size_t n)
{
    struct mesh_catalog_eps *e = mesh_calloc(1, sizeof(*e) + n * sizeof(e->v[0]));
    if (e)
        atomic_init(&e->refs, 1);
    return e;
}

static void eps_unref(struct mesh_catalog_eps *e)
{
    if (!e || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < e->n; i++)
        mesh_endpoint_done(&e->v[i]);
    mesh_free(e);
}

static void service_free(struct mesh_service *s)
{
    eps_unref(s->eps);
    mesh_free(s->identity);
    for (size_t i = 0; i < s->n_sources; i++)
        mesh_free(s->sources[i]);
    mesh_free(s->sources);
    mesh_free(s->key);
    mesh_free(s);
}

const char *mesh_service_ep_label(const struct mesh_service *s, const struct mesh_endpoint *ep,
                                  const char *key)
{
    if (strcmp(key, MESH_CATALOG_REGISTRY_LABEL) == 0)
        return ep->source < s->n_sources ? s->sources[ep->source] : NULL;
    return mesh_labels_get(&ep->labels, key);
}

bool mesh_service_ep_from(const struct mesh_service *s, const struct mesh_endpoint *ep,
                          const char *source)
{
    for (size_t i = 0; i < s->n_sources && i < 32; i++) {
        if (strcmp(s->sources[i], source) == 0)
            return ep->source == i || (ep->also & (1u << i));
    }
    return false;
}

struct mesh_service *mesh_service_ref(struct mesh_service *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void mesh_service_unref(struct mesh_service *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        service_free(s);
}

int mesh_catalog_new(struct mesh_catalog **ret)
{
    struct mesh_catalog *c = mesh_calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    mesh_hmap_init(&c->entries);
    *ret = c;
    return 0;
}

static void view_done(struct view *v)
{
    eps_unref(v->eps);
    v->eps = NULL;
    mesh_free(v->identity);
    v->identity = NULL;
}

static void entry_free(struct entry *e)
{
    for (int k = 0; k < MESH_CATALOG_CONFLICT_KINDS; k++)
        mesh_free(e->conflict[k]);
    for (size_t i = 0; i < e->n_views; i++)
        view_done(&e->views[i]);
    mesh_free(e->views);
    mesh_service_unref(e->merged);
    mesh_free(e->key);
    mesh_free(e);
}

void mesh_catalog_free(struct mesh_catalog *c)
{
    if (!c)
        return;
    const struct mesh_hmap_entry *he;
    for (size_t i = 0; mesh_hmap_next(&c->entries, &i, &he);)
        entry_free(he->value);
    mesh_hmap_done(&c->entries);
    mesh_free(c->sorted);
    for (size_t i = 0; i < c->n_sources; i++)
        mesh_free(c->sources[i].name);
    mesh_free(c->sources);
    mesh_free(c->source_names);
    mesh_free(c);
}

void mesh_catalog_set_change_cb(struct mesh_catalog *c, mesh_catalog_change_cb cb, void *data)
{
    c->change_cb = cb;
    c->change_data = data;
}

static struct source *find_source(const struct mesh_catalog *c, const char *name)
{
    for (size_t i = 0; i < c->n_sources; i++) {
        if (strcmp(c->sources[i].name, name) == 0)
            return &c->sources[i];
    }
    return NULL;
}

/* One allocation holding "ns/name\0ns\0name\0"; returns the key, sets the two views. */
static char *key_layout(const char *ns, const char *name, char **ret_ns, char **ret_name)
{
    size_t lns = strlen(ns), lname = strlen(name);
    char *key = mesh_malloc(2 * (lns + lname) + 4);
    if (!key)
        return NULL;
    memcpy(key, ns, lns);
    key[lns] = '/';
    memcpy(key + lns + 1, name, lname + 1);
    *ret_ns = key + lns + lname + 2;
    memcpy(*ret_ns, ns, lns + 1);
    *ret_name = *ret_ns + lns + 1;
    memcpy(*ret_name, name, lname + 1);
    return key;
}

static int cmp_endpoint(const void *a, const void *b)
{
    return mesh_endpoint_addr_cmp(a, b);
}

static int cmp_view_rank(const void *a, const void *b)
{
    const struct view *va = *(const struct view *const *)a, *vb = *(const struct view *const *)b;
    return va->src->rank - vb->src->rank;
}

/* Orders by IP alone, consistently with cmp_endpoint: one IP's ports are side by side. */
static int cmp_ip(const void *a, const void *b)
{
    struct mesh_ipport x = ((const struct mesh_endpoint *)a)->addr;
    struct mesh_ipport y = ((const struct mesh_endpoint *)b)->addr;
    x.port = y.port = 0;
    return mesh_ipport_cmp(&x, &y);
}

/* What the sources of one service disagree on: the first case of each kind, described. */
struct conflicts {
    char text[MESH_CATALOG_CONFLICT_KINDS][300];
};

static void note_conflict(struct conflicts *cf, enum mesh_catalog_conflict kind,
                          const struct mesh_endpoint *kept, const char *kept_src,
                          const struct mesh_endpoint *other, const char *other_src)
{
    char ip[MESH_ADDR_STRLEN];
    if (!cf || cf->text[kind][0])
        return;
    mesh_ipport_ip(&kept->addr, ip, sizeof(ip));
    if (kind == MESH_CATALOG_CONFLICT_PORT)
        snprintf(cf->text[kind], sizeof(cf->text[kind]),
                 "registries '%s' and '%s' disagree on the port of endpoint %s: %u in '%s', %u "
                 "in '%s'; using '%s'",
                 kept_src, other_src, ip, kept->addr.port, kept_src, other->addr.port, other_src,
                 kept_src);
    else
        snprintf(cf->text[kind], sizeof(cf->text[kind]),
                 "registries '%s' and '%s' disagree on the labels of endpoint %s:%u; using those "
                 "of '%s'",
                 kept_src, other_src, ip, kept->addr.port, kept_src);
}

/*
 * Builds the merged service of an entry (NULL when no source reports it), and notes in `cf`
 * (optional) what the sources disagree on. Views are taken in precedence order, so the
 * result depends on what each source says, never on the order the updates came in.
 */
static int build_merged(struct entry *e, struct mesh_service **ret, struct conflicts *cf)
{
    *ret = NULL;
    if (e->n_views == 0)
        return 0;
    const struct view *order[64];
    size_t nv = MESH_MIN(e->n_views, MESH_ARRAY_SIZE(order));
    for (size_t i = 0; i < nv; i++)
        order[i] = &e->views[i];
    qsort(order, nv, sizeof(order[0]), cmp_view_rank);

    bool merge = true;
    size_t total = 0;
    for (size_t i = 0; i < nv; i++) {
        merge &= order[i]->src->merge;
        total += order[i]->eps->n;
    }
    size_t used = merge ? nv : 1;

    struct mesh_service *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    atomic_init(&s->refs, 1);
    s->id = atomic_fetch_add_explicit(&service_ids, 1, memory_order_relaxed) + 1;
    s->merged = merge;
    s->protocol = order[0]->protocol;
    if (order[0]->identity && !(s->identity = mesh_strdup(order[0]->identity)))
        goto oom;
    s->key = key_layout(e->namespace, e->name, &s->namespace, &s->name);
    s->sources = mesh_calloc(used, sizeof(char *));
    if (used == 1) { /* one source: its endpoints as they are (their source index is 0) */
        s->eps = order[0]->eps;
        atomic_fetch_add_explicit(&s->eps->refs, 1, memory_order_relaxed);
    } else {
        s->eps = eps_new(total);
    }
    if (!s->key || !s->eps || !s->sources)
        goto oom;
    s->endpoints = s->eps->v;

    for (size_t i = 0; i < used; i++) {
        const struct view *v = order[i];
        s->sources[s->n_sources] = mesh_strdup(v->src->name);
        if (!s->sources[s->n_sources])
            goto oom;
        s->n_sources++;
        if (used == 1)
            break;
        /* The endpoints of higher sources, sorted: this source's own are appended after. */
        size_t before = s->eps->n;
        for (size_t j = 0; j < v->eps->n; j++) {
            const struct mesh_endpoint *ep = &v->eps->v[j];
            struct mesh_endpoint *same =
                before ? bsearch(ep, s->eps->v, before, sizeof(*ep), cmp_endpoint) : NULL;
            if (same) { /* one endpoint: the first source to report it gives its details */
                if (i < 32)
                    same->also |= 1u << i;
                if (!mesh_labels_equal(&same->labels, &ep->labels))
                    note_conflict(cf, MESH_CATALOG_CONFLICT_LABELS, same, s->sources[same->source],
                                  ep, v->src->name);
                continue;
            }
            const struct mesh_endpoint *at_ip =
                before ? bsearch(ep, s->eps->v, before, sizeof(*ep), cmp_ip) : NULL;
            if (at_ip) { /* the same workload at another port: the higher source's stands */
                note_conflict(cf, MESH_CATALOG_CONFLICT_PORT, at_ip, s->sources[at_ip->source], ep,
                              v->src->name);
                continue;
            }
            struct mesh_endpoint *dst = &s->eps->v[s->eps->n];
            if (mesh_endpoint_copy(dst, ep) < 0)
                goto oom;
            dst->source = (uint8_t)i;
            dst->also = 0;
            s->eps->n++;
        }
        /* Keep the array sorted for the duplicate search of the next source. */
        qsort(s->eps->v, s->eps->n, sizeof(s->eps->v[0]), cmp_endpoint);
    }
    s->n_endpoints = s->eps->n;
    *ret = s;
    return 0;
oom:
    service_free(s);
    return -ENOMEM;
}

/* Logs and counts what the sources of e start or stop disagreeing on. */
static void set_conflicts(struct mesh_catalog *c, struct entry *e, const struct conflicts *cf)
{
    for (int k = 0; k < MESH_CATALOG_CONFLICT_KINDS; k++) {
        const char *now = cf && cf->text[k][0] ? cf->text[k] : NULL;
        char *was = e->conflict[k];
        if ((!now && !was) || (now && was && strcmp(now, was) == 0))
            continue;
        if (now) {
            char *copy = mesh_strdup(now);
            if (!copy)
                continue; /* logged again on the next change */
            mesh_log_warn("service '%s': %s", e->key, now);
            c->conflicts_total[k]++;
            c->conflicts_now[k] += was ? 0 : 1;
            e->conflict[k] = copy;
        } else {
            mesh_log_info("service '%s': the registries agree on endpoint %ss again", e->key,
                          mesh_catalog_conflict_names[k]);
            c->conflicts_now[k]--;
            e->conflict[k] = NULL;
        }
        mesh_free(was);
    }
}

/* Where key goes in c->sorted (found or not). */
static size_t sorted_pos(const struct mesh_catalog *c, const char *key, bool *found)
{
    size_t lo = 0, hi = c->n_sorted;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->sorted[mid]->key, key);
        if (r == 0) {
            *found = true;
            return mid;
        }
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Adds e to the map and the sorted list. Returns 0 or -ENOMEM (then in neither). */
static int entry_add(struct mesh_catalog *c, struct entry *e)
{
    bool found;
    if (mesh_grow((void **)&c->sorted, &c->cap_sorted, c->n_sorted + 1, sizeof(*c->sorted)) < 0 ||
        mesh_hmap_put(&c->entries, e->key, e) < 0)
        return -ENOMEM;
    size_t at = sorted_pos(c, e->key, &found);
    memmove(&c->sorted[at + 1], &c->sorted[at], (c->n_sorted - at) * sizeof(*c->sorted));
    c->sorted[at] = e;
    c->n_sorted++;
    return 0;
}

static void entry_remove(struct mesh_catalog *c, struct entry *e)
{
    bool found;
    size_t at = sorted_pos(c, e->key, &found);
    if (found) {
        memmove(&c->sorted[at], &c->sorted[at + 1], (c->n_sorted - at - 1) * sizeof(*c->sorted));
        c->n_sorted--;
    }
    mesh_hmap_remove(&c->entries, e->key);
}

static void notify(struct mesh_catalog *c)
{
    c->version++;
    if (c->change_cb)
        c->change_cb(c->change_data);
}

/* Re-merges an entry after its views changed; removes it when empty. */
static int refresh_entry(struct mesh_catalog *c, struct entry *e)
{
    struct mesh_service *merged;
    struct conflicts cf;
    for (int k = 0; k < MESH_CATALOG_CONFLICT_KINDS; k++)
        cf.text[k][0] = '\0';
    int r = build_merged(e, &merged, &cf);
    if (r < 0)
        return r;
    set_conflicts(c, e, merged ? &cf : NULL);
    mesh_service_unref(e->merged);
    e->merged = merged;
    if (!merged) {
        entry_remove(c, e);
        entry_free(e);
    }
    return 0;
}

static struct entry *entry_new(const char *ns, const char *name)
{
    struct entry *e = mesh_calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->key = key_layout(ns, name, &e->namespace, &e->name);
    if (!e->key) {
        mesh_free(e);
        return NULL;
    }
    return e;
}

static struct view *find_view(struct entry *e, const struct source *src)
{
    for (size_t i = 0; i < e->n_views; i++) {
        if (e->views[i].src == src)
            return &e->views[i];
    }
    return NULL;
}

static void remove_view(struct entry *e, struct view *v)
{
    v->src->services--;
    v->src->endpoints -= v->eps->n;
    view_done(v);
    size_t i = (size_t)(v - e->views);
    memmove(&e->views[i], &e->views[i + 1], (e->n_views - i - 1) * sizeof(*v));
    e->n_views--;
}

static bool view_equal(const struct view *v, enum mesh_protocol proto, const char *identity,
                       const struct mesh_catalog_eps *eps)
{
    if (v->protocol != proto || v->eps->n != eps->n || !v->identity != !identity ||
        (identity && strcmp(v->identity, identity) != 0))
        return false;
    for (size_t i = 0; i < eps->n; i++) {
        if (!mesh_endpoint_equal(&v->eps->v[i], &eps->v[i]))
            return false;
    }
    return true;
}

static int validate_update(const struct mesh_service_update *u)
{
    if (!u->namespace || !u->name || !mesh_name_is_dns_label(u->namespace) ||
        !mesh_name_is_dns_label(u->name) || u->n_endpoints > MESH_ENDPOINTS_MAX)
        return -EINVAL;
    for (size_t i = 0; i < u->n_endpoints; i++) {
        const struct mesh_endpoint *ep = &u->endpoints[i];
        int fam = ep->addr.family;
        if ((fam != AF_INET && fam != AF_INET6) || ep->weight < 1 || ep->weight > MESH_WEIGHT_MAX)
            return -EINVAL;
    }
    return 0;
}

struct ordered {
    const struct mesh_endpoint *ep;
    size_t index;
};

static int cmp_ordered(const void *a, const void *b)
{
    const struct ordered *oa = a, *ob = b;
    int c = mesh_endpoint_addr_cmp(oa->ep, ob->ep);
    if (c)
        return c;
    return oa->index < ob->index ? -1 : oa->index > ob->index;
}

/*
 * A node name or zone the mesh's rules refuse is not kept (a Consul node may be "Node_1"):
 * what the catalog holds is what the last-known-good file and service files accept, so
 * that file always loads back (common/names.h).
 */
static void drop_bad_names(struct mesh_endpoint *ep)
{
    if (ep->node && !mesh_name_is_node(ep->node)) {
        mesh_atom_unref(ep->node);
        ep->node = NULL;
    }
    if (ep->zone && !mesh_label_value_valid(ep->zone, NULL)) {
        mesh_atom_unref(ep->zone);
        ep->zone = NULL;
    }
}

/* Copies and sorts endpoints; a repeated address within one source keeps its first entry. */
static struct mesh_catalog_eps *copy_sorted(const struct mesh_endpoint *src, size_t n)
{
    struct mesh_catalog_eps *v = eps_new(n);
    struct ordered *o = mesh_calloc(n ? n : 1, sizeof(*o));
    if (!v || !o)
        goto fail;
    for (size_t i = 0; i < n; i++)
        o[i] = (struct ordered){&src[i], i};
    qsort(o, n, sizeof(*o), cmp_ordered);
    for (size_t i = 0; i < n; i++) {
        if (v->n && mesh_endpoint_addr_cmp(&v->v[v->n - 1], o[i].ep) == 0)
            continue;
        if (mesh_endpoint_copy(&v->v[v->n], o[i].ep) < 0)
            goto fail;
        drop_bad_names(&v->v[v->n]);
        v->v[v->n].source = 0;
        v->v[v->n++].also = 0; /* what a merge sets, never what an adapter passed */
    }
    mesh_free(o);
    return v;
fail:
    eps_unref(v);
    mesh_free(o);
    return NULL;
}

int mesh_catalog_update(struct mesh_catalog *c, const char *source,
                        const struct mesh_service_update *u)
{
    struct source *src = find_source(c, source);
    if (!src)
        return -ENOENT;
    int r = validate_update(u);
    if (r < 0)
        return r;

    char key[2 * 64 + 2];
    snprintf(key, sizeof(key), "%s/%s", u->namespace, u->name);
    struct entry *e = mesh_hmap_get(&c->entries, key);
    struct view *v = e ? find_view(e, src) : NULL;

    if (u->n_endpoints == 0 && !u->exists) {
        if (!v)
            return 0;
        remove_view(e, v);
        r = refresh_entry(c, e);
        if (r < 0)
            return r;
        notify(c);
        return 1;
    }

    struct mesh_catalog_eps *eps = copy_sorted(u->endpoints, u->n_endpoints);
    char *identity = u->identity ? mesh_strdup(u->identity) : NULL;
    if (!eps || (u->identity && !identity)) {
        eps_unref(eps);
        return -ENOMEM;
    }
    if (v && view_equal(v, u->protocol, u->identity, eps)) {
        v->stale = false;
        mesh_free(identity);
        eps_unref(eps);
        return 0;
    }
    bool created = false;
    if (!e) {
        e = entry_new(u->namespace, u->name);
        if (!e || entry_add(c, e) < 0) {
            if (e)
                entry_free(e);
            eps_unref(eps);
            mesh_free(identity);
            return -ENOMEM;
        }
        created = true;
    }
    if (!v) {
        struct view *nv = mesh_realloc(e->views, (e->n_views + 1) * sizeof(*nv));
        if (!nv) {
            eps_unref(eps);
            mesh_free(identity);
            if (created) {
                entry_remove(c, e);
                entry_free(e);
            }
            return -ENOMEM;
        }
        e->views = nv;
        v = &e->views[e->n_views++];
        *v = (struct view){.src = src};
    }
    if (v->eps) {
        src->endpoints -= v->eps->n;
        view_done(v);
    } else {
        src->services++;
    }
    src->endpoints += eps->n;
    v->eps = eps;
    v->identity = identity;
    v->protocol = u->protocol;
    v->stale = false;
    r = refresh_entry(c, e);
    if (r < 0)
        return r;
    notify(c);
    return 1;
}

/* Removes the views of `src` (only stale ones if asked) and re-merges what changed. */
static void sweep(struct mesh_catalog *c, const struct source *src, bool stale_only)
{
    bool changed = false;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    /* Collect first: refresh_entry may remove entries from the map while we walk it. */
    struct entry **todo = NULL;
    size_t n_todo = 0, cap = 0;
    while (mesh_hmap_next(&c->entries, &i, &he)) {
        struct entry *e = he->value;
        struct view *v = find_view(e, src);
        if (!v || (stale_only && !v->stale))
            continue;
        if (mesh_grow((void **)&todo, &cap, n_todo + 1, sizeof(*todo)) < 0)
            break;
        todo[n_todo++] = e;
    }
    for (size_t k = 0; k < n_todo; k++) {
        struct entry *e = todo[k];
        remove_view(e, find_view(e, src));
        if (refresh_entry(c, e) < 0)
            mesh_log_error("out of memory re-merging '%s'", e->key);
        changed = true;
    }
    mesh_free(todo);
    if (changed)
        notify(c);
}

void mesh_catalog_sync_begin(struct mesh_catalog *c, const char *source)
{
    struct source *src = find_source(c, source);
    if (!src)
        return;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&c->entries, &i, &he)) {
        struct view *v = find_view(he->value, src);
        if (v)
            v->stale = true;
    }
}

void mesh_catalog_sync_end(struct mesh_catalog *c, const char *source)
{
    struct source *src = find_source(c, source);
    if (!src)
        return;
    sweep(c, src, true);
    src->synced = true;
}

int mesh_catalog_set_sources(struct mesh_catalog *c, const struct mesh_catalog_source *in, size_t n)
{
    struct source *next = mesh_calloc(n ? n : 1, sizeof(*next));
    const char **names = mesh_calloc(n ? n : 1, sizeof(*names));
    if (!next || !names) {
        mesh_free(next);
        mesh_free(names);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        next[i].name = mesh_strdup(in[i].name);
        if (!next[i].name) {
            for (size_t j = 0; j < i; j++)
                mesh_free(next[j].name);
            mesh_free(next);
            mesh_free(names);
            return -ENOMEM;
        }
        names[i] = next[i].name;
        next[i].rank = in[i].rank * 1000 + (int)i;
        next[i].merge = in[i].merge;
        struct source *old = find_source(c, in[i].name);
        next[i].synced = old ? old->synced : false;
    }
    /* Drop the data of sources that are gone, then repoint views at the new table. */
    for (size_t i = 0; i < c->n_sources; i++) {
        bool kept = false;
        for (size_t j = 0; j < n && !kept; j++)
            kept = strcmp(c->sources[i].name, next[j].name) == 0;
        if (!kept)
            sweep(c, &c->sources[i], false);
    }
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&c->entries, &i, &he)) {
        struct entry *e = he->value;
        for (size_t k = 0; k < e->n_views; k++) {
            for (size_t j = 0; j < n; j++) {
                if (strcmp(e->views[k].src->name, next[j].name) == 0) {
                    e->views[k].src = &next[j];
                    next[j].services++;
                    next[j].endpoints += e->views[k].eps->n;
                }
            }
        }
    }
    for (size_t k = 0; k < c->n_sources; k++)
        mesh_free(c->sources[k].name);
    mesh_free(c->sources);
    mesh_free(c->source_names);
    c->sources = next;
    c->source_names = names;
    c->n_sources = n;
    /* Precedence or merge flags may have changed: re-merge everything. */
    i = 0;
    struct entry **all = NULL;
    size_t n_all = 0, cap = 0;
    while (mesh_hmap_next(&c->entries, &i, &he)) {
        if (mesh_grow((void **)&all, &cap, n_all + 1, sizeof(*all)) < 0) {
            mesh_free(all);
            return -ENOMEM;
        }
        all[n_all++] = he->value;
    }
    for (size_t k = 0; k < n_all; k++) {
        if (refresh_entry(c, all[k]) < 0) {
            mesh_free(all);
            return -ENOMEM;
        }
    }
    mesh_free(all);
    if (n_all)
        notify(c);
    return 0;
}

struct mesh_service *mesh_catalog_get(const struct mesh_catalog *c, const char *namespace,
                                      const char *name)
{
    char key[256];
    int k = snprintf(key, sizeof(key), "%s/%s", namespace, name);
    if (k < 0 || (size_t)k >= sizeof(key))
        return NULL;
    const struct entry *e = mesh_hmap_get(&c->entries, key);
    return e ? e->merged : NULL;
}

size_t mesh_catalog_count(const struct mesh_catalog *c)
{
    return c->entries.n;
}

uint64_t mesh_catalog_version(const struct mesh_catalog *c)
{
    return c->version;
}

int mesh_catalog_source_stats(const struct mesh_catalog *c, const char *source,
                              struct mesh_catalog_source_stats *ret)
{
    const struct source *src = find_source(c, source);
    if (!src)
        return -ENOENT;
    *ret = (struct mesh_catalog_source_stats){
        .services = src->services, .endpoints = src->endpoints, .synced = src->synced};
    return 0;
}

void mesh_catalog_conflicts(const struct mesh_catalog *c, enum mesh_catalog_conflict kind,
                            uint64_t *ret_total, size_t *ret_now)
{
    *ret_total = c->conflicts_total[kind];
    *ret_now = c->conflicts_now[kind];
}

int mesh_catalog_list(const struct mesh_catalog *c, struct mesh_service ***ret, size_t *n)
{
    struct mesh_service **v = mesh_calloc(c->n_sorted ? c->n_sorted : 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < c->n_sorted; i++)
        v[i] = c->sorted[i]->merged;
    *ret = v;
    *n = c->n_sorted;
    return 0;
}

size_t mesh_catalog_source_names(const struct mesh_catalog *c, const char *const **ret)
{
    *ret = c->source_names;
    return c->n_sources;
}

static int cmp_capture_source(const void *a, const void *b)
{
    const struct mesh_catalog_capture_view *va = a, *vb = b;
    if (va->source != vb->source)
        return va->source < vb->source ? -1 : 1;
    return strcmp(va->key, vb->key);
}

int mesh_catalog_capture(const struct mesh_catalog *c, struct mesh_catalog_capture **ret)
{
    struct mesh_catalog_capture *cap = mesh_calloc(1, sizeof(*cap));
    if (!cap)
        return -ENOMEM;
    size_t n = 0, i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&c->entries, &i, &he))
        n += ((const struct entry *)he->value)->n_views;
    cap->sources = mesh_calloc(c->n_sources ? c->n_sources : 1, sizeof(*cap->sources));
    cap->views = mesh_calloc(n ? n : 1, sizeof(*cap->views));
    if (!cap->sources || !cap->views)
        goto oom;
    for (; cap->n_sources < c->n_sources; cap->n_sources++) {
        if (!(cap->sources[cap->n_sources] = mesh_strdup(c->sources[cap->n_sources].name)))
            goto oom;
    }
    i = 0;
    while (mesh_hmap_next(&c->entries, &i, &he)) {
        const struct entry *e = he->value;
        for (size_t k = 0; k < e->n_views; k++) {
            const struct view *v = &e->views[k];
            struct mesh_catalog_capture_view *o = &cap->views[cap->n_views];
            if (!(o->key = key_layout(e->namespace, e->name, &o->namespace, &o->name)))
                goto oom;
            cap->n_views++;
            o->source = (size_t)(v->src - c->sources);
            o->protocol = v->protocol;
            o->eps = v->eps;
            atomic_fetch_add_explicit(&v->eps->refs, 1, memory_order_relaxed);
            o->endpoints = v->eps->v;
            o->n_endpoints = v->eps->n;
            if (v->identity && !(o->identity = mesh_strdup(v->identity)))
                goto oom;
        }
    }
    qsort(cap->views, cap->n_views, sizeof(*cap->views), cmp_capture_source);
    *ret = cap;
    return 0;
oom:
    mesh_catalog_capture_free(cap);
    return -ENOMEM;
}

void mesh_catalog_capture_free(struct mesh_catalog_capture *cap)
{
    if (!cap)
        return;
    for (size_t i = 0; i < cap->n_views; i++) {
        mesh_free(cap->views[i].key);
        mesh_free(cap->views[i].identity);
        eps_unref(cap->views[i].eps);
    }
    for (size_t i = 0; i < cap->n_sources; i++)
        mesh_free(cap->sources[i]);
    mesh_free(cap->views);
    mesh_free(cap->sources);
    mesh_free(cap);
}
