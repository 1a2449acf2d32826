#define MESH_LOG_MODULE "api"

/*
 * /v1/resources: the policy resources agents apply (DestinationPolicy, Route,
 * AuthorizationPolicy), checked with the agent's own validators, versioned by an index.
 *
 *   GET    /v1/resources[?index=N&wait=30s]   all of them ({"index", "resources"}); with an
 *          index equal to the current one the answer waits for a change (at most `wait`,
 *          default 30 s, at most 10 min), as Consul's blocking queries do
 *   GET    /v1/resources/<Kind>/<namespace>/<name>
 *   PUT    /v1/resources                     one resource or {"resources": [...]} (admin)
 *   DELETE /v1/resources/<Kind>/<namespace>/<name>   (admin)
 *
 * Reads are for admins and enrolled nodes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/names.h"
#include "common/strutil.h"
#include "controller/api.h"
#include "resources/resource.h"

#define WAIT_DEFAULT_MS 30000
#define WAIT_MAX_MS 600000

struct resource_waiter {
    struct resource_waiter *prev, *next;
    struct mesh_api *api;
    struct mesh_http_exchange *ex; /* NULL once answered or gone */
    uv_timer_t timer;
};

/* The store name of a resource: "<kind lower-cased>.<namespace>.<name>" (labels have no
 * dots, so it reads back). */
