#define MESH_LOG_MODULE "api"

/*
 * Agents: their reports and the membership answered to them.
 *
 *   POST /v1/report   an enrolled node, with its certificate, every few seconds:
 *                     {"version", "address", "inbound_port", "services", "config_index",
 *                      "certificates": [{"id", "not_after"}], "counters": {...}}
 *                     -> {"members": [{"node", "address", "inbound_port"}]}
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
#include "common/log.h"
#include "controller/api.h"

#define SYNCED_S 15
#define OFFLINE_S 60

struct report {
    json_t *doc;
    uint64_t seen_ms; /* loop time */
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

static json_t *members(struct mesh_api *api, uint64_t now)
{
    json_t *a = json_array();
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (a && mesh_hmap_next(&api->reports, &i, &e)) {
        const struct report *r = e->value;
        json_t *addr = json_object_get(r->doc, "address");
        json_t *port = json_object_get(r->doc, "inbound_port");
        if (now - r->seen_ms > OFFLINE_S * 1000 || !json_is_string(addr) || !json_is_integer(port))
            continue;
        json_array_append_new(a, json_pack("{s:s, s:O, s:O}", "node", r->node, "address", addr,
                                           "inbound_port", port));
    }
    return a;
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
    /* Without an address of its own, the node is where it connects from. */
    if (!addr || !json_string_value(addr)[0]) {
        char ip[64];
        snprintf(ip, sizeof(ip), "%s", mesh_http_exchange_peer(ex));
        char *colon = strrchr(ip, ':');
        if (colon)
            *colon = '\0';
        size_t n = strlen(ip);
        const char *start = ip;
        if (n > 2 && ip[0] == '[' && ip[n - 1] == ']') {
            ip[n - 1] = '\0';
            start = ip + 1;
        }
        json_object_set_new(doc, "address", json_string(start));
    }
    json_object_set_new(doc, "node", json_string(node));
    uint64_t now = uv_now(api->loop);
    struct report *r = mesh_hmap_get(&api->reports, node);
    if (!r) {
        size_t n = strlen(node) + 1;
        r = mesh_calloc(1, sizeof(*r) + n);
        if (!r || (memcpy(r->node, node, n), mesh_hmap_put(&api->reports, r->node, r) < 0)) {
            mesh_free(r);
            json_decref(doc);
            mesh_api_fail(api, ex, 500, "out of memory");
            return;
        }
        mesh_log_info("node %s reports", node);
    }
    json_decref(r->doc);
    r->doc = doc;
    r->seen_ms = now;
    mesh_http_respond_json(ex, 200,
                           json_pack("{s:o, s:I}", "members", members(api, now), "config_index",
                                     (json_int_t)api->res_index));
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
