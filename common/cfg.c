#include "common/cfg.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/fs.h"
#include "common/labels.h"
#include "common/strutil.h"

#define FIELD_PTR(obj, f) ((void *)((char *)(obj) + (f)->offset))
#define FIELD_CPTR(obj, f) ((const void *)((const char *)(obj) + (f)->offset))

void mesh_cfg_ctx_init(struct mesh_cfg_ctx *ctx, const char *file, struct mesh_cfg_errors *errors)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->file = file;
    ctx->errors = errors;
    ctx->path[0] = '$';
    ctx->path[1] = '\0';
    ctx->path_len = 1;
}

static void add_error(struct mesh_cfg_errors *e, char *msg)
{
    if (!msg) {
        e->dropped++;
        return;
    }
    if (e->n >= MESH_CFG_ERRORS_MAX) {
        e->dropped++;
        mesh_free(msg);
        return;
    }
    char **v = mesh_realloc(e->v, (e->n + 1) * sizeof(*v));
    if (!v) {
        e->dropped++;
        mesh_free(msg);
        return;
    }
    e->v = v;
    e->v[e->n++] = msg;
}

void mesh_cfg_error(struct mesh_cfg_ctx *ctx, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ctx->file)
        add_error(ctx->errors, mesh_asprintf("%s: %s: %s", ctx->file, ctx->path, msg));
    else
        add_error(ctx->errors, mesh_asprintf("%s: %s", ctx->path, msg));
}

static bool is_identifier(const char *k)
{
    if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || *k == '_'))
        return false;
    for (; *k; k++) {
        char c = *k;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Appends raw text to the path; a path that no longer fits is cut (messages stay usable). */
static void path_append(struct mesh_cfg_ctx *ctx, const char *s, size_t n)
{
    size_t room = sizeof(ctx->path) - 1 - ctx->path_len;
    if (n > room)
        n = room;
    memcpy(ctx->path + ctx->path_len, s, n);
    ctx->path_len += n;
    ctx->path[ctx->path_len] = '\0';
}

size_t mesh_cfg_path_push_key(struct mesh_cfg_ctx *ctx, const char *key)
{
    size_t old = ctx->path_len;
    size_t n = strlen(key);
    if (is_identifier(key)) {
        path_append(ctx, ".", 1);
        path_append(ctx, key, n);
    } else {
        path_append(ctx, "[\"", 2);
        path_append(ctx, key, MESH_MIN(n, (size_t)40));
        path_append(ctx, "\"]", 2);
    }
    return old;
}

size_t mesh_cfg_path_push_index(struct mesh_cfg_ctx *ctx, size_t index)
{
    size_t old = ctx->path_len;
    char num[24];
    int n = snprintf(num, sizeof(num), "[%zu]", index);
    path_append(ctx, num, (size_t)n);
    return old;
}

void mesh_cfg_path_pop(struct mesh_cfg_ctx *ctx, size_t len)
{
    ctx->path_len = len;
    ctx->path[len] = '\0';
}

void mesh_cfg_describe(json_t *v, char *out, size_t n)
{
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t len = strlen(s);
        if (len > 40)
            snprintf(out, n, "\"%.37s...\"", s);
        else
            snprintf(out, n, "\"%s\"", s);
        break;
    }
    case JSON_INTEGER:
        snprintf(out, n, "%lld", (long long)json_integer_value(v));
        break;
    case JSON_REAL:
        snprintf(out, n, "%g", json_real_value(v));
        break;
    case JSON_TRUE:
        snprintf(out, n, "true");
        break;
    case JSON_FALSE:
        snprintf(out, n, "false");
        break;
    case JSON_NULL:
        snprintf(out, n, "null");
        break;
    case JSON_OBJECT:
        snprintf(out, n, "an object");
        break;
    case JSON_ARRAY:
        snprintf(out, n, "an array");
        break;
    }
}

int mesh_cfg_load_buffer(struct mesh_cfg_ctx *ctx, const char *data, size_t len, json_t **ret)
{
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        const char *file = ctx->file ? ctx->file : "<input>";
        add_error(ctx->errors, mesh_asprintf("%s:%d:%d: invalid JSON: %s", file, jerr.line,
                                             jerr.column, jerr.text));
        return -EINVAL;
    }
    *ret = root;
    return 0;
}

