#define MESH_LOG_MODULE "dns"

/*
 * Host-name endpoints (agent/hosts.h). Names live in a map with the number of kept services
 * that use them; one timer fires for the name due first (few names: a scan finds it). A
 * kept service is the registry's update as reported, names unexpanded.
 */
#include "agent/hosts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent-int.h"
#include "common/alloc.h"
#include "common/atom.h"
#include "common/backoff.h"
#include "common/hmap.h"
#include "common/log.h"
#include "common/prom.h"

struct host {
    struct mesh_hosts *h;
    const char *name; /* an atom; the map's key */
    unsigned refs;    /* kept services naming it */
    struct mesh_resolver_query *query;
    bool resolved;   /* has had a good answer */
    bool failing;    /* the last attempt failed */
    bool remembered; /* the answer is the last-known-good file's, not asked yet */
    struct mesh_ipport *addrs;
    size_t n_addrs;
    uint32_t ttl;
    unsigned failures; /* in a row */
    char *error;       /* the last failure */
    uint64_t due_ms;   /* loop time of the next attempt; 0: querying */
    double last_ok;    /* wall time of the last good answer */
};

struct kept {
    const void *owner;
    char *source;
    char *namespace;
    char *name;
    enum mesh_protocol protocol;
    struct mesh_endpoint *eps;
    size_t n;
    bool stale;
};

struct mesh_hosts {
    uv_loop_t *loop;
    struct mesh_resolver *resolver;
    uv_timer_t timer;
    struct mesh_hmap names;
    struct kept **kept;
    size_t n_kept, cap_kept;
    mesh_hosts_apply_cb apply;
    void *data;
    char *servers; /* as given, for status */
    uint64_t ok, failed;
    bool closing;
    unsigned open; /* the timer and the resolver */
    void (*done)(void *);
    void *done_data;
};

static void rearm(struct mesh_hosts *h);
static void start_query(struct host *t);

/* ---- kept services ---- */

static void kept_free(struct kept *k)
{
    for (size_t i = 0; i < k->n; i++)
        mesh_endpoint_done(&k->eps[i]);
    mesh_free(k->eps);
    mesh_free(k->source);
    mesh_free(k->namespace);
    mesh_free(k->name);
    mesh_free(k);
}

static int cmp_ipport(const void *a, const void *b)
{
    return mesh_ipport_cmp(a, b);
}

static int cmp_addr(const void *a, const void *b)
{
    return mesh_endpoint_addr_cmp(a, b);
}

/* Expands k's names with their last good answers and hands the result to apply. */
static int expand_apply(struct mesh_hosts *h, const struct kept *k)
{
    size_t n = 0;
    for (size_t i = 0; i < k->n; i++) {
        const struct host *t =
            mesh_endpoint_unresolved(&k->eps[i]) ? mesh_hmap_get(&h->names, k->eps[i].host) : NULL;
        n += t ? t->n_addrs : !mesh_endpoint_unresolved(&k->eps[i]);
    }
    /* Shallow copies: the catalog copies what it keeps. */
    struct mesh_endpoint *v = mesh_calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < k->n; i++) {
        const struct mesh_endpoint *ep = &k->eps[i];
        if (!mesh_endpoint_unresolved(ep)) {
            v[m++] = *ep;
            continue;
        }
        const struct host *t = mesh_hmap_get(&h->names, ep->host);
        for (size_t j = 0; t && j < t->n_addrs; j++) {
            v[m] = *ep;
            memcpy(v[m].addr.ip, t->addrs[j].ip, sizeof(v[m].addr.ip));
            v[m].addr.family = t->addrs[j].family;
            m++;
        }
    }
    /* Two names (or a name and an address) may lead to one address: it is one endpoint. */
    qsort(v, m, sizeof(*v), cmp_addr);
    size_t u = 0;
    for (size_t i = 0; i < m; i++) {
        if (!u || mesh_endpoint_addr_cmp(&v[u - 1], &v[i]) != 0)
            v[u++] = v[i];
    }
    struct mesh_service_update up = {
        .namespace = k->namespace,
        .name = k->name,
        .protocol = k->protocol,
        .endpoints = v,
        .n_endpoints = u,
        .exists = true,
    };
    int r = h->apply(h->data, k->source, &up);
    mesh_free(v);
    return r;
}

