/*
 * The service graph (GET /v1/graph): the services the nodes report, the edges their
 * proxies counted, and per-second rates from the differences between each node's newest
 * report and the oldest kept one that has the edge (traffic.h).
 *
 * An edge may be counted twice, by the caller's proxy (reporter "source") and by the
 * callee's ("destination"). The caller's count is the one shown when there is one: it
 * holds what the caller got, local refusals included (no route, no healthy endpoint, a
 * circuit breaker), which never reach the callee; the callee's count is shown for callers
 * outside the mesh. A service's golden signals are the sums over the edges into it.
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hmap.h"
#include "controller/traffic.h"

/* Rates of one edge as one reporter saw it, summed over the nodes that reported it. */
struct rates {
    bool seen;
    double c[MESH_CTL_TC_N];
    double buckets[MESH_CTL_TRAFFIC_BUCKETS];
};

struct gedge {
    bool tcp;
    struct rates by[2]; /* [0]: the source's proxies, [1]: the destination's */
    char src[130], dst[130];
    char key[270];
};

struct gnode {
    char ns[64], name[64];
    json_t *agents;
    bool in_mesh;
    int healthy, draining, unhealthy;
    struct rates in; /* the edges into it */
    char id[130];
};

static struct gnode *node_get(struct mesh_hmap *m, const char *ns, const char *name)
{
    char id[130];
    snprintf(id, sizeof(id), "%s/%s", ns, name);
    struct gnode *g = mesh_hmap_get(m, id);
    if (g)
        return g;
    if (!(g = mesh_calloc(1, sizeof(*g))))
        return NULL;
    memcpy(g->id, id, sizeof(id));
    snprintf(g->ns, sizeof(g->ns), "%s", ns);
    snprintf(g->name, sizeof(g->name), "%s", name);
    if (!(g->agents = json_array()) || mesh_hmap_put(m, g->id, g) < 0) {
        json_decref(g->agents);
        mesh_free(g);
        return NULL;
    }
    return g;
}

/* An edge of a node's newest sample and the same edge in the oldest kept sample that has
 * it (NULL: only the newest has it, so it has no rate yet). */
struct look {
    const struct mesh_ctl_edge *old;
    uint64_t t_ms; /* old's report */
    char key[272];
};

/* The key of an edge: reporter, protocol, names. */
static void key_of(const struct mesh_ctl_edge *e, char *out, size_t size)
{
    snprintf(out, size, "%d%d|%s/%s|%s/%s", e->by_destination, e->tcp, e->src_ns, e->src_wl,
             e->dst_ns, e->dst_svc);
}

/* True when a counter of e is below old's: the agent restarted in between, so all of e's
 * counters started again (taking only the ones that went down would mix two runs). */
static bool restarted(const struct mesh_ctl_edge *e, const struct mesh_ctl_edge *old)
{
    for (int k = 0; k < MESH_CTL_TC_N; k++) {
        if (e->c[k] < old->c[k])
            return true;
    }
    for (int k = 0; k < MESH_CTL_TRAFFIC_BUCKETS; k++) {
        if (e->buckets[k] < old->buckets[k])
            return true;
    }
    return false;
}

/*
 * Finds, for each edge of the newest sample, the oldest kept sample that has it (an edge
 * drops out of a report now and then: a local service briefly gone, the agent's cap on
 * edges choosing others; counting it as new would count its whole history as in the
 * window). One pass over the samples with the newest edges hashed. Returns 0 or -1.
 */
static int look_up(const struct mesh_ctl_node_traffic *nt, const struct mesh_ctl_sample *new,
                   struct look *v)
{
    struct mesh_hmap m;
    char key[272];
    int result = -1;
    mesh_hmap_init(&m);
    for (size_t i = 0; i < new->n; i++) {
        key_of(&new->edges[i], v[i].key, sizeof(v[i].key));
        v[i].old = NULL;
        if (mesh_hmap_put(&m, v[i].key, &v[i]) < 0)
            goto out;
    }
    for (size_t age = nt->n; age > 1; age--) { /* oldest first, the newest left out */
        const struct mesh_ctl_sample *s =
            &nt->s[(nt->next + MESH_CTL_TRAFFIC_SAMPLES - age) % MESH_CTL_TRAFFIC_SAMPLES];
        if (s->t_ms >= new->t_ms)
            continue;
        for (size_t i = 0; i < s->n; i++) {
            key_of(&s->edges[i], key, sizeof(key));
            struct look *l = mesh_hmap_get(&m, key);
            if (l && !l->old) {
                l->old = &s->edges[i];
                l->t_ms = s->t_ms;
            }
        }
    }
    result = 0;
out:
    mesh_hmap_done(&m);
    return result;
}

