#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "common/names.h"
#include "dns/dns-int.h"

#define LABELS_MAX 16
#define LABEL_TEXT_MAX 64

/* The SOA of a negative answer (RFC 2308 section 3): the mesh's names have no real zone,
 * so the name asked for stands as its own apex, and these stand for the servers. */
#define SOA_MNAME "ns.mesh-agent.invalid"
#define SOA_RNAME "hostmaster.mesh-agent.invalid"

/* Whether the labels l[from..n) spell `domain` (lowercase, no trailing dot). */
static bool labels_are(char l[][LABEL_TEXT_MAX], size_t from, size_t n, const char *domain)
{
    if (!domain || !domain[0])
        return false;
    const char *s = domain;
    for (size_t i = from; i < n; i++) {
        size_t len = strlen(l[i]);
        if (strncmp(s, l[i], len) != 0)
            return false;
        s += len;
        if (i + 1 < n) {
            if (*s != '.')
                return false;
            s++;
        }
    }
    return from < n && (*s == '\0' || strcmp(s, ".") == 0);
}

bool mesh_dns__match(const struct mesh_dns__names *names, const char *qname, char *ns, char *name)
{
    char l[LABELS_MAX][LABEL_TEXT_MAX];
    size_t n = 0, k = 0;
    /* Escapes (\DDD) never spell a mesh name. */
    if (strchr(qname, '\\'))
        return false;
    for (const char *p = qname;; p++) {
        if (*p == '.' || *p == '\0') {
            if (k == 0) {
                if (*p == '\0' && p[-1] == '.' && p != qname)
                    break; /* the trailing dot */
                return false;
            }
            if (n == LABELS_MAX)
                return false;
            l[n++][k] = '\0';
            k = 0;
            if (*p == '\0')
                break;
            continue;
        }
        if (n == LABELS_MAX || k + 1 >= LABEL_TEXT_MAX)
            return false;
        l[n][k++] = (char)tolower((unsigned char)*p);
    }
    const char *svc = NULL, *nsp = NULL;
    if (n == 2) {
        svc = l[0];
        nsp = l[1];
    } else if (n == 3 && strcmp(l[2], "svc") == 0) {
        svc = l[0];
        nsp = l[1];
    } else if (n >= 4 && strcmp(l[2], "svc") == 0) {
        for (size_t i = 0; i < names->n_domains && !svc; i++) {
            if (labels_are(l, 3, n, names->domains[i])) {
                svc = l[0];
                nsp = l[1];
            }
        }
    }
    if (!svc && n >= 3 && strcmp(l[1], "service") == 0 && names->consul_domain) {
        if (labels_are(l, 2, n, names->consul_domain) ||
            (names->consul_datacenter && names->consul_datacenter[0] && n >= 4 &&
             strcmp(l[2], names->consul_datacenter) == 0 &&
             labels_are(l, 3, n, names->consul_domain))) {
            svc = l[0];
            nsp = names->consul_namespace;
        }
    }
    if (!svc || !nsp || !mesh_name_is_dns_label(svc) || !mesh_name_is_dns_label(nsp))
        return false;
    strcpy(ns, nsp);
    strcpy(name, svc);
    return true;
}

size_t mesh_dns__error_reply(const uint8_t *q, size_t len, const struct mesh_dns_msg *m,
                             bool question_ok, unsigned rcode, uint8_t *out, size_t cap)
{
    struct mesh_dns_header h;
    if (mesh_dns_header_read(q, len, &h) < 0 || cap < MESH_DNS_HEADER_LEN)
        return 0;
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, out, cap);
    bool with_q = question_ok && m && m->has_question && h.qdcount == 1;
    struct mesh_dns_header r = {
        .id = h.id,
        .flags = (uint16_t)(MESH_DNS_FLAG_QR | (h.flags & 0x7800u) | (h.flags & MESH_DNS_FLAG_RD) |
                            (h.flags & MESH_DNS_FLAG_CD) | MESH_DNS_FLAG_RA | (rcode & 0xfu)),
        .qdcount = with_q ? 1 : 0,
        /* RFC 6891 7: a query with OPT gets one back, errors included. */
        .arcount = with_q && m->has_opt ? 1 : 0,
    };
    uint8_t hdr[MESH_DNS_HEADER_LEN];
    mesh_dns_header_write(hdr, &r);
    mesh_dns_put_bytes(&b, hdr, sizeof(hdr));
    if (with_q)
        mesh_dns_put_bytes(&b, q + MESH_DNS_HEADER_LEN, m->question_end - MESH_DNS_HEADER_LEN);
    if (r.arcount)
        mesh_dns_put_opt(&b, 1232);
    if (b.err) {
        /* The question does not fit: the header alone. */
        r.qdcount = 0;
        r.arcount = 0;
        mesh_dns_header_write(out, &r);
        return MESH_DNS_HEADER_LEN;
    }
    return b.len;
}

static void put_soa(struct mesh_dns_builder *b, uint32_t ttl)
{
    uint8_t rd[128];
    struct mesh_dns_builder r;
    mesh_dns_builder_init(&r, rd, sizeof(rd));
    mesh_dns_put_name(&r, SOA_MNAME);
    mesh_dns_put_name(&r, SOA_RNAME);
    mesh_dns_put_u32(&r, 1);     /* serial */
    mesh_dns_put_u32(&r, 3600);  /* refresh */
    mesh_dns_put_u32(&r, 600);   /* retry */
    mesh_dns_put_u32(&r, 86400); /* expire */
    mesh_dns_put_u32(&r, ttl);   /* minimum: how long the "no" may be cached */
    mesh_dns_put_pointer(b, MESH_DNS_HEADER_LEN);
    mesh_dns_put_rr_tail(b, MESH_DNS_TYPE_SOA, MESH_DNS_CLASS_IN, ttl, rd, r.len);
}

