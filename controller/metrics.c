#define MESH_LOG_MODULE "api"

/*
 * GET /metrics: the controller's counters in the Prometheus text format, for anyone who
 * can reach the API. Counts only: no node names, no addresses, nothing an attacker could
 * learn the mesh from.
 */
#include <stddef.h>

#include "common/prom.h"
#include "controller/api.h"

struct counter {
    const char *name;
    const char *help;
    const char *label; /* NULL: no label */
    const char *value;
    size_t offset; /* into struct mesh_api_counters */
};

#define C(field) offsetof(struct mesh_api_counters, field)

static const struct counter counters[] = {
    {"mesh_controller_certificates_issued_total", "Certificates issued.", NULL, NULL, C(issued)},
    {"mesh_controller_requests_refused_total", "Requests answered 401 or 403.", NULL, NULL,
     C(refused)},
    {"mesh_controller_enrollments_total", "Nodes enrolled with a join token.", NULL, NULL,
     C(enrollments)},
    {"mesh_controller_auth_failures_total",
     "Failed credentials: bad join tokens and enrollments as a node without its proof "
     "(enroll), wrong admin tokens (admin).",
     "endpoint", "enroll", C(enroll_failures)},
    {"mesh_controller_auth_failures_total", NULL, "endpoint", "admin", C(admin_failures)},
    {"mesh_controller_auth_rate_limited_total",
     "Attempts answered 429 unchecked, their source having failed too often.", NULL, NULL,
     C(rate_limited)},
    {"mesh_controller_reports_refused_total", "Reports refused: an address the node does not own.",
     "reason", "address", C(reports_refused)},
    {"mesh_controller_membership_changes_total",
     "Changes of the mesh membership: nodes that joined, moved (address or port), or left.",
     "change", "joined", C(members_joined)},
    {"mesh_controller_membership_changes_total", NULL, "change", "moved", C(members_moved)},
    {"mesh_controller_membership_changes_total", NULL, "change", "left", C(members_left)},
    {"mesh_controller_report_answers_total",
     "Reports answered: with the membership (sent), or without it, the node holding the "
     "current one (unchanged).",
     "members", "sent", C(reports_members_sent)},
    {"mesh_controller_report_answers_total", NULL, "members", "unchanged",
     C(reports_members_unchanged)},
};

static void sample(struct mesh_buf *b, const char *name, const char *type, const char *help,
                   double v)
{
    mesh_prom_family(b, name, type, help);
    mesh_prom_sample(b, name, NULL, v);
}

void mesh_api_metrics(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    static const struct mesh_http_field no_cache[] = {{"Cache-Control", "no-store"}, {0}};
    struct mesh_buf b;
    mesh_buf_init(&b, 1024 * 1024);
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        const struct counter *c = &counters[i];
        const struct mesh_prom_label labels[] = {{c->label, c->value}, {NULL, NULL}};
        uint64_t v = *(const uint64_t *)(const void *)((const char *)&api->n + c->offset);
        if (c->help)
            mesh_prom_family(&b, c->name, "counter", c->help);
        mesh_prom_sample(&b, c->name, c->label ? labels : NULL, (double)v);
    }
    struct mesh_http_server_stats st = {0};
    if (api->server)
        mesh_http_server_get_stats(api->server, &st);
    sample(&b, "mesh_controller_http_connections_active", "gauge", "Connections open to the API.",
           (double)st.connections_active);
    sample(&b, "mesh_controller_http_connections_accepted_total", "counter",
           "Connections accepted.", (double)st.connections_accepted);
    sample(&b, "mesh_controller_http_connections_refused_total", "counter",
           "Connections refused: over the limits with none waiting to make room.",
           (double)st.connections_refused);
    sample(&b, "mesh_controller_http_connections_evicted_total", "counter",
           "Connections only waiting for a request, closed to make room for a new one.",
           (double)st.connections_evicted);
    sample(&b, "mesh_controller_http_requests_total", "counter", "Requests handled.",
           (double)st.requests);
    sample(&b, "mesh_controller_http_bad_requests_total", "counter",
           "Requests refused as malformed, too large or too slow.", (double)st.bad_requests);
    sample(&b, "mesh_controller_http_requests_cut_total", "counter",
           "Requests not answered by the connection's total deadline, answered 503.",
           (double)st.requests_cut);
    uint64_t endpoints = 0, lapsed = 0, parked = 0, changes = 0;
    if (api->catalog)
        mesh_ctl_catalog_stats(api->catalog, &endpoints, &lapsed, &parked, &changes);
    sample(&b, "mesh_controller_catalog_endpoints", "gauge",
           "Endpoints in the mesh's registry (the nodes' local services).", (double)endpoints);
    sample(&b, "mesh_controller_catalog_nodes_lapsed", "gauge",
           "Nodes past their grace without a report: their endpoints are unhealthy.",
           (double)lapsed);
    sample(&b, "mesh_controller_catalog_watches", "gauge",
           "Blocking queries on the registry waiting for a change.", (double)parked);
    sample(&b, "mesh_controller_catalog_changes_total", "counter",
           "Changes of the mesh's registry (each a new index).", (double)changes);
    if (b.err)
        mesh_http_respond(ex, 500, "text/plain", no_cache, "out of memory\n", 14);
    else
        mesh_http_respond(ex, 200, MESH_PROM_CONTENT_TYPE, no_cache, b.data, b.len);
    mesh_buf_done(&b);
}
