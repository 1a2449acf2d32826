/*
 * Endpoints as JSON: the schema service files and the last-known-good catalog share, its
 * conversion to struct mesh_endpoint, and the encoding the admin API shows.
 */
#ifndef MESH_ENDPOINT_JSON_H
#define MESH_ENDPOINT_JSON_H

#include <jansson.h>

#include "catalog/service.h"
#include "common/buf.h"
#include "common/cfg.h"

struct mesh_endpoint_config {
    char *address; /* an IP literal or a host name */
    int port;
    int weight;
    int mesh_port;
    char *zone;
    char *node;
    char *host; /* with an IP address: the host name it was resolved from */
    int health; /* index into mesh_endpoint_health_choices */
    struct mesh_labels labels;
};

/* {"address", "port", "weight", "zone", "node", "health", "host", "labels", "mesh_port"} */
extern const struct mesh_cfg_schema mesh_endpoint_schema;
/* "healthy", "unhealthy", "draining" */
extern const char *const mesh_endpoint_health_choices[];

/*
 * Converts a decoded (valid) endpoint: an address that is a host name gives an unresolved
 * endpoint (host set, no address). Returns 0 or -ENOMEM; -EINVAL if not valid.
 */
int mesh_endpoint_from_config(const struct mesh_endpoint_config *in, struct mesh_endpoint *out);
/*
 * Appends an endpoint as a JSON object in the same shape, streamed (no tree is built, so
 * large catalogs serialize in little memory), leaving out what has its default (weight 1,
 * healthy, no labels): a file of 100,000 endpoints is a third smaller. Errors are sticky in
 * b->err.
 */
void mesh_endpoint_write_json(struct mesh_buf *b, const struct mesh_endpoint *ep);
/* Every field, for people: an endpoint of merged service s, with its "mesh/registry" label
 * (the source its details come from) and, when several sources report it, "registries". */
struct mesh_service;
void mesh_endpoint_write_json_from(struct mesh_buf *b, const struct mesh_service *s,
                                   const struct mesh_endpoint *ep);
/* Appends a JSON string literal. */
void mesh_json_write_str(struct mesh_buf *b, const char *s);
/* Health flags for a choice index, and back. */
unsigned mesh_endpoint_health_flags(int choice);

#endif
