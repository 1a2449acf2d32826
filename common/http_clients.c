#include "common/http_clients.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

void mesh_http_client_key(const struct mesh_addr *a, char out[MESH_HTTP_CLIENT_KEYLEN])
{
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
    if (a->ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, out,
                  MESH_HTTP_CLIENT_KEYLEN);
    } else if (a->ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        inet_ntop(AF_INET, s6->sin6_addr.s6_addr + 12, out, MESH_HTTP_CLIENT_KEYLEN);
    } else if (a->ss.ss_family == AF_INET6) {
        struct in6_addr net = s6->sin6_addr;
        memset(net.s6_addr + 8, 0, 8);
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &net, ip, sizeof(ip));
        snprintf(out, MESH_HTTP_CLIENT_KEYLEN, "%s/64", ip);
    } else {
        snprintf(out, MESH_HTTP_CLIENT_KEYLEN, "unix");
    }
}

void mesh_http_clients_init(struct mesh_http_clients *t)
{
    mesh_hmap_init(&t->map);
}

void mesh_http_clients_done(struct mesh_http_clients *t)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&t->map, &i, &e))
        mesh_free(e->value);
    mesh_hmap_done(&t->map);
}

struct mesh_http_client *mesh_http_clients_ref(struct mesh_http_clients *t, const char *key)
{
    struct mesh_http_client *c = mesh_hmap_get(&t->map, key);
    if (!c) {
        c = mesh_calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        snprintf(c->key, sizeof(c->key), "%s", key);
        if (mesh_hmap_put(&t->map, c->key, c) < 0) {
            mesh_free(c);
            return NULL;
        }
    }
    c->conns++;
    return c;
}

void mesh_http_clients_unref(struct mesh_http_clients *t, struct mesh_http_client *c)
{
    if (!c || --c->conns > 0)
        return;
    mesh_hmap_remove(&t->map, c->key);
    mesh_free(c);
}
