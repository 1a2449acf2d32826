#define MESH_LOG_MODULE "api"

/*
 * Agents: their reports and the membership answered to them.
 *
 *   POST /v1/report   an enrolled node, with its certificate, every few seconds:
 *                     {"version", "address", "inbound_port", "services", "config_index",
 *                      "certificates": [{"id", "not_after"}], "counters": {...},
 *                      "members_tag"}
 *                     -> {"members": [{"node", "address", "inbound_port"}], "members_tag",
 *                         "config_index", "catalog_index", "report_interval_ms"}
 *                     "members" is left out when the report's "members_tag" names the
 *                     current membership: a mesh of N nodes would otherwise send N
 *                     members to each of them every interval, changed or not.
 *                     Every agent sends a member's traffic over mTLS to the address and
 *                     port it reported, so a node reports only an address it owns: the one
 *                     it connects from (also when it says none), or one its node record
 *                     allows ("addresses", from its join token). Anything else is refused
 *                     (403) and counted; joins, moves and leaves are logged and counted.
 *                     Its "services" (namespace, name, protocol, port, labels, identity,
 *                     health) are checked and go to the mesh's registry (catalog.c); its
 *                     "traffic" (optional: older agents send none) is checked and kept
 *                     for the service graph (traffic.c).
 *   POST /v1/leave    the node stops cleanly: its services leave the registry at once.
 *   GET  /v1/catalog  admin or node: the registry, a blocking query (catalog.h).
 *   GET  /v1/agents   admin: every enrolled node with its state:
 *                     SYNCED   reported within 15 s and applies the current config index
 *                     STALE    reported within 60 s, but late or behind the config
 *                     OFFLINE  not heard of for 60 s (or never)
 *
 * Reports are kept in memory: after a controller restart, agents are OFFLINE until their
 * next report, seconds later.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/labels.h"
#include "common/log.h"
#include "controller/addresses.h"
#include "controller/api.h"

#define SYNCED_S 15
#define OFFLINE_S 60

struct report {
    json_t *doc;
    uint64_t seen_ms; /* loop time */
    bool left;        /* its leaving was noted */
    char node[];
};

void mesh_api_agents_close(struct mesh_api *api)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&api->reports, &i, &e)) {
        struct report *r = e->value;
        json_decref(r->doc);
        mesh_free(r);
    }
    mesh_hmap_done(&api->reports);
    mesh_free(api->members_text);
    api->members_text = NULL;
}

static const char *state_of(struct mesh_api *api, const struct report *r, uint64_t now)
{
    if (!r || now - r->seen_ms > OFFLINE_S * 1000)
        return "OFFLINE";
    json_int_t index = json_integer_value(json_object_get(r->doc, "config_index"));
    if (now - r->seen_ms <= SYNCED_S * 1000 && (uint64_t)index == api->res_index)
        return "SYNCED";
    return "STALE";
}

/* "ip:port" or "[ip]:port" of a report. */
static void member_addr(const json_t *doc, char *out, size_t n)
{
    const char *ip = json_string_value(json_object_get(doc, "address"));
    json_int_t port = json_integer_value(json_object_get(doc, "inbound_port"));
    snprintf(out, n, strchr(ip ? ip : "", ':') ? "[%s]:%lld" : "%s:%lld", ip ? ip : "?",
             (long long)port);
}

/* Nodes not heard of for OFFLINE_S leave the membership (noted once each). */
static void note_leavers(struct mesh_api *api, uint64_t now)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&api->reports, &i, &e)) {
        struct report *r = e->value;
        if (now - r->seen_ms > OFFLINE_S * 1000 && !r->left) {
            r->left = true;
            api->n.members_left++;
            api->members_dirty = true;
            mesh_ctl_traffic_forget(&api->traffic, r->node);
            mesh_log_notice("node %s left the mesh: no report for %d s", r->node, OFFLINE_S);
        }
    }
}

/*
 * The membership as JSON text, built once per change of it: every node's report is answered
 * with it, so a mesh of N nodes would otherwise build N members N times per interval.
 */
