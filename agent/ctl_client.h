/*
 * Calls to the mesh-controller, on the loop: common/http_client (libcurl's multi interface
 * on libuv) with the controller's rules. HTTPS only; the controller's CA, or the trust bundle
 * once the controller sent one, is whom to trust; the node's certificate, when it has one, is
 * who we are. Connections are kept and shared by the calls that present the same certificate
 * to the same CA (libcurl matches them byte for byte), never by calls of another identity.
 *
 * Each caller embeds one struct mesh_ctl_req and has at most one call in flight. The req
 * holds copies of what it sends (the private key cleansed when it goes); `done` runs on the
 * loop when the call ended, never from inside start. Freeing the owner calls
 * mesh_ctl_req_done(), which ends a call in flight at once: no callback runs after it.
 *
 * Main loop only.
 */
#ifndef MESH_AGENT_CTL_CLIENT_H
#define MESH_AGENT_CTL_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/http_client.h"

#define MESH_CTL_TIMEOUT_MS 15000         /* a whole call, unless it says otherwise */
#define MESH_CTL_MAX_ANSWER (1024 * 1024) /* no controller answer is that large */

/* One call: borrowed, copied by mesh_ctl_req_start. */
struct mesh_ctl_call {
    const char *url;      /* https:// only */
    const char *body;     /* a JSON document, POSTed; NULL: a GET */
    const char *ca_pem;   /* whom to trust */
    const char *cert_pem; /* who we are; NULL: nobody yet */
    const char *key_pem;
    long timeout_ms;   /* the whole call; 0: MESH_CTL_TIMEOUT_MS */
    size_t max_answer; /* the largest answer taken; 0: MESH_CTL_MAX_ANSWER */
    /* A connection of its own, closed after it (enrollment: it is nobody yet, or shows a
     * certificate that expired). */
    bool fresh_connection;
};

struct mesh_ctl_req;
typedef void (*mesh_ctl_done_cb)(struct mesh_ctl_req *req);

struct mesh_ctl_req {
    /* Out, valid in done: http.status (0: no answer, http.error says why), http.answer. */
    struct mesh_http_req http;
    mesh_ctl_done_cb done;
    void *data;
    /* Private. */
    struct mesh_http_tls tls;
    char *url, *body, *ca_pem, *cert_pem, *key_pem;
};

/* Prepares `req` (embedded in its owner) for calls that end in done(req). */
void mesh_ctl_req_init(struct mesh_ctl_req *req, mesh_ctl_done_cb done, void *data);
/*
 * Starts `call` on `client`, dropping what the previous call of `req` held. Returns 0, -EBUSY
 * when a call is in flight, -EINVAL (no URL or CA) or -ENOMEM; done runs only after 0.
 */
int mesh_ctl_req_start(struct mesh_http_client *client, struct mesh_ctl_req *req,
                       const struct mesh_ctl_call *call);
bool mesh_ctl_req_active(const struct mesh_ctl_req *req);
/* The answer (any status) as a JSON document (a new reference), or NULL when it is none. */
json_t *mesh_ctl_req_json(const struct mesh_ctl_req *req);
/* Ends a call in flight without calling done and frees what req holds. `req` may be
 * started again after it. */
void mesh_ctl_req_done(struct mesh_ctl_req *req);

/* How long to wait after `failures` failed calls in a row: 1 s doubling to 60 s, with
 * "equal jitter" (half of it fixed, half random), so that a fleet does not retry in step. */
uint64_t mesh_ctl_backoff_ms(unsigned failures);

#endif