/* ---- names ---- */

static void host_free(struct host *t)
{
    mesh_resolver_cancel(t->query);
    mesh_atom_unref(t->name);
    mesh_free(t->addrs);
    mesh_free(t->error);
    mesh_free(t);
}

static struct host *host_acquire(struct mesh_hosts *h, const char *name)
{
    struct host *t = mesh_hmap_get(&h->names, name);
    if (t) {
        if (t->refs++ == 0 && !t->query && (!t->resolved || t->remembered))
            t->due_ms = uv_now(h->loop); /* unused and not asked yet: ask now */
        return t;
    }
    if (h->names.n >= MESH_HOSTS_NAMES_MAX) {
        mesh_log_warn("more than %d host names in endpoint addresses: '%s' is not resolved",
                      MESH_HOSTS_NAMES_MAX, name);
        return NULL;
    }
    t = mesh_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->h = h;
    t->name = name;
    mesh_atom_ref(name);
    t->refs = 1;
    if (mesh_hmap_put(&h->names, t->name, t) < 0) {
        host_free(t);
        return NULL;
    }
    start_query(t);
    return t;
}

/*
 * A name no service uses any more stays until its next attempt is due, unasked: a registry
 * that restarts on reload (its old slot stops before the new one reports) finds its answer.
 */
static void host_release(struct mesh_hosts *h, const char *name)
{
    struct host *t = mesh_hmap_get(&h->names, name);
    if (t && t->refs)
        t->refs--;
}

static void host_drop(struct mesh_hosts *h, struct host *t)
{
    mesh_hmap_remove(&h->names, t->name);
    host_free(t);
}

