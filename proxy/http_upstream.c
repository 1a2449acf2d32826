#define MESH_LOG_MODULE "http"

/*
 * Upstream HTTP connections and their keep-alive pools. Each worker keeps, per endpoint,
 * a list of idle connections (most recent first, so that the least used ones age out).
 * An idle connection keeps reading: a close or stray bytes from the server remove it at
 * once, rather than at the next request. A sweep closes those idle for too long.
 */
#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/http_proxy-int.h"

#define SWEEP_MS 1000

/* Open addressing on the endpoint state's address. */
struct pool_entry {
    struct mesh_ep_state *key; /* NULL: empty */
    struct upconn *idle;       /* most recent first */
    size_t n;
};

struct pool_table {
    struct pool_entry *v;
    size_t cap; /* a power of two */
    size_t used;
    size_t idle_total;
};

static size_t slot_of(const struct pool_table *t, const void *key)
{
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 20) & (t->cap - 1);
}

static struct pool_entry *find(struct pool_table *t, const struct mesh_ep_state *key)
{
    if (!t->cap)
        return NULL;
    for (size_t i = slot_of(t, key);; i = (i + 1) & (t->cap - 1)) {
        if (t->v[i].key == key)
            return &t->v[i];
        if (!t->v[i].key)
            return NULL;
    }
}

static int grow(struct pool_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16;
    struct pool_entry *v = mesh_calloc(cap, sizeof(*v)), *old = t->v;
    if (!v)
        return -ENOMEM;
    size_t old_cap = t->cap;
    t->v = v;
    t->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key)
            continue;
        size_t k = slot_of(t, old[i].key);
        while (v[k].key)
            k = (k + 1) & (cap - 1);
        v[k] = old[i];
    }
    mesh_free(old);
    return 0;
}

static struct pool_entry *find_or_add(struct pool_table *t, struct mesh_ep_state *key)
{
    struct pool_entry *e = find(t, key);
    if (e)
        return e;
    if ((t->used + 1) * 2 > t->cap && grow(t) < 0)
        return NULL;
    size_t i = slot_of(t, key);
    while (t->v[i].key)
        i = (i + 1) & (t->cap - 1);
    t->v[i].key = key;
    t->used++;
    return &t->v[i];
}

/* Removes an entry that has no idle connection left (backward-shift deletion). */
static void remove_entry(struct pool_table *t, struct pool_entry *e)
{
    size_t i = (size_t)(e - t->v);
    t->v[i] = (struct pool_entry){0};
    t->used--;
    for (size_t j = (i + 1) & (t->cap - 1); t->v[j].key; j = (j + 1) & (t->cap - 1)) {
        size_t home = slot_of(t, t->v[j].key);
        /* Move j back to i when its home is not in (i, j]. */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            t->v[i] = t->v[j];
            t->v[j] = (struct pool_entry){0};
            i = j;
        }
    }
}

static void unlink_idle(struct mesh_worker *w, struct upconn *u)
{
    struct pool_table *t = w->http->pools;
    struct pool_entry *e = find(t, u->ep_state);
    if (!e)
        return;
    if (u->prev)
        u->prev->next = u->next;
    else
        e->idle = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->prev = u->next = NULL;
    e->n--;
    t->idle_total--;
    if (!e->idle)
        remove_entry(t, e);
}

/* ---- connections ---- */

static void on_up_closed(uv_handle_t *h)
{
    struct upconn *u = h->data;
    mesh_buf_done(&u->in);
    mesh_ep_state_unref(u->ep_state);
    mesh_free(u->as_id);
    mesh_free(u->peer_id);
    mesh_free(u);
}

void mesh_up_close(struct upconn *u)
{
    if (u->state == UP_CLOSING)
        return;
    if (u->state == UP_IDLE)
        unlink_idle(u->w, u);
    u->state = UP_CLOSING;
    u->c = NULL;
    mesh_io_close(u->io, on_up_closed);
}

static void on_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct upconn *u = h->data;
    (void)suggested;
    struct mesh_pbuf *b = mesh_bufpool_get(&u->w->pool);
    *buf = b ? uv_buf_init(b->data, (unsigned)u->w->pool.size) : uv_buf_init(NULL, 0);
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct upconn *u = s->data;
    struct mesh_pbuf *b = buf->base ? container_of(buf->base, struct mesh_pbuf, data) : NULL;
    if (nread == 0) {
        if (b)
            mesh_bufpool_put(&u->w->pool, b);
        return;
    }
    if (u->state != UP_BUSY) {
        /* Idle: the server closed it or talks out of turn; either way it is done. */
        if (b)
            mesh_bufpool_put(&u->w->pool, b);
        mesh_up_close(u);
        return;
    }
    if (nread < 0) {
        if (b)
            mesh_bufpool_put(&u->w->pool, b);
        mesh_http_on_up_error(u->c, u, (int)nread);
        return;
    }
    u->got_bytes = true;
    /* The request side takes the buffer (and returns it to the pool). */
    mesh_http_on_up_data(u->c, u, b->data, (size_t)nread, b);
}