static const char *members_text(struct mesh_api *api)
{
    if (api->members_text && !api->members_dirty)
        return api->members_text;
    json_t *a = json_array();
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (a && mesh_hmap_next(&api->reports, &i, &e)) {
        struct report *r = e->value;
        json_t *addr = json_object_get(r->doc, "address");
        json_t *port = json_object_get(r->doc, "inbound_port");
        if (r->left || !json_is_string(addr) || !json_is_integer(port))
            continue;
        json_array_append_new(a, json_pack("{s:s, s:O, s:O}", "node", r->node, "address", addr,
                                           "inbound_port", port));
    }
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    if (!text)
        return NULL;
    mesh_free(api->members_text);
    api->members_text = text;
    api->members_dirty = false;
    /* A new tag per version, and per start: the tag of an earlier run never names this one. */
    if (!api->members_start) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        api->members_start = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    snprintf(api->members_tag, sizeof(api->members_tag), "%llx-%llu",
             (unsigned long long)api->members_start, (unsigned long long)++api->members_version);
    return text;
}

/*
 * Checks the address in a report (sets the one the node connects from when it says none):
 * true, or false once answered (400 or 403) with doc freed.
 */
static bool own_address(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node,
                        json_t *doc)
{
    struct mesh_ipport peer, said;
    char peer_ip[64], msg[600];
    const char *addr = json_string_value(json_object_get(doc, "address"));
    if (mesh_ctl_peer_ip(mesh_http_exchange_peer_addr(ex), &peer) < 0) {
        json_decref(doc);
        mesh_api_fail(api, ex, 400, "reports come over TCP");
        return false;
    }
    mesh_ipport_ip(&peer, peer_ip, sizeof(peer_ip));
    if (!addr || !addr[0]) {
        json_object_set_new(doc, "address", json_string(peer_ip));
        return true;
    }
    if (mesh_ipport_from_ip(addr, 0, &said) < 0) {
        json_decref(doc); /* its text is not repeated: it could be anything */
        mesh_api_fail(api, ex, 400,
                      "address: expected an IP address (or \"\" for the one the "
                      "node connects from)");
        return false;
    }
    json_t *allowed = json_object_get(mesh_store_get(api->store, "agents", node), "addresses");
    if (mesh_ipport_equal(&said, &peer) || mesh_ctl_addresses_allow(allowed, &said)) {
        char canonical[64];
        json_object_set_new(doc, "address", json_string(mesh_ipport_ip(&said, canonical, 64)));
        return true;
    }
    char *list = allowed ? json_dumps(allowed, JSON_COMPACT) : NULL;
    snprintf(msg, sizeof(msg),
             "node %s may not report address %.64s: it connects from %s, and its node record "
             "allows %s",
             node, addr, peer_ip, list ? list : "no other addresses");
    mesh_free(list);
    json_decref(doc);
    api->n.reports_refused++;
    mesh_api_fail(api, ex, 403, msg);
    return false;
}

void mesh_api_member_forget(struct mesh_api *api, const char *node)
{
    if (api->catalog)
        mesh_ctl_catalog_leave(api->catalog, node);
    mesh_ctl_traffic_forget(&api->traffic, node);
    struct report *r = mesh_hmap_remove(&api->reports, node);
    if (!r)
        return;
    if (!r->left) {
        api->n.members_left++;
        mesh_log_notice("node %s left the mesh: reset", node);
    }
    json_decref(r->doc);
    mesh_free(r);
    api->members_dirty = true;
}