/* Adds one node's rates of its edges, newest against the oldest kept sample that has each.
 * Returns 0 or -1. */
static int add_node(struct mesh_hmap *edges, const struct mesh_ctl_node_traffic *nt)
{
    const struct mesh_ctl_sample *new =
        &nt->s[(nt->next + MESH_CTL_TRAFFIC_SAMPLES - 1) % MESH_CTL_TRAFFIC_SAMPLES];
    if (nt->n < 2 || new->n == 0)
        return 0;
    struct look *v = mesh_calloc(new->n, sizeof(*v));
    if (!v || look_up(nt, new, v) < 0) {
        mesh_free(v);
        return -1;
    }
    for (size_t i = 0; i < new->n; i++) {
        const struct mesh_ctl_edge *e = &new->edges[i], *o = v[i].old;
        static const struct mesh_ctl_edge zero;
        if (!o)
            continue;
        double secs = (double)(new->t_ms - v[i].t_ms) / 1000.0;
        if (restarted(e, o))
            o = &zero; /* all of it counted since the restart, within the window */
        char key[270];
        snprintf(key, sizeof(key), "%d|%s/%s|%s/%s", e->tcp, e->src_ns, e->src_wl, e->dst_ns,
                 e->dst_svc);
        struct gedge *g = mesh_hmap_get(edges, key);
        if (!g) {
            if (!(g = mesh_calloc(1, sizeof(*g))))
                goto fail;
            memcpy(g->key, key, sizeof(key));
            g->tcp = e->tcp;
            snprintf(g->src, sizeof(g->src), "%s/%s", e->src_ns, e->src_wl);
            snprintf(g->dst, sizeof(g->dst), "%s/%s", e->dst_ns, e->dst_svc);
            if (mesh_hmap_put(edges, g->key, g) < 0) {
                mesh_free(g);
                goto fail;
            }
        }
        struct rates *r = &g->by[e->by_destination];
        r->seen = true;
        for (int k = 0; k < MESH_CTL_TC_N; k++)
            r->c[k] += (double)(e->c[k] - o->c[k]) / secs;
        for (int k = 0; k < MESH_CTL_TRAFFIC_BUCKETS; k++)
            r->buckets[k] += (double)(e->buckets[k] - o->buckets[k]) / secs;
    }
    mesh_free(v);
    return 0;
fail:
    mesh_free(v);
    return -1;
}

/* The q-quantile of a histogram (linear within a bucket, as Prometheus's
 * histogram_quantile), or -1 when empty. */
static double quantile(const double *b, double q)
{
    double total = 0, cum = 0;
    for (int k = 0; k < MESH_CTL_TRAFFIC_BUCKETS; k++)
        total += b[k];
    if (total <= 0)
        return -1;
    double rank = q * total;
    for (int k = 0; k < MESH_CTL_TRAFFIC_BUCKETS - 1; k++) {
        if (cum + b[k] >= rank && b[k] > 0) {
            double lo = k ? mesh_ctl_traffic_bounds[k - 1] : 0, hi = mesh_ctl_traffic_bounds[k];
            return lo + (hi - lo) * (rank - cum) / b[k];
        }
        cum += b[k];
    }
    return mesh_ctl_traffic_bounds[MESH_CTL_TRAFFIC_BUCKETS - 2];
}

/* The signals of rates r into o (HTTP and TCP as present). */
static void signals(json_t *o, const struct rates *r, bool http, bool tcp)
{
    if (http) {
        double req = r->c[MESH_CTL_TC_REQUESTS], err = r->c[MESH_CTL_TC_ERRORS];
        json_object_set_new(o, "requests_per_s", json_real(req));
        json_object_set_new(o, "errors_per_s", json_real(err));
        json_object_set_new(o, "error_ratio", json_real(req > 0 ? err / req : 0));
        if (req > 0) {
            json_object_set_new(o, "latency_ms_mean",
                                json_real(r->c[MESH_CTL_TC_DURATION_US] / req / 1000.0));
            json_object_set_new(o, "latency_ms_p50", json_real(quantile(r->buckets, 0.5)));
            json_object_set_new(o, "latency_ms_p99", json_real(quantile(r->buckets, 0.99)));
        }
    }
    if (tcp) {
        json_object_set_new(o, "tcp_connections_per_s", json_real(r->c[MESH_CTL_TC_OPENED]));
        json_object_set_new(o, "tcp_bytes_per_s",
                            json_real(r->c[MESH_CTL_TC_SENT] + r->c[MESH_CTL_TC_RECEIVED]));
    }
}