int mesh_cfg_parse_doc(const char *name, const char *data, size_t len,
                       struct mesh_cfg_errors *errors, mesh_cfg_doc_step step, void *step_data)
{
    struct mesh_cfg_ctx ctx;
    mesh_cfg_ctx_init(&ctx, name, errors);
    size_t before = mesh_cfg_error_count(errors);
    json_t *json = NULL;
    int r = mesh_cfg_load_buffer(&ctx, data, len, &json);
    if (r == 0)
        r = step(&ctx, json, step_data);
    json_decref(json);
    if (r == 0 && mesh_cfg_error_count(errors) != before)
        r = -EINVAL;
    return r == -ENOMEM ? r : r < 0 ? -EINVAL : 0;
}

int mesh_cfg_load_file(struct mesh_cfg_ctx *ctx, const char *path, size_t max, json_t **ret)
{
    char *data = NULL;
    size_t len = 0;
    int r = mesh_fs_read_file(path, max, &data, &len);
    if (r < 0) {
        if (r == -EFBIG)
            add_error(ctx->errors,
                      mesh_asprintf("%s: file is larger than the limit of %zu bytes", path, max));
        else
            add_error(ctx->errors, mesh_asprintf("%s: cannot read: %s", path, strerror(-r)));
        return r;
    }
    r = mesh_cfg_load_buffer(ctx, data, len, ret);
    mesh_free(data);
    return r;
}

static const char *default_expect(const struct mesh_cfg_field *f, char *buf, size_t n)
{
    if (f->expect)
        return f->expect;
    switch (f->type) {
    case MESH_CFG_STRING:
        return (f->flags & MESH_CFG_NONEMPTY) ? "a non-empty string" : "a string";
    case MESH_CFG_INT:
        if (f->max)
            snprintf(buf, n, "an integer from %lld to %lld", f->min, f->max);
        else
            snprintf(buf, n, "an integer of at least %lld", f->min);
        return buf;
    case MESH_CFG_BOOL:
        return "true or false";
    case MESH_CFG_DURATION:
        return "a duration such as \"5s\", \"250ms\" or \"1m30s\"";
    case MESH_CFG_ENUM: {
        size_t k = (size_t)snprintf(buf, n, "one of");
        for (size_t i = 0; f->choices[i] && k < n; i++)
            k += (size_t)snprintf(buf + k, n - k, "%s \"%s\"", i ? "," : "", f->choices[i]);
        return buf;
    }
    case MESH_CFG_OBJECT:
        return "an object";
    case MESH_CFG_LIST:
    case MESH_CFG_ARRAY:
        return "an array of objects";
    case MESH_CFG_STRINGS:
        return "an array of strings";
    case MESH_CFG_LABELS:
        return "an object of string labels";
    case MESH_CFG_CUSTOM:
        return "a valid value";
    }
    return "a valid value";
}

static void type_error(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *f, json_t *v)
{
    char expect[256], got[64];
    mesh_cfg_describe(v, got, sizeof(got));
    mesh_cfg_error(ctx, "expected %s, got %s", default_expect(f, expect, sizeof(expect)), got);
}

static int set_default(const struct mesh_cfg_field *f, void *obj)
{
    void *p = FIELD_PTR(obj, f);
    switch (f->type) {
    case MESH_CFG_STRING:
        if (f->def) {
            *(char **)p = mesh_strdup(f->def);
            if (!*(char **)p)
                return -ENOMEM;
        }
        break;
    case MESH_CFG_INT:
        *(int *)p = (int)f->def_int;
        break;
    case MESH_CFG_BOOL:
        *(bool *)p = f->def_int != 0;
        break;
    case MESH_CFG_DURATION:
        if (f->def && mesh_parse_duration_ms(f->def, (uint64_t *)p) < 0)
            return -EINVAL;
        break;
    case MESH_CFG_ENUM:
        *(int *)p = 0;
        for (int i = 0; f->def && f->choices[i]; i++) {
            if (strcmp(f->choices[i], f->def) == 0)
                *(int *)p = i;
        }
        break;
    case MESH_CFG_OBJECT:
        return mesh_cfg_defaults(f->schema, p);
    default:
        break;
    }
    return 0;
}

