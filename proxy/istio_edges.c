/*
 * The traffic between services, for the agent's reports to the controller (its service
 * graph, docs/controller.md#console): the istio_* series summed per edge.
 *
 * Each series of the table is one label set; an edge is (reporter, protocol, source
 * workload, destination service), so the response codes, flags, versions and principals
 * of its series are summed into it. The counters are cumulative since the proxy started:
 * the controller takes the differences between reports, so a lost report loses nothing.
 * Runs on the main loop; the table's lock is held only to copy the series pointers
 * (series are never freed before the table is).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hmap.h"
#include "common/names.h"
#include "proxy/istio-int.h"

/* The labels an edge is made of; values cut at 63 characters (DNS labels at most). */
struct labels {
    char reporter[16], protocol[8];
    char src_ns[64], src_wl[64], dst_ns[64], dst_svc[64];
    char code[8], flags[64];
};

struct edge {
    unsigned long long requests, errors, duration_us, buckets[MESH_ISTIO_BUCKETS + 1];
    unsigned long long opened, closed, sent, received;
    bool tcp;
    struct labels l;
    char key[300];
};

/* Copies the value starting at p (after the opening quote) into out (unescaped, cut to
 * size); returns the character after the closing quote, or NULL. */
static const char *value_of(const char *p, const char *end, char *out, size_t size)
{
    size_t n = 0;
    for (; p < end && *p != '"'; p++) {
        if (*p == '\\' && p + 1 < end)
            p++;
        if (n + 1 < size)
            out[n++] = *p == 'n' && p[-1] == '\\' ? '\n' : *p;
    }
    out[n] = '\0';
    return p < end ? p + 1 : NULL;
}

/* Splits `a="x",b="y"` into the labels an edge needs. Returns false on a malformed set. */
static bool parse_labels(const char *s, size_t len, struct labels *l)
{
    static const struct {
        const char *name;
        size_t off, size;
    } want[] = {
#define W(n, f) {n, offsetof(struct labels, f), sizeof(((struct labels *)0)->f)}
        W("reporter", reporter),
        W("request_protocol", protocol),
        W("source_workload_namespace", src_ns),
        W("source_workload", src_wl),
        W("destination_service_namespace", dst_ns),
        W("destination_service_name", dst_svc),
        W("response_code", code),
        W("response_flags", flags),
#undef W
    };
    const char *p = s, *end = s + len;
    memset(l, 0, sizeof(*l));
    while (p < end) {
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq || eq + 1 >= end || eq[1] != '"')
            return false;
        char scratch[64], *out = scratch;
        size_t size = sizeof(scratch);
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
            if ((size_t)(eq - p) == strlen(want[i].name) && memcmp(p, want[i].name, eq - p) == 0) {
                out = (char *)l + want[i].off;
                size = want[i].size;
            }
        }
        if (!(p = value_of(eq + 2, end, out, size)))
            return false;
        if (p < end && *p++ != ',')
            return false;
    }
    return true;
}

/* A name the controller accepts: a DNS label, else "unknown". */
static void name_or_unknown(char *s)
{
    if (!mesh_name_is_dns_label(s))
        strcpy(s, "unknown");
}

/* An answer the caller counts as failed: a 5xx, none at all, or one the proxy made itself
 * (a local refusal, reset or fault: any flag but a fault delay). */
static bool is_error(const struct labels *l)
{
    int code = atoi(l->code);
    return code == 0 || code >= 500 || (strcmp(l->flags, "-") != 0 && strcmp(l->flags, "DI") != 0);
}

