#define MESH_LOG_MODULE "agent"

#include "agent/local_health.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hmap.h"
#include "common/log.h"

struct probe {
    struct probe *prev, *next;
    struct mesh_local_health *h;
    uv_tcp_t tcp;
    uv_connect_t req;
    char key[MESH_ADDR_STRLEN];
};

struct state {
    bool up;
    char key[]; /* the map's key */
};

struct mesh_local_health {
    uv_loop_t *loop;
    uv_timer_t timer;
    void (*changed)(void *data);
    void *data;
    struct mesh_hmap states; /* "ip:port" -> struct state */
    struct mesh_addr *targets;
    size_t n_targets;
    struct probe *probes; /* in flight */
    int open;             /* handles: the timer and each probe's */
    bool closing;
};

static void maybe_free(struct mesh_local_health *h)
{
    if (!h->closing || h->open)
        return;
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&h->states, &i, &e))
        mesh_free(e->value);
    mesh_hmap_done(&h->states);
    mesh_free(h->targets);
    mesh_free(h);
}

static void record(struct mesh_local_health *h, const char *key, bool up)
{
    struct state *st = mesh_hmap_get(&h->states, key);
    bool known = st != NULL;
    if (st && st->up == up)
        return;
    if (!st) {
        size_t n = strlen(key) + 1;
        st = mesh_calloc(1, sizeof(*st) + n);
        if (!st || (memcpy(st->key, key, n), mesh_hmap_put(&h->states, st->key, st) < 0)) {
            mesh_free(st);
            return;
        }
    }
    st->up = up;
    if (known || !up)
        mesh_log_info("local workload %s %s", key,
                      up ? "accepts connections again" : "refuses connections: reported down");
    h->changed(h->data);
}

static void on_probe_closed(uv_handle_t *handle)
{
    struct probe *p = handle->data;
    struct mesh_local_health *h = p->h;
    if (p->prev)
        p->prev->next = p->next;
    else
        h->probes = p->next;
    if (p->next)
        p->next->prev = p->prev;
    mesh_free(p);
    h->open--;
    maybe_free(h);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct probe *p = req->data;
    if (status != UV_ECANCELED && !p->h->closing)
        record(p->h, p->key, status == 0);
    if (!uv_is_closing((uv_handle_t *)&p->tcp))
        uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
}

static void probe(struct mesh_local_health *h, const struct mesh_addr *a)
{
    char key[MESH_ADDR_STRLEN];
    mesh_addr_format(a, key, sizeof(key));
    for (const struct probe *q = h->probes; q; q = q->next) {
        if (strcmp(q->key, key) == 0)
            return; /* the last one has not finished */
    }
    struct probe *p = mesh_calloc(1, sizeof(*p));
    if (!p)
        return;
    p->h = h;
    memcpy(p->key, key, sizeof(key));
    uv_tcp_init(h->loop, &p->tcp);
    p->tcp.data = p;
    p->req.data = p;
    p->next = h->probes;
    if (h->probes)
        h->probes->prev = p;
    h->probes = p;
    h->open++;
    int r = uv_tcp_connect(&p->req, &p->tcp, (const struct sockaddr *)&a->ss, on_connect);
    if (r < 0) {
        record(h, key, false);
        uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
    }
}

static void probe_all(struct mesh_local_health *h)
{
    for (size_t i = 0; i < h->n_targets && !h->closing; i++)
        probe(h, &h->targets[i]);
}

static void on_timer(uv_timer_t *t)
{
    probe_all(t->data);
}

int mesh_local_health_new(uv_loop_t *loop, void (*changed)(void *data), void *data,
                          struct mesh_local_health **ret)
{
    struct mesh_local_health *h = mesh_calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->loop = loop;
    h->changed = changed;
    h->data = data;
    mesh_hmap_init(&h->states);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->open = 1;
    uv_timer_start(&h->timer, on_timer, MESH_LOCAL_HEALTH_INTERVAL_MS,
                   MESH_LOCAL_HEALTH_INTERVAL_MS);
    *ret = h;
    return 0;
}

void mesh_local_health_set(struct mesh_local_health *h, const struct mesh_local_service *const *v,
                           size_t n)
{
    if (!h || h->closing)
        return;
    struct mesh_addr *t = mesh_calloc(n ? n : 1, sizeof(*t));
    if (!t)
        return; /* short of memory: the last targets stay */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (mesh_addr_port(&v[i]->addr))
            t[k++] = v[i]->addr;
    }
    mesh_free(h->targets);
    h->targets = t;
    h->n_targets = k;
    probe_all(h);
}

int mesh_local_health_get(const struct mesh_local_health *h, const struct mesh_addr *a)
{
    char key[MESH_ADDR_STRLEN];
    if (!h)
        return -1;
    mesh_addr_format(a, key, sizeof(key));
    const struct state *st = mesh_hmap_get(&h->states, key);
    return st ? st->up : -1;
}

static void on_timer_closed(uv_handle_t *t)
{
    struct mesh_local_health *h = t->data;
    h->open--;
    maybe_free(h);
}

void mesh_local_health_free(struct mesh_local_health *h)
{
    if (!h || h->closing)
        return;
    h->closing = true;
    for (struct probe *p = h->probes; p; p = p->next) {
        if (!uv_is_closing((uv_handle_t *)&p->tcp))
            uv_close((uv_handle_t *)&p->tcp, on_probe_closed); /* its connect: ECANCELED */
    }
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}
