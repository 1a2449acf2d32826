/*
 * Socket addresses as operators write them: "127.0.0.1:15000", "[::1]:15000", "0.0.0.0:15008",
 * or "unix:/run/mesh-agent/admin.sock". Host parts are IP literals; names are not resolved.
 */
#ifndef MESH_ADDR_H
#define MESH_ADDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

struct mesh_addr {
    struct sockaddr_storage ss; /* AF_INET, AF_INET6 or AF_UNIX */
    socklen_t len;
};

#define MESH_ADDR_STRLEN 128

/* Parses a listen/connect address. Returns 0 or -EINVAL; *ret_why says what was wrong. */
int mesh_addr_parse(const char *s, struct mesh_addr *ret, const char **ret_why);
/* Parses an IP literal (no port) and sets the port. Returns 0 or -EINVAL. */
int mesh_addr_from_ip(const char *ip, uint16_t port, struct mesh_addr *ret);
/* Formats as mesh_addr_parse reads it. Returns `out`. */
char *mesh_addr_format(const struct mesh_addr *a, char *out, size_t n);
/* Formats the IP part alone (no port, no brackets). Returns `out`. */
char *mesh_addr_ip(const struct mesh_addr *a, char *out, size_t n);
uint16_t mesh_addr_port(const struct mesh_addr *a);
void mesh_addr_set_port(struct mesh_addr *a, uint16_t port);
bool mesh_addr_is_unix(const struct mesh_addr *a);
bool mesh_addr_equal(const struct mesh_addr *a, const struct mesh_addr *b);
/*
 * True when what is sent to `to` arrives at a socket bound to `listen`: the same port and
 * the same address, or `listen` the wildcard and `to` loopback, unspecified or one of this
 * host's addresses (addr_self.c).
 */
bool mesh_addr_reaches(const struct mesh_addr *listen, const struct mesh_addr *to);
/* True when `s` is an IPv4 or IPv6 literal. */
bool mesh_is_ip_literal(const char *s);

/*
 * An IP and port in 20 bytes, for what is held by the hundred thousand (endpoints in the
 * catalog, the registries' caches and the proxy's snapshots); a mesh_addr is 136.
 */
struct mesh_ipport {
    uint8_t ip[16]; /* network order; IPv4 in the first four bytes, the rest zero */
    uint16_t port;  /* host order */
    uint8_t family; /* AF_INET or AF_INET6 */
};

/* Parses an IP literal (no port). Returns 0 or -EINVAL. */
int mesh_ipport_from_ip(const char *ip, uint16_t port, struct mesh_ipport *ret);
/* Returns 0, or -EINVAL when `a` is not an IP address. */
int mesh_ipport_from_addr(const struct mesh_addr *a, struct mesh_ipport *ret);
void mesh_ipport_to_addr(const struct mesh_ipport *p, struct mesh_addr *ret);
/* Orders by family, address, then port. */
int mesh_ipport_cmp(const struct mesh_ipport *a, const struct mesh_ipport *b);
static inline bool mesh_ipport_equal(const struct mesh_ipport *a, const struct mesh_ipport *b)
{
    return mesh_ipport_cmp(a, b) == 0;
}
/* "ip:port" or "[ip]:port", as mesh_addr_format. Returns `out`. */
char *mesh_ipport_format(const struct mesh_ipport *p, char *out, size_t n);
/* The IP part alone. Returns `out`. */
char *mesh_ipport_ip(const struct mesh_ipport *p, char *out, size_t n);

#endif
