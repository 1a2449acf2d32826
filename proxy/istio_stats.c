/* The table of Istio metric series, and their /metrics rendering (any thread). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/prom.h"
#include "proxy/istio-int.h"

const double mesh_istio_bounds[MESH_ISTIO_BUCKETS] = {MESH_REPORT_TRAFFIC_BOUNDS_MS};

int mesh_istio_table_init(struct mesh_istio_table *t, size_t max)
{
    memset(t, 0, sizeof(*t));
    t->n_slots = 256;
    t->slots = mesh_calloc(t->n_slots, sizeof(*t->slots));
    if (!t->slots)
        return -ENOMEM;
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        mesh_free(t->slots);
        t->slots = NULL;
        return -ENOMEM;
    }
    atomic_init(&t->max, max ? max : MESH_ISTIO_MAX_SERIES_DEFAULT);
    t->ready = true;
    return 0;
}

void mesh_istio_table_done(struct mesh_istio_table *t)
{
    if (!t->slots)
        return;
    for (size_t i = 0; i < t->n_slots; i++) {
        struct mesh_istio_series *s = t->slots[i];
        while (s) {
            struct mesh_istio_series *next = s->next;
            mesh_free(s);
            s = next;
        }
    }
    mesh_free(t->slots);
    t->slots = NULL;
    t->ready = false;
    pthread_mutex_destroy(&t->lock);
}

void mesh_istio_table_set_max(struct mesh_istio_table *t, size_t max)
{
    atomic_store(&t->max, max ? max : MESH_ISTIO_MAX_SERIES_DEFAULT);
}

static uint64_t hash_of(bool tcp, const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)tcp; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* Doubles the slots when the chains grow long; keeps the old ones when out of memory. */
static void grow(struct mesh_istio_table *t)
{
    size_t n = t->n_slots * 2;
    struct mesh_istio_series **v = mesh_calloc(n, sizeof(*v));
    if (!v)
        return;
    for (size_t i = 0; i < t->n_slots; i++) {
        struct mesh_istio_series *s = t->slots[i];
        while (s) {
            struct mesh_istio_series *next = s->next;
            s->next = v[s->hash & (n - 1)];
            v[s->hash & (n - 1)] = s;
            s = next;
        }
    }
    mesh_free(t->slots);
    t->slots = v;
    t->n_slots = n;
}

struct mesh_istio_series *mesh_istio_series(struct mesh_istio_table *t, bool tcp,
                                            const char *labels, size_t len)
{
    uint64_t h = hash_of(tcp, labels, len);
    struct mesh_istio_series *s = NULL;
    pthread_mutex_lock(&t->lock);
    for (s = t->slots[h & (t->n_slots - 1)]; s; s = s->next) {
        if (s->hash == h && s->tcp == tcp && s->len == len && memcmp(s->labels, labels, len) == 0)
            goto out;
    }
    if (t->n >= atomic_load_explicit(&t->max, memory_order_relaxed) ||
        !(s = mesh_calloc(1, sizeof(*s) + len + 1))) {
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        s = NULL;
        goto out;
    }
    s->hash = h;
    s->tcp = tcp;
    s->len = len;
    memcpy(s->labels, labels, len);
    s->next = t->slots[h & (t->n_slots - 1)];
    t->slots[h & (t->n_slots - 1)] = s;
    if (++t->n > t->n_slots)
        grow(t);
out:
    pthread_mutex_unlock(&t->lock);
    return s;
}

