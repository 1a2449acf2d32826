#include "common/json_tok.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

#define MAX_DEPTH 64

struct parser {
    struct mesh_jdoc *d;
    const char *s;
    size_t len, pos;
    int depth;
    char *err;
    size_t errlen;
};

static int fail(struct parser *p, const char *what)
{
    snprintf(p->err, p->errlen, "offset %zu: %s", p->pos, what);
    return -EINVAL;
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        p->pos++;
    }
}

static int new_token(struct parser *p, enum mesh_jtok_type type, size_t *ret)
{
    struct mesh_jdoc *d = p->d;
    if (d->n == d->max) {
        snprintf(p->err, p->errlen, "more than %zu JSON values", d->max);
        return -E2BIG;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        if (cap > d->max)
            cap = d->max;
        struct mesh_jtok *t = mesh_realloc(d->t, cap * sizeof(*t));
        if (!t)
            return -ENOMEM;
        d->t = t;
        d->cap = cap;
    }
    struct mesh_jtok *t = &d->t[d->n];
    memset(t, 0, sizeof(*t));
    t->type = (uint8_t)type;
    t->start = (uint32_t)p->pos;
    *ret = d->n++;
    return 0;
}

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

static int parse_string(struct parser *p, size_t *ret)
{
    size_t i;
    p->pos++; /* the opening quote */
    int r = new_token(p, MESH_JT_STRING, &i);
    if (r < 0)
        return r;
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->d->t[i].end = (uint32_t)p->pos;
            p->d->t[i].next = (uint32_t)p->d->n;
            p->pos++;
            *ret = i;
            return 0;
        }
        if (c < 0x20)
            return fail(p, "a control character in a string");
        if (c == '\\') {
            p->d->t[i].escaped = true;
            if (p->pos + 1 >= p->len)
                break;
            char e = p->s[p->pos + 1];
            if (e == 'u') {
                if (p->pos + 6 > p->len || hex4(p->s + p->pos + 2) < 0)
                    return fail(p, "a bad \\u escape");
                p->pos += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return fail(p, "a bad escape");
            p->pos += 2;
            continue;
        }
        p->pos++;
    }
    return fail(p, "an unterminated string");
}

static int parse_number(struct parser *p, size_t *ret)
{
    size_t i, start = p->pos;
    int r = new_token(p, MESH_JT_NUMBER, &i);
    if (r < 0)
        return r;
    const char *s = p->s;
    size_t n = p->len, k = p->pos;
    if (k < n && s[k] == '-')
        k++;
    if (k < n && s[k] == '0') {
        k++;
    } else if (k < n && s[k] >= '1' && s[k] <= '9') {
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    } else {
        return fail(p, "a bad number");
    }
    if (k < n && s[k] == '.') {
        k++;
        if (k >= n || s[k] < '0' || s[k] > '9')
            return fail(p, "a bad fraction");
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    }
    if (k < n && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k >= n || s[k] < '0' || s[k] > '9')
            return fail(p, "a bad exponent");
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    }
    p->pos = k;
    p->d->t[i].start = (uint32_t)start;
    p->d->t[i].end = (uint32_t)k;
    p->d->t[i].next = (uint32_t)p->d->n;
    *ret = i;
    return 0;
}

static int parse_value(struct parser *p, size_t *ret);

static int parse_container(struct parser *p, bool object, size_t *ret)
{
    size_t i;
    if (++p->depth > MAX_DEPTH)
        return fail(p, "nested too deep");
    int r = new_token(p, object ? MESH_JT_OBJECT : MESH_JT_ARRAY, &i);
    if (r < 0)
        return r;
    p->pos++; /* { or [ */
    skip_ws(p);
    char close = object ? '}' : ']';
    uint32_t size = 0;
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
    } else {
        for (;;) {
            size_t child;
            skip_ws(p);
            if (object) {
                if (p->pos >= p->len || p->s[p->pos] != '"')
                    return fail(p, "expected a key");
                if ((r = parse_string(p, &child)) < 0)
                    return r;
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':')
                    return fail(p, "expected ':'");
                p->pos++;
            }
            if ((r = parse_value(p, &child)) < 0)
                return r;
            size++;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->len && p->s[p->pos] == close) {
                p->pos++;
                break;
            }
            return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    struct mesh_jtok *t = &p->d->t[i];
    t->size = size;
    t->end = (uint32_t)p->pos;
    t->next = (uint32_t)p->d->n;
    p->depth--;
    *ret = i;
    return 0;
}

