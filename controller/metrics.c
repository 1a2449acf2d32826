#define MESH_LOG_MODULE "api"

/*
 * GET /metrics: the controller's counters in the Prometheus text format, for anyone who
 * can reach the API. Counts only: no node names, no addresses, nothing an attacker could
 * learn the mesh from.
 */
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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
    {"mesh_controller_certificates_failed_total",
     "Certificates asked for (enroll, sign) and not issued, by reason.", "reason",
     "invalid_request", C(cert_failures[MESH_API_CERT_INVALID_REQUEST])},
    {"mesh_controller_certificates_failed_total", NULL, "reason", "unauthenticated",
     C(cert_failures[MESH_API_CERT_UNAUTHENTICATED])},
    {"mesh_controller_certificates_failed_total", NULL, "reason", "not_allowed",
     C(cert_failures[MESH_API_CERT_NOT_ALLOWED])},
    {"mesh_controller_certificates_failed_total", NULL, "reason", "invalid_csr",
     C(cert_failures[MESH_API_CERT_INVALID_CSR])},
    {"mesh_controller_certificates_failed_total", NULL, "reason", "internal",
     C(cert_failures[MESH_API_CERT_INTERNAL])},
    {"mesh_controller_join_token_uses_total", "Join token uses spent: nodes enrolled.", NULL, NULL,
     C(token_uses)},
    {"mesh_controller_join_tokens_created_total", "Join tokens created.", NULL, NULL,
     C(tokens_created)},
    {"mesh_controller_join_tokens_revoked_total", "Join tokens revoked.", NULL, NULL,
     C(tokens_revoked)},
    {"mesh_controller_traffic_dropped_total",
     "Reports whose traffic was not kept for the service graph: the cap on edges kept across "
     "nodes was reached.",
     NULL, NULL, C(traffic_dropped)},
};

/* mesh_controller_agents{state}: the enrolled nodes by the state GET /v1/agents shows. */
static void agents(struct mesh_api *api, struct mesh_buf *b)
{
    static const char name[] = "mesh_controller_agents";
    static const char *const states[] = {"synced", "stale", "offline"};
    uint64_t n[3];
    mesh_api_agent_states(api, n);
    mesh_prom_family(b, name, "gauge",
                     "Enrolled nodes by state: synced (reported lately, current config), stale "
                     "(late or behind), offline (no report for 60 s).");
    for (size_t i = 0; i < 3; i++) {
        const struct mesh_prom_label labels[] = {{"state", states[i]}, {NULL, NULL}};
        mesh_prom_sample(b, name, labels, (double)n[i]);
    }
}

/* mesh_controller_join_tokens{state}: the stored tokens by what a use of them would meet. */
static void tokens(struct mesh_api *api, struct mesh_buf *b)
{
    static const char name[] = "mesh_controller_join_tokens";
    static const char *const states[] = {"usable", "used_up", "expired", "revoked"};
    uint64_t n[4] = {0};
    json_int_t now = (json_int_t)time(NULL);
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    const struct mesh_hmap *m = mesh_store_list(api->store, "tokens");
    while (m && mesh_hmap_next(m, &i, &e)) {
        const json_t *t = mesh_store_entry_object(e);
        if (json_is_true(json_object_get(t, "revoked")))
            n[3]++;
        else if (json_integer_value(json_object_get(t, "expires_at")) <= now)
            n[2]++;
        else if (json_integer_value(json_object_get(t, "uses_left")) <= 0)
            n[1]++;
        else
            n[0]++;
    }
    mesh_prom_family(b, name, "gauge", "Join tokens stored, by state.");
    for (i = 0; i < 4; i++) {
        const struct mesh_prom_label labels[] = {{"state", states[i]}, {NULL, NULL}};
        mesh_prom_sample(b, name, labels, (double)n[i]);
    }
}

/* Resources: changes by kind and operation, and those stored by kind. */
static void resources(struct mesh_api *api, struct mesh_buf *b)
{
    static const char changes[] = "mesh_controller_resource_changes_total";
    static const char stored[] = "mesh_controller_resources";
    uint64_t n[MESH_RESOURCE_KINDS] = {0};
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    const struct mesh_hmap *m = mesh_store_list(api->store, "resources");
    while (m && mesh_hmap_next(m, &i, &e)) {
        /* Store names are "<kind lower-cased>.<namespace>.<name>". */
        for (int k = 0; k < MESH_RESOURCE_KINDS; k++) {
            size_t len = strlen(mesh_resource_kind_names[k]);
            if (strncasecmp(e->key, mesh_resource_kind_names[k], len) == 0 && e->key[len] == '.')
                n[k]++;
        }
    }
    mesh_prom_family(b, changes, "counter",
                     "Resources written through the API: applied (PUT) or deleted, by kind.");
    for (int k = 0; k < MESH_RESOURCE_KINDS; k++) {
        const struct mesh_prom_label applied[] = {
            {"kind", mesh_resource_kind_names[k]}, {"operation", "apply"}, {NULL, NULL}};
        const struct mesh_prom_label deleted[] = {
            {"kind", mesh_resource_kind_names[k]}, {"operation", "delete"}, {NULL, NULL}};
        mesh_prom_sample(b, changes, applied, (double)api->n.resources_applied[k]);
        mesh_prom_sample(b, changes, deleted, (double)api->n.resources_deleted[k]);
    }
    mesh_prom_family(b, stored, "gauge", "Resources stored, by kind.");
    for (int k = 0; k < MESH_RESOURCE_KINDS; k++) {
        const struct mesh_prom_label labels[] = {{"kind", mesh_resource_kind_names[k]},
                                                 {NULL, NULL}};
        mesh_prom_sample(b, stored, labels, (double)n[k]);
    }
    mesh_prom_family(b, "mesh_controller_resources_index", "gauge",
                     "The resources' index: it grows with each change.");
    mesh_prom_sample(b, "mesh_controller_resources_index", NULL, (double)api->res_index);
}

void mesh_api_answered(const struct mesh_http_exchange *ex, int status, uint64_t elapsed_ns,
                       void *data)
{
    struct mesh_api *api = data;
    mesh_api_latency_observe(&api->latency, mesh_http_exchange_request(ex), status, elapsed_ns);
}

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
    agents(api, &b);
    tokens(api, &b);
    resources(api, &b);
    mesh_api_latency_write(&api->latency, &b);
    if (b.err)
        mesh_http_respond(ex, 500, "text/plain", no_cache, "out of memory\n", 14);
    else
        mesh_http_respond(ex, 200, MESH_PROM_CONTENT_TYPE, no_cache, b.data, b.len);
    mesh_buf_done(&b);
}
