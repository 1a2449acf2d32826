#include "common/dns_msg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void set16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

int mesh_dns_header_read(const uint8_t *p, size_t len, struct mesh_dns_header *ret)
{
    if (len < MESH_DNS_HEADER_LEN)
        return -EBADMSG;
    *ret = (struct mesh_dns_header){
        .id = get16(p),
        .flags = get16(p + 2),
        .qdcount = get16(p + 4),
        .ancount = get16(p + 6),
        .nscount = get16(p + 8),
        .arcount = get16(p + 10),
    };
    return 0;
}

void mesh_dns_header_write(uint8_t *p, const struct mesh_dns_header *h)
{
    set16(p, h->id);
    set16(p + 2, h->flags);
    set16(p + 4, h->qdcount);
    set16(p + 6, h->ancount);
    set16(p + 8, h->nscount);
    set16(p + 10, h->arcount);
}

static bool plain_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/*
 * Reads the name at `off`. Sets *ret_next to the offset just past it where it starts (not
 * where a pointer leads). Writes its text into `text` (MESH_DNS_NAME_TEXT_MAX) when not
 * NULL. Returns 0 or -EBADMSG with *why set.
 */
static int read_name(const uint8_t *p, size_t len, size_t off, char *text, size_t *ret_next,
                     const char **why)
{
    size_t wire = 0, t = 0, next = 0, hops = 0;
    size_t limit = off; /* a pointer must lead before the name it belongs to started */
    /* Where what is read must end: past a pointer, before the name that pointed there began
     * (a compressor only points at names written whole before), so a message cut after any
     * record still holds every name its records point at. */
    size_t end = len;
    bool jumped = false;
    for (;;) {
        if (off >= end) {
            *why = jumped ? "a compressed name runs into the name pointing at it"
                          : "a name runs past the end of the message";
            return -EBADMSG;
        }
        uint8_t c = p[off];
        if ((c & 0xc0) == 0xc0) {
            if (off + 1 >= end) {
                *why = "a compression pointer runs past the end of the message";
                return -EBADMSG;
            }
            size_t to = (size_t)(c & 0x3f) << 8 | p[off + 1];
            if (!jumped)
                next = off + 2;
            if (to < MESH_DNS_HEADER_LEN) {
                /* Nothing there is a name; a header rewritten (a cut) would change it. */
                *why = "a compression pointer into the header";
                return -EBADMSG;
            }
            if (to >= limit) {
                *why = "a compression pointer does not point backwards";
                return -EBADMSG;
            }
            if (++hops > MESH_DNS_POINTERS_MAX) {
                *why = "too many compression pointers in one name";
                return -EBADMSG;
            }
            jumped = true;
            end = limit;
            limit = to;
            off = to;
            continue;
        }
        if (c & 0xc0) {
            *why = "a label of a reserved type (0x40 or 0x80)";
            return -EBADMSG;
        }
        wire += 1u + c;
        if (wire > MESH_DNS_NAME_WIRE_MAX) {
            *why = "a name longer than 255 bytes";
            return -EBADMSG;
        }
        if (c == 0) {
            if (!jumped)
                next = off + 1;
            break;
        }
        if (off + 1 + c > end) {
            *why = jumped ? "a compressed name runs into the name pointing at it"
                          : "a label runs past the end of the message";
            return -EBADMSG;
        }
        if (text) {
            if (t)
                text[t++] = '.';
            for (size_t i = 0; i < c; i++) {
                uint8_t ch = p[off + 1 + i];
                if (plain_char(ch))
                    text[t++] = (char)ch;
                else
                    t += (size_t)snprintf(text + t, 5, "\\%03u", ch);
            }
        }
        off += 1u + c;
    }
    if (text) {
        if (!t)
            text[t++] = '.';
        text[t] = '\0';
    }
    *ret_next = next;
    return 0;
}

