#define MESH_LOG_MODULE "admin"

#include "agent/admin.h"

#include <errno.h>
#include <string.h>

#include "agent/agent.h"
#include "catalog/endpoint_json.h"
#include "common/alloc.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/prom.h"

struct mesh_admin {
    struct mesh_http_server *http;
    struct mesh_agent *agent;
    void (*done)(void *data);
    void *done_data;
};

static const struct mesh_http_field no_cache[] = {{"Cache-Control", "no-store"}, {NULL, NULL}};

static void respond_json(struct mesh_http_exchange *ex, int status, json_t *doc)
{
    mesh_http_respond_json(ex, status, doc);
}

static void respond_error(struct mesh_http_exchange *ex, int status, const char *msg)
{
    respond_json(ex, status, json_pack("{s:s}", "error", msg));
}

static void respond_text(struct mesh_http_exchange *ex, int status, const char *text)
{
    mesh_http_respond(ex, status, "text/plain; charset=utf-8", no_cache, text, strlen(text));
}

/* Streams one merged service as JSON (large catalogs never become a JSON tree). */
static void write_service(struct mesh_buf *b, const struct mesh_service *s)
{
    mesh_buf_append_str(b, "{\"namespace\":");
    mesh_json_write_str(b, s->namespace);
    mesh_buf_append_str(b, ",\"name\":");
    mesh_json_write_str(b, s->name);
    if (s->identity) {
        /* The ID callers want from its endpoints; without it, the default sa/<name>. */
        mesh_buf_append_str(b, ",\"identity\":");
        mesh_json_write_str(b, s->identity);
    }
    mesh_buf_appendf(b, ",\"protocol\":\"%s\",\"merged\":%s,\"registries\":[",
                     mesh_protocol_names[s->protocol], s->merged ? "true" : "false");
    for (size_t i = 0; i < s->n_sources; i++) {
        if (i)
            mesh_buf_append_str(b, ",");
        mesh_json_write_str(b, s->sources[i]);
    }
    mesh_buf_append_str(b, "],\"endpoints\":[");
    for (size_t i = 0; i < s->n_endpoints; i++) {
        if (i)
            mesh_buf_append_str(b, ",");
        mesh_endpoint_write_json_from(b, s, &s->endpoints[i]);
    }
    mesh_buf_append_str(b, "]}");
}

static void respond_buf(struct mesh_http_exchange *ex, struct mesh_buf *b)
{
    mesh_buf_append_str(b, "\n");
    if (b->err)
        respond_error(ex, 500, "out of memory");
    else
        mesh_http_respond(ex, 200, "application/json", no_cache, b->data, b->len);
    mesh_buf_done(b);
}

static void handle_services(struct mesh_admin *ad, struct mesh_http_exchange *ex,
                            const struct mesh_http_request *req)
{
    const struct mesh_catalog *cat = mesh_agent_catalog(ad->agent);
    const char *rest = req->path + strlen("/v1/services");
    size_t rest_len = req->path_len - strlen("/v1/services");
    struct mesh_buf b;
    char ns[64] = "";
    mesh_buf_init(&b, 256 * 1024 * 1024);
    if (rest_len > 1) {
        /* /v1/services/<namespace>/<name> */
        char path[160], *slash;
        if (rest_len >= sizeof(path) || rest[0] != '/') {
            respond_error(ex, 404, "no such service");
            return;
        }
        memcpy(path, rest + 1, rest_len - 1);
        path[rest_len - 1] = '\0';
        slash = strchr(path, '/');
        if (!slash) {
            respond_error(ex, 404, "expected /v1/services/<namespace>/<name>");
            return;
        }
        *slash = '\0';
        const struct mesh_service *s = mesh_catalog_get(cat, path, slash + 1);
        if (!s) {
            respond_error(ex, 404, "no such service");
            return;
        }
        write_service(&b, s);
        respond_buf(ex, &b);
        return;
    }
    int r = mesh_http_query_get(req->query, req->query_len, "namespace", ns, sizeof(ns));
    if (r == -EINVAL || r == -ENOBUFS) {
        respond_error(ex, 400, "invalid 'namespace' query parameter");
        return;
    }
    struct mesh_service **list;
    size_t n;
    if (mesh_catalog_list(cat, &list, &n) < 0) {
        respond_error(ex, 500, "out of memory");
        return;
    }
    mesh_buf_appendf(&b, "{\"version\":%llu,\"services\":[",
                     (unsigned long long)mesh_catalog_version(cat));
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (ns[0] && strcmp(ns, list[i]->namespace) != 0)
            continue;
        if (!first)
            mesh_buf_append_str(&b, ",");
        first = false;
        write_service(&b, list[i]);
    }
    mesh_free(list);
    mesh_buf_append_str(&b, "]}");
    respond_buf(ex, &b);
}