int mesh_hosts_remember(struct mesh_hosts *h, const char *name, const struct mesh_ipport *addr)
{
    struct host *t = mesh_hmap_get(&h->names, name);
    if (!t) {
        if (h->names.n >= MESH_HOSTS_NAMES_MAX || !(t = mesh_calloc(1, sizeof(*t))))
            return -ENOMEM;
        t->h = h;
        t->name = name;
        mesh_atom_ref(name);
        t->resolved = t->remembered = true;
        /* Unused until a registry names it; then asked at once (host_acquire). */
        t->due_ms = uv_now(h->loop) + MESH_HOSTS_REMEMBER_S * 1000;
        if (mesh_hmap_put(&h->names, t->name, t) < 0) {
            host_free(t);
            return -ENOMEM;
        }
        rearm(h);
    }
    if (!t->remembered)
        return 0;
    struct mesh_ipport a = *addr;
    a.port = 0;
    for (size_t i = 0; i < t->n_addrs; i++) {
        if (mesh_ipport_equal(&t->addrs[i], &a))
            return 0;
    }
    if (t->n_addrs >= MESH_RESOLVER_ADDRS_MAX)
        return 0;
    struct mesh_ipport *v = mesh_realloc(t->addrs, (t->n_addrs + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    v[t->n_addrs++] = a;
    t->addrs = v;
    qsort(t->addrs, t->n_addrs, sizeof(*t->addrs), cmp_ipport);
    return 0;
}

/* Each unresolved endpoint's name, once per endpoint. */
static int kept_acquire(struct mesh_hosts *h, const struct kept *k)
{
    for (size_t i = 0; i < k->n; i++) {
        if (mesh_endpoint_unresolved(&k->eps[i]) && !host_acquire(h, k->eps[i].host)) {
            while (i-- > 0) {
                if (mesh_endpoint_unresolved(&k->eps[i]))
                    host_release(h, k->eps[i].host);
            }
            return -ENOMEM;
        }
    }
    return 0;
}

static void kept_release(struct mesh_hosts *h, const struct kept *k)
{
    for (size_t i = 0; i < k->n; i++) {
        if (mesh_endpoint_unresolved(&k->eps[i]))
            host_release(h, k->eps[i].host);
    }
}

static bool kept_uses(const struct kept *k, const char *name)
{
    for (size_t i = 0; i < k->n; i++) {
        if (k->eps[i].host == name && mesh_endpoint_unresolved(&k->eps[i]))
            return true;
    }
    return false;
}

static bool same_addrs(const struct host *t, const struct mesh_resolver_answer *a)
{
    if (t->n_addrs != a->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (!mesh_ipport_equal(&t->addrs[i], &a->addrs[i]))
            return false;
    }
    return true;
}

static void on_answer(const struct mesh_resolver_answer *a, void *data)
{
    struct host *t = data;
    struct mesh_hosts *h = t->h;
    t->query = NULL;
    if (a->status == -ECANCELED)
        return;
    uint64_t now = uv_now(h->loop);
    bool changed = false;
    if (a->status == 0) {
        h->ok++;
        if (!same_addrs(t, a)) {
            struct mesh_ipport *v = mesh_memdup(a->addrs, a->n * sizeof(*v));
            if (!v) {
                t->due_ms = now + 1000;
                rearm(h);
                return;
            }
            mesh_free(t->addrs);
            t->addrs = v;
            t->n_addrs = a->n;
            changed = true;
        }
        if (t->failing)
            mesh_log_info("host name '%s' resolves again (%zu addresses)", t->name, a->n);
        t->resolved = true;
        t->remembered = false;
        t->failing = false;
        t->failures = 0;
        t->ttl = a->ttl;
        t->last_ok = mesh_agent__now();
        uint32_t s = a->ttl < MESH_HOSTS_TTL_MIN_S   ? MESH_HOSTS_TTL_MIN_S
                     : a->ttl > MESH_HOSTS_TTL_MAX_S ? MESH_HOSTS_TTL_MAX_S
                                                     : a->ttl;
        t->due_ms = now + (uint64_t)s * 1000;
    } else {
        h->failed++;
        t->failures++;
        if (!t->failing || !t->error || strcmp(t->error, a->why) != 0) {
            if (t->resolved)
                mesh_log_warn("cannot resolve host name '%s': %s; keeping its %zu last "
                              "addresses",
                              t->name, a->why, t->n_addrs);
            else
                mesh_log_warn("cannot resolve host name '%s': %s; it has no endpoints until "
                              "it resolves",
                              t->name, a->why);
        }
        t->failing = true;
        mesh_free(t->error);
        t->error = mesh_strdup(a->why);
        t->due_ms = now + mesh_backoff_ms(t->failures, 1000, MESH_HOSTS_RETRY_MAX_S * 1000);
    }
    if (changed) {
        for (size_t i = 0; i < h->n_kept; i++) {
            if (!kept_uses(h->kept[i], t->name))
                continue;
            int r = expand_apply(h, h->kept[i]);
            if (r < 0)
                mesh_log_warn("service '%s/%s' of registry '%s' with host name '%s': %s",
                              h->kept[i]->namespace, h->kept[i]->name, h->kept[i]->source, t->name,
                              strerror(-r));
        }
    }
    rearm(h);
}

static void start_query(struct host *t)
{
    t->due_ms = 0;
    int r = mesh_resolver_query(t->h->resolver, t->name, on_answer, t, &t->query);
    if (r < 0) {
        t->query = NULL;
        t->due_ms = uv_now(t->h->loop) + 1000;
        rearm(t->h);
    }
}

static void on_timer(uv_timer_t *timer)
{
    struct mesh_hosts *h = container_of(timer, struct mesh_hosts, timer);
    uint64_t now = uv_now(h->loop);
    const struct mesh_hmap_entry *e;
    struct host *unused = NULL;
    for (size_t i = 0; mesh_hmap_next(&h->names, &i, &e);) {
        struct host *t = e->value;
        if (t->query || !t->due_ms || t->due_ms > now)
            continue;
        if (t->refs) {
            start_query(t);
        } else if (!unused) {
            unused = t; /* removed after the walk, one per run */
        } else {
            t->due_ms = now; /* the next run */
        }
    }
    if (unused)
        host_drop(h, unused);
    rearm(h);
}

static void rearm(struct mesh_hosts *h)
{
    if (h->closing)
        return;
    uint64_t next = 0;
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&h->names, &i, &e);) {
        const struct host *t = e->value;
        if (!t->query && t->due_ms && (!next || t->due_ms < next))
            next = t->due_ms;
    }
    if (!next) {
        uv_timer_stop(&h->timer);
        return;
    }
    uint64_t now = uv_now(h->loop);
    uv_timer_start(&h->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- what registries report ---- */

static ssize_t find_kept(const struct mesh_hosts *h, const void *owner, const char *ns,
                         const char *name)
{
    for (size_t i = 0; i < h->n_kept; i++) {
        const struct kept *k = h->kept[i];
        if (k->owner == owner && strcmp(k->namespace, ns) == 0 && strcmp(k->name, name) == 0)
            return (ssize_t)i;
    }
    return -1;
}

static void drop_kept(struct mesh_hosts *h, size_t i)
{
    struct kept *k = h->kept[i];
    h->kept[i] = h->kept[--h->n_kept];
    kept_release(h, k);
    kept_free(k);
}

static struct kept *kept_new(const void *owner, const char *source,
                             const struct mesh_service_update *u)
{
    struct kept *k = mesh_calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->owner = owner;
    k->protocol = u->protocol;
    k->source = mesh_strdup(source);
    k->namespace = mesh_strdup(u->namespace);
    k->name = mesh_strdup(u->name);
    k->eps = mesh_calloc(u->n_endpoints, sizeof(*k->eps));
    if (!k->source || !k->namespace || !k->name || !k->eps) {
        kept_free(k);
        return NULL;
    }
    for (; k->n < u->n_endpoints; k->n++) {
        if (mesh_endpoint_copy(&k->eps[k->n], &u->endpoints[k->n]) < 0) {
            kept_free(k);
            return NULL;
        }
    }
    return k;
}

int mesh_hosts_set_service(struct mesh_hosts *h, const void *owner, const char *source,
                           const struct mesh_service_update *u)
{
    bool names = false;
    for (size_t i = 0; i < u->n_endpoints && !names; i++)
        names = mesh_endpoint_unresolved(&u->endpoints[i]);
    ssize_t old = u->namespace && u->name ? find_kept(h, owner, u->namespace, u->name) : -1;
    if (!names || h->closing) {
        if (old >= 0)
            drop_kept(h, (size_t)old);
        return h->apply(h->data, source, u);
    }
    if (mesh_grow((void **)&h->kept, &h->cap_kept, h->n_kept + 1, sizeof(*h->kept)) < 0)
        return -ENOMEM;
    struct kept *k = kept_new(owner, source, u);
    if (!k || kept_acquire(h, k) < 0) {
        if (k)
            kept_free(k);
        return -ENOMEM;
    }
    if (old >= 0) {
        struct kept *prev = h->kept[old];
        h->kept[old] = k;
        kept_release(h, prev); /* after acquiring: a name kept in use is not asked again */
        kept_free(prev);
    } else {
        h->kept[h->n_kept++] = k;
    }
    rearm(h);
    return expand_apply(h, k);
}

void mesh_hosts_sync_begin(struct mesh_hosts *h, const void *owner)
{
    for (size_t i = 0; i < h->n_kept; i++) {
        if (h->kept[i]->owner == owner)
            h->kept[i]->stale = true;
    }
}

void mesh_hosts_sync_end(struct mesh_hosts *h, const void *owner)
{
    for (size_t i = h->n_kept; i-- > 0;) {
        if (h->kept[i]->owner == owner && h->kept[i]->stale)
            drop_kept(h, i);
    }
    rearm(h);
}

void mesh_hosts_forget(struct mesh_hosts *h, const void *owner)
{
    mesh_hosts_sync_begin(h, owner);
    mesh_hosts_sync_end(h, owner);
}

/* ---- lifecycle ---- */

int mesh_hosts_new(uv_loop_t *loop, const struct mesh_resolver_options *o,
                   mesh_hosts_apply_cb apply, void *data, struct mesh_hosts **ret)
{
    struct mesh_hosts *h = mesh_calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->loop = loop;
    h->apply = apply;
    h->data = data;
    if (o->servers && !(h->servers = mesh_strdup(o->servers))) {
        mesh_free(h);
        return -ENOMEM;
    }
    int r = mesh_resolver_new(loop, o, &h->resolver);
    if (r < 0) {
        mesh_free(h->servers);
        mesh_free(h);
        return r;
    }
    mesh_hmap_init(&h->names);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->open = 2;
    *ret = h;
    return 0;
}

static void maybe_done(struct mesh_hosts *h)
{
    if (--h->open)
        return;
    void (*done)(void *) = h->done;
    void *data = h->done_data;
    mesh_free(h);
    if (done)
        done(data);
}

static void on_timer_closed(uv_handle_t *handle)
{
    maybe_done(handle->data);
}

static void on_resolver_closed(void *data)
{
    maybe_done(data);
}

void mesh_hosts_close(struct mesh_hosts *h, void (*done)(void *data), void *data)
{
    if (!h || h->closing)
        return;
    h->closing = true;
    h->done = done;
    h->done_data = data;
    while (h->n_kept)
        drop_kept(h, h->n_kept - 1);
    mesh_free(h->kept);
    h->kept = NULL;
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&h->names, &i, &e);)
        host_free(e->value); /* keys are the hosts' own names: the map goes next */
    mesh_hmap_done(&h->names);
    mesh_free(h->servers);
    h->servers = NULL;
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
    mesh_resolver_close(h->resolver, on_resolver_closed, h);
}

