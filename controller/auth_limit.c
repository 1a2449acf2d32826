#include "controller/auth_limit.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

#define OVERFLOW_KEY "*"

struct auth_client {
    unsigned failures;
    uint64_t blocked_until_ms;
    uint64_t last_failure_ms;
    char key[];
};

void mesh_auth_limit_init(struct mesh_auth_limit *l)
{
    mesh_hmap_init(&l->clients);
}

void mesh_auth_limit_done(struct mesh_auth_limit *l)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&l->clients, &i, &e))
        mesh_free(e->value);
    mesh_hmap_done(&l->clients);
}

static void forget(struct mesh_auth_limit *l, struct auth_client *c)
{
    mesh_hmap_remove(&l->clients, c->key);
    mesh_free(c);
}

/* Forgets the clients whose last failure is old and who are not blocked. */
static void sweep(struct mesh_auth_limit *l, uint64_t now_ms)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&l->clients, &i, &e)) {
        struct auth_client *c = e->value;
        if (now_ms >= c->blocked_until_ms &&
            now_ms - c->last_failure_ms >= (uint64_t)MESH_AUTH_FORGET_S * 1000)
            forget(l, c); /* removal leaves a tombstone: iteration goes on safely */
    }
}

static struct auth_client *find(struct mesh_auth_limit *l, const char *client, uint64_t now_ms)
{
    struct auth_client *c = mesh_hmap_get(&l->clients, client);
    if (!c && l->clients.n >= MESH_AUTH_MAX_CLIENTS)
        c = mesh_hmap_get(&l->clients, OVERFLOW_KEY);
    if (c && now_ms >= c->blocked_until_ms &&
        now_ms - c->last_failure_ms >= (uint64_t)MESH_AUTH_FORGET_S * 1000) {
        forget(l, c);
        c = NULL;
    }
    return c;
}

unsigned mesh_auth_limit_wait(struct mesh_auth_limit *l, const char *client, uint64_t now_ms)
{
    struct auth_client *c = find(l, client, now_ms);
    if (!c || now_ms >= c->blocked_until_ms)
        return 0;
    return (unsigned)((c->blocked_until_ms - now_ms + 999) / 1000);
}

void mesh_auth_limit_failed(struct mesh_auth_limit *l, const char *client, uint64_t now_ms)
{
    struct auth_client *c = find(l, client, now_ms);
    if (!c) {
        if (l->clients.n >= MESH_AUTH_MAX_CLIENTS)
            sweep(l, now_ms);
        const char *key = l->clients.n >= MESH_AUTH_MAX_CLIENTS ? OVERFLOW_KEY : client;
        size_t n = strlen(key) + 1;
        c = mesh_calloc(1, sizeof(*c) + n);
        if (!c)
            return;
        memcpy(c->key, key, n);
        if (mesh_hmap_put(&l->clients, c->key, c) < 0) {
            mesh_free(c);
            return;
        }
    }
    c->failures++;
    c->last_failure_ms = now_ms;
    if (c->failures > MESH_AUTH_FREE_FAILURES) {
        unsigned k = c->failures - MESH_AUTH_FREE_FAILURES - 1;
        uint64_t block_s = k >= 9 ? MESH_AUTH_MAX_BLOCK_S : 1u << k;
        if (block_s > MESH_AUTH_MAX_BLOCK_S)
            block_s = MESH_AUTH_MAX_BLOCK_S;
        c->blocked_until_ms = now_ms + block_s * 1000;
    }
}

void mesh_auth_limit_passed(struct mesh_auth_limit *l, const char *client)
{
    struct auth_client *c = mesh_hmap_get(&l->clients, client);
    if (c)
        forget(l, c);
}