int mesh_cfg_defaults(const struct mesh_cfg_schema *schema, void *obj)
{
    memset(obj, 0, schema->size);
    for (const struct mesh_cfg_field *f = schema->fields; f->key; f++) {
        int r = set_default(f, obj);
        if (r < 0) {
            mesh_cfg_free(schema, obj);
            return r;
        }
    }
    return 0;
}

static int decode_string(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *f, json_t *v,
                         char **dst)
{
    if (!json_is_string(v)) {
        type_error(ctx, f, v);
        return -EINVAL;
    }
    const char *s = json_string_value(v);
    if ((f->flags & MESH_CFG_NONEMPTY) && !*s) {
        type_error(ctx, f, v);
        return -EINVAL;
    }
    if (f->check) {
        const char *why = f->check(s);
        if (why) {
            char expect[256], got[64];
            mesh_cfg_describe(v, got, sizeof(got));
            mesh_cfg_error(ctx, "expected %s, got %s: %s",
                           default_expect(f, expect, sizeof(expect)), got, why);
            return -EINVAL;
        }
    }
    char *copy;
    /* A path may be "" (unset) unless NONEMPTY says otherwise (checked above). */
    if ((f->flags & MESH_CFG_PATH) && s[0] && s[0] != '/') {
        if (!ctx->base_dir || !*s) {
            char expect[256], got[64];
            mesh_cfg_describe(v, got, sizeof(got));
            mesh_cfg_error(ctx, "expected %s, got %s: must be an absolute path",
                           default_expect(f, expect, sizeof(expect)), got);
            return -EINVAL;
        }
        copy = mesh_asprintf("%s/%s", ctx->base_dir, s);
    } else {
        copy = mesh_strdup(s);
    }
    if (!copy) {
        mesh_cfg_error(ctx, "out of memory");
        return -ENOMEM;
    }
    mesh_free(*dst);
    *dst = copy;
    return 0;
}

static int decode_list(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *f, json_t *v,
                       struct mesh_cfg_list *list)
{
    if (!json_is_array(v)) {
        type_error(ctx, f, v);
        return -EINVAL;
    }
    size_t n = json_array_size(v);
    if (f->max && n > (size_t)f->max) {
        mesh_cfg_error(ctx, "expected at most %lld items, got %zu", f->max, n);
        return -EINVAL;
    }
    if ((f->flags & MESH_CFG_NONEMPTY) && n == 0) {
        mesh_cfg_error(ctx, "expected at least one item");
        return -EINVAL;
    }
    int r = 0;
    list->items = n ? mesh_calloc(n, f->schema->size) : NULL;
    if (n && !list->items) {
        mesh_cfg_error(ctx, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        void *item = (char *)list->items + i * f->schema->size;
        if (mesh_cfg_defaults(f->schema, item) < 0) {
            mesh_cfg_error(ctx, "out of memory");
            return -ENOMEM;
        }
        list->n = i + 1; /* counted before decoding so that free covers it */
        size_t old = mesh_cfg_path_push_index(ctx, i);
        if (mesh_cfg_decode(ctx, f->schema, json_array_get(v, i), item) < 0)
            r = -EINVAL;
        mesh_cfg_path_pop(ctx, old);
    }
    return r;
}

/* An ARRAY is a LIST kept as a typed pointer and a count apart; present means not NULL. */
static int decode_array(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *f, json_t *v,
                        void *obj)
{
    struct mesh_cfg_list l = {0};
    int r = decode_list(ctx, f, v, &l);
    if (r == 0 && !l.items) {
        l.items = mesh_calloc(1, f->schema->size);
        if (!l.items) {
            mesh_cfg_error(ctx, "out of memory");
            r = -ENOMEM;
        }
    }
    *(void **)FIELD_PTR(obj, f) = l.items;
    *(size_t *)((char *)obj + f->count_offset) = l.n;
    return r;
}

static int decode_strings(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *f, json_t *v,
                          struct mesh_cfg_strings *out)
{
    if (!json_is_array(v)) {
        type_error(ctx, f, v);
        return -EINVAL;
    }
    size_t n = json_array_size(v);
    if ((f->flags & MESH_CFG_NONEMPTY) && n == 0) {
        mesh_cfg_error(ctx, "expected at least one item");
        return -EINVAL;
    }
    if (f->max && n > (size_t)f->max) {
        mesh_cfg_error(ctx, "expected at most %lld items, got %zu", f->max, n);
        return -EINVAL;
    }
    out->v = n ? mesh_calloc(n, sizeof(char *)) : NULL;
    if (n && !out->v) {
        mesh_cfg_error(ctx, "out of memory");
        return -ENOMEM;
    }
    out->n = n;
    int r = 0;
    struct mesh_cfg_field item = *f;
    item.flags &= ~MESH_CFG_NONEMPTY;
    item.expect = f->expect ? f->expect : "a string";
    for (size_t i = 0; i < n; i++) {
        size_t old = mesh_cfg_path_push_index(ctx, i);
        if (decode_string(ctx, &item, json_array_get(v, i), &out->v[i]) < 0)
            r = -EINVAL;
        mesh_cfg_path_pop(ctx, old);
    }
    return r;
}

static int decode_labels(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *f, json_t *v,
                         struct mesh_labels *out)
{
    if (!json_is_object(v)) {
        type_error(ctx, f, v);
        return -EINVAL;
    }
    int r = 0;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        size_t old = mesh_cfg_path_push_key(ctx, key);
        const char *why = NULL;
        char got[64];
        if (!mesh_label_key_valid(key, &why)) {
            mesh_cfg_error(ctx, "invalid label key '%s': %s", key, why);
            r = -EINVAL;
        } else if (!json_is_string(val)) {
            mesh_cfg_describe(val, got, sizeof(got));
            mesh_cfg_error(ctx, "expected a string label value, got %s", got);
            r = -EINVAL;
        } else if (!mesh_label_value_valid(json_string_value(val), &why)) {
            mesh_cfg_describe(val, got, sizeof(got));
            mesh_cfg_error(ctx, "invalid label value %s: %s", got, why);
            r = -EINVAL;
        } else if (mesh_labels_set(out, key, json_string_value(val)) < 0) {
            mesh_cfg_error(ctx, "out of memory");
            r = -ENOMEM;
        }
        mesh_cfg_path_pop(ctx, old);
    }
    return r;
}

