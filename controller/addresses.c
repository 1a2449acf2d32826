#include "controller/addresses.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Parses "ip" or "ip/bits" into a network and prefix length. Returns 0 or -EINVAL. */
static int parse_block(const char *s, struct mesh_ipport *net, unsigned *bits)
{
    char ip[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(ip))
        return -EINVAL;
    memcpy(ip, s, n);
    ip[n] = '\0';
    if (mesh_ipport_from_ip(ip, 0, net) < 0)
        return -EINVAL;
    unsigned max = net->family == AF_INET ? 32 : 128;
    *bits = max;
    if (slash) {
        char *end;
        unsigned long b = strtoul(slash + 1, &end, 10);
        if (!slash[1] || *end || slash[1] == '+' || slash[1] == '-' || b > max)
            return -EINVAL;
        *bits = (unsigned)b;
    }
    return 0;
}

static bool in_block(const struct mesh_ipport *net, unsigned bits, const struct mesh_ipport *ip)
{
    if (net->family != ip->family)
        return false;
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(net->ip, ip->ip, whole) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (net->ip[whole] & mask) == (ip->ip[whole] & mask);
}

bool mesh_ctl_addresses_valid(const json_t *list, char *err, size_t err_size)
{
    if (!list)
        return true;
    if (!json_is_array(list) || json_array_size(list) > MESH_CTL_ADDRESSES_MAX) {
        snprintf(err, err_size,
                 "addresses: expected an array of at most %d IP addresses or "
                 "CIDR blocks",
                 MESH_CTL_ADDRESSES_MAX);
        return false;
    }
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v)
    {
        struct mesh_ipport net;
        unsigned bits;
        const char *s = json_string_value(v);
        if (!s || parse_block(s, &net, &bits) < 0) {
            snprintf(err, err_size,
                     "addresses[%zu]: expected an IP address or a CIDR block like "
                     "\"10.0.0.0/24\", got %s",
                     i, s ? s : "a non-string");
            return false;
        }
    }
    return true;
}

bool mesh_ctl_addresses_allow(const json_t *list, const struct mesh_ipport *ip)
{
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v)
    {
        struct mesh_ipport net;
        unsigned bits;
        const char *s = json_string_value(v);
        if (s && parse_block(s, &net, &bits) == 0 && in_block(&net, bits, ip))
            return true;
    }
    return false;
}

int mesh_ctl_peer_ip(const struct mesh_addr *peer, struct mesh_ipport *ret)
{
    struct mesh_ipport p;
    if (mesh_ipport_from_addr(peer, &p) < 0)
        return -EINVAL;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (p.family == AF_INET6 && memcmp(p.ip, mapped, 12) == 0) {
        memmove(p.ip, p.ip + 12, 4);
        memset(p.ip + 4, 0, 12);
        p.family = AF_INET;
    }
    p.port = 0;
    *ret = p;
    return 0;
}
