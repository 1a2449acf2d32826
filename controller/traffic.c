/* The traffic in agents' reports: checked, decoded and kept per node (traffic.h). */
#include "controller/traffic.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/names.h"

const double mesh_ctl_traffic_bounds[MESH_CTL_TRAFFIC_BUCKETS - 1] = {
    MESH_REPORT_TRAFFIC_BOUNDS_MS};

void mesh_ctl_traffic_init(struct mesh_ctl_traffic *t)
{
    mesh_hmap_init(&t->nodes);
    t->edges = 0;
    t->edges_max = MESH_CTL_TRAFFIC_TOTAL_EDGES_MAX;
}

static void node_free(struct mesh_ctl_node_traffic *nt)
{
    if (!nt)
        return;
    for (size_t i = 0; i < MESH_CTL_TRAFFIC_SAMPLES; i++)
        mesh_free(nt->s[i].edges);
    json_decref(nt->services);
    mesh_free(nt);
}

void mesh_ctl_traffic_done(struct mesh_ctl_traffic *t)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&t->nodes, &i, &e))
        node_free(e->value);
    mesh_hmap_done(&t->nodes);
}

/* The keys of an edge, by protocol; every one of them is required. */
static const char *const names_keys[] = {"source_namespace", "source_workload",
                                         "destination_namespace", "destination_service"};
static const struct {
    const char *key;
    int counter;
} http_keys[] = {{"requests", MESH_CTL_TC_REQUESTS},
                 {"errors", MESH_CTL_TC_ERRORS},
                 {"duration_us", MESH_CTL_TC_DURATION_US}},
  tcp_keys[] = {{"connections_opened", MESH_CTL_TC_OPENED},
                {"connections_closed", MESH_CTL_TC_CLOSED},
                {"bytes_sent", MESH_CTL_TC_SENT},
                {"bytes_received", MESH_CTL_TC_RECEIVED}};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* A counter: an integer 0 .. 2^62 (a JSON integer is signed; a sum of them stays one). */
static bool counter(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > (json_int_t)(1ull << 62))
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Decodes entry i into e: NULL, or why not (a constant, or written into buf). */
static const char *edge_of(json_t *o, struct mesh_ctl_edge *e, char *buf, size_t size)
{
    if (!json_is_object(o))
        return "expected an object";
    const char *rep = json_string_value(json_object_get(o, "reporter"));
    const char *proto = json_string_value(json_object_get(o, "protocol"));
    if (!rep || (strcmp(rep, "source") != 0 && strcmp(rep, "destination") != 0))
        return "reporter: expected \"source\" or \"destination\"";
    if (!proto || (strcmp(proto, "http") != 0 && strcmp(proto, "tcp") != 0))
        return "protocol: expected \"http\" or \"tcp\"";
    e->by_destination = rep[0] == 'd';
    e->tcp = proto[0] == 't';
    char *names[] = {e->src_ns, e->src_wl, e->dst_ns, e->dst_svc};
    for (size_t k = 0; k < N_OF(names_keys); k++) {
        const char *s = json_string_value(json_object_get(o, names_keys[k]));
        if (!s || !mesh_name_is_dns_label(s)) {
            snprintf(buf, size, "%s: expected a DNS label (or \"unknown\")", names_keys[k]);
            return buf;
        }
        snprintf(names[k], 64, "%s", s);
    }
    size_t n_known = 2 + N_OF(names_keys);
    for (size_t k = 0; k < (e->tcp ? N_OF(tcp_keys) : N_OF(http_keys)); k++) {
        const char *key = e->tcp ? tcp_keys[k].key : http_keys[k].key;
        int c = e->tcp ? tcp_keys[k].counter : http_keys[k].counter;
        if (!counter(json_object_get(o, key), &e->c[c])) {
            snprintf(buf, size, "%s: expected a count (an integer 0 to 2^62)", key);
            return buf;
        }
        n_known++;
    }
    if (!e->tcp) {
        if (e->c[MESH_CTL_TC_ERRORS] > e->c[MESH_CTL_TC_REQUESTS])
            return "errors: more than requests";
        const json_t *b = json_object_get(o, "duration_buckets");
        if (!json_is_array(b) || json_array_size(b) != MESH_CTL_TRAFFIC_BUCKETS) {
            snprintf(buf, size, "duration_buckets: expected an array of %d counts",
                     MESH_CTL_TRAFFIC_BUCKETS);
            return buf;
        }
        for (size_t k = 0; k < MESH_CTL_TRAFFIC_BUCKETS; k++) {
            if (!counter(json_array_get(b, k), &e->buckets[k])) {
                snprintf(buf, size, "duration_buckets[%zu]: expected a count", k);
                return buf;
            }
        }
        n_known++;
    }
    if (json_object_size(o) != n_known) {
        const char *key;
        const json_t *v;
        json_object_foreach(o, key, v)
        {
            bool known = strcmp(key, "reporter") == 0 || strcmp(key, "protocol") == 0 ||
                         (!e->tcp && strcmp(key, "duration_buckets") == 0);
            for (size_t k = 0; k < N_OF(names_keys); k++)
                known |= strcmp(key, names_keys[k]) == 0;
            for (size_t k = 0; k < (e->tcp ? N_OF(tcp_keys) : N_OF(http_keys)); k++)
                known |= strcmp(key, e->tcp ? tcp_keys[k].key : http_keys[k].key) == 0;
            if (!known) {
                snprintf(buf, size, "unknown key '%.64s' for protocol %s", key, proto);
                return buf;
            }
        }
    }
    return NULL;
}

