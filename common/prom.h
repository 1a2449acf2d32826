/*
 * Prometheus text exposition format (version 0.0.4) writer. Families are written as a
 * HELP and TYPE line followed by their samples; label values are escaped.
 */
#ifndef MESH_PROM_H
#define MESH_PROM_H

#include "common/buf.h"

#define MESH_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct mesh_prom_label {
    const char *name;
    const char *value;
};

/* `type` is "counter", "gauge", "histogram" or "untyped". */
void mesh_prom_family(struct mesh_buf *b, const char *name, const char *type, const char *help);
/* One sample; `labels` is NULL or ends with {NULL, NULL}. */
void mesh_prom_sample(struct mesh_buf *b, const char *name, const struct mesh_prom_label *labels,
                      double value);

#endif
