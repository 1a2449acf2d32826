/* The chunked transfer coding (RFC 9112 section 7.1), decoded as it streams by. */
#include <errno.h>
#include <string.h>

#include "common/http_chars-int.h"
#include "common/http_parse.h"
#include "common/macros.h"

/* Chunked decoder states. */
enum {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER_START,
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF,
    CH_DONE,
};

/* States inside a chunk extension: *( BWS ";" BWS name [ BWS "=" BWS value ] ). */
enum {
    EXT_BEFORE_SEMI,
    EXT_BEFORE_NAME,
    EXT_NAME,
    EXT_AFTER_NAME,
    EXT_BEFORE_VALUE,
    EXT_VALUE_TOKEN,
    EXT_VALUE_QUOTED,
    EXT_VALUE_ESCAPE,
    EXT_AFTER_VALUE,
};

void mesh_http_chunked_init(struct mesh_http_chunked *d)
{
    memset(d, 0, sizeof(*d));
    d->state = CH_SIZE;
}

/* One byte of a chunk extension; returns false when it cannot be one. */
static bool ext_byte(struct mesh_http_chunked *d, unsigned char c)
{
    switch (d->ext_state) {
    case EXT_BEFORE_SEMI:
    case EXT_AFTER_VALUE:
        if (is_ows(c))
            return true;
        if (c == ';') {
            d->ext_state = EXT_BEFORE_NAME;
            return true;
        }
        return false;
    case EXT_BEFORE_NAME:
        if (is_ows(c))
            return true;
        if (!is_tchar(c))
            return false;
        d->ext_state = EXT_NAME;
        return true;
    case EXT_NAME:
        if (is_tchar(c))
            return true;
        d->ext_state = EXT_AFTER_NAME;
        return ext_byte(d, c);
    case EXT_AFTER_NAME:
        if (is_ows(c))
            return true;
        if (c == '=') {
            d->ext_state = EXT_BEFORE_VALUE;
            return true;
        }
        d->ext_state = EXT_BEFORE_SEMI;
        return ext_byte(d, c);
    case EXT_BEFORE_VALUE:
        if (is_ows(c))
            return true;
        if (c == '"') {
            d->ext_state = EXT_VALUE_QUOTED;
            return true;
        }
        if (!is_tchar(c))
            return false;
        d->ext_state = EXT_VALUE_TOKEN;
        return true;
    case EXT_VALUE_TOKEN:
        if (is_tchar(c))
            return true;
        d->ext_state = EXT_AFTER_VALUE;
        return ext_byte(d, c);
    case EXT_VALUE_QUOTED:
        if (c == '"')
            d->ext_state = EXT_AFTER_VALUE;
        else if (c == '\\')
            d->ext_state = EXT_VALUE_ESCAPE;
        else if (!(c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f)))
            return false;
        return true;
    case EXT_VALUE_ESCAPE:
        if (!(c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f)))
            return false;
        d->ext_state = EXT_VALUE_QUOTED;
        return true;
    }
    return false;
}

static void trailer_name_byte(struct mesh_http_chunked *d, unsigned char c)
{
    if (d->name_len < sizeof(d->name))
        d->name[d->name_len] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    d->name_len++;
}

/*
 * Fields a trailer section may not carry (RFC 9110 6.5.1): framing, routing, request
 * modifiers, authentication and the connection's own. Each is refused rather than
 * dropped: the bytes before it may already have gone on.
 */
static bool trailer_forbidden(const struct mesh_http_chunked *d)
{
    static const char *const names[] = {"content-length",
                                        "transfer-encoding",
                                        "host",
                                        "connection",
                                        "keep-alive",
                                        "proxy-connection",
                                        "te",
                                        "trailer",
                                        "upgrade",
                                        "expect",
                                        "authorization",
                                        "proxy-authorization",
                                        "cookie",
                                        "set-cookie",
                                        "content-type",
                                        "content-encoding",
                                        "content-range",
                                        "range",
                                        "max-forwards",
                                        "cache-control",
                                        NULL};
    if (d->name_len > sizeof(d->name))
        return false;
    for (int i = 0; names[i]; i++) {
        if (strlen(names[i]) == d->name_len && memcmp(names[i], d->name, d->name_len) == 0)
            return true;
    }
    return false;
}

