/*
 * Growable byte buffer with a hard maximum. Every buffer filled from the network or from a
 * file has one: appending past `max` fails with -EMSGSIZE and leaves the buffer unchanged.
 *
 * Errors are also sticky in `err`, so a writer that appends many pieces (a JSON document,
 * a metrics page) can check once at the end.
 */
#ifndef MESH_BUF_H
#define MESH_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "common/macros.h"

struct mesh_buf {
    char *data; /* always NUL-terminated when non-NULL, not counted in len */
    size_t len;
    size_t cap;
    size_t max;
    int err;   /* first error of an append, 0 if none */
    int fixed; /* data is caller storage: never reallocated or freed */
};

#define MESH_BUF_UNLIMITED ((size_t)-1 / 2)

void mesh_buf_init(struct mesh_buf *b, size_t max);
/* Uses caller storage (a stack array): appends past it fail, nothing is allocated. */
void mesh_buf_init_fixed(struct mesh_buf *b, char *storage, size_t size);
void mesh_buf_done(struct mesh_buf *b);
/* Makes room for `extra` more bytes. Returns 0, -ENOMEM or -EMSGSIZE (over max). */
int mesh_buf_reserve(struct mesh_buf *b, size_t extra);
int mesh_buf_append(struct mesh_buf *b, const void *data, size_t len);
int mesh_buf_append_str(struct mesh_buf *b, const char *s);
int mesh_buf_appendf(struct mesh_buf *b, const char *fmt, ...) MESH_PRINTF(2, 3);
int mesh_buf_vappendf(struct mesh_buf *b, const char *fmt, va_list ap) MESH_PRINTF(2, 0);
/* Appends `s` as a JSON string literal with quotes and escapes. */
int mesh_buf_append_json_str(struct mesh_buf *b, const char *s, size_t len);
/* Drops the first n bytes. */
void mesh_buf_consume(struct mesh_buf *b, size_t n);
void mesh_buf_reset(struct mesh_buf *b);
/* Hands the data to the caller (free with mesh_free) and resets the buffer. */
char *mesh_buf_steal(struct mesh_buf *b, size_t *ret_len);

#endif
