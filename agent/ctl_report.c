#define MESH_LOG_MODULE "controller"

#include "agent/ctl_report.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/ctl_client.h"
#include "common/alloc.h"
#include "common/log.h"

#define INTERVAL_MIN_MS 200
#define INTERVAL_MAX_MS 300000

struct mesh_ctl_report {
    uv_loop_t *loop;
    uv_timer_t timer;
    struct mesh_http_client *client;
    struct mesh_ctl_req req;
    char *url;
    struct mesh_certs *certs;
    const struct mesh_ctl_report_ops *ops;
    void *data;
    uint64_t interval_ms;
    json_t *sent;         /* the services of the last report answered 200 (or in flight) */
    bool again;           /* the services changed while a report was in flight */
    bool failing;         /* logged once per outage */
    bool leaving;         /* POST /v1/leave in flight */
    char members_tag[48]; /* names the membership last answered ("": none) */
    void (*done)(void *data);
    void *done_data;
    bool closing;
};

static void send_report(struct mesh_ctl_report *r);
static void on_timer(uv_timer_t *t);

/* The controller says how often to report. */
static void adopt_interval(struct mesh_ctl_report *r, const json_t *doc)
{
    json_int_t ms = json_integer_value(json_object_get(doc, "report_interval_ms"));
    if (ms < INTERVAL_MIN_MS || ms > INTERVAL_MAX_MS || (uint64_t)ms == r->interval_ms)
        return;
    r->interval_ms = (uint64_t)ms;
    uv_timer_start(&r->timer, on_timer, r->interval_ms, r->interval_ms);
}

static void on_answer(struct mesh_ctl_req *req)
{
    struct mesh_ctl_report *r = req->data;
    long status = req->http.status;
    json_t *doc = status == 200 ? mesh_ctl_req_json(req) : NULL;
    json_t *members = json_object_get(doc, "members");
    const char *tag = json_string_value(json_object_get(doc, "members_tag"));
    /* A controller leaves the membership out when the tag this agent sent names it. */
    bool unchanged = !members && tag && r->members_tag[0] && strcmp(tag, r->members_tag) == 0;
    if (json_is_array(members) || unchanged) {
        if (r->failing)
            mesh_log_info("reporting to the controller again");
        r->failing = false;
        adopt_interval(r, doc);
        if (members)
            r->ops->members(r->data, members);
        /* A tag that would not fit is not kept: the next answer carries the members. */
        snprintf(r->members_tag, sizeof(r->members_tag), "%s",
                 tag && strlen(tag) < sizeof(r->members_tag) ? tag : "");
    } else {
        json_decref(r->sent); /* not taken: the next kick sends it again */
        r->sent = NULL;
        if (!r->failing) {
            r->failing = true;
            if (status)
                mesh_log_warn("controller: report refused (%ld%s%s); retrying every %llu s", status,
                              req->http.answer.len ? ": " : "",
                              req->http.answer.len ? req->http.answer.data : "",
                              (unsigned long long)(r->interval_ms / 1000));
            else
                mesh_log_warn("controller unreachable for reports: %s; retrying every %llu s",
                              req->http.error, (unsigned long long)(r->interval_ms / 1000));
        }
    }
    json_decref(doc);
    if (r->again) {
        r->again = false;
        mesh_ctl_report_kick(r);
    }
}

/* Sends body (taken) as a report. */
static void send_body(struct mesh_ctl_report *r, json_t *body)
{
    const char *cert, *key, *bundle;
    if (!mesh_certs_node_credentials(r->certs, &cert, &key, &bundle)) {
        json_decref(body);
        return;
    }
    /* The membership it holds: an unchanged one is not sent again. */
    if (body && r->members_tag[0] &&
        json_object_set_new(body, "members_tag", json_string(r->members_tag)) < 0) {
        json_decref(body);
        return;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_t *services = json_object_get(body, "services");
    char url[4300];
    snprintf(url, sizeof(url), "%s/v1/report", r->url);
    struct mesh_ctl_call call = {.url = url,
                                 .body = text,
                                 .ca_pem = bundle,
                                 .cert_pem = cert,
                                 .key_pem = key,
                                 .timeout_ms = MESH_REPORT_INTERVAL_MS};
    /* Short of memory, or not started: the next report is in a few seconds. */
    if (text && mesh_ctl_req_start(r->client, &r->req, &call) == 0) {
        json_decref(r->sent);
        r->sent = json_incref(services);
    }
    mesh_free(text);
    json_decref(body);
}

static void send_report(struct mesh_ctl_report *r)
{
    if (mesh_ctl_req_active(&r->req) || r->closing)
        return;
    send_body(r, r->ops->build(r->data));
}

static void on_timer(uv_timer_t *t)
{
    send_report(t->data);
}

void mesh_ctl_report_kick(struct mesh_ctl_report *r)
{
    if (!r || r->closing)
        return;
    json_t *body = r->ops->build(r->data);
    if (!body || json_equal(json_object_get(body, "services"), r->sent)) {
        json_decref(body);
        return;
    }
    if (mesh_ctl_req_active(&r->req)) {
        r->again = true;
        json_decref(body);
        return;
    }
    send_body(r, body);
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
    r->interval_ms = MESH_REPORT_INTERVAL_MS;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timer, 200, r->interval_ms);
    *ret = r;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct mesh_ctl_report *r = h->data;
    void (*done)(void *) = r->done;
    void *done_data = r->done_data;
    mesh_ctl_req_done(&r->req);
    json_decref(r->sent);
    mesh_free(r->url);
    mesh_free(r);
    if (done)
        done(done_data);
}

void mesh_ctl_report_free(struct mesh_ctl_report *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    mesh_ctl_req_done(&r->req); /* a report in flight ends now, without calling back */
    uv_close((uv_handle_t *)&r->timer, on_closed);
}

static void on_left(struct mesh_ctl_req *req)
{
    struct mesh_ctl_report *r = req->data;
    if (req->http.status == 200)
        mesh_log_info("told the controller that this node leaves");
    else
        mesh_log_warn("could not tell the controller that this node leaves (%s): its services "
                      "stay until their lease runs out",
                      req->http.status ? "refused" : req->http.error);
    uv_close((uv_handle_t *)&r->timer, on_closed);
}

void mesh_ctl_report_leave(struct mesh_ctl_report *r, void (*done)(void *data), void *data)
{
    if (!r) {
        if (done)
            done(data);
        return;
    }
    if (r->closing)
        return;
    r->closing = true;
    r->done = done;
    r->done_data = data;
    mesh_ctl_req_done(&r->req);
    uv_timer_stop(&r->timer);
    const char *cert, *key, *bundle;
    char url[4300];
    snprintf(url, sizeof(url), "%s/v1/leave", r->url);
    struct mesh_ctl_call call = {.url = url, .body = "{}", .timeout_ms = MESH_REPORT_LEAVE_MS};
    mesh_ctl_req_init(&r->req, on_left, r);
    if (mesh_certs_node_credentials(r->certs, &cert, &key, &bundle)) {
        call.ca_pem = bundle;
        call.cert_pem = cert;
        call.key_pem = key;
        if (mesh_ctl_req_start(r->client, &r->req, &call) == 0)
            return; /* closed in on_left */
    }
    uv_close((uv_handle_t *)&r->timer, on_closed);
}
