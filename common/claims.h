/*
 * Names claimed by the first owner to ask: a service defined in two files, an address two
 * upstreams want, a resource repeated. The key and the owner's name are copied.
 */
#ifndef MESH_CLAIMS_H
#define MESH_CLAIMS_H

#include "common/hmap.h"

struct mesh_claims {
    struct mesh_hmap map;
};

void mesh_claims_init(struct mesh_claims *c);
void mesh_claims_done(struct mesh_claims *c);
/*
 * Claims `key` for `owner`. Returns NULL when it was free (it is owner's now), or the name
 * of its first owner. On allocation failure sets *err to -ENOMEM and returns NULL.
 */
const char *mesh_claims_take(struct mesh_claims *c, const char *key, const char *owner, int *err);

#endif
