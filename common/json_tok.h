/*
 * A strict JSON tokenizer for hot paths (Kubernetes watch streams and list pages): one pass,
 * no allocation per value, a flat array of tokens that points into the input. Values are
 * read where they are; strings are decoded only when asked. It accepts exactly RFC 8259
 * JSON (no trailing commas, no control characters in strings, valid escapes and numbers),
 * bounded in depth and token count. jansson stays for everything that is not hot.
 *
 * Token i's children follow it; `next` is the index just past its subtree, so siblings
 * are reached by jumping. An object's children alternate key (a string) and value.
 */
#ifndef MESH_JSON_TOK_H
#define MESH_JSON_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mesh_jtok_type {
    MESH_JT_OBJECT,
    MESH_JT_ARRAY,
    MESH_JT_STRING,
    MESH_JT_NUMBER,
    MESH_JT_TRUE,
    MESH_JT_FALSE,
    MESH_JT_NULL,
};

struct mesh_jtok {
    uint8_t type;
    bool escaped;   /* a string with backslash escapes (decode before use) */
    uint32_t start; /* strings: just inside the quotes */
    uint32_t end;
    uint32_t size; /* objects: keys; arrays: items */
    uint32_t next; /* the token after this value and all it contains */
};

#define MESH_JDOC_NONE ((size_t)-1)

struct mesh_jdoc {
    const char *src;
    struct mesh_jtok *t;
    size_t n, cap;
    size_t max; /* tokens at most */
};

/* `max_tokens` bounds a document (and so the memory it may take). */
void mesh_jdoc_init(struct mesh_jdoc *d, size_t max_tokens);
void mesh_jdoc_done(struct mesh_jdoc *d);
/*
 * Tokenizes one JSON value filling `s` entirely (whitespace around allowed). The token
 * array is reused between calls. Returns 0, -EINVAL with "offset N: problem" in err,
 * -E2BIG past max tokens, or -ENOMEM.
 */
int mesh_jdoc_parse(struct mesh_jdoc *d, const char *s, size_t len, char *err, size_t errlen);

/* The value of `key` in object token `obj`, or MESH_JDOC_NONE (also when obj is NONE or
 * not an object). */
size_t mesh_jdoc_get(const struct mesh_jdoc *d, size_t obj, const char *key);
/* The first child of an object or array (for objects: the first key), or NONE. */
size_t mesh_jdoc_child(const struct mesh_jdoc *d, size_t tok);
static inline size_t mesh_jdoc_next(const struct mesh_jdoc *d, size_t tok)
{
    return d->t[tok].next;
}
static inline bool mesh_jdoc_is(const struct mesh_jdoc *d, size_t tok, enum mesh_jtok_type type)
{
    return tok != MESH_JDOC_NONE && d->t[tok].type == type;
}
/* True when string token `tok` equals `s`. */
bool mesh_jdoc_streq(const struct mesh_jdoc *d, size_t tok, const char *s);
/* Decodes string token `tok` into `out` (NUL-terminated). Returns its length, or -1 when
 * tok is not a string, does not fit, or holds a NUL. */
long mesh_jdoc_str(const struct mesh_jdoc *d, size_t tok, char *out, size_t n);
/* Decodes a string token into a new allocation (mesh_free), or NULL (not a string, NUL
 * inside, or out of memory; *ret_oom tells which). */
char *mesh_jdoc_strdup(const struct mesh_jdoc *d, size_t tok, bool *ret_oom);
/* An integer number token. Returns 0 or -EINVAL (not an integer, or out of range). */
int mesh_jdoc_int(const struct mesh_jdoc *d, size_t tok, int64_t *ret);

#endif