/* The mesh's answer for service addresses `vip` to the parsed query m. */
static size_t mesh_answer(const struct mesh_dns__names *names, const uint8_t *q,
                          const struct mesh_dns_msg *m, const struct mesh_vip_pair *vip,
                          uint8_t *out, size_t cap)
{
    const struct mesh_ipport *want[2] = {NULL, NULL};
    size_t n = 0;
    bool any = m->qtype == MESH_DNS_TYPE_ANY;
    if ((m->qtype == MESH_DNS_TYPE_A || any) && vip->v4.family == AF_INET)
        want[n++] = &vip->v4;
    if ((m->qtype == MESH_DNS_TYPE_AAAA || any) && vip->v6.family == AF_INET6)
        want[n++] = &vip->v6;
    struct mesh_dns_header r = {
        .id = m->h.id,
        .flags = (uint16_t)(MESH_DNS_FLAG_QR | MESH_DNS_FLAG_AA | (m->h.flags & MESH_DNS_FLAG_RD) |
                            MESH_DNS_FLAG_RA),
        .qdcount = 1,
        .ancount = (uint16_t)n,
        .nscount = n ? 0 : 1,
        .arcount = m->has_opt ? 1 : 0,
    };
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, out, cap);
    uint8_t hdr[MESH_DNS_HEADER_LEN];
    mesh_dns_header_write(hdr, &r);
    mesh_dns_put_bytes(&b, hdr, sizeof(hdr));
    mesh_dns_put_bytes(&b, q + MESH_DNS_HEADER_LEN, m->question_end - MESH_DNS_HEADER_LEN);
    for (size_t i = 0; i < n; i++) {
        bool v4 = want[i]->family == AF_INET;
        mesh_dns_put_pointer(&b, MESH_DNS_HEADER_LEN);
        mesh_dns_put_rr_tail(&b, v4 ? MESH_DNS_TYPE_A : MESH_DNS_TYPE_AAAA, MESH_DNS_CLASS_IN,
                             names->ttl, want[i]->ip, v4 ? 4 : 16);
    }
    if (!n)
        put_soa(&b, names->ttl);
    if (m->has_opt)
        mesh_dns_put_opt(&b, 1232);
    return b.err ? 0 : b.len;
}

enum mesh_dns__action mesh_dns__handle(const struct mesh_dns__names *names,
                                       mesh_dns__lookup_fn lookup, void *data, const uint8_t *q,
                                       size_t len, uint8_t *out, size_t cap, size_t *ret_len,
                                       struct mesh_dns_msg *m, const char **ret_why)
{
    const char *why = NULL;
    *ret_len = 0;
    int r = mesh_dns_parse(q, len, m, &why);
    if (len < MESH_DNS_HEADER_LEN || (m->h.flags & MESH_DNS_FLAG_QR)) {
        /* Answering a response could start a loop between two servers. */
        *ret_why = len < MESH_DNS_HEADER_LEN ? why : "a response, not a query";
        return MESH_DNS__DROP;
    }
    if (r < 0) {
        *ret_why = why;
        *ret_len = mesh_dns__error_reply(q, len, m, false, MESH_DNS_RCODE_FORMERR, out, cap);
        return MESH_DNS__ERROR;
    }
    if (MESH_DNS_OPCODE(m->h.flags) != 0) {
        *ret_why = "an opcode other than QUERY";
        *ret_len = mesh_dns__error_reply(q, len, m, true, MESH_DNS_RCODE_NOTIMP, out, cap);
        return MESH_DNS__ERROR;
    }
    if (m->h.qdcount != 1 || m->h.ancount || m->h.nscount) {
        *ret_why = "a query must have one question and no answer or authority records";
        *ret_len = mesh_dns__error_reply(q, len, m, false, MESH_DNS_RCODE_FORMERR, out, cap);
        return MESH_DNS__ERROR;
    }
    char ns[LABEL_TEXT_MAX], name[LABEL_TEXT_MAX];
    struct mesh_vip_pair vip;
    if (m->qclass != MESH_DNS_CLASS_IN || !mesh_dns__match(names, m->qname, ns, name) ||
        lookup(data, ns, name, &vip) < 0)
        return MESH_DNS__FORWARD;
    if (m->has_opt && m->edns_version != 0) {
        /* RFC 6891 section 6.1.3: BADVERS (16) is 1 in the OPT's extended RCODE, 0 in the
         * header, with our version (0) in the OPT. */
        *ret_why = "an EDNS version other than 0";
        *ret_len = mesh_dns__error_reply(q, len, m, true, MESH_DNS_RCODE_NOERROR, out, cap);
        /* The reply ends with its OPT record (11 bytes); the TTL's first byte is the
         * extended RCODE. */
        if (*ret_len < MESH_DNS_HEADER_LEN + 11 || out[11] != 1)
            return MESH_DNS__DROP;
        out[*ret_len - 6] = 1;
        return MESH_DNS__ERROR;
    }
    *ret_len = mesh_answer(names, q, m, &vip, out, cap);
    if (!*ret_len) {
        *ret_why = "the answer does not fit";
        return MESH_DNS__DROP;
    }
    return MESH_DNS__MESH;
}
