#define MESH_LOG_MODULE "controller"

#include "agent/ctl_report.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/ctl_client.h"
#include "common/alloc.h"
#include "common/log.h"

struct mesh_ctl_report {
    uv_loop_t *loop;
    uv_timer_t timer;
    struct mesh_http_client *client;
    struct mesh_ctl_req req;
    char *url;
    struct mesh_certs *certs;
    const struct mesh_ctl_report_ops *ops;
    void *data;
    bool failing; /* logged once per outage */
    bool closing;
};

static void on_answer(struct mesh_ctl_req *req)
{
    struct mesh_ctl_report *r = req->data;
    long status = req->http.status;
    json_t *doc = status == 200 ? mesh_ctl_req_json(req) : NULL;
    json_t *members = json_object_get(doc, "members");
    if (json_is_array(members)) {
        if (r->failing)
            mesh_log_info("reporting to the controller again");
        r->failing = false;
        r->ops->members(r->data, members);
    } else if (!r->failing) {
        r->failing = true;
        if (status)
            mesh_log_warn("controller: report refused (%ld); retrying every %d s", status,
                          MESH_REPORT_INTERVAL_MS / 1000);
        else
            mesh_log_warn("controller unreachable for reports: %s; retrying every %d s",
                          req->http.error, MESH_REPORT_INTERVAL_MS / 1000);
    }
    json_decref(doc);
}

static void on_timer(uv_timer_t *t)
{
    struct mesh_ctl_report *r = t->data;
    const char *cert, *key, *bundle;
    if (mesh_ctl_req_active(&r->req) ||
        !mesh_certs_node_credentials(r->certs, &cert, &key, &bundle))
        return;
    json_t *body = r->ops->build(r->data);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    char url[4300];
    snprintf(url, sizeof(url), "%s/v1/report", r->url);
    struct mesh_ctl_call call = {.url = url,
                                 .body = text,
                                 .ca_pem = bundle,
                                 .cert_pem = cert,
                                 .key_pem = key,
                                 .timeout_ms = MESH_REPORT_INTERVAL_MS};
    /* Short of memory, or not started: the next report is in a few seconds. */
    if (text)
        mesh_ctl_req_start(r->client, &r->req, &call);
    mesh_free(text);
}

int mesh_ctl_report_new(uv_loop_t *loop, struct mesh_http_client *client, const char *controller,
                        struct mesh_certs *certs, const struct mesh_ctl_report_ops *ops, void *data,
                        struct mesh_ctl_report **ret)
{
    struct mesh_ctl_report *r = mesh_calloc(1, sizeof(*r));
    if (!r || !(r->url = mesh_strdup(controller))) {
        mesh_free(r);
        return -ENOMEM;
    }
    size_t n = strlen(r->url);
    while (n && r->url[n - 1] == '/')
        r->url[--n] = '\0';
    r->loop = loop;
    r->client = client;
    mesh_ctl_req_init(&r->req, on_answer, r);
    r->certs = certs;
    r->ops = ops;
    r->data = data;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timer, 200, MESH_REPORT_INTERVAL_MS);
    *ret = r;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct mesh_ctl_report *r = h->data;
    mesh_free(r->url);
    mesh_free(r);
}

void mesh_ctl_report_free(struct mesh_ctl_report *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    mesh_ctl_req_done(&r->req); /* a report in flight ends now, without calling back */
    uv_close((uv_handle_t *)&r->timer, on_closed);
}
