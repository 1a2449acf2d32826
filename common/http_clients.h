/*
 * The HTTP server's clients, as its per-client limits count them: a client is a source
 * address, the IPv4 address or the /64 of an IPv6 one (one host commonly holds a whole
 * /64, so counting single IPv6 addresses would limit nothing), or "unix" for every peer
 * of a unix socket. The controller keys its per-source rate limits the same way.
 */
#ifndef MESH_HTTP_CLIENTS_H
#define MESH_HTTP_CLIENTS_H

#include <stddef.h>

#include "common/addr.h"
#include "common/hmap.h"

#define MESH_HTTP_CLIENT_KEYLEN 64

struct mesh_http_client {
    size_t conns; /* open connections */
    char key[MESH_HTTP_CLIENT_KEYLEN];
};

struct mesh_http_clients {
    struct mesh_hmap map; /* key -> struct mesh_http_client */
};

/* The client key of a peer address ("192.0.2.7", "2001:db8:1:2::/64", "unix"). */
void mesh_http_client_key(const struct mesh_addr *a, char out[MESH_HTTP_CLIENT_KEYLEN]);

void mesh_http_clients_init(struct mesh_http_clients *t);
/* Frees every entry (references still held become invalid). */
void mesh_http_clients_done(struct mesh_http_clients *t);
/* Counts one more connection of `key`; returns its entry (owned by the table), or NULL when
 * memory is short. */
struct mesh_http_client *mesh_http_clients_ref(struct mesh_http_clients *t, const char *key);
/* Counts one connection less; the entry is freed at zero. Accepts NULL. */
void mesh_http_clients_unref(struct mesh_http_clients *t, struct mesh_http_client *c);

#endif
