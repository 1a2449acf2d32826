/*
 * Which config keys only a restart applies (MESH_CFG_RESTART), and which of them two
 * decoded configs set differently: what a reload refuses, told by the schema.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/cfg.h"

#define FIELD_CPTR(obj, f) ((const void *)((const char *)(obj) + (f)->offset))

static int fields_equal(const struct mesh_cfg_schema *schema, const void *a, const void *b);

/* 1 when f holds the same value in a and b, 0 when not, -ENOMEM. Secrets are compared
 * as they are, not as their redacted encoding. */
static int field_equal(const struct mesh_cfg_field *f, const void *a, const void *b)
{
    if (f->type == MESH_CFG_OBJECT)
        return fields_equal(f->schema, FIELD_CPTR(a, f), FIELD_CPTR(b, f));
    if (f->type == MESH_CFG_STRING) {
        const char *x = *(char *const *)FIELD_CPTR(a, f), *y = *(char *const *)FIELD_CPTR(b, f);
        return x && y ? strcmp(x, y) == 0 : x == y;
    }
    struct mesh_cfg_field one[2] = {*f, {0}};
    one[0].flags &= ~MESH_CFG_SECRET;
    const struct mesh_cfg_schema s = {.fields = one};
    json_t *ja = mesh_cfg_encode(&s, a), *jb = mesh_cfg_encode(&s, b);
    int r = ja && jb ? json_equal(ja, jb) : -ENOMEM;
    json_decref(ja);
    json_decref(jb);
    return r;
}

static int fields_equal(const struct mesh_cfg_schema *schema, const void *a, const void *b)
{
    for (const struct mesh_cfg_field *f = schema->fields; f->key; f++) {
        int r = field_equal(f, a, b);
        if (r <= 0)
            return r;
    }
    return 1;
}

/* Walks the flagged fields (and into unflagged objects); with a and b, only those that
 * differ. Appends each path; returns how many, or -ENOMEM. */
static int walk(const struct mesh_cfg_schema *schema, const void *a, const void *b,
                const char *prefix, struct mesh_buf *ret)
{
    int n = 0;
    for (const struct mesh_cfg_field *f = schema->fields; f->key; f++) {
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", f->key);
        int r;
        if (!(f->flags & MESH_CFG_RESTART)) {
            if (f->type != MESH_CFG_OBJECT)
                continue;
            r = walk(f->schema, a ? FIELD_CPTR(a, f) : NULL, b ? FIELD_CPTR(b, f) : NULL, path,
                     ret);
            if (r < 0)
                return r;
            n += r;
            continue;
        }
        if (a && (r = field_equal(f, a, b)) != 0) {
            if (r < 0)
                return r;
            continue;
        }
        if (mesh_buf_appendf(ret, "%s%s", ret->len ? ", " : "", path) < 0)
            return -ENOMEM;
        n++;
    }
    return n;
}

int mesh_cfg_restart_changes(const struct mesh_cfg_schema *schema, const void *a, const void *b,
                             struct mesh_buf *ret)
{
    return walk(schema, a, b, "", ret);
}

int mesh_cfg_restart_keys(const struct mesh_cfg_schema *schema, struct mesh_buf *ret)
{
    return walk(schema, NULL, NULL, "", ret);
}
