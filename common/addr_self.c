/*
 * Whether a datagram or connection to one address arrives at a socket bound to another:
 * the check that keeps a server from being configured as its own upstream.
 */
#include <ifaddrs.h>
#include <netinet/in.h>
#include <string.h>

#include "common/addr.h"

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)ss)->sin_port)
                                    : ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* The address bytes (4 or 16) of ss, an IPv4-mapped IPv6 address taken as IPv4. */
static int ip_of(const struct sockaddr_storage *ss, uint8_t ip[16])
{
    if (ss->ss_family == AF_INET) {
        memcpy(ip, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        return AF_INET;
    }
    const uint8_t *b = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, mapped, 12) == 0) {
        memcpy(ip, b + 12, 4);
        return AF_INET;
    }
    memcpy(ip, b, 16);
    return AF_INET6;
}

static bool is_any(int family, const uint8_t *ip)
{
    static const uint8_t zero[16];
    return memcmp(ip, zero, family == AF_INET ? 4 : 16) == 0;
}

static bool is_loopback(int family, const uint8_t *ip)
{
    static const uint8_t one[16] = {[15] = 1};
    return family == AF_INET ? ip[0] == 127 : memcmp(ip, one, 16) == 0;
}

/* True when ip is one of this host's interface addresses. */
static bool is_local(int family, const uint8_t *ip)
{
    struct ifaddrs *all;
    if (getifaddrs(&all) < 0)
        return false;
    bool found = false;
    for (struct ifaddrs *i = all; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr ||
            (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
            continue;
        struct sockaddr_storage ss;
        memcpy(&ss, i->ifa_addr,
               i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                 : sizeof(struct sockaddr_in6));
        uint8_t a[16];
        found = ip_of(&ss, a) == family && memcmp(a, ip, family == AF_INET ? 4 : 16) == 0;
    }
    freeifaddrs(all);
    return found;
}

bool mesh_addr_reaches(const struct mesh_addr *listen, const struct mesh_addr *to)
{
    int lf = listen->ss.ss_family, tf = to->ss.ss_family;
    if ((lf != AF_INET && lf != AF_INET6) || (tf != AF_INET && tf != AF_INET6))
        return false;
    if (port_of(&listen->ss) != port_of(&to->ss))
        return false;
    uint8_t l[16], t[16];
    lf = ip_of(&listen->ss, l);
    tf = ip_of(&to->ss, t);
    /* Sending to the unspecified address reaches this host (the kernel takes it as loopback). */
    bool t_any = is_any(tf, t);
    if (is_any(lf, l)) {
        /* "::" is dual-stack (the responder does not set IPV6_V6ONLY): it takes IPv4 too. */
        if (lf == AF_INET && tf != AF_INET)
            return false;
        return t_any || is_loopback(tf, t) || is_local(tf, t);
    }
    if (t_any)
        return is_loopback(lf, l);
    return lf == tf && memcmp(l, t, lf == AF_INET ? 4 : 16) == 0;
}
