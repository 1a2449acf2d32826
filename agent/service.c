#include "agent/service.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "common/alloc.h"

const char *const mesh_protocol_names[] = {"tcp", "http", "http2", "grpc", NULL};

static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = mesh_strdup(src);
    return *dst ? 0 : -ENOMEM;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

int mesh_endpoint_copy(struct mesh_endpoint *dst, const struct mesh_endpoint *src)
{
    struct mesh_endpoint e = *src;
    e.zone = e.node = NULL;
    e.labels = (struct mesh_labels){0};
    if (dup_opt(&e.zone, src->zone) < 0 || dup_opt(&e.node, src->node) < 0 ||
        mesh_labels_copy(&e.labels, &src->labels) < 0) {
        mesh_endpoint_done(&e);
        return -ENOMEM;
    }
    *dst = e;
    return 0;
}

void mesh_endpoint_done(struct mesh_endpoint *ep)
{
    mesh_free(ep->zone);
    mesh_free(ep->node);
    mesh_labels_done(&ep->labels);
    ep->zone = ep->node = NULL;
}

bool mesh_endpoint_equal(const struct mesh_endpoint *a, const struct mesh_endpoint *b)
{
    return mesh_addr_equal(&a->addr, &b->addr) && a->weight == b->weight &&
           a->mesh_port == b->mesh_port && a->health == b->health && str_eq(a->zone, b->zone) &&
           str_eq(a->node, b->node) && mesh_labels_equal(&a->labels, &b->labels);
}

int mesh_endpoint_addr_cmp(const struct mesh_endpoint *a, const struct mesh_endpoint *b)
{
    int fa = a->addr.ss.ss_family, fb = b->addr.ss.ss_family;
    if (fa != fb)
        return fa < fb ? -1 : 1;
    int c;
    if (fa == AF_INET)
        c = memcmp(&((const struct sockaddr_in *)&a->addr.ss)->sin_addr,
                   &((const struct sockaddr_in *)&b->addr.ss)->sin_addr, 4);
    else
        c = memcmp(&((const struct sockaddr_in6 *)&a->addr.ss)->sin6_addr,
                   &((const struct sockaddr_in6 *)&b->addr.ss)->sin6_addr, 16);
    if (c)
        return c;
    uint16_t pa = mesh_addr_port(&a->addr), pb = mesh_addr_port(&b->addr);
    return pa < pb ? -1 : pa > pb;
}

const char *mesh_endpoint_health_name(unsigned health)
{
    if (health & MESH_EP_TERMINATING)
        return "draining";
    if (health & MESH_EP_READY)
        return "healthy";
    return "unhealthy";
}

int mesh_local_service_copy(struct mesh_local_service *dst, const struct mesh_local_service *src)
{
    struct mesh_local_service s = *src;
    s.name = s.namespace = s.source = s.identity = NULL;
    s.upstreams = NULL;
    s.n_upstreams = 0;
    if (dup_opt(&s.name, src->name) < 0 || dup_opt(&s.namespace, src->namespace) < 0 ||
        dup_opt(&s.source, src->source) < 0 || dup_opt(&s.identity, src->identity) < 0)
        goto fail;
    if (src->n_upstreams) {
        s.upstreams = mesh_calloc(src->n_upstreams, sizeof(*s.upstreams));
        if (!s.upstreams)
            goto fail;
    }
    for (size_t i = 0; i < src->n_upstreams; i++) {
        struct mesh_upstream *u = &s.upstreams[i];
        *u = src->upstreams[i];
        u->service = u->namespace = NULL;
        s.n_upstreams = i + 1;
        if (dup_opt(&u->service, src->upstreams[i].service) < 0 ||
            dup_opt(&u->namespace, src->upstreams[i].namespace) < 0)
            goto fail;
    }
    *dst = s;
    return 0;
fail:
    mesh_local_service_done(&s);
    return -ENOMEM;
}

void mesh_local_service_done(struct mesh_local_service *s)
{
    for (size_t i = 0; i < s->n_upstreams; i++) {
        mesh_free(s->upstreams[i].service);
        mesh_free(s->upstreams[i].namespace);
    }
    mesh_free(s->upstreams);
    mesh_free(s->name);
    mesh_free(s->namespace);
    mesh_free(s->source);
    mesh_free(s->identity);
    memset(s, 0, sizeof(*s));
}
