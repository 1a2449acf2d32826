/*
 * YAML where the ecosystem speaks it (kubeconfig files), read with libyaml into jansson
 * values so that one set of accessors serves both: mappings become objects, sequences
 * arrays, scalars strings (a caller reads "true" or "8443" as it needs). Bounded: depth,
 * node count (aliases included, so an alias bomb fails) and input size.
 */
#ifndef MESH_YAML_H
#define MESH_YAML_H

#include <stddef.h>

#include <jansson.h>

/* Parses the first document. Returns 0, -EINVAL with "line:column: problem" in err, or
 * -ENOMEM. */
int mesh_yaml_to_json(const char *data, size_t len, json_t **ret, char *err, size_t errlen);

#endif