void mesh_api_report(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    char buf[2100];
    const char *node = mesh_api_node(api, ex, buf, sizeof(buf));
    if (!node)
        return;
    size_t len = 0;
    const char *body = mesh_http_exchange_body(ex, &len);
    json_t *doc = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *port = json_object_get(doc, "inbound_port");
    json_t *addr = json_object_get(doc, "address");
    if (!json_is_object(doc) ||
        (port && (!json_is_integer(port) || json_integer_value(port) < 0 ||
                  json_integer_value(port) > 65535)) ||
        (addr && !json_is_string(addr))) {
        json_decref(doc);
        mesh_api_fail(api, ex, 400, "expected a report object (inbound_port 0-65535, address)");
        return;
    }
    if (!own_address(api, ex, node, doc))
        return; /* answered, doc freed */
    char held[48];
    const char *tag = json_string_value(json_object_get(doc, "members_tag"));
    snprintf(held, sizeof(held), "%s", tag ? tag : "");
    json_object_del(doc, "members_tag");
    char why[600] = "";
    json_t *patterns = json_object_get(mesh_store_get(api->store, "agents", node), "services");
    json_t *zone = json_object_get(doc, "zone");
    const char *bad = NULL;
    if (zone && !json_is_string(zone))
        snprintf(why, sizeof(why), "zone: expected a string");
    else if (json_string_length(zone) && !mesh_label_value_valid(json_string_value(zone), &bad))
        snprintf(why, sizeof(why), "zone: %s", bad ? bad : "expected a label value");
    struct mesh_ctl_edge *edges = NULL;
    size_t n_edges = 0;
    if (why[0] ||
        !mesh_ctl_catalog_check(api->catalog, node, patterns, json_object_get(doc, "services"), why,
                                sizeof(why)) ||
        !mesh_ctl_traffic_check(json_object_get(doc, "traffic"), &edges, &n_edges, why,
                                sizeof(why))) {
        json_decref(doc);
        mesh_api_fail(api, ex, 400, why);
        return;
    }
    /* Kept apart from the report (traffic.h): the last few of them, for rates; only the
     * node's own side of each call, which is all it can have counted. */
    json_object_del(doc, "traffic");
    size_t own = mesh_ctl_traffic_own(edges, n_edges, json_object_get(doc, "services"));
    if (own < n_edges)
        mesh_log_debug("node %s reported %zu edges of services it does not run: left out", node,
                       n_edges - own);
    n_edges = own;
    int kept = mesh_ctl_traffic_note(&api->traffic, node, edges, n_edges,
                                     json_object_get(doc, "services"), uv_now(api->loop));
    if (kept < 0) {
        json_decref(doc);
        mesh_api_fail(api, ex, 500, "out of memory");
        return;
    }
    if (kept > 0 && api->n.traffic_dropped++ % 1000 == 0)
        mesh_log_warn("the traffic of node %s is not kept for the service graph: %zu edges are "
                      "kept, the most there may be (%llu reports left out so far)",
                      node, api->traffic.edges, (unsigned long long)api->n.traffic_dropped);
    if (mesh_ctl_catalog_report(api->catalog, node,
                                json_string_value(json_object_get(doc, "address")),
                                (int)json_integer_value(json_object_get(doc, "inbound_port")),
                                json_string_value(zone), json_object_get(doc, "services")) < 0) {
        json_decref(doc);
        mesh_api_fail(api, ex, 500, "out of memory");
        return;
    }
    json_object_set_new(doc, "node", json_string(node));
    uint64_t now = uv_now(api->loop);
    struct report *r = mesh_hmap_get(&api->reports, node);
    char was[80] = "", is[80];
    if (r && !r->left && now - r->seen_ms <= OFFLINE_S * 1000)
        member_addr(r->doc, was, sizeof(was));
    if (!r) {
        size_t n = strlen(node) + 1;
        r = mesh_calloc(1, sizeof(*r) + n);
        if (!r || (memcpy(r->node, node, n), mesh_hmap_put(&api->reports, r->node, r) < 0)) {
            mesh_free(r);
            json_decref(doc);
            mesh_api_fail(api, ex, 500, "out of memory");
            return;
        }
    }
    json_decref(r->doc);
    r->doc = doc;
    r->seen_ms = now;
    api->members_dirty |= r->left;
    r->left = false;
    member_addr(doc, is, sizeof(is));
    if (strcmp(was, is) != 0)
        api->members_dirty = true;
    if (!was[0]) {
        api->n.members_joined++;
        mesh_log_notice("node %s joined the mesh at %s", node, is);
    } else if (strcmp(was, is) != 0) {
        api->n.members_moved++;
        mesh_log_notice("node %s moved from %s to %s", node, was, is);
    }
    note_leavers(api, now);
    const char *list = members_text(api);
    bool same = list && strcmp(held, api->members_tag) == 0; /* it has them */
    if (same)
        api->n.reports_members_unchanged++;
    else if (list)
        api->n.reports_members_sent++;
    char tail[300];
    int n = snprintf(tail, sizeof(tail),
                     "%s\"members_tag\":\"%s\",\"config_index\":%llu,\"catalog_index\":%llu,"
                     "\"report_interval_ms\":%llu}",
                     same ? "" : ",", api->members_tag, (unsigned long long)api->res_index,
                     (unsigned long long)mesh_ctl_catalog_index(api->catalog),
                     (unsigned long long)mesh_ctl_catalog_report_interval(api->catalog));
    const char *head = same ? "{" : "{\"members\":";
    size_t head_len = strlen(head), list_len = list && !same ? strlen(list) : 0;
    char *answer = list ? mesh_malloc(head_len + list_len + (size_t)n + 1) : NULL;
    if (!answer) {
        mesh_api_fail(api, ex, 500, "out of memory");
        return;
    }
    memcpy(answer, head, head_len);
    memcpy(answer + head_len, list, list_len);
    memcpy(answer + head_len + list_len, tail, (size_t)n + 1);
    const struct mesh_http_field extra[] = {{"Cache-Control", "no-store"}, {NULL, NULL}};
    mesh_http_respond(ex, 200, "application/json", extra, answer, head_len + list_len + (size_t)n);
    mesh_free(answer);
}