static unsigned long long load(const atomic_ullong *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void add(struct edge *e, const struct mesh_istio_series *s)
{
    if (s->tcp) {
        e->opened += load(&s->opened);
        e->closed += load(&s->closed);
        e->sent += load(&s->sent);
        e->received += load(&s->received);
        return;
    }
    e->requests += load(&s->requests);
    e->duration_us += load(&s->duration.sum);
    for (int k = 0; k <= MESH_ISTIO_BUCKETS; k++)
        e->buckets[k] += load(&s->duration.b[k]);
}

static json_t *edge_json(const struct edge *e)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "reporter", e->l.reporter, "protocol",
                          e->tcp ? "tcp" : "http", "source_namespace", e->l.src_ns,
                          "source_workload", e->l.src_wl, "destination_namespace", e->l.dst_ns,
                          "destination_service", e->l.dst_svc);
    if (!o)
        return NULL;
    int err = 0;
    if (e->tcp) {
        err |= json_object_set_new(o, "connections_opened", json_integer((json_int_t)e->opened));
        err |= json_object_set_new(o, "connections_closed", json_integer((json_int_t)e->closed));
        err |= json_object_set_new(o, "bytes_sent", json_integer((json_int_t)e->sent));
        err |= json_object_set_new(o, "bytes_received", json_integer((json_int_t)e->received));
    } else {
        /* Every field or none: the controller refuses an edge with a hole, and the report
         * with it (services and membership too). */
        json_t *b = json_array();
        err |= !b;
        for (int k = 0; b && k <= MESH_ISTIO_BUCKETS; k++)
            err |= json_array_append_new(b, json_integer((json_int_t)e->buckets[k]));
        err |= json_object_set_new(o, "requests", json_integer((json_int_t)e->requests));
        err |= json_object_set_new(o, "errors", json_integer((json_int_t)e->errors));
        err |= json_object_set_new(o, "duration_us", json_integer((json_int_t)e->duration_us));
        if (b)
            err |= json_object_set_new(o, "duration_buckets", b);
    }
    if (err) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *mesh_istio_traffic(struct mesh_istio_table *t, size_t max_edges)
{
    struct mesh_istio_series **v = NULL;
    struct mesh_hmap edges;
    const struct mesh_hmap_entry *he;
    json_t *out = NULL;
    size_t n = 0, i = 0;
    if (!t->ready)
        return json_array();
    mesh_hmap_init(&edges);
    pthread_mutex_lock(&t->lock);
    v = mesh_calloc(t->n + 1, sizeof(*v));
    for (size_t k = 0; v && k < t->n_slots; k++) {
        for (struct mesh_istio_series *s = t->slots[k]; s; s = s->next)
            v[n++] = s;
    }
    pthread_mutex_unlock(&t->lock);
    if (!v)
        goto out;
    for (size_t k = 0; k < n; k++) {
        const struct mesh_istio_series *s = v[k];
        struct labels l;
        if (!parse_labels(s->labels, s->len, &l) ||
            (strcmp(l.reporter, "source") != 0 && strcmp(l.reporter, "destination") != 0))
            continue;
        name_or_unknown(l.src_ns);
        name_or_unknown(l.src_wl);
        name_or_unknown(l.dst_ns);
        name_or_unknown(l.dst_svc);
        char key[300];
        snprintf(key, sizeof(key), "%s|%d|%s|%s|%s|%s", l.reporter, s->tcp, l.src_ns, l.src_wl,
                 l.dst_ns, l.dst_svc);
        struct edge *e = mesh_hmap_get(&edges, key);
        if (!e) {
            if (edges.n >= max_edges)
                continue; /* the first max_edges edges; the controller caps them too */
            if (!(e = mesh_calloc(1, sizeof(*e))))
                goto out;
            memcpy(e->key, key, sizeof(key));
            e->l = l;
            e->tcp = s->tcp;
            if (mesh_hmap_put(&edges, e->key, e) < 0) {
                mesh_free(e);
                goto out;
            }
        }
        if (!s->tcp && is_error(&l))
            e->errors += load(&s->requests);
        add(e, s);
    }
    out = json_array();
    while (out && mesh_hmap_next(&edges, &i, &he)) {
        json_t *o = edge_json(he->value);
        if (!o || json_array_append_new(out, o) < 0) {
            json_decref(out);
            out = NULL;
        }
    }
out:
    i = 0;
    while (mesh_hmap_next(&edges, &i, &he))
        mesh_free(he->value);
    mesh_hmap_done(&edges);
    mesh_free(v);
    return out;
}
