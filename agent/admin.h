/*
 * The admin API: /healthz, /readyz, /metrics (Prometheus text), and JSON under /v1/:
 * services, local, config, status. Read-only; GET and HEAD only. Runs on the main loop
 * on the project's HTTP server (common/http_server.h). See docs/admin-api.md.
 */
#ifndef MESH_ADMIN_H
#define MESH_ADMIN_H

#include <uv.h>

#include "common/addr.h"

struct mesh_agent;
struct mesh_admin;

/* Listens on `addr` and serves `agent`. Returns 0 or a negative (libuv) errno. */
int mesh_admin_start(uv_loop_t *loop, const struct mesh_addr *addr, struct mesh_agent *agent,
                     struct mesh_admin **ret);
/* Stops accepting, lets requests in progress finish (up to deadline_ms), frees, then done. */
void mesh_admin_close(struct mesh_admin *ad, uint64_t deadline_ms, void (*done)(void *data),
                      void *data);
/* During a close: cuts requests in progress now. */
void mesh_admin_abort(struct mesh_admin *ad);

#endif