/* Walks one record at *off; reports an OPT record through m when `additional`. */
static int read_rr(const uint8_t *p, size_t len, size_t *off, bool additional,
                   struct mesh_dns_msg *m, const char **why)
{
    size_t start = *off, next;
    if (read_name(p, len, start, NULL, &next, why) < 0)
        return -EBADMSG;
    if (next + 10 > len) {
        *why = "a record's type, class, TTL or length runs past the end of the message";
        return -EBADMSG;
    }
    uint16_t type = get16(p + next), rclass = get16(p + next + 2);
    uint32_t ttl = get32(p + next + 4);
    size_t rdlen = get16(p + next + 8);
    if (next + 10 + rdlen > len) {
        *why = "a record's data runs past the end of the message";
        return -EBADMSG;
    }
    if (type == MESH_DNS_TYPE_OPT) {
        if (!additional) {
            *why = "an OPT record outside the additional section";
            return -EBADMSG;
        }
        if (m->has_opt) {
            *why = "more than one OPT record";
            return -EBADMSG;
        }
        if (p[start] != 0) {
            *why = "an OPT record not owned by the root";
            return -EBADMSG;
        }
        m->has_opt = true;
        m->udp_size = rclass < MESH_DNS_UDP_MIN ? MESH_DNS_UDP_MIN : rclass;
        m->edns_version = (uint8_t)(ttl >> 16);
        m->opt_ttl = ttl;
    }
    *off = next + 10 + rdlen;
    return 0;
}

int mesh_dns_parse(const uint8_t *p, size_t len, struct mesh_dns_msg *ret, const char **ret_why)
{
    const char *why_local = NULL;
    const char **why = ret_why ? ret_why : &why_local;
    struct mesh_dns_msg *m = ret;
    m->has_question = false;
    m->qname[0] = '\0';
    m->qtype = m->qclass = 0;
    m->has_opt = false;
    m->udp_size = MESH_DNS_UDP_MIN;
    m->edns_version = 0;
    m->opt_ttl = 0;
    if (mesh_dns_header_read(p, len, &m->h) < 0) {
        *why = "shorter than a DNS header (12 bytes)";
        return -EBADMSG;
    }
    if (len > MESH_DNS_MSG_MAX) {
        *why = "longer than 65535 bytes";
        return -EBADMSG;
    }
    size_t off = MESH_DNS_HEADER_LEN;
    for (unsigned i = 0; i < m->h.qdcount; i++) {
        size_t next;
        if (read_name(p, len, off, i == 0 ? m->qname : NULL, &next, why) < 0)
            return -EBADMSG;
        if (next + 4 > len) {
            *why = "a question's type or class runs past the end of the message";
            return -EBADMSG;
        }
        if (i == 0) {
            m->qtype = get16(p + next);
            m->qclass = get16(p + next + 2);
            m->has_question = true;
        }
        off = next + 4;
    }
    m->question_end = off;
    unsigned counts[3] = {m->h.ancount, m->h.nscount, m->h.arcount};
    for (int s = 0; s < 3; s++) {
        for (unsigned i = 0; i < counts[s]; i++) {
            if (read_rr(p, len, &off, s == 2, m, why) < 0)
                return -EBADMSG;
        }
        if (s == 0)
            m->answer_end = off;
    }
    if (off != len) {
        *why = "bytes after the last record";
        return -EBADMSG;
    }
    return 0;
}

int mesh_dns_truncate(uint8_t *p, size_t len, const struct mesh_dns_msg *m, size_t max,
                      uint16_t opt_size)
{
    size_t opt_len = opt_size ? 11 : 0;
    if (len <= max)
        return (int)len;
    if (m->question_end + opt_len > max)
        return -EMSGSIZE;
    /* Whole answer records while they fit; pointers in them lead backwards, into what is
     * kept. */
    size_t off = m->question_end, keep = off;
    unsigned kept = 0;
    for (unsigned i = 0; i < m->h.ancount; i++) {
        struct mesh_dns_msg scratch = {0};
        const char *why;
        size_t o = off;
        if (read_rr(p, len, &o, false, &scratch, &why) < 0 || o + opt_len > max)
            break;
        off = keep = o;
        kept++;
    }
    /* The authority section whole, after a whole answer section, when it fits. */
    unsigned kept_ns = 0;
    if (kept == m->h.ancount && m->h.nscount) {
        size_t o = off;
        unsigned i = 0;
        for (; i < m->h.nscount; i++) {
            struct mesh_dns_msg scratch = {0};
            const char *why;
            if (read_rr(p, len, &o, false, &scratch, &why) < 0 || o + opt_len > max)
                break;
        }
        if (i == m->h.nscount) {
            keep = o;
            kept_ns = i;
        }
    }
    struct mesh_dns_header h = m->h;
    /* RFC 2181 9: TC says the answer is incomplete, not that optional records were left out. */
    if (kept < m->h.ancount || (m->h.ancount == 0 && kept_ns < m->h.nscount))
        h.flags |= MESH_DNS_FLAG_TC;
    h.ancount = (uint16_t)kept;
    h.nscount = (uint16_t)kept_ns;
    h.arcount = 0;
    size_t n = keep;
    if (opt_len) {
        struct mesh_dns_builder b = {.p = p, .cap = max, .len = n};
        uint8_t root = 0;
        mesh_dns_put_bytes(&b, &root, 1);
        mesh_dns_put_rr_tail(&b, MESH_DNS_TYPE_OPT, opt_size, m->has_opt ? m->opt_ttl : 0, NULL, 0);
        if (b.err == 0) {
            n = b.len;
            h.arcount = 1;
        }
    }
    mesh_dns_header_write(p, &h);
    return (int)n;
}

