/*
 * Fuzzes the JSON tokenizer: every token it produces is well formed (children inside their
 * parent, `next` past the subtree, strings decodable or refused), and what jansson accepts
 * it accepts too (within its depth and size limits).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/json_tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int depth_of(json_t *v)
{
    int d = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            int c = depth_of(x);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            int c = depth_of(x);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mesh_jdoc d;
    char err[200], buf[512];
    mesh_jdoc_init(&d, 100000);
    int r = mesh_jdoc_parse(&d, (const char *)data, size, err, sizeof(err));
    if (r == 0) {
        for (size_t i = 0; i < d.n; i++) {
            const struct mesh_jtok *t = &d.t[i];
            if (t->next <= i || t->next > d.n || t->start > t->end || t->end > size)
                abort();
            if (t->type == MESH_JT_STRING) {
                long n = mesh_jdoc_str(&d, i, buf, sizeof(buf));
                if (n >= (long)sizeof(buf))
                    abort();
                bool oom;
                char *s = mesh_jdoc_strdup(&d, i, &oom);
                if (s && n >= 0 && strcmp(s, buf) != 0)
                    abort(); /* both decodings agree */
                mesh_free(s);
            }
            if (t->type == MESH_JT_OBJECT || t->type == MESH_JT_ARRAY) {
                size_t c = mesh_jdoc_child(&d, i), k = 0;
                for (; c != MESH_JDOC_NONE && c < t->next; c = d.t[c].next)
                    k++;
                if (k != t->size * (t->type == MESH_JT_OBJECT ? 2u : 1u) ||
                    (t->size && c != t->next))
                    abort();
            }
        }
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    /* (jansson stops reading at a NUL byte; the tokenizer, rightly, calls it garbage.) */
    if (j && r != 0 && r != -E2BIG && r != -ENOMEM && depth_of(j) <= 64 &&
        !memchr(data, '\0', size))
        abort(); /* jansson accepted valid JSON the tokenizer refused */
    json_decref(j);
    mesh_jdoc_done(&d);
    return 0;
}