static void add_rates(struct rates *to, const struct rates *r)
{
    to->seen = true;
    for (int k = 0; k < MESH_CTL_TC_N; k++)
        to->c[k] += r->c[k];
    for (int k = 0; k < MESH_CTL_TRAFFIC_BUCKETS; k++)
        to->buckets[k] += r->buckets[k];
}

/* A node's services into the graph's nodes. Returns 0 or -1. */
static int add_services(struct mesh_hmap *nodes, const struct mesh_ctl_node_traffic *nt)
{
    size_t i;
    json_t *s;
    json_array_foreach(nt->services, i, s)
    {
        const char *ns = json_string_value(json_object_get(s, "namespace"));
        const char *name = json_string_value(json_object_get(s, "name"));
        const char *health = json_string_value(json_object_get(s, "health"));
        struct gnode *g = ns && name ? node_get(nodes, ns, name) : NULL;
        if (!g)
            return -1;
        g->in_mesh = true;
        json_array_append_new(g->agents, json_string(nt->node));
        if (health && strcmp(health, "healthy") == 0)
            g->healthy++;
        else if (health && strcmp(health, "draining") == 0)
            g->draining++;
        else
            g->unhealthy++;
    }
    return 0;
}

static json_t *node_json(struct gnode *g)
{
    const char *health = g->healthy     ? "healthy"
                         : g->draining  ? "draining"
                         : g->unhealthy ? "unhealthy"
                                        : "unknown";
    json_t *o = json_pack("{s:s, s:s, s:s, s:O, s:b, s:s}", "id", g->id, "namespace", g->ns, "name",
                          g->name, "agents", g->agents, "in_mesh", g->in_mesh, "health", health);
    if (o)
        signals(o, &g->in, true, g->in.c[MESH_CTL_TC_OPENED] > 0);
    return o;
}

json_t *mesh_ctl_graph(const struct mesh_ctl_traffic *t, uint64_t now_ms, uint64_t fresh_ms,
                       uint64_t offline_ms)
{
    struct mesh_hmap nodes, edges;
    const struct mesh_hmap_entry *e;
    json_t *jn = json_array(), *je = json_array(), *out = NULL;
    size_t i = 0;
    mesh_hmap_init(&nodes);
    mesh_hmap_init(&edges);
    if (!jn || !je)
        goto out;
    while (mesh_hmap_next(&t->nodes, &i, &e)) {
        const struct mesh_ctl_node_traffic *nt = e->value;
        if (now_ms - nt->seen_ms <= offline_ms && add_services(&nodes, nt) < 0)
            goto out;
        if (now_ms - nt->seen_ms <= fresh_ms && add_node(&edges, nt) < 0)
            goto out;
    }
    for (i = 0; mesh_hmap_next(&edges, &i, &e);) {
        struct gedge *g = e->value;
        bool by_dst = !g->by[0].seen;
        const struct rates *r = &g->by[by_dst];
        char sns[64], sname[64];
        snprintf(sns, sizeof(sns), "%.*s", (int)strcspn(g->src, "/"), g->src);
        snprintf(sname, sizeof(sname), "%s", strchr(g->src, '/') + 1);
        struct gnode *src = node_get(&nodes, sns, sname);
        snprintf(sns, sizeof(sns), "%.*s", (int)strcspn(g->dst, "/"), g->dst);
        snprintf(sname, sizeof(sname), "%s", strchr(g->dst, '/') + 1);
        struct gnode *dst = node_get(&nodes, sns, sname);
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s}", "source", g->src, "destination", g->dst, "protocol",
                      g->tcp ? "tcp" : "http", "reporter", by_dst ? "destination" : "source");
        if (!src || !dst || !o || json_array_append_new(je, o) < 0)
            goto out;
        signals(o, r, !g->tcp, g->tcp);
        add_rates(&dst->in, r);
    }
    for (i = 0; mesh_hmap_next(&nodes, &i, &e);) {
        json_t *o = node_json(e->value);
        if (!o || json_array_append_new(jn, o) < 0)
            goto out;
    }
    out = json_pack("{s:O, s:O}", "nodes", jn, "edges", je);
out:
    json_decref(jn);
    json_decref(je);
    for (i = 0; mesh_hmap_next(&nodes, &i, &e);) {
        struct gnode *g = e->value;
        json_decref(g->agents);
        mesh_free(g);
    }
    for (i = 0; mesh_hmap_next(&edges, &i, &e);)
        mesh_free(e->value);
    mesh_hmap_done(&nodes);
    mesh_hmap_done(&edges);
    return out;
}