static bool same_edge(const struct mesh_ctl_edge *a, const struct mesh_ctl_edge *b)
{
    return a->tcp == b->tcp && a->by_destination == b->by_destination &&
           strcmp(a->src_ns, b->src_ns) == 0 && strcmp(a->src_wl, b->src_wl) == 0 &&
           strcmp(a->dst_ns, b->dst_ns) == 0 && strcmp(a->dst_svc, b->dst_svc) == 0;
}

bool mesh_ctl_traffic_check(const json_t *traffic, struct mesh_ctl_edge **ret_edges, size_t *ret_n,
                            char *why, size_t why_size)
{
    *ret_edges = NULL;
    *ret_n = 0;
    if (!traffic)
        return true;
    if (!json_is_array(traffic)) {
        snprintf(why, why_size, "traffic: expected an array of edges");
        return false;
    }
    size_t n = json_array_size(traffic);
    if (n > MESH_CTL_TRAFFIC_EDGES_MAX) {
        snprintf(why, why_size, "traffic: %zu edges, at most %d", n, MESH_CTL_TRAFFIC_EDGES_MAX);
        return false;
    }
    if (n == 0)
        return true;
    struct mesh_ctl_edge *v = mesh_calloc(n, sizeof(*v));
    if (!v) {
        snprintf(why, why_size, "traffic: out of memory");
        return false;
    }
    char buf[160];
    for (size_t i = 0; i < n; i++) {
        const char *bad = edge_of(json_array_get(traffic, i), &v[i], buf, sizeof(buf));
        /* One entry per edge: duplicates would count twice. Reports are small (an agent's
         * edges), so the quadratic look is cheap next to decoding the JSON. */
        for (size_t k = 0; !bad && k < i; k++) {
            if (same_edge(&v[k], &v[i]))
                bad = "the same edge as an earlier entry";
        }
        if (bad) {
            snprintf(why, why_size, "traffic[%zu]: %s", i, bad);
            mesh_free(v);
            return false;
        }
    }
    *ret_edges = v;
    *ret_n = n;
    return true;
}

static bool is_local(const json_t *services, const char *ns, const char *name)
{
    size_t i;
    const json_t *s;
    json_array_foreach(services, i, s)
    {
        const char *sn = json_string_value(json_object_get(s, "namespace"));
        const char *nn = json_string_value(json_object_get(s, "name"));
        if (sn && nn && strcmp(sn, ns) == 0 && strcmp(nn, name) == 0)
            return true;
    }
    return false;
}

size_t mesh_ctl_traffic_own(struct mesh_ctl_edge *edges, size_t n, const json_t *services)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        const struct mesh_ctl_edge *e = &edges[i];
        /* "unknown" in any other namespace would be no one: anyone's calls, which this
         * node could use to put errors on any service. */
        bool own = e->by_destination
                       ? is_local(services, e->dst_ns, e->dst_svc)
                       : (strcmp(e->src_wl, "unknown") == 0 && strcmp(e->src_ns, "unknown") == 0) ||
                             is_local(services, e->src_ns, e->src_wl);
        if (own)
            edges[kept++] = *e;
    }
    return kept;
}

int mesh_ctl_traffic_note(struct mesh_ctl_traffic *t, const char *node, struct mesh_ctl_edge *edges,
                          size_t n, json_t *services, uint64_t now_ms)
{
    struct mesh_ctl_node_traffic *nt = mesh_hmap_get(&t->nodes, node);
    if (!nt) {
        size_t len = strlen(node) + 1;
        if (!(nt = mesh_calloc(1, sizeof(*nt) + len))) {
            mesh_free(edges);
            return -ENOMEM;
        }
        memcpy(nt->node, node, len);
        if (mesh_hmap_put(&t->nodes, nt->node, nt) < 0) {
            mesh_free(nt);
            mesh_free(edges);
            return -ENOMEM;
        }
    }
    struct mesh_ctl_sample *s = &nt->s[nt->next];
    int result = 0;
    t->edges -= s->n;
    if (n > t->edges_max - t->edges) {
        mesh_free(edges);
        edges = NULL;
        n = 0;
        result = 1;
    }
    t->edges += n;
    mesh_free(s->edges);
    s->edges = edges;
    s->n = n;
    s->t_ms = now_ms;
    nt->next = (nt->next + 1) % MESH_CTL_TRAFFIC_SAMPLES;
    if (nt->n < MESH_CTL_TRAFFIC_SAMPLES)
        nt->n++;
    json_decref(nt->services);
    nt->services = json_incref(services);
    nt->seen_ms = now_ms;
    return result;
}

void mesh_ctl_traffic_forget(struct mesh_ctl_traffic *t, const char *node)
{
    struct mesh_ctl_node_traffic *nt = mesh_hmap_remove(&t->nodes, node);
    for (size_t i = 0; nt && i < MESH_CTL_TRAFFIC_SAMPLES; i++)
        t->edges -= nt->s[i].n;
    node_free(nt);
}