static int literal(struct parser *p, const char *word, enum mesh_jtok_type type, size_t *ret)
{
    size_t n = strlen(word), i;
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "an unexpected character");
    int r = new_token(p, type, &i);
    if (r < 0)
        return r;
    p->pos += n;
    p->d->t[i].end = (uint32_t)p->pos;
    p->d->t[i].next = (uint32_t)p->d->n;
    *ret = i;
    return 0;
}

static int parse_value(struct parser *p, size_t *ret)
{
    skip_ws(p);
    if (p->pos >= p->len)
        return fail(p, "unexpected end");
    switch (p->s[p->pos]) {
    case '{':
        return parse_container(p, true, ret);
    case '[':
        return parse_container(p, false, ret);
    case '"':
        return parse_string(p, ret);
    case 't':
        return literal(p, "true", MESH_JT_TRUE, ret);
    case 'f':
        return literal(p, "false", MESH_JT_FALSE, ret);
    case 'n':
        return literal(p, "null", MESH_JT_NULL, ret);
    default:
        return parse_number(p, ret);
    }
}

void mesh_jdoc_init(struct mesh_jdoc *d, size_t max_tokens)
{
    memset(d, 0, sizeof(*d));
    d->max = max_tokens;
}

void mesh_jdoc_done(struct mesh_jdoc *d)
{
    mesh_free(d->t);
    d->t = NULL;
    d->n = d->cap = 0;
}

int mesh_jdoc_parse(struct mesh_jdoc *d, const char *s, size_t len, char *err, size_t errlen)
{
    struct parser p = {.d = d, .s = s, .len = len, .err = err, .errlen = errlen};
    size_t root;
    d->src = s;
    d->n = 0;
    if (len > UINT32_MAX - 1) {
        snprintf(err, errlen, "a document over 4 GiB");
        return -E2BIG;
    }
    int r = parse_value(&p, &root);
    if (r < 0) {
        d->n = 0;
        return r;
    }
    skip_ws(&p);
    if (p.pos != len) {
        d->n = 0;
        return fail(&p, "data after the value");
    }
    return 0;
}

size_t mesh_jdoc_child(const struct mesh_jdoc *d, size_t tok)
{
    if (tok == MESH_JDOC_NONE || tok >= d->n || d->t[tok].size == 0 ||
        (d->t[tok].type != MESH_JT_OBJECT && d->t[tok].type != MESH_JT_ARRAY))
        return MESH_JDOC_NONE;
    return tok + 1;
}

size_t mesh_jdoc_get(const struct mesh_jdoc *d, size_t obj, const char *key)
{
    if (!mesh_jdoc_is(d, obj, MESH_JT_OBJECT))
        return MESH_JDOC_NONE;
    size_t k = obj + 1;
    for (uint32_t i = 0; i < d->t[obj].size; i++) {
        size_t v = k + 1;
        if (mesh_jdoc_streq(d, k, key))
            return v;
        k = d->t[v].next;
    }
    return MESH_JDOC_NONE;
}

