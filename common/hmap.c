#include "common/hmap.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "common/alloc.h"

const char mesh_hmap__tombstone[] = "";

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

uint64_t mesh_siphash13(const void *data, size_t len, uint64_t k0, uint64_t k1)
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8); /* little-endian hosts; the hash only has to be consistent */
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

void mesh_hmap_init(struct mesh_hmap *m)
{
    memset(m, 0, sizeof(*m));
    uint64_t k[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    /* A weak key only weakens flood resistance; it never affects correctness. */
    if (getrandom(k, sizeof(k), GRND_NONBLOCK) != sizeof(k))
        k[0] ^= (uint64_t)(uintptr_t)m;
    m->k0 = k[0];
    m->k1 = k[1];
}

void mesh_hmap_done(struct mesh_hmap *m)
{
    mesh_free(m->v);
    m->v = NULL;
    m->cap = m->n = m->used = 0;
}

static uint64_t hash_of(const struct mesh_hmap *m, const char *key)
{
    return mesh_siphash13(key, strlen(key), m->k0, m->k1);
}

static struct mesh_hmap_entry *find(const struct mesh_hmap *m, const char *key, uint64_t h)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct mesh_hmap_entry *e = &m->v[i];
        if (!e->key)
            return NULL;
        if (e->key != MESH_HMAP_TOMBSTONE && e->hash == h && strcmp(e->key, key) == 0)
            return e;
    }
}

static void insert_fresh(struct mesh_hmap_entry *v, size_t cap, const struct mesh_hmap_entry *e)
{
    size_t mask = cap - 1;
    size_t i = e->hash & mask;
    while (v[i].key)
        i = (i + 1) & mask;
    v[i] = *e;
}

static int resize(struct mesh_hmap *m, size_t cap)
{
    struct mesh_hmap_entry *v = mesh_calloc(cap, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->v[i].key && m->v[i].key != MESH_HMAP_TOMBSTONE)
            insert_fresh(v, cap, &m->v[i]);
    }
    mesh_free(m->v);
    m->v = v;
    m->cap = cap;
    m->used = m->n;
    return 0;
}

int mesh_hmap_put(struct mesh_hmap *m, const char *key, void *value)
{
    uint64_t h = hash_of(m, key);
    struct mesh_hmap_entry *e = find(m, key, h);
    if (e) {
        e->key = key;
        e->value = value;
        return 0;
    }
    /* Keep the load (tombstones included) under 3/4 so probes stay short and end. */
    if ((m->used + 1) * 4 > m->cap * 3) {
        size_t cap = m->cap ? m->cap : 8;
        while ((m->n + 1) * 2 > cap)
            cap *= 2;
        if (resize(m, cap) < 0)
            return -ENOMEM;
    }
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->v[i].key && m->v[i].key != MESH_HMAP_TOMBSTONE)
        i = (i + 1) & mask;
    if (!m->v[i].key)
        m->used++;
    m->v[i] = (struct mesh_hmap_entry){key, value, h};
    m->n++;
    return 0;
}

void *mesh_hmap_get(const struct mesh_hmap *m, const char *key)
{
    struct mesh_hmap_entry *e = find(m, key, hash_of(m, key));
    return e ? e->value : NULL;
}

void *mesh_hmap_remove(struct mesh_hmap *m, const char *key)
{
    struct mesh_hmap_entry *e = find(m, key, hash_of(m, key));
    if (!e)
        return NULL;
    void *v = e->value;
    e->key = MESH_HMAP_TOMBSTONE;
    e->value = NULL;
    m->n--;
    return v;
}