/* The extension may end (CR) only where a complete one ends. */
static bool ext_can_end(const struct mesh_http_chunked *d)
{
    return d->ext_state == EXT_BEFORE_SEMI || d->ext_state == EXT_NAME ||
           d->ext_state == EXT_AFTER_NAME || d->ext_state == EXT_VALUE_TOKEN ||
           d->ext_state == EXT_AFTER_VALUE;
}

int mesh_http_chunked_decode(struct mesh_http_chunked *d, char *buf, size_t len,
                             size_t *ret_consumed, size_t *ret_data, const char **ret_error)
{
    size_t in = 0, out = 0;
    const char *why = NULL;
#define BAD(msg)                                                                                   \
    do {                                                                                           \
        why = msg;                                                                                 \
        goto bad;                                                                                  \
    } while (0)

    while (in < len && d->state != CH_DONE) {
        unsigned char c = (unsigned char)buf[in];
        switch (d->state) {
        case CH_SIZE: {
            int h = hexval((char)c);
            if (h >= 0) {
                if (d->size_digits >= 16 || d->remaining > (UINT64_MAX >> 4))
                    BAD("chunk size too large");
                d->remaining = d->remaining * 16 + (uint64_t)h;
                d->size_digits++;
                in++;
                break;
            }
            if (d->size_digits == 0)
                BAD("invalid chunk size");
            if (c == '\r') {
                d->state = CH_SIZE_LF;
            } else {
                d->state = CH_EXT;
                d->ext_state = EXT_BEFORE_SEMI;
                if (!ext_byte(d, c))
                    BAD("invalid chunk extension");
            }
            in++;
            break;
        }
        case CH_EXT:
            if (++d->line_len > MESH_HTTP_CHUNK_LINE_MAX)
                BAD("chunk extension too long");
            if (c == '\r') {
                if (!ext_can_end(d))
                    BAD("invalid chunk extension");
                d->state = CH_SIZE_LF;
            } else if (!ext_byte(d, c)) {
                BAD("invalid chunk extension");
            }
            in++;
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                BAD("bare CR in chunk size line");
            in++;
            d->line_len = 0;
            d->size_digits = 0;
            d->state = d->remaining ? CH_DATA : CH_TRAILER_START;
            break;
        case CH_DATA: {
            size_t n = (size_t)MESH_MIN((uint64_t)(len - in), d->remaining);
            if (ret_data && out != in)
                memmove(buf + out, buf + in, n);
            out += n;
            in += n;
            d->remaining -= n;
            if (d->remaining == 0)
                d->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (c != '\r')
                BAD("chunk data not followed by CRLF");
            d->state = CH_DATA_LF;
            in++;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                BAD("chunk data not followed by CRLF");
            d->state = CH_SIZE;
            in++;
            break;
        case CH_TRAILER_START:
            if (c == '\r') {
                d->state = CH_END_LF;
            } else if (is_tchar(c)) {
                d->state = CH_TRAILER_NAME;
                d->name_len = 0;
                trailer_name_byte(d, c);
            } else {
                BAD("invalid trailer field");
            }
            if (++d->trailer_len > MESH_HTTP_TRAILER_MAX)
                BAD("trailer section too large");
            in++;
            break;
        case CH_TRAILER_NAME:
            if (c == ':') {
                if (trailer_forbidden(d))
                    BAD("trailer field not allowed in a trailer section");
                d->state = CH_TRAILER_VALUE;
            } else if (!is_tchar(c)) {
                BAD("invalid trailer field name");
            } else {
                trailer_name_byte(d, c);
            }
            if (++d->trailer_len > MESH_HTTP_TRAILER_MAX)
                BAD("trailer section too large");
            in++;
            break;
        case CH_TRAILER_VALUE:
            if (c == '\r')
                d->state = CH_TRAILER_LF;
            else if (!is_field_char(c))
                BAD("invalid trailer field value");
            if (++d->trailer_len > MESH_HTTP_TRAILER_MAX)
                BAD("trailer section too large");
            in++;
            break;
        case CH_TRAILER_LF:
            if (c != '\n')
                BAD("bare CR in trailer");
            d->state = CH_TRAILER_START;
            in++;
            break;
        case CH_END_LF:
            if (c != '\n')
                BAD("bare CR at end of chunked body");
            d->state = CH_DONE;
            in++;
            break;
        }
    }
#undef BAD
    *ret_consumed = in;
    if (ret_data)
        *ret_data = out;
    return d->state == CH_DONE ? 1 : 0;
bad:
    if (ret_error)
        *ret_error = why;
    *ret_consumed = in;
    if (ret_data)
        *ret_data = out;
    return -EBADMSG;
}
