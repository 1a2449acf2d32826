/*
 * Endpoints as JSON: the schema service files and the last-known-good catalog share, its
 * conversion to struct mesh_endpoint, and the encoding the admin API shows.
 */
#ifndef MESH_ENDPOINT_JSON_H
#define MESH_ENDPOINT_JSON_H

#include <jansson.h>

#include "agent/service.h"
#include "common/cfg.h"

struct mesh_endpoint_config {
    char *address;
    int port;
    int weight;
    char *zone;
    char *node;
    int health; /* index into mesh_endpoint_health_choices */
    struct mesh_labels labels;
};

/* {"address", "port", "weight", "zone", "node", "health", "labels"} */
extern const struct mesh_cfg_schema mesh_endpoint_schema;
/* "healthy", "unhealthy", "draining" */
extern const char *const mesh_endpoint_health_choices[];

/* Converts a decoded (valid) endpoint. Returns 0 or -ENOMEM; -EINVAL if not valid. */
int mesh_endpoint_from_config(const struct mesh_endpoint_config *in, struct mesh_endpoint *out);
/* Encodes an endpoint in the same shape. Returns NULL on allocation failure. */
json_t *mesh_endpoint_to_json(const struct mesh_endpoint *ep);
/* Health flags for a choice index, and back. */
unsigned mesh_endpoint_health_flags(int choice);

#endif
