/*
 * Reports to the mesh-controller: every few seconds the agent says who it is, what runs
 * here, which config index it applies and when its certificates expire; the answer carries
 * the mesh membership (which addresses run an agent, and its mTLS port). Signed in with the
 * node's certificate; a controller that is away is simply tried again at the next report.
 */
#ifndef MESH_AGENT_CTL_REPORT_H
#define MESH_AGENT_CTL_REPORT_H

#include <jansson.h>
#include <uv.h>

#include "agent/certs.h"
#include "common/http_client.h"

#define MESH_REPORT_INTERVAL_MS 5000

struct mesh_ctl_report;

struct mesh_ctl_report_ops {
    json_t *(*build)(void *data);                 /* the report (a new reference) */
    void (*members)(void *data, json_t *members); /* the membership answered (borrowed) */
};

/* Reports to `controller` through `client` (borrowed: it must outlive the reporter). Returns
 * 0 or -ENOMEM. */
int mesh_ctl_report_new(uv_loop_t *loop, struct mesh_http_client *client, const char *controller,
                        struct mesh_certs *certs, const struct mesh_ctl_report_ops *ops, void *data,
                        struct mesh_ctl_report **ret);
/* Ends the report in flight at once (no callback after it); freed once its timer closed. */
void mesh_ctl_report_free(struct mesh_ctl_report *r);

#endif