void mesh_dns_builder_init(struct mesh_dns_builder *b, uint8_t *storage, size_t cap)
{
    *b = (struct mesh_dns_builder){.p = storage, .cap = cap};
}

void mesh_dns_put_bytes(struct mesh_dns_builder *b, const void *data, size_t len)
{
    if (b->err)
        return;
    if (len > b->cap - b->len) {
        b->err = -EMSGSIZE;
        return;
    }
    if (len)
        memcpy(b->p + b->len, data, len);
    b->len += len;
}

void mesh_dns_put_u16(struct mesh_dns_builder *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    mesh_dns_put_bytes(b, x, 2);
}

void mesh_dns_put_u32(struct mesh_dns_builder *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mesh_dns_put_bytes(b, x, 4);
}

void mesh_dns_put_name(struct mesh_dns_builder *b, const char *text)
{
    uint8_t wire[MESH_DNS_NAME_WIRE_MAX];
    size_t w = 0;
    const char *s = text;
    if (strcmp(s, ".") == 0)
        s = "";
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n == 0 || n > MESH_DNS_LABEL_MAX || w + 1 + n + 1 > sizeof(wire)) {
            if (!b->err)
                b->err = -EINVAL;
            return;
        }
        wire[w++] = (uint8_t)n;
        for (size_t i = 0; i < n; i++) {
            if (!plain_char((uint8_t)s[i])) {
                if (!b->err)
                    b->err = -EINVAL;
                return;
            }
            wire[w++] = (uint8_t)s[i];
        }
        s += n;
        if (*s == '.')
            s++;
    }
    wire[w++] = 0;
    mesh_dns_put_bytes(b, wire, w);
}

void mesh_dns_put_pointer(struct mesh_dns_builder *b, size_t offset)
{
    if (offset >= 0x4000) {
        if (!b->err)
            b->err = -EINVAL;
        return;
    }
    mesh_dns_put_u16(b, (uint16_t)(0xc000u | offset));
}

void mesh_dns_put_rr_tail(struct mesh_dns_builder *b, uint16_t type, uint16_t rclass, uint32_t ttl,
                          const void *rdata, size_t rdlen)
{
    if (rdlen > 0xffff) {
        if (!b->err)
            b->err = -EINVAL;
        return;
    }
    mesh_dns_put_u16(b, type);
    mesh_dns_put_u16(b, rclass);
    mesh_dns_put_u32(b, ttl);
    mesh_dns_put_u16(b, (uint16_t)rdlen);
    mesh_dns_put_bytes(b, rdata, rdlen);
}

void mesh_dns_put_opt(struct mesh_dns_builder *b, uint16_t udp_size)
{
    uint8_t root = 0;
    mesh_dns_put_bytes(b, &root, 1);
    mesh_dns_put_rr_tail(b, MESH_DNS_TYPE_OPT, udp_size, 0, NULL, 0);
}

const char *mesh_dns_rcode_name(unsigned rcode)
{
    static const char *const names[] = {"NOERROR",  "FORMERR", "SERVFAIL",
                                        "NXDOMAIN", "NOTIMP",  "REFUSED"};
    static _Thread_local char other[16];
    if (rcode < sizeof(names) / sizeof(names[0]))
        return names[rcode];
    snprintf(other, sizeof(other), "RCODE%u", rcode & 0xfffu);
    return other;
}