static int decode_field(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *f, json_t *v,
                        void *obj)
{
    void *p = FIELD_PTR(obj, f);
    switch (f->type) {
    case MESH_CFG_STRING:
        return decode_string(ctx, f, v, p);
    case MESH_CFG_INT: {
        long long max = f->max ? f->max : INT_MAX;
        if (!json_is_integer(v) || json_integer_value(v) < f->min || json_integer_value(v) > max) {
            type_error(ctx, f, v);
            return -EINVAL;
        }
        *(int *)p = (int)json_integer_value(v);
        return 0;
    }
    case MESH_CFG_BOOL:
        if (!json_is_boolean(v)) {
            type_error(ctx, f, v);
            return -EINVAL;
        }
        *(bool *)p = json_is_true(v);
        return 0;
    case MESH_CFG_DURATION: {
        uint64_t ms;
        if (!json_is_string(v) || mesh_parse_duration_ms(json_string_value(v), &ms) < 0) {
            type_error(ctx, f, v);
            return -EINVAL;
        }
        char lo[32], hi[32];
        mesh_format_duration_ms((uint64_t)f->min, lo, sizeof(lo));
        mesh_format_duration_ms((uint64_t)f->max, hi, sizeof(hi));
        if (ms < (uint64_t)f->min || (f->max && ms > (uint64_t)f->max)) {
            if (f->max)
                mesh_cfg_error(ctx, "expected a duration from %s to %s, got \"%s\"", lo, hi,
                               json_string_value(v));
            else
                mesh_cfg_error(ctx, "expected a duration of at least %s, got \"%s\"", lo,
                               json_string_value(v));
            return -EINVAL;
        }
        *(uint64_t *)p = ms;
        return 0;
    }
    case MESH_CFG_ENUM:
        if (json_is_string(v)) {
            for (int i = 0; f->choices[i]; i++) {
                if (strcmp(f->choices[i], json_string_value(v)) == 0) {
                    *(int *)p = i;
                    return 0;
                }
            }
            const char *hint = mesh_str_suggest(json_string_value(v), f->choices);
            if (hint) {
                char expect[256];
                mesh_cfg_error(ctx, "expected %s, got \"%s\" (did you mean \"%s\"?)",
                               default_expect(f, expect, sizeof(expect)), json_string_value(v),
                               hint);
                return -EINVAL;
            }
        }
        type_error(ctx, f, v);
        return -EINVAL;
    case MESH_CFG_OBJECT:
        return mesh_cfg_decode(ctx, f->schema, v, p);
    case MESH_CFG_LIST:
        return decode_list(ctx, f, v, p);
    case MESH_CFG_ARRAY:
        return decode_array(ctx, f, v, obj);
    case MESH_CFG_STRINGS:
        return decode_strings(ctx, f, v, p);
    case MESH_CFG_LABELS:
        return decode_labels(ctx, f, v, p);
    case MESH_CFG_CUSTOM:
        return f->decode(ctx, v, p);
    }
    return -EINVAL;
}

