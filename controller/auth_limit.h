/*
 * Slows the guessing of credentials (join tokens, the admin token) per client, a client
 * being a source address as common/http_clients.h counts them. A client's first
 * MESH_AUTH_FREE_FAILURES failures cost nothing; each one after blocks it for 1 s, then 2,
 * 4, ... up to MESH_AUTH_MAX_BLOCK_S. A blocked client's attempts are not checked at all
 * (the API answers 429 with Retry-After). A success clears the client; one with no failure
 * for MESH_AUTH_FORGET_S is forgotten. At most MESH_AUTH_MAX_CLIENTS are tracked: beyond
 * that, newcomers share one entry, so an attack spread over many addresses slows itself.
 */
#ifndef MESH_CONTROLLER_AUTH_LIMIT_H
#define MESH_CONTROLLER_AUTH_LIMIT_H

#include <stdint.h>

#include "common/hmap.h"

#define MESH_AUTH_FREE_FAILURES 5
#define MESH_AUTH_MAX_BLOCK_S 300
#define MESH_AUTH_FORGET_S 900
#define MESH_AUTH_MAX_CLIENTS 65536

struct mesh_auth_limit {
    struct mesh_hmap clients; /* client -> struct auth_client */
};

void mesh_auth_limit_init(struct mesh_auth_limit *l);
void mesh_auth_limit_done(struct mesh_auth_limit *l);

/* 0 when `client` may try now, else the seconds it has to wait (at least 1). */
unsigned mesh_auth_limit_wait(struct mesh_auth_limit *l, const char *client, uint64_t now_ms);
/* A failed attempt of `client`: counts it and blocks the client past the free ones. */
void mesh_auth_limit_failed(struct mesh_auth_limit *l, const char *client, uint64_t now_ms);
/* A successful attempt: the client starts afresh. */
void mesh_auth_limit_passed(struct mesh_auth_limit *l, const char *client);

#endif
