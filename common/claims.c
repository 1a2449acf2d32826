#include "common/claims.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"

struct claim {
    const char *owner; /* points into data, after the key */
    char data[];
};

void mesh_claims_init(struct mesh_claims *c)
{
    mesh_hmap_init(&c->map);
}

void mesh_claims_done(struct mesh_claims *c)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&c->map, &i, &he))
        mesh_free(he->value);
    mesh_hmap_done(&c->map);
}

const char *mesh_claims_take(struct mesh_claims *c, const char *key, const char *owner, int *err)
{
    const struct claim *old = mesh_hmap_get(&c->map, key);
    if (old)
        return old->owner;
    size_t lk = strlen(key) + 1, lo = strlen(owner) + 1;
    struct claim *n = mesh_malloc(sizeof(*n) + lk + lo);
    if (!n) {
        *err = -ENOMEM;
        return NULL;
    }
    memcpy(n->data, key, lk);
    memcpy(n->data + lk, owner, lo);
    n->owner = n->data + lk;
    if (mesh_hmap_put(&c->map, n->data, n) < 0) {
        mesh_free(n);
        *err = -ENOMEM;
    }
    return NULL;
}