/* ---- introspection ---- */

json_t *mesh_hosts_status(const struct mesh_hosts *h)
{
    json_t *o = json_object(), *names = json_array();
    if (!o || !names) {
        json_decref(o);
        json_decref(names);
        return NULL;
    }
    json_object_set_new(o, "servers", json_string(h->servers ? h->servers : "resolv.conf"));
    json_object_set_new(o, "resolutions_ok", json_integer((json_int_t)h->ok));
    json_object_set_new(o, "resolutions_failed", json_integer((json_int_t)h->failed));
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&h->names, &i, &e);) {
        const struct host *t = e->value;
        if (!t->refs)
            continue; /* kept a little while after its last user went */
        json_t *n = json_object(), *addrs = json_array();
        for (size_t j = 0; addrs && j < t->n_addrs; j++) {
            char ip[MESH_ADDR_STRLEN];
            json_array_append_new(addrs, json_string(mesh_ipport_ip(&t->addrs[j], ip, sizeof(ip))));
        }
        const char *state = t->failing ? (t->resolved ? "failing" : "unresolved")
                                       : (t->resolved ? "ok" : "pending");
        json_object_set_new(n, "name", json_string(t->name));
        json_object_set_new(n, "state", json_string(state));
        json_object_set_new(n, "addresses", addrs);
        json_object_set_new(n, "ttl", json_integer(t->ttl));
        json_object_set_new(n, "failures", json_integer(t->failures));
        json_object_set_new(n, "error", t->failing ? json_string(t->error) : json_null());
        json_object_set_new(n, "last_success",
                            t->last_ok > 0 ? json_real(t->last_ok) : json_null());
        json_object_set_new(n, "from_last_known_good", json_boolean(t->remembered));
        json_array_append_new(names, n);
    }
    json_object_set_new(o, "names", names);
    return o;
}

