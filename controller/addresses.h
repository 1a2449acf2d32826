/*
 * The addresses an operator allows a node to report as its own, besides the one it
 * connects from: IP addresses and CIDR blocks ("10.0.0.5", "10.1.0.0/24", "2001:db8::/48"),
 * given on its join token and kept in its node record.
 */
#ifndef MESH_CONTROLLER_ADDRESSES_H
#define MESH_CONTROLLER_ADDRESSES_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/addr.h"

#define MESH_CTL_ADDRESSES_MAX 64

/*
 * Checks a JSON array of addresses (NULL: none). Returns true, or false with why in err
 * ("addresses[2]: ...").
 */
bool mesh_ctl_addresses_valid(const json_t *list, char *err, size_t err_size);

/* Whether ip is in one of the (valid) addresses of list. */
bool mesh_ctl_addresses_allow(const json_t *list, const struct mesh_ipport *ip);

/* The IP of a peer address, an IPv4-mapped IPv6 one as IPv4. Returns 0 or -EINVAL (unix). */
int mesh_ctl_peer_ip(const struct mesh_addr *peer, struct mesh_ipport *ret);

#endif
