/*
 * Allocation wrappers. Every allocation in the project goes through these so that tests can
 * make the Nth allocation fail and can check that nothing is left allocated. jansson and
 * libuv are routed through them too (mesh_alloc_install).
 *
 * All functions are thread-safe. They return NULL on failure and never abort; only main()
 * decides what out-of-memory means for the process.
 */
#ifndef MESH_ALLOC_H
#define MESH_ALLOC_H

#include <stdarg.h>
#include <stddef.h>

#include "common/macros.h"

void *mesh_malloc(size_t size);
void *mesh_calloc(size_t n, size_t size);
/* Like realloc(3), but a failed call leaves ptr allocated; size 0 is refused (NULL). */
void *mesh_realloc(void *ptr, size_t size);
/* Grows an array to at least min_n elements of elem_size; doubles, checks overflow. */
int mesh_grow(void **items, size_t *cap, size_t min_n, size_t elem_size);
void mesh_free(void *ptr);
char *mesh_strdup(const char *s);
char *mesh_strndup(const char *s, size_t n);
void *mesh_memdup(const void *p, size_t n);
char *mesh_asprintf(const char *fmt, ...) MESH_PRINTF(1, 2);
char *mesh_vasprintf(const char *fmt, va_list ap) MESH_PRINTF(1, 0);

/* Routes jansson's and libuv's allocations through the wrappers. Call once, first thing. */
void mesh_alloc_install(void);

/* Test hooks: after `n` more successful allocations, every allocation fails; -1 disables. */
void mesh_alloc_fail_after(long n);
/* Allocations made and not yet freed, process-wide. */
long mesh_alloc_live(void);

static inline void mesh_freep(void *p)
{
    mesh_free(*(void **)p);
}
#define MESH_AUTOFREE MESH_CLEANUP(mesh_freep)

#endif
