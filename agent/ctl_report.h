/*
 * Reports to the mesh-controller: every few seconds the agent says who it is, what runs
 * here (the local services, as callers need them: the mesh's registry), which config index
 * it applies and when its certificates expire; the answer carries the mesh membership
 * (which addresses run an agent, and its mTLS port) and how often to report (the
 * controller's report_interval). Signed in with the node's certificate; a controller that
 * is away is simply tried again at the next report. A change of the local services is
 * reported at once (mesh_ctl_report_kick); a clean stop tells the controller that this
 * node leaves (mesh_ctl_report_leave), so that its services go at once.
 */
#ifndef MESH_AGENT_CTL_REPORT_H
#define MESH_AGENT_CTL_REPORT_H

#include <jansson.h>
#include <uv.h>

#include "agent/certs.h"
#include "common/http_client.h"
#include "common/report_traffic.h"

#define MESH_REPORT_INTERVAL_MS 5000
/* Edges of traffic in one report at most (the controller refuses more: 400). */
#define MESH_REPORT_MAX_EDGES MESH_REPORT_TRAFFIC_EDGES_MAX

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
/* Builds the report now and sends it at once when its services differ from the last sent
 * (after the report in flight, if any). NULL is fine. */
void mesh_ctl_report_kick(struct mesh_ctl_report *r);
/* Ends the report in flight at once (no callback after it); freed once its timer closed. */
void mesh_ctl_report_free(struct mesh_ctl_report *r);
/*
 * A clean stop: ends the report in flight, tells the controller this node leaves (POST
 * /v1/leave, at most MESH_REPORT_LEAVE_MS), then frees r and calls done(data) on the loop
 * (also when it could not tell: the lease then runs out). The client must stay open until
 * done. NULL: nothing.
 */
#define MESH_REPORT_LEAVE_MS 1000
void mesh_ctl_report_leave(struct mesh_ctl_report *r, void (*done)(void *data), void *data);

#endif
