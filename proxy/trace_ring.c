/* The workers' span queues and the sampling switch (proxy/trace-int.h). */
#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "proxy/trace-int.h"

int mesh_trace__init(struct mesh_trace_shared *t, int n_workers)
{
    memset(t, 0, sizeof(*t));
    t->rings = mesh_calloc((size_t)n_workers, sizeof(*t->rings));
    if (!t->rings)
        return -ENOMEM;
    t->n_rings = n_workers;
    return 0;
}

void mesh_trace__done(struct mesh_trace_shared *t)
{
    for (int i = 0; t->rings && i < t->n_rings; i++)
        mesh_free(t->rings[i]);
    mesh_free(t->rings);
    t->rings = NULL;
}

int mesh_trace__set(struct mesh_trace_shared *t, bool on, double ratio, const char *node)
{
    if (on) {
        /* The rings are made once, before any worker can see `on`, and kept to the end:
         * a worker never meets a ring being freed. Untouched pages cost no memory. */
        for (int i = 0; i < t->n_rings; i++) {
            if (!t->rings[i] && !(t->rings[i] = mesh_calloc(1, sizeof(*t->rings[i]))))
                return -ENOMEM;
        }
        if (!t->node[0]) {
            size_t n = strlen(node ? node : "");
            n = n < sizeof(t->node) - 1 ? n : sizeof(t->node) - 1;
            memcpy(t->node, node, n);
            t->node[n] = '\0';
        }
    }
    if (ratio < 0)
        ratio = 0;
    if (ratio > 1)
        ratio = 1;
    atomic_store_explicit(&t->threshold, (unsigned long long)(ratio * 9007199254740992.0),
                          memory_order_relaxed);
    atomic_store_explicit(&t->on, on, memory_order_release);
    return 0;
}

size_t mesh_trace__take(struct mesh_trace_shared *t, struct mesh_span *out, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < t->n_rings && n < max; i++) {
        struct mesh_trace_ring *r = t->rings[i];
        if (!r)
            continue;
        size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        while (tail != head && n < max)
            out[n++] = r->spans[tail++ % MESH_TRACE_RING];
        atomic_store_explicit(&r->tail, tail, memory_order_release);
    }
    return n;
}
