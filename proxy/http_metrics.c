/* HTTP metrics of destinations and route rules, for /metrics. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/prom.h"
#include "proxy/proxy-int.h"

/* One series owner: a destination or a route rule, with its labels. */
struct owner {
    struct mesh_prom_label labels[4]; /* room for code_class / le / kind, then the end */
    size_t n;
    const struct mesh_http_stats *st;
};

static double load(const atomic_ullong *v)
{
    return (double)atomic_load_explicit(v, memory_order_relaxed);
}

/* Labels of o plus one more (name NULL: none). */
static const struct mesh_prom_label *with(struct owner *o, const char *name, const char *value)
{
    o->labels[o->n] = (struct mesh_prom_label){name, value};
    o->labels[o->n + (name != NULL)] = (struct mesh_prom_label){NULL, NULL};
    return o->labels;
}

static void families(struct mesh_buf *b, const char *prefix, struct owner *v, size_t n)
{
    static const char *const classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    char name[128];
    snprintf(name, sizeof(name), "%s_requests_total", prefix);
    mesh_prom_family(b, name, "counter",
                     "Requests finished, by status class (none: no response was sent).");
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 6; k++)
            mesh_prom_sample(b, name, with(&v[i], "code_class", classes[k]),
                             load(&v[i].st->requests[k]));
    }
    snprintf(name, sizeof(name), "%s_request_duration_seconds", prefix);
    mesh_prom_family(b, name, "histogram", "Time from the request head to the response's end.");
    char bucket[140], sum[140], count[140];
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    snprintf(sum, sizeof(sum), "%s_sum", name);
    snprintf(count, sizeof(count), "%s_count", name);
    for (size_t i = 0; i < n; i++) {
        double cum = 0;
        char le[32];
        for (int k = 0; k <= MESH_HTTP_BUCKETS; k++) {
            cum += load(&v[i].st->duration[k]);
            if (k < MESH_HTTP_BUCKETS)
                snprintf(le, sizeof(le), "%g", mesh_http_bucket_ms[k] / 1000.0);
            else
                snprintf(le, sizeof(le), "+Inf");
            mesh_prom_sample(b, bucket, with(&v[i], "le", le), cum);
        }
        mesh_prom_sample(b, sum, with(&v[i], NULL, NULL), load(&v[i].st->duration_us_sum) / 1e6);
        mesh_prom_sample(b, count, with(&v[i], NULL, NULL), cum);
    }
    static const struct {
        const char *suffix, *type, *help;
        size_t offset;
    } counters[] = {
        {"retries_total", "counter", "Requests tried again.",
         offsetof(struct mesh_http_stats, retries)},
        {"timeouts_total", "counter", "Requests or tries that timed out.",
         offsetof(struct mesh_http_stats, timeouts)},
        {"rate_limited_total", "counter", "Requests refused by a rate limit (429).",
         offsetof(struct mesh_http_stats, rate_limited)},
        {"overflows_total", "counter",
         "Requests refused by max_requests or max_pending_requests (503).",
         offsetof(struct mesh_http_stats, overflows)},
    };
    for (size_t c = 0; c < sizeof(counters) / sizeof(counters[0]); c++) {
        snprintf(name, sizeof(name), "%s_%s", prefix, counters[c].suffix);
        mesh_prom_family(b, name, counters[c].type, counters[c].help);
        for (size_t i = 0; i < n; i++)
            mesh_prom_sample(
                b, name, with(&v[i], NULL, NULL),
                load((const atomic_ullong *)((const char *)v[i].st + counters[c].offset)));
    }
    snprintf(name, sizeof(name), "%s_faults_total", prefix);
    mesh_prom_family(b, name, "counter", "Faults injected, by kind.");
    for (size_t i = 0; i < n; i++) {
        mesh_prom_sample(b, name, with(&v[i], "kind", "abort"), load(&v[i].st->fault_aborts));
        mesh_prom_sample(b, name, with(&v[i], "kind", "delay"), load(&v[i].st->fault_delays));
    }
    snprintf(name, sizeof(name), "%s_requests_active", prefix);
    mesh_prom_family(b, name, "gauge", "Requests in flight.");
    for (size_t i = 0; i < n; i++)
        mesh_prom_sample(b, name, with(&v[i], NULL, NULL),
                         (double)atomic_load_explicit(&v[i].st->active, memory_order_relaxed));
}

/* Zeros for a destination no request has reached yet. */
static const struct mesh_http_stats *stats_of(const struct mesh_dest_state *s)
{
    static const struct mesh_http_stats none;
    const struct mesh_http_stats *h = mesh_dest_http_if_any(s);
    return h ? h : &none;
}

void mesh_http_metrics(const struct mesh_proxy_snapshot *s, struct mesh_buf *b)
{
    size_t nd = 0, nr = 0;
    for (size_t i = 0; s && i < s->n_dests; i++)
        nd += s->dests[i].http;
    for (size_t i = 0; s && i < s->n_vhosts; i++)
        nr += s->vhosts[i].n_rules;
    struct owner *d = mesh_calloc(nd ? nd : 1, sizeof(*d)),
                 *r = mesh_calloc(nr ? nr : 1, sizeof(*r));
    char(*rule_idx)[24] = mesh_calloc(nr ? nr : 1, sizeof(*rule_idx));
    char(*route_key)[200] = mesh_calloc(nr ? nr : 1, sizeof(*route_key));
    if (!d || !r || !rule_idx || !route_key)
        goto out;
    nd = nr = 0;
    for (size_t i = 0; s && i < s->n_dests; i++) {
        if (!s->dests[i].http)
            continue;
        d[nd].labels[0] = (struct mesh_prom_label){"destination", s->dests[i].key};
        d[nd].n = 1;
        d[nd++].st = stats_of(s->dests[i].state);
    }
    for (size_t i = 0; s && i < s->n_vhosts; i++) {
        const struct snap_vhost *v = &s->vhosts[i];
        for (size_t k = 0; k < v->n_rules; k++) {
            snprintf(route_key[nr], sizeof(route_key[nr]), "%s/%s", v->namespace, v->route_name);
            snprintf(rule_idx[nr], sizeof(rule_idx[nr]), "%zu", k);
            const char *rname = v->rules[k].rule->name; /* its name, else its position */
            r[nr].labels[0] = (struct mesh_prom_label){"route", route_key[nr]};
            r[nr].labels[1] = (struct mesh_prom_label){"rule", rname ? rname : rule_idx[nr]};
            r[nr].n = 2;
            r[nr++].st = stats_of(v->rules[k].state);
        }
    }
    families(b, "mesh_http", d, nd);
    families(b, "mesh_http_route", r, nr);
out:
    mesh_free(d);
    mesh_free(r);
    mesh_free(rule_idx);
    mesh_free(route_key);
}
