#define MESH_LOG_MODULE "api"

/*
 * The console (docs/controller.md#console): GET /ui/ and its files, embedded in the binary
 * at build time, served to anyone: they hold no data. What they show comes from the admin
 * API (GET /v1/graph, /v1/agents, /v1/certs, /v1/resources), called by the page with the
 * admin token its user gives. The headers keep the page to itself: every script, style
 * and call from this origin only, no inline script, no framing, no sniffing.
 */
#include <string.h>

#include "controller/api.h"
#include "controller/console-int.h"

#define OFFLINE_MS 60000 /* as the agents' OFFLINE state (agents_api.c) */

static const char csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self'; connect-src 'self'; object-src 'none'; "
                          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

void mesh_api_console(struct mesh_api *api, struct mesh_http_exchange *ex,
                      const struct mesh_http_request *r)
{
    bool get = (r->method_len == 3 && memcmp(r->method, "GET", 3) == 0) ||
               (r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0);
    if (!get) {
        mesh_api_fail(api, ex, 405, "the console is read with GET");
        return;
    }
    if (r->path_len == 3) { /* "/ui": its files are relative to "/ui/" */
        const struct mesh_http_field extra[] = {{"Location", "/ui/"}, {NULL, NULL}};
        mesh_http_respond(ex, 308, "text/plain", extra, "/ui/\n", 5);
        return;
    }
    const char *path = r->path + 3;
    size_t len = r->path_len - 3;
    if (len == 1 && path[0] == '/') {
        path = "/index.html";
        len = strlen(path);
    }
    const struct mesh_embedded_file *f = mesh_console_files;
    while (f->path && !(strlen(f->path) == len && memcmp(f->path, path, len) == 0))
        f++;
    if (!f->path) {
        mesh_api_fail(api, ex, 404, "no such file in the console");
        return;
    }
    /* Revalidated at each load (a new binary may bring new files), then not sent again. */
    const struct mesh_http_header *inm =
        mesh_http_find_header(r->headers, r->num_headers, "if-none-match");
    bool same = inm && inm->value_len == strlen(f->etag) &&
                memcmp(inm->value, f->etag, inm->value_len) == 0;
    const struct mesh_http_field extra[] = {{"Content-Security-Policy", csp},
                                            {"X-Content-Type-Options", "nosniff"},
                                            {"X-Frame-Options", "DENY"},
                                            {"Referrer-Policy", "no-referrer"},
                                            {"Cache-Control", "no-cache"},
                                            {"ETag", f->etag},
                                            {NULL, NULL}};
    if (same)
        mesh_http_respond(ex, 304, NULL, extra, NULL, 0);
    else
        mesh_http_respond(ex, 200, f->type, extra, f->data, f->len);
}

void mesh_api_graph(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    uint64_t interval = mesh_ctl_catalog_report_interval(api->catalog);
    json_t *g = mesh_ctl_graph(&api->traffic, uv_now(api->loop), 3 * interval, OFFLINE_MS);
    if (g)
        json_object_set_new(g, "report_interval_ms", json_integer((json_int_t)interval));
    mesh_http_respond_json(ex, 200, g);
}