void mesh_api_leave(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    char buf[2100];
    const char *node = mesh_api_node(api, ex, buf, sizeof(buf));
    if (!node)
        return;
    mesh_ctl_catalog_leave(api->catalog, node);
    mesh_ctl_traffic_forget(&api->traffic, node);
    struct report *r = mesh_hmap_get(&api->reports, node);
    if (r && !r->left) {
        r->left = true;
        api->members_dirty = true;
        api->n.members_left++;
        mesh_log_notice("node %s left the mesh: it stopped", node);
    }
    mesh_http_respond_json(ex, 200, json_pack("{s:b}", "left", 1));
}

void mesh_api_catalog(struct mesh_api *api, struct mesh_http_exchange *ex,
                      const struct mesh_http_request *r)
{
    char buf[2100];
    bool admin = mesh_http_find_header(r->headers, r->num_headers, "authorization");
    if (admin ? !mesh_api_admin(api, ex) : !mesh_api_node(api, ex, buf, sizeof(buf)))
        return; /* answered */
    mesh_ctl_catalog_get(api->catalog, ex, r->query, r->query_len);
}

void mesh_api_agent_states(struct mesh_api *api, uint64_t ret[3])
{
    uint64_t now = uv_now(api->loop);
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    const struct mesh_hmap *m = mesh_store_list(api->store, "agents");
    ret[0] = ret[1] = ret[2] = 0;
    while (m && mesh_hmap_next(m, &i, &e)) {
        const char *node = json_string_value(json_object_get(mesh_store_entry_object(e), "node"));
        const char *state = state_of(api, node ? mesh_hmap_get(&api->reports, node) : NULL, now);
        static const char *const states[] = {"SYNCED", "STALE", "OFFLINE"};
        for (size_t k = 0; k < 3; k++)
            ret[k] += strcmp(state, states[k]) == 0;
    }
}

void mesh_api_agents(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    uint64_t now = uv_now(api->loop);
    json_t *list = json_array();
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    const struct mesh_hmap *m = mesh_store_list(api->store, "agents");
    while (list && m && mesh_hmap_next(m, &i, &e)) {
        json_t *o = json_deep_copy(mesh_store_entry_object(e));
        const char *node = json_string_value(json_object_get(o, "node"));
        const struct report *r = node ? mesh_hmap_get(&api->reports, node) : NULL;
        json_object_set_new(o, "state", json_string(state_of(api, r, now)));
        if (r) {
            json_object_set_new(o, "last_report_s",
                                json_integer((json_int_t)((now - r->seen_ms) / 1000)));
            static const char *const keep[] = {"version",      "address",      "inbound_port",
                                               "config_index", "certificates", "counters"};
            for (size_t k = 0; k < sizeof(keep) / sizeof(keep[0]); k++) {
                json_t *v = json_object_get(r->doc, keep[k]);
                if (v)
                    json_object_set(o, keep[k], v);
            }
            json_object_set(o, "local_services", json_object_get(r->doc, "services"));
            json_int_t oldest = 0;
            size_t j;
            json_t *c;
            json_array_foreach(json_object_get(r->doc, "certificates"), j, c)
            {
                json_int_t t = json_integer_value(json_object_get(c, "not_after"));
                if (t > 0 && (!oldest || t < oldest))
                    oldest = t;
            }
            if (oldest)
                json_object_set_new(o, "oldest_cert_expiry", json_integer(oldest));
        }
        json_array_append_new(list, o);
    }
    mesh_http_respond_json(ex, 200,
                           json_pack("{s:o, s:I}", "agents", list ? list : json_array(),
                                     "config_index", (json_int_t)api->res_index));
}