static void handle_metrics(struct mesh_admin *ad, struct mesh_http_exchange *ex)
{
    struct mesh_buf b;
    mesh_buf_init(&b, 64 * 1024 * 1024);
    mesh_agent_metrics(ad->agent, &b);
    struct mesh_http_server_stats st;
    mesh_http_server_get_stats(ad->http, &st);
    mesh_prom_family(&b, "mesh_admin_requests_total", "counter", "Requests to the admin API.");
    mesh_prom_sample(&b, "mesh_admin_requests_total", NULL, (double)st.requests);
    mesh_prom_family(&b, "mesh_admin_bad_requests_total", "counter",
                     "Requests to the admin API refused as malformed or over limits.");
    mesh_prom_sample(&b, "mesh_admin_bad_requests_total", NULL, (double)st.bad_requests);
    mesh_prom_family(&b, "mesh_admin_connections_active", "gauge",
                     "Connections open to the admin API.");
    mesh_prom_sample(&b, "mesh_admin_connections_active", NULL, (double)st.connections_active);
    mesh_prom_family(&b, "mesh_admin_connections_evicted_total", "counter",
                     "Admin connections only waiting for a request, closed to make room for "
                     "a new one.");
    mesh_prom_sample(&b, "mesh_admin_connections_evicted_total", NULL,
                     (double)st.connections_evicted);
    mesh_prom_family(&b, "mesh_admin_connections_refused_total", "counter",
                     "Admin connections refused: every slot busy with a request.");
    mesh_prom_sample(&b, "mesh_admin_connections_refused_total", NULL,
                     (double)st.connections_refused);
    if (b.err) {
        mesh_buf_done(&b);
        respond_text(ex, 500, "out of memory\n");
        return;
    }
    mesh_http_respond(ex, 200, MESH_PROM_CONTENT_TYPE, no_cache, b.data, b.len);
    mesh_buf_done(&b);
}

static bool path_is(const struct mesh_http_request *req, const char *p)
{
    size_t n = strlen(p);
    return req->path_len == n && memcmp(req->path, p, n) == 0;
}

static bool path_under(const struct mesh_http_request *req, const char *p)
{
    size_t n = strlen(p);
    return req->path_len >= n && memcmp(req->path, p, n) == 0 &&
           (req->path_len == n || req->path[n] == '/');
}