static void observe(struct mesh_istio_hist *h, double v, uint64_t sum_add)
{
    size_t b = 0;
    while (b < MESH_ISTIO_BUCKETS && v > mesh_istio_bounds[b])
        b++;
    atomic_fetch_add_explicit(&h->b[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, sum_add, memory_order_relaxed);
}

void mesh_istio_record_http(struct mesh_istio_series *s, uint64_t duration_us, uint64_t req_bytes,
                            uint64_t res_bytes)
{
    atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
    observe(&s->duration, (double)duration_us / 1000.0, duration_us);
    observe(&s->req_bytes, (double)req_bytes, req_bytes);
    observe(&s->res_bytes, (double)res_bytes, res_bytes);
}

static double load(const atomic_ullong *v)
{
    return (double)atomic_load_explicit(v, memory_order_relaxed);
}

static void line(struct mesh_buf *b, const char *name, const struct mesh_istio_series *s,
                 const char *le, double v)
{
    mesh_buf_appendf(b, "%s{%.*s", name, (int)s->len, s->labels);
    if (le)
        mesh_buf_appendf(b, ",le=\"%s\"", le);
    mesh_buf_appendf(b, "} %.17g\n", v);
}

static void hist(struct mesh_buf *b, const char *name, const char *help, struct mesh_istio_table *t,
                 size_t offset, double sum_scale)
{
    char n[96];
    mesh_prom_family(b, name, "histogram", help);
    for (size_t i = 0; i < t->n_slots; i++) {
        for (const struct mesh_istio_series *s = t->slots[i]; s; s = s->next) {
            if (s->tcp)
                continue;
            const struct mesh_istio_hist *h =
                (const struct mesh_istio_hist *)((const char *)s + offset);
            double cum = 0;
            char le[32];
            snprintf(n, sizeof(n), "%s_bucket", name);
            for (int k = 0; k <= MESH_ISTIO_BUCKETS; k++) {
                cum += load(&h->b[k]);
                if (k < MESH_ISTIO_BUCKETS)
                    snprintf(le, sizeof(le), "%g", mesh_istio_bounds[k]);
                else
                    snprintf(le, sizeof(le), "+Inf");
                line(b, n, s, le, cum);
            }
            snprintf(n, sizeof(n), "%s_sum", name);
            line(b, n, s, NULL, load(&h->sum) / sum_scale);
            snprintf(n, sizeof(n), "%s_count", name);
            line(b, n, s, NULL, cum);
        }
    }
}

void mesh_istio_metrics(struct mesh_istio_table *t, struct mesh_buf *b)
{
    static const struct {
        const char *name, *help;
        bool tcp;
        size_t offset;
    } counters[] = {
        {"istio_requests_total", "Requests answered, by Istio's standard labels.", false,
         offsetof(struct mesh_istio_series, requests)},
        {"istio_tcp_sent_bytes_total", "Bytes sent to the client on TCP connections.", true,
         offsetof(struct mesh_istio_series, sent)},
        {"istio_tcp_received_bytes_total", "Bytes received from the client on TCP connections.",
         true, offsetof(struct mesh_istio_series, received)},
        {"istio_tcp_connections_opened_total", "TCP connections opened.", true,
         offsetof(struct mesh_istio_series, opened)},
        {"istio_tcp_connections_closed_total", "TCP connections closed.", true,
         offsetof(struct mesh_istio_series, closed)},
    };
    if (!t->ready)
        return;
    pthread_mutex_lock(&t->lock);
    for (size_t c = 0; c < sizeof(counters) / sizeof(counters[0]); c++) {
        mesh_prom_family(b, counters[c].name, "counter", counters[c].help);
        for (size_t i = 0; i < t->n_slots; i++) {
            for (const struct mesh_istio_series *s = t->slots[i]; s; s = s->next) {
                if (s->tcp == counters[c].tcp)
                    line(b, counters[c].name, s, NULL,
                         load((const atomic_ullong *)((const char *)s + counters[c].offset)));
            }
        }
    }
    hist(b, "istio_request_duration_milliseconds", "Request durations, in milliseconds.", t,
         offsetof(struct mesh_istio_series, duration), 1000.0);
    hist(b, "istio_request_bytes", "Request sizes, in bytes (the body as received).", t,
         offsetof(struct mesh_istio_series, req_bytes), 1.0);
    hist(b, "istio_response_bytes", "Response sizes, in bytes (the body as sent).", t,
         offsetof(struct mesh_istio_series, res_bytes), 1.0);
    size_t n = t->n;
    pthread_mutex_unlock(&t->lock);
    mesh_prom_family(b, "mesh_metrics_series", "gauge",
                     "Series of the istio_* metrics (label sets seen).");
    mesh_prom_sample(b, "mesh_metrics_series", NULL, (double)n);
    mesh_prom_family(b, "mesh_metrics_series_max", "gauge",
                     "The cap on series of the istio_* metrics (telemetry.max_series).");
    mesh_prom_sample(b, "mesh_metrics_series_max", NULL, (double)atomic_load(&t->max));
    mesh_prom_family(b, "mesh_metrics_series_dropped_total", "counter",
                     "Observations not counted because their label set would pass the cap.");
    mesh_prom_sample(b, "mesh_metrics_series_dropped_total", NULL, load(&t->dropped));
}