static void up_ready(struct upconn *u)
{
    u->state = UP_BUSY;
    int r = mesh_io_read_start(u->io, on_up_alloc, on_up_read);
    struct http_conn *c = u->c;
    if (r < 0) {
        mesh_up_close(u);
        mesh_http_on_up_connected(c, u, r);
        return;
    }
    mesh_http_on_up_connected(c, u, 0);
}

static void on_up_handshake(struct mesh_io *io, int status)
{
    struct upconn *u = io->tcp.data;
    struct mesh_proxy_shared *sh = u->w->shared;
    atomic_fetch_add_explicit(status == 0 ? &sh->tls_ok[1] : &sh->tls_failed[1], 1,
                              memory_order_relaxed);
    if (status < 0) {
        const char *why = mesh_tls_refusal(mesh_io_ssl(io));
        mesh_log_warn("mTLS to an agent of '%s' failed: %s", u->tls_dest->key,
                      why ? why : mesh_io_tls_error(io));
        struct http_conn *c = u->c;
        mesh_up_close(u);
        mesh_http_on_up_connected(c, u, UV_ECONNREFUSED);
        return;
    }
    if (SSL_session_reused(mesh_io_ssl(io)))
        atomic_fetch_add_explicit(&sh->tls_resumed[1], 1, memory_order_relaxed);
    u->tls_dest = NULL;
    up_ready(u);
}

static void on_up_connect(uv_connect_t *req, int status)
{
    struct upconn *u = container_of(req, struct upconn, connect);
    if (u->state == UP_CLOSING)
        return;
    if (status < 0) {
        struct http_conn *c = u->c;
        mesh_up_close(u);
        mesh_http_on_up_connected(c, u, status);
        return;
    }
    uv_tcp_nodelay(&u->io->tcp, 1);
    if (!u->as_id) {
        up_ready(u);
        return;
    }
    /* An agent on the far side: mTLS first (the request's connect timeout covers it). */
    char peer[MESH_ADDR_STRLEN];
    struct mesh_addr to;
    mesh_ep_sockaddr(&u->tls_dest->eps[u->ep], true, &to);
    mesh_addr_format(&to, peer, sizeof(peer));
    char sni[200]; /* the instance picked: its agent may run several */
    mesh_tls_instance_sni(sni, sizeof(sni), u->tls_dest->sni, u->tls_dest->eps[u->ep].addr.port);
    SSL *ssl =
        mesh_tls_client_session(u->c->tls_as, sni, u->tls_dest->peer_id, &u->w->tls_sessions, peer);
    if (!ssl || mesh_io_tls_start(u->io, ssl, on_up_handshake) < 0) {
        struct http_conn *c = u->c;
        mesh_up_close(u);
        mesh_http_on_up_connected(c, u, UV_ENOMEM);
    }
}

struct upconn *mesh_up_connect(struct mesh_worker *w, struct http_conn *c, int ep,
                               const struct snap_endpoint *e)
{
    struct upconn *u = mesh_calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->w = w;
    u->c = c;
    u->ep = ep;
    u->state = UP_CONNECTING;
    u->ep_state = e->state;
    atomic_fetch_add_explicit(&e->state->refs, 1, memory_order_relaxed);
    mesh_buf_init(&u->in, MESH_HTTP_DEFAULT_MAX_HEAD);
    u->io = mesh_io_new(&w->iol, &w->loop);
    struct mesh_addr to;
    mesh_ep_sockaddr(e, c->tls_as != NULL, &to);
    if (e->mesh_port && c->tls_as) {
        u->tls_dest = c->req.dest;
        u->as_id = mesh_strdup(c->tls_as->id);
        u->peer_id = u->tls_dest->peer_id ? mesh_strdup(u->tls_dest->peer_id) : NULL;
    }
    if (!u->io || (u->tls_dest && (!u->as_id || (u->tls_dest->peer_id && !u->peer_id)))) {
        if (u->io)
            mesh_io_close(u->io, NULL);
        mesh_buf_done(&u->in);
        mesh_ep_state_unref(u->ep_state);
        mesh_free(u->as_id);
        mesh_free(u->peer_id);
        mesh_free(u);
        return NULL;
    }
    u->io->tcp.data = u;
    int r =
        uv_tcp_connect(&u->connect, &u->io->tcp, (const struct sockaddr *)&to.ss, on_up_connect);
    if (r < 0) {
        u->state = UP_CLOSING;
        mesh_io_close(u->io, on_up_closed);
        return NULL;
    }
    return u;
}

