#define MESH_LOG_MODULE "controller"

#include "agent/ctl_report.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/ctl_call.h"
#include "common/alloc.h"
#include "common/log.h"

struct mesh_ctl_report {
    uv_loop_t *loop;
    uv_timer_t timer;
    char *url;
    struct mesh_certs *certs;
    const struct mesh_ctl_report_ops *ops;
    void *data;
    struct ctl_call *inflight;
    bool failing; /* logged once per outage */
    bool closing;
};

static void on_answer(struct ctl_call *call)
{
    struct mesh_ctl_report *r = call->data;
    r->inflight = NULL;
    json_t *doc = call->status == 200 && call->answer ? json_loads(call->answer, 0, NULL) : NULL;
    json_t *members = json_object_get(doc, "members");
    if (json_is_array(members)) {
        if (r->failing)
            mesh_log_info("reporting to the controller again");
        r->failing = false;
        r->ops->members(r->data, members);
    } else if (!r->failing) {
        r->failing = true;
        if (call->status)
            mesh_log_warn("controller: report refused (%ld); retrying every %d s", call->status,
                          MESH_REPORT_INTERVAL_MS / 1000);
        else
            mesh_log_warn("controller unreachable for reports: %s; retrying every %d s", call->err,
                          MESH_REPORT_INTERVAL_MS / 1000);
    }
    json_decref(doc);
}

static void on_timer(uv_timer_t *t)
{
    struct mesh_ctl_report *r = t->data;
    const char *cert, *key, *bundle;
    if (r->inflight || !mesh_certs_node_credentials(r->certs, &cert, &key, &bundle))
        return;
    json_t *body = r->ops->build(r->data);
    struct ctl_call *call = mesh_calloc(1, sizeof(*call));
    char url[4300];
    snprintf(url, sizeof(url), "%s/v1/report", r->url);
    if (!body || !call || !(call->url = mesh_strdup(url)) ||
        !(call->body = json_dumps(body, JSON_COMPACT)) || !(call->ca_pem = mesh_strdup(bundle)) ||
        !(call->cert_pem = mesh_strdup(cert)) || !(call->key_pem = mesh_strdup(key))) {
        json_decref(body);
        ctl_call_free(call);
        return;
    }
    json_decref(body);
    call->timeout_s = 5;
    call->done = on_answer;
    call->data = r;
    if (ctl_call_start(r->loop, call) == 0)
        r->inflight = call;
}

int mesh_ctl_report_new(uv_loop_t *loop, const char *controller, struct mesh_certs *certs,
                        const struct mesh_ctl_report_ops *ops, void *data,
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
    if (r->inflight)
        ctl_call_abandon(r->inflight);
    uv_close((uv_handle_t *)&r->timer, on_closed);
}
