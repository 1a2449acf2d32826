#include "common/labels.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"

static size_t find(const struct mesh_labels *l, const char *key, bool *found)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(l->v[mid].key, key);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

int mesh_labels_set(struct mesh_labels *l, const char *key, const char *value)
{
    bool found;
    size_t i = find(l, key, &found);
    char *v = mesh_strdup(value);
    if (!v)
        return -ENOMEM;
    if (found) {
        mesh_free(l->v[i].value);
        l->v[i].value = v;
        return 0;
    }
    char *k = mesh_strdup(key);
    struct mesh_label *nv = k ? mesh_realloc(l->v, (l->n + 1) * sizeof(*nv)) : NULL;
    if (!nv) {
        mesh_free(k);
        mesh_free(v);
        return -ENOMEM;
    }
    memmove(nv + i + 1, nv + i, (l->n - i) * sizeof(*nv));
    nv[i] = (struct mesh_label){k, v};
    l->v = nv;
    l->n++;
    return 0;
}

const char *mesh_labels_get(const struct mesh_labels *l, const char *key)
{
    bool found;
    size_t i = find(l, key, &found);
    return found ? l->v[i].value : NULL;
}

int mesh_labels_copy(struct mesh_labels *dst, const struct mesh_labels *src)
{
    struct mesh_labels out = {0};
    for (size_t i = 0; i < src->n; i++) {
        if (mesh_labels_set(&out, src->v[i].key, src->v[i].value) < 0) {
            mesh_labels_done(&out);
            return -ENOMEM;
        }
    }
    *dst = out;
    return 0;
}

bool mesh_labels_equal(const struct mesh_labels *a, const struct mesh_labels *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i].key, b->v[i].key) || strcmp(a->v[i].value, b->v[i].value))
            return false;
    }
    return true;
}

void mesh_labels_done(struct mesh_labels *l)
{
    for (size_t i = 0; i < l->n; i++) {
        mesh_free(l->v[i].key);
        mesh_free(l->v[i].value);
    }
    mesh_free(l->v);
    l->v = NULL;
    l->n = 0;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A label name or value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends. */
static bool name_valid(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !alnum(s[0]) || !alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!name_char(s[i]))
            return false;
    }
    return true;
}

bool mesh_label_key_valid(const char *key, const char **ret_why)
{
    const char *slash = strchr(key, '/');
    const char *name = slash ? slash + 1 : key;
    if (slash) {
        size_t plen = (size_t)(slash - key);
        bool ok = plen > 0 && plen <= 253;
        for (size_t i = 0; ok && i < plen; i++)
            ok = (key[i] >= 'a' && key[i] <= 'z') || (key[i] >= '0' && key[i] <= '9') ||
                 key[i] == '-' || key[i] == '.';
        if (!ok) {
            if (ret_why)
                *ret_why = "a label key prefix must be a DNS subdomain (lowercase, at most 253)";
            return false;
        }
    }
    if (!name_valid(name, strlen(name))) {
        if (ret_why)
            *ret_why = "a label name must be 1-63 characters of [A-Za-z0-9-_.], alphanumeric at "
                       "both ends";
        return false;
    }
    return true;
}

bool mesh_label_value_valid(const char *value, const char **ret_why)
{
    size_t n = strlen(value);
    if (n == 0 || name_valid(value, n))
        return true;
    if (ret_why)
        *ret_why = "a label value must be empty or 1-63 characters of [A-Za-z0-9-_.], "
                   "alphanumeric at both ends";
    return false;
}