static bool same_id(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

struct upconn *mesh_up_take_idle(struct mesh_worker *w, struct mesh_ep_state *st, const char *as,
                                 const char *peer)
{
    struct pool_entry *e = find(w->http->pools, st);
    struct upconn *u = e ? e->idle : NULL;
    /* One made as another caller would present the wrong identity; one whose peer was
     * checked against another ID (the destination's identity changed) proves nothing now. */
    while (u && !(as ? same_id(u->as_id, as) && same_id(u->peer_id, peer) : !u->as_id))
        u = u->next;
    if (!u)
        return NULL;
    unlink_idle(w, u);
    u->state = UP_BUSY;
    u->reused = true;
    u->got_bytes = false;
    return u;
}

void mesh_up_release(struct upconn *u, bool reusable, const struct mesh_dest_policy *pol)
{
    struct mesh_worker *w = u->w;
    u->c = NULL;
    if (u->paused) {
        u->paused = false;
        if (mesh_io_read_start(u->io, on_up_alloc, on_up_read) < 0)
            reusable = false;
    }
    struct pool_entry *e = NULL;
    if (!reusable || w->stopping || u->in.len || pol->pool.max_idle == 0 ||
        !(e = find_or_add(w->http->pools, u->ep_state)) || e->n >= (size_t)pol->pool.max_idle) {
        if (e && !e->idle)
            remove_entry(w->http->pools, e);
        mesh_up_close(u);
        return;
    }
    u->state = UP_IDLE;
    u->idle_since = uv_now(&w->loop);
    u->idle_timeout_ms = pol->pool.idle_timeout_ms;
    u->prev = NULL;
    u->next = e->idle;
    if (e->idle)
        e->idle->prev = u;
    e->idle = u;
    e->n++;
    w->http->pools->idle_total++;
}

/* Resumes reading from u after the client caught up. */
void mesh_up_resume(struct upconn *u)
{
    if (u->paused && u->state == UP_BUSY) {
        u->paused = false;
        mesh_io_read_start(u->io, on_up_alloc, on_up_read);
    }
}

void mesh_up_pause(struct upconn *u)
{
    if (!u->paused) {
        u->paused = true;
        mesh_io_read_stop(u->io);
    }
}

static void on_up_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

void mesh_up_shutdown(struct upconn *u)
{
    if (u->shut || u->state != UP_BUSY)
        return;
    u->shut = true;
    mesh_io_shutdown(&u->shutdown, u->io, on_up_shutdown);
}

/* ---- the pools ---- */

static void on_sweep(uv_timer_t *t)
{
    struct mesh_worker *w = t->data;
    struct pool_table *pt = w->http->pools;
    uint64_t now = uv_now(&w->loop);
    for (size_t i = 0; i < pt->cap;) {
        struct pool_entry *e = &pt->v[i];
        struct upconn *u = e->key ? e->idle : NULL, *next;
        bool removed = false;
        for (; u; u = next) {
            next = u->next;
            if (now - u->idle_since < u->idle_timeout_ms)
                continue;
            removed = e->n == 1;
            mesh_up_close(u); /* may remove the entry and shift others into slot i */
            if (removed)
                break;
        }
        if (!removed)
            i++;
    }
}

int mesh_up_pools_init(struct mesh_worker *w)
{
    w->http->pools = mesh_calloc(1, sizeof(*w->http->pools));
    if (!w->http->pools)
        return -ENOMEM;
    uv_timer_init(&w->loop, &w->http->sweep);
    w->http->sweep.data = w;
    uv_timer_start(&w->http->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&w->http->sweep);
    return 0;
}

void mesh_up_pools_close(struct mesh_worker *w)
{
    struct pool_table *t = w->http->pools;
    if (!t)
        return;
    for (size_t i = 0; i < t->cap;) {
        if (t->v[i].key)
            mesh_up_close(t->v[i].idle); /* removing may shift another entry into i */
        else
            i++;
    }
    if (!w->http->sweep_closing) {
        w->http->sweep_closing = true;
        uv_close((uv_handle_t *)&w->http->sweep, NULL);
    }
}

void mesh_up_pools_done(struct mesh_worker *w)
{
    if (w->http->pools)
        mesh_free(w->http->pools->v);
    mesh_free(w->http->pools);
    w->http->pools = NULL;
}

size_t mesh_up_idle_count(const struct mesh_worker *w)
{
    return w->http && w->http->pools ? w->http->pools->idle_total : 0;
}
