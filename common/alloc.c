#include "common/alloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

static atomic_long live_allocations;
static atomic_long fail_countdown = -1;

static int should_fail(void)
{
    long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (n < 0)
        return 0;
    if (n == 0)
        return 1;
    /* A concurrent decrement may race; tests that inject failures run single-threaded. */
    atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed);
    return 0;
}

static void count(long delta)
{
    atomic_fetch_add_explicit(&live_allocations, delta, memory_order_relaxed);
}

void *mesh_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    void *p = malloc(size ? size : 1);
    if (p)
        count(1);
    return p;
}

void *mesh_calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p)
        count(1);
    return p;
}

void *mesh_realloc(void *ptr, size_t size)
{
    if (size == 0 || should_fail())
        return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        count(1);
    return p;
}

int mesh_grow(void **items, size_t *cap, size_t min_n, size_t elem_size)
{
    if (min_n <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4;
    while (n < min_n) {
        if (n > SIZE_MAX / 2)
            return -ENOMEM;
        n *= 2;
    }
    if (n > SIZE_MAX / elem_size)
        return -ENOMEM;
    void *p = mesh_realloc(*items, n * elem_size);
    if (!p)
        return -ENOMEM;
    *items = p;
    *cap = n;
    return 0;
}

void mesh_free(void *ptr)
{
    if (!ptr)
        return;
    count(-1);
    free(ptr);
}

void *mesh_memdup(const void *p, size_t n)
{
    void *d = mesh_malloc(n);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

char *mesh_strndup(const char *s, size_t n)
{
    char *d = mesh_malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *mesh_strdup(const char *s)
{
    return s ? mesh_strndup(s, strlen(s)) : NULL;
}

char *mesh_vasprintf(const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0)
        return NULL;
    char *s = mesh_malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *mesh_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = mesh_vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

static void *uv_calloc_cb(size_t n, size_t size)
{
    return mesh_calloc(n, size);
}

static void *uv_realloc_cb(void *ptr, size_t size)
{
    /* libuv expects realloc(p, 0) to free. */
    if (size == 0) {
        mesh_free(ptr);
        return NULL;
    }
    return mesh_realloc(ptr, size);
}

void mesh_alloc_install(void)
{
    json_set_alloc_funcs(mesh_malloc, mesh_free);
    uv_replace_allocator(mesh_malloc, uv_realloc_cb, uv_calloc_cb, mesh_free);
}

void mesh_alloc_fail_after(long n)
{
    atomic_store(&fail_countdown, n);
}

long mesh_alloc_live(void)
{
    return atomic_load(&live_allocations);
}