static const struct mesh_cfg_field *find_field(const struct mesh_cfg_schema *schema,
                                               const char *key)
{
    for (const struct mesh_cfg_field *f = schema->fields; f->key; f++) {
        if (strcmp(f->key, key) == 0)
            return f;
    }
    return NULL;
}

int mesh_cfg_decode_multi(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_schema *const *schemas,
                          void *const *objs, size_t n, json_t *json)
{
    size_t errors_before = mesh_cfg_error_count(ctx->errors);
    if (!json_is_object(json)) {
        char got[64];
        mesh_cfg_describe(json, got, sizeof(got));
        mesh_cfg_error(ctx, "expected an object, got %s", got);
        return -EINVAL;
    }
    const char *key;
    json_t *value;
    json_object_foreach(json, key, value)
    {
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = find_field(schemas[i], key) != NULL;
        if (known)
            continue;
        const char *candidates[65];
        size_t nc = 0;
        for (size_t i = 0; i < n; i++) {
            for (const struct mesh_cfg_field *f = schemas[i]->fields; f->key && nc < 64; f++)
                candidates[nc++] = f->key;
        }
        candidates[nc] = NULL;
        const char *hint = mesh_str_suggest(key, candidates);
        size_t old = mesh_cfg_path_push_key(ctx, key);
        if (hint)
            mesh_cfg_error(ctx, "unknown key '%s' (did you mean '%s'?)", key, hint);
        else
            mesh_cfg_error(ctx, "unknown key '%s'", key);
        mesh_cfg_path_pop(ctx, old);
    }
    for (size_t i = 0; i < n; i++) {
        size_t own_before = mesh_cfg_error_count(ctx->errors);
        for (const struct mesh_cfg_field *f = schemas[i]->fields; f->key; f++) {
            json_t *v = json_object_get(json, f->key);
            if (!v && !(f->flags & MESH_CFG_REQUIRED))
                continue;
            size_t old = mesh_cfg_path_push_key(ctx, f->key);
            if (!v) {
                char expect[256];
                mesh_cfg_error(ctx, "required key is missing (expected %s)",
                               default_expect(f, expect, sizeof(expect)));
            } else {
                decode_field(ctx, f, v, objs[i]);
            }
            mesh_cfg_path_pop(ctx, old);
        }
        /* Cross-field checks only make sense on fields that decoded. */
        if (schemas[i]->check && mesh_cfg_error_count(ctx->errors) == own_before)
            schemas[i]->check(ctx, objs[i]);
    }
    return mesh_cfg_error_count(ctx->errors) == errors_before ? 0 : -EINVAL;
}

int mesh_cfg_decode(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_schema *schema, json_t *json,
                    void *obj)
{
    void *objs[1] = {obj};
    return mesh_cfg_decode_multi(ctx, &schema, objs, 1, json);
}

static void free_items(const struct mesh_cfg_field *f, void **items, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        mesh_cfg_free(f->schema, (char *)*items + i * f->schema->size);
    mesh_free(*items);
    *items = NULL;
    *n = 0;
}

