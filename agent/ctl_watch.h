/*
 * Resources from the mesh-controller: a blocking query (GET /v1/resources?index=N&wait=30s)
 * kept open with the node's certificate, so a change reaches the agent within moments. What
 * arrives is checked again, kept in the state dir (an agent restarted while the controller
 * is away applies what it last had) and handed to the resources module, where it goes
 * before the local files. The index follows Consul's rules: an index that went back (a
 * controller restart) is taken as is; queries never loop faster than every 200 ms; errors
 * back off from 1 s to 60 s. The query runs on the loop (agent/ctl_client.h): waiting, it
 * holds no thread.
 */
#ifndef MESH_AGENT_CTL_WATCH_H
#define MESH_AGENT_CTL_WATCH_H

#include <jansson.h>
#include <uv.h>

#include "agent/certs.h"
#include "agent/resources.h"
#include "common/http_client.h"

struct mesh_ctl_watch;

/* Queries `controller` through `client` (borrowed: it must outlive the watch) with the node
 * credentials of `certs`. Returns 0 or -ENOMEM. */
int mesh_ctl_watch_new(uv_loop_t *loop, struct mesh_http_client *client, const char *controller,
                       const char *state_dir, struct mesh_certs *certs,
                       struct mesh_resources *resources, struct mesh_ctl_watch **ret);
/* The certificates changed (the first node certificate may now let it start). */
void mesh_ctl_watch_kick(struct mesh_ctl_watch *w);
/* {controller, index, changes, queries (started), watching (one in flight), error?}. */
json_t *mesh_ctl_watch_status(const struct mesh_ctl_watch *w);
/* The config index applied (0: none yet). */
uint64_t mesh_ctl_watch_index(const struct mesh_ctl_watch *w);
/* Ends the query in flight at once (no callback after it); freed once its timer closed. */
void mesh_ctl_watch_free(struct mesh_ctl_watch *w);

#endif
