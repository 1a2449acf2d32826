/*
 * Fuzzes the DNS message parser and what the responder builds from what it accepts:
 * - mesh_dns_parse either accepts with its offsets in order and a terminated name, or
 *   refuses with a reason;
 * - an accepted message cut to any size by mesh_dns_truncate parses again, with TC set
 *   when it shrank;
 * - the responder's decision (dns/answer.c) on the input, with every mesh name existing,
 *   is an answer that itself parses, or a forward of an accepted message, or a drop.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/dns_msg.h"
#include "dns/dns-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int lookup_all(void *data, const char *ns, const char *name, struct mesh_vip_pair *ret)
{
    (void)data;
    memset(ret, 0, sizeof(*ret));
    ret->v4.family = AF_INET;
    ret->v4.ip[0] = 240;
    ret->v4.ip[1] = 240;
    ret->v4.ip[2] = (uint8_t)strlen(ns);
    ret->v4.ip[3] = (uint8_t)strlen(name);
    ret->v6.family = AF_INET6;
    ret->v6.ip[0] = 0x20;
    ret->v6.ip[1] = 0x01;
    ret->v6.ip[3] = 0x02;
    return 0;
}

static uint8_t buf[MESH_DNS_MSG_MAX + 16];
static uint8_t out[MESH_DNS_MSG_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MESH_DNS_MSG_MAX + 8)
        return 0;
    struct mesh_dns_msg m;
    const char *why = NULL;
    int r = mesh_dns_parse(data, size, &m, &why);
    if (r < 0) {
        if (r != -EBADMSG || !why)
            abort();
    } else {
        if (m.question_end > m.answer_end || m.answer_end > size ||
            strlen(m.qname) >= MESH_DNS_NAME_TEXT_MAX || m.udp_size < MESH_DNS_UDP_MIN)
            abort();
        /* Cut to a size chosen by the input's last byte. */
        size_t max = MESH_DNS_HEADER_LEN + (size ? (size_t)data[size - 1] * 4 : 0);
        memcpy(buf, data, size);
        int n = mesh_dns_truncate(buf, size, &m, max, size % 2 ? 1232 : 0);
        if (n >= 0) {
            struct mesh_dns_msg t;
            if ((size_t)n > size + 11 || mesh_dns_parse(buf, (size_t)n, &t, &why) < 0)
                abort();
            /* TC says answers were cut (RFC 2181 9): without it, every answer is there. */
            if (!(t.h.flags & MESH_DNS_FLAG_TC) && t.h.ancount != m.h.ancount)
                abort();
        } else if (n != -EMSGSIZE) {
            abort();
        }
    }
    static const char *const domains[] = {"cluster.local", "example.org"};
    struct mesh_dns__names names = {
        .domains = domains,
        .n_domains = 2,
        .consul_domain = "consul",
        .consul_datacenter = "dc1",
        .consul_namespace = "default",
        .ttl = 30,
    };
    size_t n = 0;
    struct mesh_dns_msg q;
    enum mesh_dns__action a =
        mesh_dns__handle(&names, lookup_all, NULL, data, size, out, sizeof(out), &n, &q, &why);
    struct mesh_dns_msg am;
    switch (a) {
    case MESH_DNS__MESH:
        if (r < 0 || mesh_dns_parse(out, n, &am, &why) < 0 || am.h.id != q.h.id ||
            !(am.h.flags & MESH_DNS_FLAG_QR))
            abort();
        break;
    case MESH_DNS__ERROR:
        if (n < MESH_DNS_HEADER_LEN || mesh_dns_parse(out, n, &am, &why) < 0)
            abort();
        break;
    case MESH_DNS__FORWARD:
        if (r < 0)
            abort();
        break;
    case MESH_DNS__DROP:
        break;
    }
    return 0;
}
