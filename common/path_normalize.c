#include "common/path_normalize.h"

#include <errno.h>
#include <string.h>

const char *const mesh_path_slashes_names[] = {"keep", "reject", "decode_and_merge", NULL};

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~". */
static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* What a path may hold besides escapes (RFC 3986 3.3): pchar and '/'. */
static bool is_path_char(unsigned char c)
{
    return is_unreserved(c) || (c != '\0' && strchr("!$&'()*+,;=:@/", c) != NULL);
}

static const char upper_hex[] = "0123456789ABCDEF";

/*
 * First pass: escapes and characters, one at a time, into out. Never grows: each escape
 * becomes at most its three bytes, each character one.
 */
static int decode(const char *path, size_t len, const struct mesh_path_options *o, char *out,
                  size_t *ret_len, const char **why)
{
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        bool escaped = false;
        if (c == '%') {
            int hi = i + 2 < len ? hexval((unsigned char)path[i + 1]) : -1;
            int lo = i + 2 < len ? hexval((unsigned char)path[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                if (o->normalize) {
                    *why = "invalid percent-encoding in the path";
                    return -EINVAL;
                }
                out[w++] = (char)c; /* left alone, as everything else here */
                continue;
            }
            c = (unsigned char)(hi * 16 + lo);
            escaped = true;
        }
        if (c == '/' && escaped) {
            /* %2F: a slash that is not a separator, unless decoded. */
        } else if (c != '\\') {
            if (escaped && o->normalize && is_unreserved(c)) {
                out[w++] = (char)c;
            } else if (escaped) {
                out[w++] = '%';
                out[w++] = o->normalize ? upper_hex[c >> 4] : path[i + 1];
                out[w++] = o->normalize ? upper_hex[c & 15] : path[i + 2];
            } else if (o->normalize && !is_path_char(c)) {
                *why = "invalid character in the path";
                return -EINVAL;
            } else {
                out[w++] = (char)c;
            }
            if (escaped)
                i += 2;
            continue;
        }
        /* %2F, %5C, or a raw '\' (which some servers take for '/'). */
        switch (o->escaped_slashes) {
        case MESH_PATH_SLASHES_REJECT:
            *why = "escaped slash (%2F, %5C or '\\') in the path";
            return -EINVAL;
        case MESH_PATH_SLASHES_DECODE:
            out[w++] = '/';
            break;
        default:
            if (escaped) {
                out[w++] = '%';
                out[w++] = o->normalize ? upper_hex[c >> 4] : path[i + 1];
                out[w++] = o->normalize ? upper_hex[c & 15] : path[i + 2];
            } else {
                out[w++] = (char)c;
            }
            break;
        }
        if (escaped)
            i += 2;
    }
    *ret_len = w;
    return 0;
}

/*
 * Second pass, in place: segments. The output is kept as "/seg" pieces, so removing the
 * last segment ("..") goes back to its '/'; w never passes i, so moving forward is safe.
 * "." and ".." go (normalize); empty segments go (merge) except a trailing one, which keeps
 * the slash the path ended with.
 */
static size_t segments(char *p, size_t n, bool dots, bool merge)
{
    size_t w = 0, i = 0;
    while (i < n) {
        size_t j = i + 1;
        while (j < n && p[j] != '/')
            j++;
        size_t seg = j - i - 1;
        bool last = j >= n;
        const char *s = p + i + 1;
        if (dots && seg == 1 && s[0] == '.') {
            if (last)
                p[w++] = '/';
        } else if (dots && seg == 2 && s[0] == '.' && s[1] == '.') {
            while (w > 0 && p[w - 1] != '/')
                w--;
            if (w > 0)
                w--; /* the segment's own '/' */
            if (last)
                p[w++] = '/';
        } else if (seg == 0 && merge && !last) {
            /* "//": dropped */
        } else {
            memmove(p + w, p + i, seg + 1);
            w += seg + 1;
        }
        i = j;
    }
    if (w == 0)
        p[w++] = '/';
    return w;
}

int mesh_path_normalize(const char *path, size_t len, const struct mesh_path_options *o, char *out,
                        size_t size, const char **ret_error)
{
    const char *why = NULL;
    if (len == 0 || path[0] != '/') {
        *ret_error = "the path does not start with '/'";
        return -EINVAL;
    }
    if (size < len)
        return -ENOBUFS;
    size_t n;
    int r = decode(path, len, o, out, &n, &why);
    if (r < 0) {
        *ret_error = why;
        return r;
    }
    bool merge = o->merge_slashes || o->escaped_slashes == MESH_PATH_SLASHES_DECODE;
    if (o->normalize || merge)
        n = segments(out, n, o->normalize, merge);
    return (int)n;
}