static void on_request(struct mesh_http_exchange *ex, void *data)
{
    struct mesh_admin *ad = data;
    const struct mesh_http_request *req = mesh_http_exchange_request(ex);
    bool get = (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0) ||
               (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0);
    if (!get) {
        static const struct mesh_http_field allow[] = {{"Allow", "GET, HEAD"}, {NULL, NULL}};
        static const char msg[] = "{\"error\": \"the admin API is read-only: GET or HEAD\"}\n";
        mesh_http_respond(ex, 405, "application/json", allow, msg, sizeof(msg) - 1);
        return;
    }
    if (path_is(req, "/healthz")) {
        respond_text(ex, 200, "ok\n");
    } else if (path_is(req, "/readyz")) {
        char why[512], body[600];
        if (mesh_agent_is_ready(ad->agent, why, sizeof(why))) {
            respond_text(ex, 200, "ready\n");
        } else {
            snprintf(body, sizeof(body), "not ready: %s\n", why);
            respond_text(ex, 503, body);
        }
    } else if (path_is(req, "/metrics")) {
        handle_metrics(ad, ex);
    } else if (path_under(req, "/v1/services")) {
        handle_services(ad, ex, req);
    } else if (path_is(req, "/v1/local")) {
        respond_json(ex, 200, json_pack("{s:o}", "services", mesh_agent_local_json(ad->agent)));
    } else if (path_is(req, "/v1/proxy")) {
        respond_json(ex, 200, mesh_agent_proxy_json(ad->agent));
    } else if (path_is(req, "/v1/identity")) {
        respond_json(ex, 200, mesh_agent_identity_json(ad->agent));
    } else if (path_is(req, "/v1/config")) {
        respond_json(ex, 200, mesh_agent_config_to_json(mesh_agent_config(ad->agent)));
    } else if (path_is(req, "/v1/status")) {
        respond_json(ex, 200, mesh_agent_status_json(ad->agent));
    } else {
        respond_error(ex, 404,
                      "not found; see /v1/status, /v1/services, /v1/local, /v1/proxy, "
                      "/v1/identity, /v1/config, "
                      "/metrics, /healthz, /readyz");
    }
}

int mesh_admin_start(uv_loop_t *loop, const struct mesh_addr *addr, struct mesh_agent *agent,
                     struct mesh_admin **ret)
{
    /*
     * The data plane's deadlines and limits. Probes and scrapers all come from 127.0.0.1,
     * so one client may use every slot; a flood of idle or slow connections cannot lock
     * them out, as a new connection takes the slot of the oldest one only waiting.
     */
    const struct mesh_agent_http_config *http = &mesh_agent_config(agent)->proxy.http;
    struct mesh_http_server_options opts;
    mesh_http_server_options_default(&opts);
    opts.max_body = 0; /* read-only: no request bodies */
    opts.max_connections = 64;
    opts.max_connections_per_client = 64;
    opts.header_timeout_ms = http->header_timeout_ms;
    opts.idle_timeout_ms = http->idle_timeout_ms;
    opts.limits.max_head = (size_t)http->max_header_bytes;
    opts.limits.max_headers = (size_t)http->max_headers;
    opts.limits.max_uri = (size_t)http->max_uri_length;
    struct mesh_admin *ad = mesh_calloc(1, sizeof(*ad));
    if (!ad)
        return -ENOMEM;
    ad->agent = agent;
    int r = mesh_http_server_new(loop, &opts, on_request, ad, &ad->http);
    if (r < 0) {
        mesh_free(ad);
        return r;
    }
    r = mesh_http_server_listen(ad->http, addr);
    if (r < 0) {
        mesh_admin_close(ad, 0, NULL, NULL);
        return r;
    }
    char a[MESH_ADDR_STRLEN];
    struct mesh_addr bound;
    if (mesh_http_server_address(ad->http, &bound) == 0)
        mesh_log_info("admin API listening on %s", mesh_addr_format(&bound, a, sizeof(a)));
    *ret = ad;
    return 0;
}

static void on_closed(void *data)
{
    struct mesh_admin *ad = data;
    void (*done)(void *) = ad->done;
    void *done_data = ad->done_data;
    mesh_free(ad);
    if (done)
        done(done_data);
}

void mesh_admin_close(struct mesh_admin *ad, uint64_t deadline_ms, void (*done)(void *data),
                      void *data)
{
    ad->done = done;
    ad->done_data = data;
    mesh_http_server_close(ad->http, deadline_ms, on_closed, ad);
}

void mesh_admin_abort(struct mesh_admin *ad)
{
    mesh_http_server_abort(ad->http);
}
