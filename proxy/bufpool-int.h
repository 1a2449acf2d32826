/*
 * Read buffers of a worker: fixed size, each with room for the write request that carries
 * it to the other side, recycled through a free list. A connection holds buffers only
 * while data is in flight, so idle connections cost no buffer memory.
 */
#ifndef MESH_BUFPOOL_H
#define MESH_BUFPOOL_H

#include <stddef.h>

#include <uv.h>

struct mesh_pbuf {
    uv_write_t req;
    struct mesh_pbuf *next;
    void *owner;  /* whoever queued the write; must outlive the write's callback */
    unsigned tag; /* for the owner */
    char data[];
};

struct mesh_bufpool {
    size_t size; /* bytes of data per buffer */
    size_t max_free;
    size_t n_free;
    size_t in_use;
    struct mesh_pbuf *free;
};

void mesh_bufpool_init(struct mesh_bufpool *p, size_t size, size_t max_free);
void mesh_bufpool_done(struct mesh_bufpool *p);
/* A buffer, or NULL when memory is short. */
struct mesh_pbuf *mesh_bufpool_get(struct mesh_bufpool *p);
void mesh_bufpool_put(struct mesh_bufpool *p, struct mesh_pbuf *b);

#endif