/* Decodes the escapes of string token `t` into out[0..n); returns the length or -1. */
static long decode(const struct mesh_jdoc *d, const struct mesh_jtok *t, char *out, size_t n)
{
    const char *s = d->src + t->start, *e = d->src + t->end;
    size_t k = 0;
    while (s < e) {
        unsigned cp;
        if (*s != '\\') {
            cp = (unsigned char)*s++;
            if (k + 1 > n)
                return -1;
            out[k++] = (char)cp;
            continue;
        }
        char c = s[1];
        s += 2;
        switch (c) {
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            cp = (unsigned)hex4(s);
            s += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && e - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                int lo = hex4(s + 2);
                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
                    s += 6;
                }
            }
            if (cp >= 0xd800 && cp < 0xe000)
                cp = 0xfffd; /* a lone surrogate */
            break;
        default: /* " \ / */
            cp = (unsigned char)c;
        }
        if (cp == 0)
            return -1;
        char buf[4];
        size_t m;
        if (cp < 0x80) {
            buf[0] = (char)cp;
            m = 1;
        } else if (cp < 0x800) {
            buf[0] = (char)(0xc0 | (cp >> 6));
            buf[1] = (char)(0x80 | (cp & 0x3f));
            m = 2;
        } else if (cp < 0x10000) {
            buf[0] = (char)(0xe0 | (cp >> 12));
            buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
            buf[2] = (char)(0x80 | (cp & 0x3f));
            m = 3;
        } else {
            buf[0] = (char)(0xf0 | (cp >> 18));
            buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
            buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
            buf[3] = (char)(0x80 | (cp & 0x3f));
            m = 4;
        }
        if (k + m > n)
            return -1;
        memcpy(out + k, buf, m);
        k += m;
    }
    return (long)k;
}

bool mesh_jdoc_streq(const struct mesh_jdoc *d, size_t tok, const char *s)
{
    if (!mesh_jdoc_is(d, tok, MESH_JT_STRING))
        return false;
    const struct mesh_jtok *t = &d->t[tok];
    size_t len = strlen(s);
    if (!t->escaped)
        return t->end - t->start == len && memcmp(d->src + t->start, s, len) == 0;
    char buf[256];
    long n = decode(d, t, buf, sizeof(buf));
    return n >= 0 && (size_t)n == len && memcmp(buf, s, len) == 0;
}

long mesh_jdoc_str(const struct mesh_jdoc *d, size_t tok, char *out, size_t n)
{
    if (!mesh_jdoc_is(d, tok, MESH_JT_STRING) || n == 0)
        return -1;
    const struct mesh_jtok *t = &d->t[tok];
    long len;
    if (!t->escaped) {
        len = (long)(t->end - t->start);
        if ((size_t)len >= n || memchr(d->src + t->start, '\0', (size_t)len))
            return -1;
        memcpy(out, d->src + t->start, (size_t)len);
    } else {
        len = decode(d, t, out, n - 1);
        if (len < 0)
            return -1;
    }
    out[len] = '\0';
    return len;
}

char *mesh_jdoc_strdup(const struct mesh_jdoc *d, size_t tok, bool *ret_oom)
{
    *ret_oom = false;
    if (!mesh_jdoc_is(d, tok, MESH_JT_STRING))
        return NULL;
    size_t n = d->t[tok].end - d->t[tok].start + 1; /* decoding never grows a string */
    char *out = mesh_malloc(n);
    if (!out) {
        *ret_oom = true;
        return NULL;
    }
    if (mesh_jdoc_str(d, tok, out, n) < 0) {
        mesh_free(out);
        return NULL;
    }
    return out;
}

int mesh_jdoc_int(const struct mesh_jdoc *d, size_t tok, int64_t *ret)
{
    if (!mesh_jdoc_is(d, tok, MESH_JT_NUMBER))
        return -EINVAL;
    const struct mesh_jtok *t = &d->t[tok];
    const char *s = d->src + t->start, *e = d->src + t->end;
    bool neg = *s == '-';
    if (neg)
        s++;
    if (s == e)
        return -EINVAL;
    int64_t v = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL; /* a fraction or an exponent */
        if (v > (INT64_MAX - (*s - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (*s - '0');
    }
    *ret = neg ? -v : v;
    return 0;
}
