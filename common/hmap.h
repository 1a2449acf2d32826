/*
 * A string-keyed hash map of pointers: open addressing with linear probing, SipHash-1-3
 * with a per-map random key (names come from registries, which we do not fully trust).
 * Keys are borrowed: each key must stay valid, unchanged, while its entry is in the map
 * (point it at a string inside the value). Not thread-safe.
 */
#ifndef MESH_HMAP_H
#define MESH_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct mesh_hmap_entry {
    const char *key; /* NULL: empty; MESH_HMAP_TOMBSTONE: removed */
    void *value;
    uint64_t hash;
};

struct mesh_hmap {
    struct mesh_hmap_entry *v;
    size_t cap; /* a power of two, or 0 */
    size_t n;
    size_t used; /* n plus tombstones */
    uint64_t k0, k1;
};

extern const char mesh_hmap__tombstone[];
#define MESH_HMAP_TOMBSTONE (mesh_hmap__tombstone)

void mesh_hmap_init(struct mesh_hmap *m);
void mesh_hmap_done(struct mesh_hmap *m);
/* Inserts or replaces. Returns 0 or -ENOMEM (the map is then unchanged). */
int mesh_hmap_put(struct mesh_hmap *m, const char *key, void *value);
void *mesh_hmap_get(const struct mesh_hmap *m, const char *key);
/* Removes and returns the value, or NULL. */
void *mesh_hmap_remove(struct mesh_hmap *m, const char *key);

/* Iteration: for (size_t i = 0; mesh_hmap_next(m, &i, &e);) { ... } */
static inline int mesh_hmap_next(const struct mesh_hmap *m, size_t *i,
                                 const struct mesh_hmap_entry **ret)
{
    while (*i < m->cap) {
        const struct mesh_hmap_entry *e = &m->v[(*i)++];
        if (e->key && e->key != MESH_HMAP_TOMBSTONE) {
            *ret = e;
            return 1;
        }
    }
    return 0;
}

uint64_t mesh_siphash13(const void *data, size_t len, uint64_t k0, uint64_t k1);

#endif