void mesh_hosts_metrics(const struct mesh_hosts *h, struct mesh_buf *b)
{
    mesh_prom_family(b, "mesh_dns_resolutions_total", "counter",
                     "Host name resolutions of endpoint addresses, by result.");
    mesh_prom_sample(b, "mesh_dns_resolutions_total",
                     (struct mesh_prom_label[]){{"result", "success"}, {NULL, NULL}},
                     (double)h->ok);
    mesh_prom_sample(b, "mesh_dns_resolutions_total",
                     (struct mesh_prom_label[]){{"result", "failure"}, {NULL, NULL}},
                     (double)h->failed);
    size_t by_state[3] = {0}; /* ok, failing (with a last answer), unresolved */
    const struct mesh_hmap_entry *e;
    for (size_t i = 0; mesh_hmap_next(&h->names, &i, &e);) {
        const struct host *t = e->value;
        if (t->refs)
            by_state[!t->resolved ? 2 : t->failing ? 1 : 0]++;
    }
    mesh_prom_family(b, "mesh_dns_names", "gauge",
                     "Host names in endpoint addresses, by the state of their resolution.");
    static const char *const states[] = {"ok", "failing", "unresolved"};
    for (size_t i = 0; i < 3; i++)
        mesh_prom_sample(b, "mesh_dns_names",
                         (struct mesh_prom_label[]){{"state", states[i]}, {NULL, NULL}},
                         (double)by_state[i]);
}
