/*
 * DNS messages on the wire (RFC 1035 section 4, RFC 6891 for EDNS0): a strict parser that
 * walks the whole message and refuses anything malformed with a reason, and a small builder
 * for the answers the agent writes itself. No allocation; nothing is kept of the input.
 *
 * The parser checks: the 12-byte header; every name (labels of at most 63 bytes, at most
 * 255 bytes in all, the two reserved label types refused, compression pointers followed only
 * backwards and at most MESH_DNS_POINTERS_MAX times); every record's fixed part and RDATA
 * inside the message; at most one OPT record, in the additional section, owned by the root;
 * and no bytes after the last record. It reads the first question and the OPT record's UDP
 * payload size. It lives in common/ because both the agent's DNS responder and anything
 * else that reads DNS (the proxy, a capture of port 53) need the same strict reading.
 */
#ifndef MESH_DNS_MSG_H
#define MESH_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MESH_DNS_HEADER_LEN 12
#define MESH_DNS_NAME_WIRE_MAX 255 /* RFC 1035 section 3.1 */
#define MESH_DNS_LABEL_MAX 63
/* A name as text: each wire byte is at most 4 characters ("\\DDD"), plus dots and NUL. */
#define MESH_DNS_NAME_TEXT_MAX 1024
#define MESH_DNS_POINTERS_MAX 64 /* compression pointers followed in one name */
#define MESH_DNS_UDP_MIN 512     /* what a client without EDNS0 accepts over UDP */
#define MESH_DNS_MSG_MAX 65535   /* a TCP message's length prefix is 16 bits */

enum {
    MESH_DNS_TYPE_A = 1,
    MESH_DNS_TYPE_NS = 2,
    MESH_DNS_TYPE_CNAME = 5,
    MESH_DNS_TYPE_SOA = 6,
    MESH_DNS_TYPE_PTR = 12,
    MESH_DNS_TYPE_AAAA = 28,
    MESH_DNS_TYPE_OPT = 41,
    MESH_DNS_TYPE_ANY = 255,
    MESH_DNS_CLASS_IN = 1,
};

enum {
    MESH_DNS_RCODE_NOERROR = 0,
    MESH_DNS_RCODE_FORMERR = 1,
    MESH_DNS_RCODE_SERVFAIL = 2,
    MESH_DNS_RCODE_NXDOMAIN = 3,
    MESH_DNS_RCODE_NOTIMP = 4,
    MESH_DNS_RCODE_REFUSED = 5,
};

/* Header flag bits (the second 16-bit word). */
#define MESH_DNS_FLAG_QR 0x8000u
#define MESH_DNS_FLAG_AA 0x0400u
#define MESH_DNS_FLAG_TC 0x0200u
#define MESH_DNS_FLAG_RD 0x0100u
#define MESH_DNS_FLAG_RA 0x0080u
#define MESH_DNS_FLAG_CD 0x0010u
#define MESH_DNS_OPCODE(flags) (((flags) >> 11) & 0xfu)
#define MESH_DNS_RCODE(flags) ((flags)&0xfu)

struct mesh_dns_header {
    uint16_t id;
    uint16_t flags;
    uint16_t qdcount, ancount, nscount, arcount;
};

/* What mesh_dns_parse found. Offsets are into the parsed buffer. */
struct mesh_dns_msg {
    struct mesh_dns_header h;
    bool has_question;
    char qname[MESH_DNS_NAME_TEXT_MAX]; /* the first question's name as text, as sent; "."
                                           for the root; \DDD for bytes other than
                                           letters, digits, '-' and '_' */
    uint16_t qtype, qclass;
    size_t question_end; /* offset just past the question section */
    size_t answer_end;   /* offset just past the answer section */
    bool has_opt;
    uint16_t udp_size; /* the OPT record's payload size (at least 512), or 512 without one */
    uint8_t edns_version;
    uint32_t opt_ttl; /* the OPT record's TTL: extended RCODE, version, flags (DO) */
};

/*
 * Parses and checks a whole message of `len` bytes. `ret` is filled on success; on failure
 * returns -EBADMSG and, when ret_why is not NULL, sets it to a constant string saying what
 * is wrong. A message whose header is readable has ret->h filled even when it fails, so a
 * FORMERR can echo the ID. Returns 0 or -EBADMSG.
 */
int mesh_dns_parse(const uint8_t *p, size_t len, struct mesh_dns_msg *ret, const char **ret_why);

/* Reads the header alone. Returns 0, or -EBADMSG when len < 12. */
int mesh_dns_header_read(const uint8_t *p, size_t len, struct mesh_dns_header *ret);
/* Writes the header into the first 12 bytes of p (which must hold them). */
void mesh_dns_header_write(uint8_t *p, const struct mesh_dns_header *h);

/*
 * Cuts a parsed message (`m` from mesh_dns_parse of p[0..len)) so that it fits `max` bytes,
 * as a UDP answer must: keeps the header and question, as many whole answer records as fit,
 * then the authority section if it fits whole, and drops the additional section. TC is set
 * only when answer records were dropped, or the authority of an answer without any (a
 * negative answer's SOA), as RFC 2181 9 says. An OPT record of `opt_size` is added back when
 * opt_size is not 0 and it fits, with the message's own OPT TTL (extended RCODE, DO) if it
 * had one. Writes into p;
 * returns the new length, or -EMSGSIZE when even the question does not fit.
 */
int mesh_dns_truncate(uint8_t *p, size_t len, const struct mesh_dns_msg *m, size_t max,
                      uint16_t opt_size);

/* A builder over caller storage; errors are sticky in `err` (-EMSGSIZE, -EINVAL). */
struct mesh_dns_builder {
    uint8_t *p;
    size_t cap;
    size_t len;
    int err;
};

void mesh_dns_builder_init(struct mesh_dns_builder *b, uint8_t *storage, size_t cap);
void mesh_dns_put_bytes(struct mesh_dns_builder *b, const void *data, size_t len);
void mesh_dns_put_u16(struct mesh_dns_builder *b, uint16_t v);
void mesh_dns_put_u32(struct mesh_dns_builder *b, uint32_t v);
/*
 * Appends a name given as text ("api.shop.svc.cluster.local", a trailing dot optional, "."
 * or "" for the root); labels of letters, digits, '-' and '_' only. Bad text sets -EINVAL.
 */
void mesh_dns_put_name(struct mesh_dns_builder *b, const char *text);
/* Appends a compression pointer to `offset` (less than 0x4000) as a record's owner name. */
void mesh_dns_put_pointer(struct mesh_dns_builder *b, size_t offset);
/* Appends a record's type, class, TTL and RDATA (after its owner name). */
void mesh_dns_put_rr_tail(struct mesh_dns_builder *b, uint16_t type, uint16_t rclass, uint32_t ttl,
                          const void *rdata, size_t rdlen);
/* Appends an OPT record (root owner, EDNS version 0, no options) offering `udp_size`. */
void mesh_dns_put_opt(struct mesh_dns_builder *b, uint16_t udp_size);

/* The conventional name of an rcode ("NXDOMAIN") or "RCODE<n>". */
const char *mesh_dns_rcode_name(unsigned rcode);

#endif
