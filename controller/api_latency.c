/*
 * The API's latency histogram and answers by route (see api_latency.h). The routes are those
 * mesh_api_handle() dispatches; a path it does not know counts as "other", so no client can
 * make a series by asking for a new path.
 */
#include "controller/api_latency.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/macros.h"
#include "common/prom.h"

enum route {
    R_BUNDLE,
    R_ENROLL,
    R_SIGN,
    R_REPORT,
    R_LEAVE,
    R_CATALOG,
    R_CATALOG_WATCH,
    R_RESOURCES,
    R_RESOURCES_WATCH,
    R_RESOURCE,
    R_TOKENS,
    R_TOKEN,
    R_AGENTS,
    R_AGENT_RESET,
    R_AGENT_SERVICES,
    R_CERTS,
    R_GRAPH,
    R_UI,
    R_HEALTHZ,
    R_METRICS,
    R_OTHER,
};

static const char *const route_names[MESH_API_ROUTES] = {
    [R_BUNDLE] = "/v1/bundle",
    [R_ENROLL] = "/v1/enroll",
    [R_SIGN] = "/v1/sign",
    [R_REPORT] = "/v1/report",
    [R_LEAVE] = "/v1/leave",
    [R_CATALOG] = "/v1/catalog",
    [R_CATALOG_WATCH] = "/v1/catalog?index",
    [R_RESOURCES] = "/v1/resources",
    [R_RESOURCES_WATCH] = "/v1/resources?index",
    [R_RESOURCE] = "/v1/resources/{kind}/{namespace}/{name}",
    [R_TOKENS] = "/v1/tokens",
    [R_TOKEN] = "/v1/tokens/{id}",
    [R_AGENTS] = "/v1/agents",
    [R_AGENT_RESET] = "/v1/agents/{node}/reset",
    [R_AGENT_SERVICES] = "/v1/agents/{node}/services",
    [R_CERTS] = "/v1/certs",
    [R_GRAPH] = "/v1/graph",
    [R_UI] = "/ui/{file}",
    [R_HEALTHZ] = "/healthz",
    [R_METRICS] = "/metrics",
    [R_OTHER] = "other",
};

static const char *const method_names[MESH_API_METHODS] = {"GET", "HEAD",   "POST",
                                                           "PUT", "DELETE", "other"};

/* Bounds in seconds: a signing takes milliseconds, a blocking query up to its 30 s wait. */
static const double bounds[MESH_API_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,   1,      2.5,   5,    10,    30,   60};

static bool is(const char *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

static bool starts(const char *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    return n > k && memcmp(p, s, k) == 0;
}

static bool ends(const char *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    return n > k && memcmp(p + n - k, s, k) == 0;
}

/* Whether the query names an index (a blocking query). */
static bool has_index(const struct mesh_http_request *r)
{
    const char *q = r->query, *end = r->query + r->query_len;
    while (q && q < end) {
        if ((size_t)(end - q) >= 6 && memcmp(q, "index=", 6) == 0)
            return true;
        const char *amp = memchr(q, '&', (size_t)(end - q));
        q = amp ? amp + 1 : NULL;
    }
    return false;
}

/* The number of '/' in p[0..n). */
static size_t slashes(const char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] == '/';
    return k;
}

static enum route route_of(const struct mesh_http_request *r)
{
    const char *p = r->path;
    size_t n = r->path_len;
    static const struct {
        const char *path;
        enum route route;
    } exact[] = {
        {"/v1/bundle", R_BUNDLE}, {"/v1/enroll", R_ENROLL}, {"/v1/sign", R_SIGN},
        {"/v1/report", R_REPORT}, {"/v1/leave", R_LEAVE},   {"/v1/tokens", R_TOKENS},
        {"/v1/agents", R_AGENTS}, {"/v1/certs", R_CERTS},   {"/healthz", R_HEALTHZ},
        {"/metrics", R_METRICS},  {"/v1/graph", R_GRAPH},
    };
    for (size_t i = 0; i < MESH_ARRAY_SIZE(exact); i++)
        if (is(p, n, exact[i].path))
            return exact[i].route;
    if (is(p, n, "/ui") || starts(p, n, "/ui/"))
        return R_UI;
    if (is(p, n, "/v1/catalog"))
        return has_index(r) ? R_CATALOG_WATCH : R_CATALOG;
    if (is(p, n, "/v1/resources"))
        return has_index(r) ? R_RESOURCES_WATCH : R_RESOURCES;
    if (starts(p, n, "/v1/resources/") && slashes(p, n) == 5)
        return R_RESOURCE;
    if (starts(p, n, "/v1/tokens/") && slashes(p, n) == 3)
        return R_TOKEN;
    if (starts(p, n, "/v1/agents/") && slashes(p, n) == 4) {
        if (ends(p, n, "/reset"))
            return R_AGENT_RESET;
        if (ends(p, n, "/services"))
            return R_AGENT_SERVICES;
    }
    return R_OTHER;
}

