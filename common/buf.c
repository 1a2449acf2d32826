#include "common/buf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

void mesh_buf_init(struct mesh_buf *b, size_t max)
{
    *b = (struct mesh_buf){.max = max};
}

void mesh_buf_init_fixed(struct mesh_buf *b, char *storage, size_t size)
{
    *b = (struct mesh_buf){.data = storage, .cap = size, .max = size - 1, .fixed = 1};
    storage[0] = '\0';
}

void mesh_buf_done(struct mesh_buf *b)
{
    if (!b->fixed)
        mesh_free(b->data);
    *b = (struct mesh_buf){.max = b->max};
}

static int fail(struct mesh_buf *b, int err)
{
    if (!b->err)
        b->err = err;
    return err;
}

int mesh_buf_reserve(struct mesh_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return fail(b, -EMSGSIZE);
    size_t need = b->len + extra + 1; /* room for the terminating NUL */
    if (need <= b->cap)
        return 0;
    if (b->fixed)
        return fail(b, -EMSGSIZE);
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = mesh_realloc(b->data, cap);
    if (!p)
        return fail(b, -ENOMEM);
    b->data = p;
    b->cap = cap;
    return 0;
}

int mesh_buf_append(struct mesh_buf *b, const void *data, size_t len)
{
    int r = mesh_buf_reserve(b, len);
    if (r < 0)
        return r;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int mesh_buf_append_str(struct mesh_buf *b, const char *s)
{
    return mesh_buf_append(b, s, strlen(s));
}

int mesh_buf_vappendf(struct mesh_buf *b, const char *fmt, va_list ap)
{
    char small[256];
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(small, sizeof(small), fmt, aq);
    va_end(aq);
    if (n < 0)
        return fail(b, -EINVAL);
    if ((size_t)n < sizeof(small))
        return mesh_buf_append(b, small, (size_t)n);
    int r = mesh_buf_reserve(b, (size_t)n);
    if (r < 0)
        return r;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int mesh_buf_appendf(struct mesh_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = mesh_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return r;
}

int mesh_buf_append_json_str(struct mesh_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    int r = mesh_buf_append(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len && r == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (!esc)
            continue;
        r = mesh_buf_append(b, s + start, i - start);
        if (r == 0)
            r = mesh_buf_append_str(b, esc);
        start = i + 1;
    }
    if (r == 0)
        r = mesh_buf_append(b, s + start, len - start);
    if (r == 0)
        r = mesh_buf_append(b, "\"", 1);
    return r;
}

void mesh_buf_consume(struct mesh_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

void mesh_buf_reset(struct mesh_buf *b)
{
    b->len = 0;
    b->err = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *mesh_buf_steal(struct mesh_buf *b, size_t *ret_len)
{
    char *d = b->data;
    if (ret_len)
        *ret_len = b->len;
    *b = (struct mesh_buf){.max = b->max};
    return d;
}
