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
/* True when `s` is an IPv4 or IPv6 literal. */
bool mesh_is_ip_literal(const char *s);

#endif
