/*
 * The agent: owns the config, the catalog, the registries, the admin API and the state
 * dir, and runs their lifecycle on one libuv loop:
 *
 *   STARTING -> (admin listening, every registry synced or the sync timeout) -> READY
 *   READY -> SIGHUP -> RELOADING -> READY (the new config, or the old one if invalid)
 *   any -> SIGTERM/SIGINT -> STOPPING (stop accepting, drain, write state) -> handles closed
 */
#ifndef MESH_AGENT_H
#define MESH_AGENT_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

#include "agent/config.h"
#include "catalog/catalog.h"
#include "common/buf.h"

struct mesh_agent_options {
    const char *config_path; /* NULL: the default path, or the embedded defaults if absent */
    int log_level;           /* -1: as the config says */
    int log_format;          /* -1: as the config says */
};

struct mesh_agent;

/*
 * Loads the config (errors are logged, one line each) and builds the agent on `loop`.
 * Returns 0, -EINVAL for an invalid config, or another negative errno.
 */
int mesh_agent_new(uv_loop_t *loop, const struct mesh_agent_options *opts, struct mesh_agent **ret);
/* Creates the state dir, loads the last-known-good catalog, listens, starts registries. */
int mesh_agent_start(struct mesh_agent *a);
/*
 * After uv_run returns from a stop, closes the signal handles that stayed open during the
 * drain (unreferenced); run the loop once more, then free.
 */
void mesh_agent_close_signals(struct mesh_agent *a);
/* Frees the agent once uv_run has returned (every handle closed). */
void mesh_agent_free(struct mesh_agent *a);

void mesh_agent_reload(struct mesh_agent *a);
/* Stops gracefully; a second call stops at once. */
void mesh_agent_stop(struct mesh_agent *a);

/* For the admin API; all on the loop. */
bool mesh_agent_is_ready(const struct mesh_agent *a, char *why, size_t n);
const struct mesh_catalog *mesh_agent_catalog(const struct mesh_agent *a);
const struct mesh_agent_config *mesh_agent_config(const struct mesh_agent *a);
json_t *mesh_agent_status_json(const struct mesh_agent *a);
json_t *mesh_agent_local_json(const struct mesh_agent *a);
/* The data plane's listeners, destinations and endpoints (GET /v1/proxy). */
json_t *mesh_agent_proxy_json(const struct mesh_agent *a);
/* The certificate manager's state (GET /v1/identity). */
json_t *mesh_agent_identity_json(const struct mesh_agent *a);
void mesh_agent_metrics(const struct mesh_agent *a, struct mesh_buf *b);

#endif
