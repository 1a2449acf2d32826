#define MESH_LOG_MODULE "api"

/*
 * PUT /v1/agents/<node>/services {"services": [patterns]} (admin): the service identities
 * an enrolled node may get from now on, replacing what its join token allowed. Checked as
 * a token's patterns are (controller/tokens.h): workloads only, never a node's identity,
 * the controller's or the whole trust domain. The node record is written before the answer,
 * and POST /v1/sign reads it on every request, so the next signing request sees the change.
 * Certificates already issued stay valid until they expire.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "controller/api.h"
#include "controller/tokens.h"

void mesh_api_node_services(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node)
{
    json_t *rec = mesh_store_name_valid(node) ? mesh_store_get(api->store, "agents", node) : NULL;
    if (!rec) {
        mesh_api_fail(api, ex, 404, "no such node (meshctl status lists the enrolled ones)");
        return;
    }
    json_t *req = mesh_api_body_json(ex);
    json_t *services = json_object_get(req, "services");
    char err[600];
    if (!json_is_object(req) || json_object_size(req) != 1 || !services) {
        json_decref(req);
        mesh_api_fail(api, ex, 400, "expected {\"services\": [SPIFFE ID patterns]}");
        return;
    }
    if (mesh_token_services_check(services, api->ca->trust_domain, "allowed to a node", err,
                                  sizeof(err)) < 0) {
        json_decref(req);
        mesh_api_fail(api, ex, 400, err);
        return;
    }
    json_t *next = json_deep_copy(rec);
    int r = next ? json_object_set(next, "services", services) : -1;
    if (r == 0)
        r = json_object_set_new(next, "services_set_at", json_integer((json_int_t)time(NULL)));
    if (r == 0)
        r = mesh_store_put(api->store, "agents", node, next);
    json_decref(next);
    if (r < 0) {
        json_decref(req);
        mesh_api_fail(api, ex, 500, "cannot record the node's services");
        return;
    }
    char *list = json_dumps(services, JSON_COMPACT);
    mesh_log_notice("node %s may now have the service identities %s", node, list ? list : "?");
    mesh_free(list);
    mesh_http_respond_json(ex, 200, json_pack("{s:s, s:O}", "node", node, "services", services));
    json_decref(req);
}
