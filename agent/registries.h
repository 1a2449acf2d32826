/*
 * The table of registry adapters (agent/registries.c): finding one by type, their
 * precedence, and their metrics. The interface they implement is catalog/registry.h.
 */
#ifndef MESH_REGISTRIES_H
#define MESH_REGISTRIES_H

#include <stddef.h>

#include "catalog/registry.h"
#include "common/buf.h"

/* The mesh-controller's catalog (agent/registry_controller.c): a registry of the agent's
 * own, since it calls the controller through the agent's client. */
extern const struct mesh_registry_ops mesh_agent_controller_registry_ops;

/* The adapter for `type`, or NULL. */
const struct mesh_registry_ops *mesh_registries_find(const char *type);
/* NULL-terminated list of known types, for messages and did-you-mean. */
const char *const *mesh_registries_types(void);
/*
 * Precedence of a type when registries disagree on an endpoint (its place in the table):
 * static 0, kubernetes 1, consul 2, controller 3; unknown types after every known one.
 */
int mesh_registries_rank(const char *type);
/* Writes the adapter metrics of every registry in `regs`, grouped by type. */
void mesh_registries_metrics(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b);

#endif
