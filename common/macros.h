/*
 * Small macros every module uses: container_of, array size, scope cleanup, attributes.
 */
#ifndef MESH_MACROS_H
#define MESH_MACROS_H

#include <stddef.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define MESH_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Scope-based cleanup (GNU extension, gcc and clang). */
#define MESH_CLEANUP(fn) __attribute__((cleanup(fn)))

#define MESH_PRINTF(fmt_idx, args_idx) __attribute__((format(printf, fmt_idx, args_idx)))
#define MESH_UNUSED __attribute__((unused))
#define MESH_NORETURN __attribute__((noreturn))
#define MESH_LIKELY(x) __builtin_expect(!!(x), 1)
#define MESH_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define MESH_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MESH_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
