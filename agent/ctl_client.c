#include "agent/ctl_client.h"

#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/alloc.h"
#include "common/backoff.h"

static const char *const headers[] = {"Content-Type: application/json", NULL};

static void on_http_done(struct mesh_http_req *http)
{
    struct mesh_ctl_req *req = container_of(http, struct mesh_ctl_req, http);
    req->done(req);
}

void mesh_ctl_req_init(struct mesh_ctl_req *req, mesh_ctl_done_cb done, void *data)
{
    memset(req, 0, sizeof(*req));
    req->done = done;
    req->data = data;
}

/* Frees what the req sent, cleansing the secrets: the key, and a body that may carry a join
 * token. */
static void drop_inputs(struct mesh_ctl_req *req)
{
    if (req->key_pem)
        OPENSSL_cleanse(req->key_pem, strlen(req->key_pem));
    if (req->body)
        OPENSSL_cleanse(req->body, strlen(req->body));
    mesh_free(req->url);
    mesh_free(req->body);
    mesh_free(req->ca_pem);
    mesh_free(req->cert_pem);
    mesh_free(req->key_pem);
    req->url = req->body = req->ca_pem = req->cert_pem = req->key_pem = NULL;
}

/* *ret = a copy of s (NULL for NULL). Returns false when short of memory. */
static bool copy(char **ret, const char *s)
{
    *ret = s ? mesh_strdup(s) : NULL;
    return !s || *ret;
}

int mesh_ctl_req_start(struct mesh_http_client *client, struct mesh_ctl_req *req,
                       const struct mesh_ctl_call *call)
{
    if (mesh_http_req_active(&req->http))
        return -EBUSY;
    if (!call->url || !call->ca_pem || !call->cert_pem != !call->key_pem)
        return -EINVAL;
    drop_inputs(req);
    if (!copy(&req->url, call->url) || !copy(&req->body, call->body) ||
        !copy(&req->ca_pem, call->ca_pem) || !copy(&req->cert_pem, call->cert_pem) ||
        !copy(&req->key_pem, call->key_pem)) {
        drop_inputs(req);
        return -ENOMEM;
    }
    req->tls = (struct mesh_http_tls){
        .ca_pem = req->ca_pem,
        .cert_pem = req->cert_pem,
        .key_pem = req->key_pem,
    };
    struct mesh_http_req *h = &req->http;
    h->method = req->body ? "POST" : "GET";
    h->url = req->url;
    h->headers = headers;
    h->body = req->body;
    h->body_len = req->body ? strlen(req->body) : 0;
    h->timeout_ms = call->timeout_ms ? call->timeout_ms : MESH_CTL_TIMEOUT_MS;
    h->connect_timeout_ms = 5000;
    h->tls = &req->tls;
    h->protocols = "https"; /* never a plain-text call, even if a URL says so */
    h->fresh_connection = call->fresh_connection;
    h->max_answer = call->max_answer ? call->max_answer : MESH_CTL_MAX_ANSWER;
    h->done = on_http_done;
    int r = mesh_http_req_start(client, h);
    if (r < 0)
        drop_inputs(req);
    return r;
}

bool mesh_ctl_req_active(const struct mesh_ctl_req *req)
{
    return mesh_http_req_active(&req->http);
}

json_t *mesh_ctl_req_json(const struct mesh_ctl_req *req)
{
    const struct mesh_buf *a = &req->http.answer;
    if (!req->http.status || !a->data || !a->len)
        return NULL;
    return json_loadb(a->data, a->len, 0, NULL);
}

void mesh_ctl_req_done(struct mesh_ctl_req *req)
{
    mesh_http_req_done(&req->http); /* cancels a call in flight: no done */
    drop_inputs(req);
}

uint64_t mesh_ctl_backoff_ms(unsigned failures)
{
    return mesh_backoff_ms(failures, 1000, 60000);
}