void mesh_cfg_free(const struct mesh_cfg_schema *schema, void *obj)
{
    for (const struct mesh_cfg_field *f = schema->fields; f->key; f++) {
        void *p = FIELD_PTR(obj, f);
        switch (f->type) {
        case MESH_CFG_STRING:
            mesh_free(*(char **)p);
            *(char **)p = NULL;
            break;
        case MESH_CFG_OBJECT:
            mesh_cfg_free(f->schema, p);
            break;
        case MESH_CFG_LIST:
            free_items(f, &((struct mesh_cfg_list *)p)->items, &((struct mesh_cfg_list *)p)->n);
            break;
        case MESH_CFG_ARRAY:
            free_items(f, p, (size_t *)((char *)obj + f->count_offset));
            break;
        case MESH_CFG_STRINGS: {
            struct mesh_cfg_strings *s = p;
            for (size_t i = 0; i < s->n; i++)
                mesh_free(s->v[i]);
            mesh_free(s->v);
            s->v = NULL;
            s->n = 0;
            break;
        }
        case MESH_CFG_LABELS:
            mesh_labels_done(p);
            break;
        case MESH_CFG_CUSTOM:
            if (f->free)
                f->free(p);
            break;
        default:
            break;
        }
    }
}

static json_t *encode_items(const struct mesh_cfg_field *f, const void *items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (json_array_append_new(
                a, mesh_cfg_encode(f->schema, (const char *)items + i * f->schema->size)) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *encode_field(const struct mesh_cfg_field *f, const void *obj)
{
    const void *p = FIELD_CPTR(obj, f);
    switch (f->type) {
    case MESH_CFG_STRING: {
        const char *s = *(char *const *)p;
        if (!s)
            return json_null();
        return json_string((f->flags & MESH_CFG_SECRET) ? "<redacted>" : s);
    }
    case MESH_CFG_INT:
        return json_integer(*(const int *)p);
    case MESH_CFG_BOOL:
        return json_boolean(*(const bool *)p);
    case MESH_CFG_DURATION: {
        char d[32];
        mesh_format_duration_ms(*(const uint64_t *)p, d, sizeof(d));
        return json_string(d);
    }
    case MESH_CFG_ENUM:
        return json_string(f->choices[*(const int *)p]);
    case MESH_CFG_OBJECT:
        return mesh_cfg_encode(f->schema, p);
    case MESH_CFG_LIST: {
        const struct mesh_cfg_list *l = p;
        return encode_items(f, l->items, l->n);
    }
    case MESH_CFG_ARRAY:
        return encode_items(f, *(void *const *)p,
                            *(const size_t *)((const char *)obj + f->count_offset));
    case MESH_CFG_STRINGS: {
        const struct mesh_cfg_strings *s = p;
        json_t *a = json_array();
        for (size_t i = 0; a && i < s->n; i++) {
            if (json_array_append_new(a, json_string(s->v[i])) < 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MESH_CFG_LABELS: {
        const struct mesh_labels *l = p;
        json_t *o = json_object();
        for (size_t i = 0; o && i < l->n; i++) {
            if (json_object_set_new(o, l->v[i].key, json_string(l->v[i].value)) < 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    case MESH_CFG_CUSTOM:
        return f->encode ? f->encode(p) : json_null();
    }
    return NULL;
}

json_t *mesh_cfg_encode(const struct mesh_cfg_schema *schema, const void *obj)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (const struct mesh_cfg_field *f = schema->fields; f->key; f++) {
        json_t *v = encode_field(f, obj);
        if (!v || json_object_set_new(o, f->key, v) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

void mesh_cfg_errors_add(struct mesh_cfg_errors *e, const char *msg)
{
    add_error(e, mesh_strdup(msg));
}

void mesh_cfg_errors_done(struct mesh_cfg_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        mesh_free(e->v[i]);
    mesh_free(e->v);
    *e = (struct mesh_cfg_errors){0};
}

char *mesh_cfg_errors_join(const struct mesh_cfg_errors *e)
{
    size_t len = 1;
    if (e->n == 0)
        return NULL;
    for (size_t i = 0; i < e->n; i++)
        len += strlen(e->v[i]) + 1;
    char *s = mesh_malloc(len + 64);
    if (!s)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < e->n; i++) {
        size_t l = strlen(e->v[i]);
        memcpy(s + k, e->v[i], l);
        k += l;
        s[k++] = '\n';
    }
    if (e->dropped)
        k += (size_t)snprintf(s + k, 64, "(%zu more errors not shown)\n", e->dropped);
    s[k ? k - 1 : 0] = '\0';
    return s;
}