static int store_name(const char *kind, const char *ns, const char *name, char *out, size_t n)
{
    int k = -1;
    for (int i = 0; i < MESH_RESOURCE_KINDS; i++) {
        if (strcasecmp(kind, mesh_resource_kind_names[i]) == 0)
            k = i;
    }
    if (k < 0 || !mesh_name_is_dns_label(ns) || !mesh_name_is_dns_label(name))
        return -1;
    snprintf(out, n, "%s.%s.%s", mesh_resource_kind_names[k], ns, name);
    for (char *p = out; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    return 0;
}

/*
 * The index never goes backwards, across restarts too: a deletion leaves no resource
 * carrying its index, so the highest index handed out is also kept on its own (store kind
 * "state", object "index"), written before the change it covers is answered.
 */
void mesh_api_resources_init(struct mesh_api *api)
{
    api->res_index = 1;
    json_int_t mark = json_integer_value(
        json_object_get(mesh_store_get(api->store, "state", "index"), "resources"));
    if (mark > 0)
        api->res_index = (uint64_t)mark;
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    const struct mesh_hmap *m = mesh_store_list(api->store, "resources");
    while (m && mesh_hmap_next(m, &i, &e)) {
        json_int_t v = json_integer_value(json_object_get(mesh_store_entry_object(e), "index"));
        if (v > 0 && (uint64_t)v > api->res_index)
            api->res_index = (uint64_t)v;
    }
}

/* Records that indexes up to `to` are handed out. Returns 0 or a negative errno. */
static int index_mark(struct mesh_api *api, uint64_t to)
{
    json_t *rec = json_pack("{s:I}", "resources", (json_int_t)to);
    int r = rec ? mesh_store_put(api->store, "state", "index", rec) : -ENOMEM;
    json_decref(rec);
    return r;
}

/* {"index", "resources": [...]} with each resource as it was applied. */
static json_t *all(struct mesh_api *api)
{
    json_t *list = json_array();
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    const struct mesh_hmap *m = mesh_store_list(api->store, "resources");
    while (list && m && mesh_hmap_next(m, &i, &e)) {
        json_t *res = json_object_get(mesh_store_entry_object(e), "resource");
        if (res)
            json_array_append(list, res);
    }
    return json_pack("{s:I, s:o}", "index", (json_int_t)api->res_index, "resources",
                     list ? list : json_array());
}

static void answer(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    mesh_http_respond_json(ex, 200, all(api));
}

static void on_waiter_closed(uv_handle_t *h)
{
    mesh_free(h->data);
}

static void waiter_done(struct resource_waiter *w)
{
    struct mesh_api *api = w->api;
    if (w->prev)
        w->prev->next = w->next;
    else
        api->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->ex = NULL;
    uv_close((uv_handle_t *)&w->timer, on_waiter_closed);
}

static void on_wait_over(uv_timer_t *t)
{
    struct resource_waiter *w = t->data;
    struct mesh_http_exchange *ex = w->ex;
    struct mesh_api *api = w->api;
    waiter_done(w);
    answer(api, ex); /* no change: the same index */
}

static void on_client_gone(void *data)
{
    waiter_done(data);
}

static void wake_all(struct mesh_api *api)
{
    while (api->waiters) {
        struct resource_waiter *w = api->waiters;
        struct mesh_http_exchange *ex = w->ex;
        waiter_done(w);
        answer(api, ex);
    }
}

void mesh_api_resources_close(struct mesh_api *api)
{
    wake_all(api);
}

/* The query's "index" and "wait" (defaults 0 and 30 s). */
static void query(const struct mesh_http_request *r, uint64_t *index, uint64_t *wait_ms)
{
    *index = 0;
    *wait_ms = WAIT_DEFAULT_MS;
    char q[256];
    snprintf(q, sizeof(q), "%.*s", (int)(r->query_len < 255 ? r->query_len : 255), r->query);
    char *save = NULL;
    for (char *p = strtok_r(q, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
        if (strncmp(p, "index=", 6) == 0)
            *index = strtoull(p + 6, NULL, 10);
        else if (strncmp(p, "wait=", 5) == 0 && mesh_parse_duration_ms(p + 5, wait_ms) < 0)
            *wait_ms = WAIT_DEFAULT_MS;
    }
    if (*wait_ms > WAIT_MAX_MS)
        *wait_ms = WAIT_MAX_MS;
}

static void get_all(struct mesh_api *api, struct mesh_http_exchange *ex,
                    const struct mesh_http_request *r)
{
    uint64_t index, wait_ms;
    query(r, &index, &wait_ms);
    /* A newer index than ours means we went back (a restart): answer at once. */
    if (index != api->res_index || wait_ms == 0) {
        answer(api, ex);
        return;
    }
    struct resource_waiter *w = mesh_calloc(1, sizeof(*w));
    if (!w) {
        mesh_api_fail(api, ex, 500, "out of memory");
        return;
    }
    w->api = api;
    w->ex = ex;
    uv_timer_init(api->loop, &w->timer);
    w->timer.data = w;
    w->next = api->waiters;
    if (api->waiters)
        api->waiters->prev = w;
    api->waiters = w;
    uv_timer_start(&w->timer, on_wait_over, wait_ms, 0);
    mesh_http_exchange_on_abort(ex, on_client_gone, w);
}

/* Validates a body of one resource or {"resources": [...]} with the agent's parser, and
 * stores each. Answers. */
static void put(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    size_t len = 0;
    const char *body = mesh_http_exchange_body(ex, &len);
    struct mesh_cfg_errors errors = {0};
    struct mesh_resource_file *f = NULL;
    if (mesh_resource_file_parse("request", body ? body : "", len, &errors, &f) < 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < errors.n; i++)
            json_array_append_new(list, json_string(errors.v[i]));
        mesh_cfg_errors_done(&errors);
        api->n.refused++;
        mesh_http_respond_json(ex, 400,
                               json_pack("{s:s, s:o}", "error", "invalid resources", "errors",
                                         list ? list : json_array()));
        return;
    }
    json_t *doc = json_loadb(body, len, 0, NULL);
    json_t *items = json_object_get(doc, "resources");
    if (!items) {
        items = json_array();
        json_array_append(items, doc);
    } else {
        json_incref(items);
    }
    json_t *applied = json_array();
    int err = index_mark(api, api->res_index + f->n) < 0 ? -1 : 0;
    for (size_t i = 0; i < f->n && err == 0; i++) {
        const struct mesh_resource *res = &f->v[i];
        char key[300];
        json_t *src = json_deep_copy(json_array_get(items, i));
        if (!src || store_name(mesh_resource_kind_names[res->kind], res->namespace, res->name, key,
                               sizeof(key)) < 0) {
            json_decref(src);
            err = -1;
            break;
        }
        /* The namespace made explicit: agents read the same thing whatever the default. */
        json_object_set_new(src, "namespace", json_string(res->namespace));
        json_t *rec =
            json_pack("{s:o, s:I}", "resource", src, "index", (json_int_t)(api->res_index + 1));
        err = rec ? mesh_store_put(api->store, "resources", key, rec) : -1;
        json_decref(rec);
        if (err == 0) {
            api->res_index++;
            api->n.resources_applied[res->kind]++;
            json_array_append_new(applied, json_string(key));
        }
    }
    json_decref(items);
    json_decref(doc);
    mesh_resource_file_unref(f);
    if (err < 0) {
        json_decref(applied);
        mesh_api_fail(api, ex, 500, "cannot store the resources");
        return;
    }
    mesh_log_info("applied %zu resources (index %llu)", json_array_size(applied),
                  (unsigned long long)api->res_index);
    mesh_http_respond_json(
        ex, 200, json_pack("{s:I, s:o}", "index", (json_int_t)api->res_index, "applied", applied));
    wake_all(api);
}

void mesh_api_resources(struct mesh_api *api, struct mesh_http_exchange *ex,
                        const struct mesh_http_request *r)
{
    bool get = r->method_len == 3 && memcmp(r->method, "GET", 3) == 0;
    bool admin = !get || mesh_http_find_header(r->headers, r->num_headers, "authorization");
    char buf[2100];
    /* Writes are an admin's only; reads an admin's (who says so) or an enrolled node's. */
    if (admin ? !mesh_api_admin(api, ex) : !mesh_api_node(api, ex, buf, sizeof(buf)))
        return; /* answered */
    char path[512];
    snprintf(path, sizeof(path), "%.*s", (int)(r->path_len < 511 ? r->path_len : 511), r->path);
    if (strcmp(path, "/v1/resources") == 0) {
        if (get)
            get_all(api, ex, r);
        else if (admin && r->method_len == 3 && memcmp(r->method, "PUT", 3) == 0)
            put(api, ex);
        else
            mesh_api_fail(api, ex, 405, "GET or PUT /v1/resources");
        return;
    }
    char kind[64], ns[128], name[128], key[300], extra;
    if (sscanf(path, "/v1/resources/%63[^/]/%127[^/]/%127[^/]%c", kind, ns, name, &extra) != 3 ||
        store_name(kind, ns, name, key, sizeof(key)) < 0) {
        mesh_api_fail(api, ex, 404, "expected /v1/resources/<Kind>/<namespace>/<name>");
        return;
    }
    json_t *rec = mesh_store_get(api->store, "resources", key);
    if (get) {
        if (rec)
            mesh_http_respond_json(ex, 200, json_incref(json_object_get(rec, "resource")));
        else
            mesh_api_fail(api, ex, 404, "no such resource");
    } else if (admin && r->method_len == 6 && memcmp(r->method, "DELETE", 6) == 0) {
        if (!rec) {
            mesh_api_fail(api, ex, 404, "no such resource");
            return;
        }
        if (index_mark(api, api->res_index + 1) < 0 ||
            mesh_store_delete(api->store, "resources", key) < 0) {
            mesh_api_fail(api, ex, 500, "cannot delete it");
            return;
        }
        api->res_index++;
        for (int k = 0; k < MESH_RESOURCE_KINDS; k++)
            if (strcasecmp(kind, mesh_resource_kind_names[k]) == 0)
                api->n.resources_deleted[k]++;
        mesh_log_info("deleted %s (index %llu)", key, (unsigned long long)api->res_index);
        mesh_http_respond_json(
            ex, 200, json_pack("{s:s, s:I}", "deleted", key, "index", (json_int_t)api->res_index));
        wake_all(api);
    } else {
        mesh_api_fail(api, ex, 405, "GET or DELETE /v1/resources/<Kind>/<namespace>/<name>");
    }
}