const char *mesh_api_route(const struct mesh_http_request *r)
{
    return route_names[route_of(r)];
}

static size_t method_of(const struct mesh_http_request *r)
{
    for (size_t i = 0; i < MESH_API_METHODS - 1; i++)
        if (is(r->method, r->method_len, method_names[i]))
            return i;
    return MESH_API_METHODS - 1;
}

void mesh_api_latency_observe(struct mesh_api_latency *l, const struct mesh_http_request *r,
                              int status, uint64_t ns)
{
    struct mesh_api_route_stats *s = &l->s[route_of(r)][method_of(r)];
    double secs = (double)ns / 1e9;
    size_t b = 0;
    while (b < MESH_API_BUCKETS && secs > bounds[b])
        b++;
    if (b < MESH_API_BUCKETS)
        s->buckets[b]++;
    s->count++;
    s->sum_ns += ns;
    if (status >= 100 && status <= 599)
        s->classes[status / 100 - 1]++;
}

void mesh_api_latency_write(const struct mesh_api_latency *l, struct mesh_buf *b)
{
    static const char hist[] = "mesh_controller_http_request_duration_seconds";
    static const char answers[] = "mesh_controller_http_responses_total";
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    mesh_prom_family(b, hist, "histogram",
                     "Time from a complete request to its answer, by route (blocking queries "
                     "wait up to their `wait`).");
    for (size_t r = 0; r < MESH_API_ROUTES; r++) {
        for (size_t m = 0; m < MESH_API_METHODS; m++) {
            const struct mesh_api_route_stats *s = &l->s[r][m];
            if (!s->count)
                continue;
            char le[32];
            struct mesh_prom_label labels[] = {{"endpoint", route_names[r]},
                                               {"method", method_names[m]},
                                               {"le", le},
                                               {NULL, NULL}};
            uint64_t cum = 0;
            for (size_t i = 0; i < MESH_API_BUCKETS; i++) {
                cum += s->buckets[i];
                snprintf(le, sizeof(le), "%g", bounds[i]);
                mesh_prom_sample(b, "mesh_controller_http_request_duration_seconds_bucket", labels,
                                 (double)cum);
            }
            snprintf(le, sizeof(le), "+Inf");
            mesh_prom_sample(b, "mesh_controller_http_request_duration_seconds_bucket", labels,
                             (double)s->count);
            labels[2] = (struct mesh_prom_label){NULL, NULL};
            mesh_prom_sample(b, "mesh_controller_http_request_duration_seconds_sum", labels,
                             (double)s->sum_ns / 1e9);
            mesh_prom_sample(b, "mesh_controller_http_request_duration_seconds_count", labels,
                             (double)s->count);
        }
    }
    mesh_prom_family(b, answers, "counter", "Answers of the API by route and status class.");
    for (size_t r = 0; r < MESH_API_ROUTES; r++) {
        for (size_t m = 0; m < MESH_API_METHODS; m++) {
            for (size_t c = 0; c < 5; c++) {
                uint64_t v = l->s[r][m].classes[c];
                if (!v)
                    continue;
                const struct mesh_prom_label labels[] = {{"endpoint", route_names[r]},
                                                         {"method", method_names[m]},
                                                         {"code", classes[c]},
                                                         {NULL, NULL}};
                mesh_prom_sample(b, answers, labels, (double)v);
            }
        }
    }
}
