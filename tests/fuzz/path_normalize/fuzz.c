/*
 * Fuzzes the request path normalizer. The first byte picks the options; the rest is the
 * path. Checked on every accepted path: the result starts with '/', is no longer than the
 * input, is a fixed point (normalizing it again changes nothing), holds no "." or ".."
 * segment when normalizing, no "//" when merging, no escaped slash unless they are kept,
 * and only characters a path may hold. An input without a leading '/' is refused.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/path_normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_hex_upper(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static bool allowed(unsigned char c, const struct mesh_path_options *o)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    if (c == '\\')
        return o->escaped_slashes == MESH_PATH_SLASHES_KEEP;
    return c != '\0' && strchr("-._~!$&'()*+,;=:@/%", c) != NULL;
}

static void check(const char *out, size_t n, const struct mesh_path_options *o)
{
    bool merge = o->merge_slashes || o->escaped_slashes == MESH_PATH_SLASHES_DECODE;
    if (n == 0 || out[0] != '/')
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (merge && c == '/' && i + 1 < n && out[i + 1] == '/')
            abort();
        if (o->escaped_slashes != MESH_PATH_SLASHES_KEEP && c == '\\')
            abort();
        if (!o->normalize)
            continue;
        if (!allowed(c, o))
            abort();
        if (c == '%') {
            if (i + 2 >= n || !is_hex_upper(out[i + 1]) || !is_hex_upper(out[i + 2]))
                abort();
            int v = (out[i + 1] <= '9' ? out[i + 1] - '0' : out[i + 1] - 'A' + 10) * 16 +
                    (out[i + 2] <= '9' ? out[i + 2] - '0' : out[i + 2] - 'A' + 10);
            bool unreserved = (v >= 'a' && v <= 'z') || (v >= 'A' && v <= 'Z') ||
                              (v >= '0' && v <= '9') || v == '-' || v == '.' || v == '_' ||
                              v == '~';
            if (unreserved)
                abort(); /* should have been decoded */
            if ((v == '/' || v == '\\') && o->escaped_slashes != MESH_PATH_SLASHES_KEEP)
                abort();
        }
        /* A segment of "." or "..". */
        if (c == '/') {
            size_t j = i + 1;
            while (j < n && out[j] != '/')
                j++;
            size_t seg = j - i - 1;
            if ((seg == 1 && out[i + 1] == '.') ||
                (seg == 2 && out[i + 1] == '.' && out[i + 2] == '.'))
                abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct mesh_path_options o = {
        .normalize = (data[0] & 1) != 0,
        .merge_slashes = (data[0] & 2) != 0,
        .escaped_slashes = (data[0] >> 2) % 3,
    };
    const char *path = (const char *)data + 1;
    size_t len = size - 1;
    char *out = malloc(len + 1), *again = malloc(len + 1);
    if (!out || !again)
        abort();
    const char *why = NULL;
    int n = mesh_path_normalize(path, len, &o, out, len + 1, &why);
    if (len == 0 || path[0] != '/') {
        if (n != -EINVAL)
            abort();
    } else if (n < 0) {
        if (!why)
            abort();
    } else {
        if ((size_t)n > len)
            abort();
        check(out, (size_t)n, &o);
        int m = mesh_path_normalize(out, (size_t)n, &o, again, len + 1, &why);
        if (m != n || memcmp(out, again, (size_t)n) != 0)
            abort();
    }
    free(out);
    free(again);
    return 0;
}
