/*
 * The last-known-good local services: what each registry last said runs on this host
 * (with its upstreams), kept in <state_dir>/local-services.json beside the catalog. At
 * start, a registry that has not synced yet (its service files are missing, its API is
 * away) starts from what it said last, so the upstream and inbound listeners come back
 * with the catalog.
 *
 * The file is written by the agent and read back at start; a file that does not parse
 * restores nothing (and says why).
 */
#ifndef MESH_AGENT_LOCAL_STATE_H
#define MESH_AGENT_LOCAL_STATE_H

#include <stddef.h>

#include "catalog/service.h"
#include "common/buf.h"
#include "common/cfg.h"

#define MESH_LOCAL_STATE_FILE "local-services.json"
#define MESH_LOCAL_STATE_MAX (16 * 1024 * 1024)

/* One registry's local services (borrowed). */
struct mesh_local_state_entry {
    const char *registry;
    const struct mesh_local_service *locals;
    size_t n;
};

/* Appends the document mesh_local_state_parse reads; errors sticky in b->err. */
void mesh_local_state_encode(const struct mesh_local_state_entry *v, size_t n, struct mesh_buf *b);

/*
 * Parses a document and returns, in *ret (an array of *ret_n services the caller frees
 * with mesh_local_state_free), the local services it keeps for `registry` (none when it
 * keeps none). Returns 0, or -EINVAL (every problem in `errors`, nothing returned) or
 * -ENOMEM. `name` appears in messages.
 */
int mesh_local_state_parse(const char *name, const char *data, size_t len, const char *registry,
                           struct mesh_cfg_errors *errors, struct mesh_local_service **ret,
                           size_t *ret_n);
void mesh_local_state_free(struct mesh_local_service *v, size_t n);

#endif
