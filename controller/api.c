#define MESH_LOG_MODULE "api"

#include "controller/api.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/spiffe.h"
#include "controller/tokens.h"

static bool path_is(const struct mesh_http_request *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static bool method_is(const struct mesh_http_request *r, const char *m)
{
    return r->method_len == strlen(m) && memcmp(r->method, m, r->method_len) == 0;
}

void mesh_api_init(struct mesh_api *api)
{
    mesh_hmap_init(&api->reports);
    mesh_auth_limit_init(&api->limit);
    mesh_ctl_traffic_init(&api->traffic);
}

void mesh_api_done(struct mesh_api *api)
{
    mesh_api_agents_close(api);
    mesh_auth_limit_done(&api->limit);
    mesh_ctl_traffic_done(&api->traffic);
}

void mesh_api_fail(struct mesh_api *api, struct mesh_http_exchange *ex, int status, const char *why)
{
    if (status == 401 || status == 403)
        api->n.refused++;
    mesh_log_warn("%s: %d %s", mesh_http_exchange_peer(ex), status, why);
    mesh_http_respond_json(ex, status, json_pack("{s:s}", "error", why));
}

void mesh_api_cert_failed(struct mesh_api *api, struct mesh_http_exchange *ex,
                          enum mesh_api_cert_failure reason, int status, const char *why)
{
    api->n.cert_failures[reason]++;
    mesh_api_fail(api, ex, status, why);
}

static bool is_admin(struct mesh_api *api, const struct mesh_http_request *r)
{
    const struct mesh_http_header *h =
        mesh_http_find_header(r->headers, r->num_headers, "authorization");
    static const char bearer[] = "Bearer ";
    size_t n = sizeof(bearer) - 1;
    return h && h->value_len == n + 64 && strncasecmp(h->value, bearer, n) == 0 &&
           CRYPTO_memcmp(h->value + n, api->admin_token, 64) == 0;
}

static void fail_admin(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    mesh_api_fail(api, ex, 401, "an admin token is required (Authorization: Bearer ...)");
}

bool mesh_api_may_try(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    const char *client = mesh_http_exchange_client(ex);
    unsigned wait = mesh_auth_limit_wait(&api->limit, client, uv_now(api->loop));
    if (!wait)
        return true;
    api->n.rate_limited++;
    char secs[16], body[200];
    snprintf(secs, sizeof(secs), "%u", wait);
    int n = snprintf(body, sizeof(body),
                     "{\"error\": \"too many failed credentials from %s: try again in %u s\"}\n",
                     client, wait);
    const struct mesh_http_field extra[] = {
        {"Retry-After", secs}, {"Cache-Control", "no-store"}, {NULL, NULL}};
    mesh_log_debug("%s: 429, %u s to wait", mesh_http_exchange_peer(ex), wait);
    mesh_http_respond(ex, 429, "application/json", extra, body, (size_t)n);
    return false;
}

void mesh_api_auth_failed(struct mesh_api *api, struct mesh_http_exchange *ex, uint64_t *counter)
{
    (*counter)++;
    mesh_auth_limit_failed(&api->limit, mesh_http_exchange_client(ex), uv_now(api->loop));
}

bool mesh_api_admin(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    const struct mesh_http_request *r = mesh_http_exchange_request(ex);
    if (!mesh_http_find_header(r->headers, r->num_headers, "authorization")) {
        fail_admin(api, ex);
        return false;
    }
    if (!mesh_api_may_try(api, ex))
        return false;
    if (!is_admin(api, r)) {
        mesh_api_auth_failed(api, ex, &api->n.admin_failures);
        mesh_api_fail(api, ex, 401,
                      "an admin token is required: this one is wrong (Authorization: Bearer ...)");
        return false;
    }
    mesh_auth_limit_passed(&api->limit, mesh_http_exchange_client(ex));
    return true;
}

json_t *mesh_api_body_json(struct mesh_http_exchange *ex)
{
    size_t len = 0;
    const char *body = mesh_http_exchange_body(ex, &len);
    return body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
}

/* The name of an id in store names (identities hold ':' and '/'). */
static void id_key(const char *id, char out[33])
{
    unsigned char md[32];
    unsigned int n = 0;
    static const char digits[] = "0123456789abcdef";
    EVP_Digest(id, strlen(id), md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[32] = '\0';
}

char *mesh_api_sign(struct mesh_api *api, const char *csr, const char *id, char *err,
                    size_t err_size, char serial[80], int64_t *not_after)
{
    return mesh_ca_sign(api->ca, csr, strlen(csr), id, err, err_size, serial, 80, not_after);
}

void mesh_api_issued(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node,
                     const char *id, char *pem, const char *serial, int64_t not_after)
{
    char key[33];
    id_key(id, key);
    json_t *rec =
        json_pack("{s:s, s:s, s:s, s:I, s:I}", "identity", id, "node", node, "serial", serial,
                  "not_after", (json_int_t)not_after, "issued_at", (json_int_t)time(NULL));
    if (!rec || mesh_store_put(api->store, "certs", key, rec) < 0)
        mesh_log_error("cannot record the certificate of %s", id);
    json_decref(rec);
    api->n.issued++;
    mesh_log_info("issued %s to node %s (serial %s)", id, node, serial);
    mesh_http_respond_json(ex, 200,
                           json_pack("{s:s, s:s, s:I}", "certificate", pem, "bundle",
                                     api->ca->bundle_pem, "not_after", (json_int_t)not_after));
    mesh_free(pem);
}

static void sign(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    char buf[MESH_SPIFFE_ID_MAX + 1];
    const char *node = mesh_api_node(api, ex, buf, sizeof(buf));
    if (!node) {
        api->n.cert_failures[MESH_API_CERT_UNAUTHENTICATED]++; /* answered */
        return;
    }
    json_t *req = mesh_api_body_json(ex);
    const char *id = NULL, *csr = NULL;
    if (!req || json_unpack(req, "{s:s, s:s}", "identity", &id, "csr", &csr) < 0) {
        json_decref(req);
        mesh_api_cert_failed(api, ex, MESH_API_CERT_INVALID_REQUEST, 400,
                             "expected {\"identity\", \"csr\"}");
        return;
    }
    const char *why = NULL;
    if (!mesh_spiffe_id_valid(id, strlen(id), api->ca->trust_domain, &why)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "identity: %s", why);
        json_decref(req);
        mesh_api_cert_failed(api, ex, MESH_API_CERT_INVALID_REQUEST, 400, msg);
        return;
    }
    /*
     * Its own node identity (a renewal), or one its join token allowed; never another
     * node's or the controller's, whatever the patterns of an older token said.
     */
    char own[600], nodes[300], ctl[300];
    mesh_spiffe_node_id(own, sizeof(own), api->ca->trust_domain, node);
    snprintf(nodes, sizeof(nodes), "spiffe://%s/node/", api->ca->trust_domain);
    snprintf(ctl, sizeof(ctl), "spiffe://%s/mesh-controller", api->ca->trust_domain);
    bool renewal = strcmp(own, id) == 0, allowed = renewal;
    bool reserved = strncmp(id, nodes, strlen(nodes)) == 0 || strcmp(id, ctl) == 0;
    json_t *services = json_object_get(mesh_store_get(api->store, "agents", node), "services");
    size_t i;
    json_t *v;
    /* Patterns written for the older form of a service's ID (.../ns/<ns>/svc/<name>) allow
     * the current one (.../ns/<ns>/sa/<name>): the transition in docs/identity.md. */
    char now[MESH_SPIFFE_ID_MAX + 1];
    json_array_foreach(services, i, v)
    {
        const char *p = json_string_value(v);
        if (!allowed && !reserved && p)
            allowed = mesh_pattern_match(p, id) ||
                      (strstr(p, "/svc/") && mesh_spiffe_canonical(p, now, sizeof(now)) &&
                       mesh_pattern_match(now, id));
    }
    if (!allowed) {
        char msg[800];
        snprintf(msg, sizeof(msg),
                 "node %s may not have identity %s: not among the services "
                 "allowed to it (its join token's, or meshctl node set-services)",
                 node, id);
        json_decref(req);
        mesh_api_cert_failed(api, ex, MESH_API_CERT_NOT_ALLOWED, 403, msg);
        return;
    }
    char nodename[256], err[256], serial[80];
    int64_t not_after = 0;
    snprintf(nodename, sizeof(nodename), "%s", node);
    char *pem = mesh_api_sign(api, csr, id, err, sizeof(err), serial, &not_after);
    if (!pem) {
        json_decref(req);
        mesh_api_cert_failed(api, ex, MESH_API_CERT_INVALID_CSR, 400, err);
        return;
    }
    if (renewal)
        mesh_api_node_renewed(api, ex, nodename, serial);
    mesh_api_issued(api, ex, nodename, id, pem, serial, not_after);
    json_decref(req);
}

static json_t *list(struct mesh_api *api, const char *kind, const char *drop)
{
    json_t *a = json_array();
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    const struct mesh_hmap *m = mesh_store_list(api->store, kind);
    while (a && m && mesh_hmap_next(m, &i, &e)) {
        json_t *o = json_deep_copy(mesh_store_entry_object(e));
        if (o && drop)
            json_object_del(o, drop);
        json_array_append_new(a, o);
    }
    return a;
}

static void tokens(struct mesh_api *api, struct mesh_http_exchange *ex,
                   const struct mesh_http_request *r)
{
    if (method_is(r, "GET") && path_is(r, "/v1/tokens")) {
        mesh_http_respond_json(ex, 200, json_pack("{s:o}", "tokens", list(api, "tokens", "hash")));
        return;
    }
    if (method_is(r, "POST") && path_is(r, "/v1/tokens")) {
        json_t *req = mesh_api_body_json(ex);
        char err[300], *text = NULL;
        json_t *rec =
            mesh_token_create(api->store, api->ca->trust_domain, req, &text, err, sizeof(err));
        json_decref(req);
        if (!rec) {
            mesh_api_fail(api, ex, 400, err);
            return;
        }
        api->n.tokens_created++;
        mesh_log_info("created join token %s", json_string_value(json_object_get(rec, "id")));
        json_object_set_new(rec, "token", json_string(text));
        OPENSSL_cleanse(text, strlen(text));
        mesh_free(text);
        mesh_http_respond_json(ex, 201, rec);
        return;
    }
    static const char prefix[] = "/v1/tokens/";
    if (method_is(r, "DELETE") && r->path_len > sizeof(prefix) - 1 &&
        memcmp(r->path, prefix, sizeof(prefix) - 1) == 0) {
        char id[64];
        size_t n = r->path_len - (sizeof(prefix) - 1);
        snprintf(id, sizeof(id), "%.*s", (int)(n < 63 ? n : 63), r->path + sizeof(prefix) - 1);
        json_t *rec = mesh_store_name_valid(id) ? mesh_store_get(api->store, "tokens", id) : NULL;
        if (!rec) {
            mesh_api_fail(api, ex, 404, "no such token");
            return;
        }
        json_t *next = json_deep_copy(rec);
        json_object_set_new(next, "revoked", json_true());
        int err = mesh_store_put(api->store, "tokens", id, next);
        json_decref(next);
        if (err < 0) {
            mesh_api_fail(api, ex, 500, "cannot record the revocation");
            return;
        }
        api->n.tokens_revoked++;
        mesh_log_info("revoked join token %s", id);
        mesh_http_respond_json(ex, 200, json_pack("{s:s, s:b}", "id", id, "revoked", 1));
        return;
    }
    mesh_api_fail(api, ex, 405, "tokens: GET, POST, or DELETE /v1/tokens/<id>");
}

/* <method> /v1/agents/<node><suffix>: the node's name in `node`. */
static bool is_node_call(const struct mesh_http_request *r, const char *method, const char *suffix,
                         char *node, size_t size)
{
    static const char prefix[] = "/v1/agents/";
    size_t pl = sizeof(prefix) - 1, sl = strlen(suffix);
    if (!method_is(r, method) || r->path_len <= pl + sl || r->path_len - pl - sl >= size ||
        memcmp(r->path, prefix, pl) != 0 || memcmp(r->path + r->path_len - sl, suffix, sl) != 0)
        return false;
    snprintf(node, size, "%.*s", (int)(r->path_len - pl - sl), r->path + pl);
    return true;
}

void mesh_api_handle(struct mesh_http_exchange *ex, void *data)
{
    struct mesh_api *api = data;
    const struct mesh_http_request *r = mesh_http_exchange_request(ex);
    char node[200];
    if (path_is(r, "/v1/bundle") && method_is(r, "GET")) {
        mesh_http_respond(ex, 200, "application/x-pem-file", NULL, api->ca->bundle_pem,
                          api->ca->bundle_len);
    } else if (path_is(r, "/v1/enroll") && method_is(r, "POST")) {
        mesh_api_enroll(api, ex);
    } else if (path_is(r, "/v1/sign") && method_is(r, "POST")) {
        sign(api, ex);
    } else if (path_is(r, "/v1/report") && method_is(r, "POST")) {
        mesh_api_report(api, ex);
    } else if (path_is(r, "/v1/leave") && method_is(r, "POST")) {
        mesh_api_leave(api, ex);
    } else if (path_is(r, "/v1/catalog") && method_is(r, "GET")) {
        mesh_api_catalog(api, ex, r);
    } else if (path_is(r, "/healthz")) {
        mesh_http_respond(ex, 200, "text/plain", NULL, "ok\n", 3);
    } else if (path_is(r, "/metrics") && method_is(r, "GET")) {
        mesh_api_metrics(api, ex);
    } else if (r->path_len >= 10 && memcmp(r->path, "/v1/tokens", 10) == 0) {
        if (mesh_api_admin(api, ex))
            tokens(api, ex, r);
    } else if (r->path_len >= 13 && memcmp(r->path, "/v1/resources", 13) == 0) {
        mesh_api_resources(api, ex, r);
    } else if ((path_is(r, "/v1/certs") || path_is(r, "/v1/agents")) && method_is(r, "GET")) {
        if (!mesh_api_admin(api, ex))
            return;
        if (path_is(r, "/v1/certs"))
            mesh_http_respond_json(ex, 200, json_pack("{s:o}", "certs", list(api, "certs", NULL)));
        else
            mesh_api_agents(api, ex);
    } else if (path_is(r, "/v1/graph") && method_is(r, "GET")) {
        if (mesh_api_admin(api, ex))
            mesh_api_graph(api, ex);
    } else if (r->path_len >= 3 && memcmp(r->path, "/ui", 3) == 0) {
        mesh_api_console(api, ex, r);
    } else if (is_node_call(r, "POST", "/reset", node, sizeof(node))) {
        if (mesh_api_admin(api, ex))
            mesh_api_node_reset(api, ex, node);
    } else if (is_node_call(r, "PUT", "/services", node, sizeof(node))) {
        if (mesh_api_admin(api, ex))
            mesh_api_node_services(api, ex, node);
    } else {
        mesh_api_fail(api, ex, 404,
                      "not found; see /v1/bundle, /v1/enroll, /v1/sign, /v1/tokens, "
                      "/v1/certs, /v1/agents, /v1/graph, /ui/, /metrics");
    }
}
