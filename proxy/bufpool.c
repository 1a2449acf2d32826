#include "common/alloc.h"
#include "proxy/bufpool-int.h"

void mesh_bufpool_init(struct mesh_bufpool *p, size_t size, size_t max_free)
{
    *p = (struct mesh_bufpool){.size = size, .max_free = max_free};
}

void mesh_bufpool_done(struct mesh_bufpool *p)
{
    while (p->free) {
        struct mesh_pbuf *b = p->free;
        p->free = b->next;
        mesh_free(b);
    }
    p->n_free = 0;
}

struct mesh_pbuf *mesh_bufpool_get(struct mesh_bufpool *p)
{
    struct mesh_pbuf *b = p->free;
    if (b) {
        p->free = b->next;
        p->n_free--;
    } else {
        b = mesh_malloc(sizeof(*b) + p->size);
        if (!b)
            return NULL;
    }
    p->in_use++;
    return b;
}

void mesh_bufpool_put(struct mesh_bufpool *p, struct mesh_pbuf *b)
{
    p->in_use--;
    /* Keep a few for the next burst; give the rest back after a burst of many. */
    if (p->n_free >= p->max_free) {
        mesh_free(b);
        return;
    }
    b->next = p->free;
    p->free = b;
    p->n_free++;
}
