/*
 * Table-driven JSON configuration decoding.
 *
 * A schema is a table of fields (key, type, flags, limits, default, offset into a struct).
 * Decoding walks the table, never stops at the first problem, and collects every error
 * with the file, the JSON path ($.registries[0].directory) and what was expected. Unknown
 * keys are errors with a did-you-mean hint; duplicate keys are refused by the JSON reader.
 * The same table gives defaults, frees the decoded struct, and encodes it back to JSON
 * (with secrets redacted) for the admin API.
 *
 * Types and the C field each one fills:
 *   STRING   char *              (owned)
 *   INT      int                 in [min, max]; max 0 means no upper limit
 *   BOOL     bool
 *   DURATION uint64_t ms         from "250ms", "10s", "1m30s"; in [min, max] ms
 *   ENUM     int                 index into the NULL-terminated `choices`
 *   OBJECT   embedded struct     decoded with `schema`
 *   LIST     struct mesh_cfg_list of `schema` structs; max items in `max` (0: no limit)
 *   ARRAY    a typed `T *` of `schema` structs with its `size_t` count at `count_offset`
 *            (MESH_CFG_ARRAY_OF); as LIST otherwise. A present array is never NULL, even
 *            empty, so that "[]" can be told from an absent key.
 *   STRINGS  struct mesh_cfg_strings
 *   LABELS   struct mesh_labels  (syntax-checked keys and values)
 *   CUSTOM   anything            `decode`, `free`, `encode` callbacks
 */
#ifndef MESH_CFG_H
#define MESH_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/macros.h"

enum mesh_cfg_type {
    MESH_CFG_STRING,
    MESH_CFG_INT,
    MESH_CFG_BOOL,
    MESH_CFG_DURATION,
    MESH_CFG_ENUM,
    MESH_CFG_OBJECT,
    MESH_CFG_LIST,
    MESH_CFG_ARRAY,
    MESH_CFG_STRINGS,
    MESH_CFG_LABELS,
    MESH_CFG_CUSTOM,
};

#define MESH_CFG_REQUIRED 0x1u /* the key must be present */
#define MESH_CFG_SECRET 0x2u   /* shown as "<redacted>" by mesh_cfg_encode */
#define MESH_CFG_NONEMPTY 0x4u /* STRING: not ""; LIST/STRINGS: at least one item */
/* STRING: a file system path; a relative one is taken from the config file's directory; "" is
 * allowed (unset) unless MESH_CFG_NONEMPTY. */
#define MESH_CFG_PATH 0x8u
/* A change takes effect only when the program restarts: a reload that changes it fails
 * (mesh_cfg_restart_changes). On an OBJECT it covers every key inside. */
#define MESH_CFG_RESTART 0x10u

struct mesh_cfg_ctx;
struct mesh_cfg_schema;

struct mesh_cfg_field {
    const char *key;
    enum mesh_cfg_type type;
    size_t offset;
    size_t count_offset; /* ARRAY: where its item count is */
    unsigned flags;
    /* What is expected, in words, for error messages (a default exists for every type). */
    const char *expect;
    long long min, max;
    const char *const *choices;
    const struct mesh_cfg_schema *schema;
    /* Default for STRING, DURATION ("5s") and ENUM (a choice); INT and BOOL use def_int. */
    const char *def;
    long long def_int;
    /* STRING: an extra check; returns NULL when valid or the reason it is not. */
    const char *(*check)(const char *value);
    /* CUSTOM: decode adds its own errors and returns 0 or -EINVAL; free and encode optional. */
    int (*decode)(struct mesh_cfg_ctx *ctx, json_t *value, void *field);
    void (*free)(void *field);
    json_t *(*encode)(const void *field);
};

struct mesh_cfg_schema {
    size_t size;
    const struct mesh_cfg_field *fields; /* ended by an entry with key NULL */
    /* Optional cross-field validation after the fields decoded; adds errors itself. */
    void (*check)(struct mesh_cfg_ctx *ctx, void *obj);
};

struct mesh_cfg_list {
    void *items;
    size_t n;
};

struct mesh_cfg_strings {
    char **v;
    size_t n;
};

/* Collected error messages, each "file: $.path: message". Capped at MESH_CFG_ERRORS_MAX. */
#define MESH_CFG_ERRORS_MAX 100
struct mesh_cfg_errors {
    char **v;
    size_t n;
    size_t dropped; /* errors past the cap, or that could not be allocated */
};

struct mesh_cfg_ctx {
    const char *file;
    const char *base_dir; /* for MESH_CFG_PATH; NULL: relative paths are refused */
    struct mesh_cfg_errors *errors;
    void *user; /* for custom decoders and checks */
    size_t path_len;
    char path[512];
};

