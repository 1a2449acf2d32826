/*
 * Policy resources from files (standalone mode): a watched directory of resource files
 * (see resources/resource.h), turned into a resource view each time it changes. The view in
 * effect stays valid until the next change callback; a new directory (reload) replaces it
 * only once its first scan is in.
 */
#ifndef MESH_RESOURCES_H
#define MESH_RESOURCES_H

#include <jansson.h>
#include <uv.h>

#include "common/cfg.h"
#include "resources/resource.h"

struct mesh_resources;

typedef void (*mesh_resources_changed_cb)(void *data);

int mesh_resources_new(uv_loop_t *loop, mesh_resources_changed_cb cb, void *data,
                       struct mesh_resources **ret);
/* Watches `dir` (a reload may call it again with another directory). Returns 0 or -errno. */
int mesh_resources_watch(struct mesh_resources *r, const char *dir, uint64_t poll_ms);
void mesh_resources_rescan(struct mesh_resources *r);
/*
 * Sets (f: taking a reference of its own) or clears (f NULL) the resources that come from
 * the controller, named `name` in messages. They go before the directory's files, so they
 * win a conflict. Returns 0 or -ENOMEM (the view in effect stays).
 */
int mesh_resources_set_extra(struct mesh_resources *r, const char *name,
                             struct mesh_resource_file *f);
/* The view in effect (empty before the first scan). */
const struct mesh_resource_view *mesh_resources_view(const struct mesh_resources *r);
bool mesh_resources_scanned(const struct mesh_resources *r);
void mesh_resources_status(const struct mesh_resources *r, json_t *out);
void mesh_resources_close(struct mesh_resources *r, void (*done)(void *data), void *data);
/* mesh-agent validate: reads `dir` once and adds every problem to `errors`. */
void mesh_resources_validate(const char *dir, struct mesh_cfg_errors *errors);

#endif
