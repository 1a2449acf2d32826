#include "common/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/strutil.h"

bool mesh_is_ip_literal(const char *s)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, s, &a4) == 1 || inet_pton(AF_INET6, s, &a6) == 1;
}

int mesh_addr_from_ip(const char *ip, uint16_t port, struct mesh_addr *ret)
{
    struct mesh_ipport p;
    if (mesh_ipport_from_ip(ip, port, &p) < 0)
        return -EINVAL;
    mesh_ipport_to_addr(&p, ret);
    return 0;
}

int mesh_addr_parse(const char *s, struct mesh_addr *ret, const char **ret_why)
{
    const char *why = NULL;
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_str;
    struct mesh_addr a;
    memset(&a, 0, sizeof(a));

    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        struct sockaddr_un *sun = (struct sockaddr_un *)&a.ss;
        if (path[0] != '/') {
            why = "a unix socket path must be absolute";
            goto fail;
        }
        if (strlen(path) >= sizeof(sun->sun_path)) {
            why = "the unix socket path is too long (at most 107 bytes)";
            goto fail;
        }
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, path);
        a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
        *ret = a;
        return 0;
    }
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host)) {
            why = "expected '[IPv6]:port'";
            goto fail;
        }
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port_str = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon) {
            why = "expected 'IP:port', '[IPv6]:port' or 'unix:/path'";
            goto fail;
        }
        if ((size_t)(colon - s) >= sizeof(host)) {
            why = "the host part is too long";
            goto fail;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port_str = colon + 1;
    }
    uint64_t port;
    if (mesh_parse_u64(port_str, strlen(port_str), &port) < 0 || port > 65535) {
        why = "the port must be a number from 0 to 65535";
        goto fail;
    }
    if (mesh_addr_from_ip(host, (uint16_t)port, &a) < 0) {
        why = "the host must be an IPv4 or IPv6 address (names are not resolved)";
        goto fail;
    }
    if (s[0] == '[' && a.ss.ss_family != AF_INET6) {
        why = "brackets are for IPv6 addresses";
        goto fail;
    }
    *ret = a;
    return 0;
fail:
    if (ret_why)
        *ret_why = why;
    return -EINVAL;
}

char *mesh_addr_ip(const struct mesh_addr *a, char *out, size_t n)
{
    const void *src = NULL;
    if (a->ss.ss_family == AF_INET)
        src = &((const struct sockaddr_in *)&a->ss)->sin_addr;
    else if (a->ss.ss_family == AF_INET6)
        src = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
    if (!src || !inet_ntop(a->ss.ss_family, src, out, (socklen_t)n))
        snprintf(out, n, "?");
    return out;
}

char *mesh_addr_format(const struct mesh_addr *a, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    switch (a->ss.ss_family) {
    case AF_UNIX:
        snprintf(out, n, "unix:%s", ((const struct sockaddr_un *)&a->ss)->sun_path);
        break;
    case AF_INET:
        snprintf(out, n, "%s:%u", mesh_addr_ip(a, ip, sizeof(ip)), mesh_addr_port(a));
        break;
    case AF_INET6:
        snprintf(out, n, "[%s]:%u", mesh_addr_ip(a, ip, sizeof(ip)), mesh_addr_port(a));
        break;
    default:
        snprintf(out, n, "?");
    }
    return out;
}

uint16_t mesh_addr_port(const struct mesh_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}

void mesh_addr_set_port(struct mesh_addr *a, uint16_t port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
    else if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
}

bool mesh_addr_is_unix(const struct mesh_addr *a)
{
    return a->ss.ss_family == AF_UNIX;
}

bool mesh_addr_equal(const struct mesh_addr *a, const struct mesh_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

int mesh_ipport_from_ip(const char *ip, uint16_t port, struct mesh_ipport *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->port = port;
    if (inet_pton(AF_INET, ip, ret->ip) == 1)
        ret->family = AF_INET;
    else if (inet_pton(AF_INET6, ip, ret->ip) == 1)
        ret->family = AF_INET6;
    else
        return -EINVAL;
    return 0;
}

int mesh_ipport_from_addr(const struct mesh_addr *a, struct mesh_ipport *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (a->ss.ss_family == AF_INET)
        memcpy(ret->ip, &((const struct sockaddr_in *)&a->ss)->sin_addr, 4);
    else if (a->ss.ss_family == AF_INET6)
        memcpy(ret->ip, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, 16);
    else
        return -EINVAL;
    ret->family = (uint8_t)a->ss.ss_family;
    ret->port = mesh_addr_port(a);
    return 0;
}

void mesh_ipport_to_addr(const struct mesh_ipport *p, struct mesh_addr *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (p->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ret->ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(p->port);
        memcpy(&sin->sin_addr, p->ip, 4);
        ret->len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ret->ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(p->port);
        memcpy(&sin6->sin6_addr, p->ip, 16);
        ret->len = sizeof(*sin6);
    }
}

int mesh_ipport_cmp(const struct mesh_ipport *a, const struct mesh_ipport *b)
{
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    int c = memcmp(a->ip, b->ip, a->family == AF_INET ? 4 : 16);
    if (c)
        return c;
    return a->port < b->port ? -1 : a->port > b->port;
}

char *mesh_ipport_ip(const struct mesh_ipport *p, char *out, size_t n)
{
    if (!inet_ntop(p->family, p->ip, out, (socklen_t)n))
        snprintf(out, n, "?");
    return out;
}

char *mesh_ipport_format(const struct mesh_ipport *p, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, n, p->family == AF_INET6 ? "[%s]:%u" : "%s:%u", mesh_ipport_ip(p, ip, sizeof(ip)),
             p->port);
    return out;
}
