/*
 * The agent's own check of the workloads on this host, for what it reports to the mesh's
 * registry: a TCP connect to each local service's workload address, at once when the
 * services change and then every few seconds. A workload that refuses (or whose connect
 * fails) is down until a connect succeeds again; `changed` runs on the loop when one's state
 * changes. Main loop only.
 */
#ifndef MESH_AGENT_LOCAL_HEALTH_H
#define MESH_AGENT_LOCAL_HEALTH_H

#include <stddef.h>

#include <uv.h>

#include "catalog/service.h"

#define MESH_LOCAL_HEALTH_INTERVAL_MS 2000

struct mesh_local_health;

int mesh_local_health_new(uv_loop_t *loop, void (*changed)(void *data), void *data,
                          struct mesh_local_health **ret);
/* The workloads to check (borrowed for the call): checked now, and then every interval. */
void mesh_local_health_set(struct mesh_local_health *h, const struct mesh_local_service *const *v,
                           size_t n);
/* 1: the workload at `a` accepted the last connect; 0: it did not; -1: not known yet. */
int mesh_local_health_get(const struct mesh_local_health *h, const struct mesh_addr *a);
/* Ends every check in flight; freed once its handles closed. NULL is fine. */
void mesh_local_health_free(struct mesh_local_health *h);

#endif
