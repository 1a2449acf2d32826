#include "catalog/service.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "common/alloc.h"
#include "common/atom.h"
#include "common/names.h"

const char *const mesh_protocol_names[] = {"tcp", "http", "http2", "grpc", NULL};

static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = mesh_strdup(src);
    return *dst ? 0 : -ENOMEM;
}

int mesh_endpoint_set_host(struct mesh_endpoint *ep, const char *name)
{
    char low[MESH_NAME_NODE_MAX + 2];
    size_t n = strlen(name);
    if (!mesh_name_is_host(name) || n >= sizeof(low))
        return -EINVAL;
    if (name[n - 1] == '.')
        n--;
    for (size_t i = 0; i < n; i++)
        low[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
    low[n] = '\0';
    const char *atom = mesh_atom(low);
    if (!atom)
        return -ENOMEM;
    mesh_atom_unref(ep->host);
    ep->host = atom;
    return 0;
}

int mesh_endpoint_copy(struct mesh_endpoint *dst, const struct mesh_endpoint *src)
{
    struct mesh_endpoint e = *src;
    e.labels = (struct mesh_labels){0};
    if (mesh_labels_copy(&e.labels, &src->labels) < 0)
        return -ENOMEM;
    mesh_atom_ref(e.zone);
    mesh_atom_ref(e.node);
    mesh_atom_ref(e.host);
    *dst = e;
    return 0;
}

void mesh_endpoint_done(struct mesh_endpoint *ep)
{
    mesh_atom_unref(ep->zone);
    mesh_atom_unref(ep->node);
    mesh_atom_unref(ep->host);
    mesh_labels_done(&ep->labels);
    ep->zone = ep->node = ep->host = NULL;
}

bool mesh_endpoint_equal(const struct mesh_endpoint *a, const struct mesh_endpoint *b)
{
    return mesh_ipport_equal(&a->addr, &b->addr) && a->weight == b->weight &&
           a->mesh_port == b->mesh_port && a->health == b->health && a->zone == b->zone &&
           a->node == b->node && a->host == b->host /* atoms */ &&
           mesh_labels_equal(&a->labels, &b->labels);
}

int mesh_endpoint_addr_cmp(const struct mesh_endpoint *a, const struct mesh_endpoint *b)
{
    int c = mesh_ipport_cmp(&a->addr, &b->addr);
    /* Resolved endpoints are one per address whatever name led there. */
    if (c || a->addr.family != 0 || a->host == b->host)
        return c;
    if (!a->host || !b->host)
        return a->host ? 1 : -1;
    return strcmp(a->host, b->host);
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
    s.labels = (struct mesh_labels){0};
    if (dup_opt(&s.name, src->name) < 0 || dup_opt(&s.namespace, src->namespace) < 0 ||
        dup_opt(&s.source, src->source) < 0 || dup_opt(&s.identity, src->identity) < 0 ||
        mesh_labels_copy(&s.labels, &src->labels) < 0)
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
    mesh_labels_done(&s->labels);
    memset(s, 0, sizeof(*s));
}