#define MESH_CFG_FIELD(type_, member) .offset = offsetof(type_, member)
/* An ARRAY field: `member` is a `T *` of items, `count` their `size_t` number. */
#define MESH_CFG_ARRAY_OF(type_, member, count)                                                    \
    .type = MESH_CFG_ARRAY, .offset = offsetof(type_, member),                                     \
    .count_offset = offsetof(type_, count)

/*
 * Starts a context for `file`; errors are appended to `errors`. base_dir is NULL; set it
 * (to the file's directory) to allow relative MESH_CFG_PATH values.
 */
void mesh_cfg_ctx_init(struct mesh_cfg_ctx *ctx, const char *file, struct mesh_cfg_errors *errors);

/*
 * Reads and parses a JSON file of at most `max` bytes, refusing duplicate keys. On failure
 * adds "file:line:column: message" (or the system error) to ctx's errors and returns -errno.
 */
int mesh_cfg_load_file(struct mesh_cfg_ctx *ctx, const char *path, size_t max, json_t **ret);
int mesh_cfg_load_buffer(struct mesh_cfg_ctx *ctx, const char *data, size_t len, json_t **ret);

/*
 * The skeleton every config document shares (resources, service files, the last-known-good
 * file): a context naming it, the JSON read strictly, one step that decodes the document
 * (adding its errors to ctx), and -EINVAL when any error was added, whatever step returned.
 * step returns 0, -EINVAL or -ENOMEM. Returns 0, -EINVAL, -ENOMEM.
 */
typedef int (*mesh_cfg_doc_step)(struct mesh_cfg_ctx *ctx, json_t *doc, void *data);
int mesh_cfg_parse_doc(const char *name, const char *data, size_t len,
                       struct mesh_cfg_errors *errors, mesh_cfg_doc_step step, void *step_data);

/* Fills `obj` (schema->size bytes, zeroed here) with the defaults. Returns 0 or -ENOMEM. */
int mesh_cfg_defaults(const struct mesh_cfg_schema *schema, void *obj);
/*
 * Decodes the JSON object `json` into `obj`, which holds defaults (mesh_cfg_defaults).
 * Returns 0 when no error was added, -EINVAL otherwise; `obj` stays freeable either way.
 */
int mesh_cfg_decode(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_schema *schema, json_t *json,
                    void *obj);
/* Like mesh_cfg_decode, with the keys of several schemas allowed in one object. */
int mesh_cfg_decode_multi(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_schema *const *schemas,
                          void *const *objs, size_t n, json_t *json);
/* Frees what decoding allocated inside `obj` (not obj itself). */
void mesh_cfg_free(const struct mesh_cfg_schema *schema, void *obj);
/* Encodes `obj` as JSON; secrets redacted. Returns NULL on allocation failure. */
json_t *mesh_cfg_encode(const struct mesh_cfg_schema *schema, const void *obj);

/*
 * Appends to `ret` the dotted path ("node.name") of every MESH_CFG_RESTART field whose
 * value differs between `a` and `b`, two objects decoded with `schema`, each after ", "
 * when ret is not empty. Objects without the flag are walked into; a
 * flagged one is compared whole, secrets by their value. Returns how many differ, or
 * -ENOMEM. (common/cfg_restart.c)
 */
struct mesh_buf;
int mesh_cfg_restart_changes(const struct mesh_cfg_schema *schema, const void *a, const void *b,
                             struct mesh_buf *ret);
/* Appends the path of every MESH_CFG_RESTART field of `schema`, as above. Returns how
 * many, or -ENOMEM. */
int mesh_cfg_restart_keys(const struct mesh_cfg_schema *schema, struct mesh_buf *ret);

/* Adds an error at the current path: "file: $.path: message". */
void mesh_cfg_error(struct mesh_cfg_ctx *ctx, const char *fmt, ...) MESH_PRINTF(2, 3);
/* Path handling for custom decoders: push returns the length to restore with pop. */
size_t mesh_cfg_path_push_key(struct mesh_cfg_ctx *ctx, const char *key);
size_t mesh_cfg_path_push_index(struct mesh_cfg_ctx *ctx, size_t index);
void mesh_cfg_path_pop(struct mesh_cfg_ctx *ctx, size_t len);
/* Describes a JSON value for "got ..." in messages: "a number (42)", "\"abc\"", "null". */
void mesh_cfg_describe(json_t *v, char *out, size_t n);

/* Errors so far, those past the cap included: compare before and after a decode. */
static inline size_t mesh_cfg_error_count(const struct mesh_cfg_errors *e)
{
    return e->n + e->dropped;
}

/* Adds a copy of a message as it is (it should name its file); respects the cap. */
void mesh_cfg_errors_add(struct mesh_cfg_errors *e, const char *msg);
void mesh_cfg_errors_done(struct mesh_cfg_errors *e);
/* Joins the messages with newlines; caller frees with mesh_free. NULL when there are none. */
char *mesh_cfg_errors_join(const struct mesh_cfg_errors *e);

#endif
