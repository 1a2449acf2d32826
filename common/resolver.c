#define MESH_LOG_MODULE "resolver"

/*
 * c-ares driven from libuv, as c-ares' "sock_state_cb" integration intends: c-ares tells us
 * which sockets it wants watched (sock_state_cb), uv_poll watches them and hands readiness
 * back with ares_process_fd, and one uv_timer fires at ares_timeout() so that retries and
 * timeouts happen without a socket event.
 */
#include "common/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/macros.h"

enum { RES_RUNNING, RES_CLOSING };

struct watch {
    uv_poll_t poll;
    ares_socket_t fd;
    struct mesh_resolver *r;
    struct watch *next;
    bool closing;
};

struct mesh_resolver_query {
    struct mesh_resolver *r;
    mesh_resolver_cb cb; /* NULL: cancelled */
    void *data;
    bool in_flight; /* c-ares holds it */
    struct mesh_resolver_answer answer;
    struct mesh_ipport addrs[MESH_RESOLVER_ADDRS_MAX];
    mesh_resolver_raw_cb raw_cb; /* a raw query (mesh_resolver_send); NULL: cancelled */
    uint8_t *raw;                /* its answer */
    size_t raw_len;
    struct mesh_resolver_query *next_done;
};

struct mesh_resolver {
    uv_loop_t *loop;
    ares_channel channel;
    bool channel_up;
    int state;
    uv_timer_t timer;   /* ares_timeout */
    uv_timer_t deliver; /* answers that came back inside mesh_resolver_query */
    struct watch *watches;
    struct mesh_resolver_query *done_head, *done_tail;
    unsigned handles; /* open uv handles */
    void (*closed)(void *data);
    void *closed_data;
};

static void on_handle_closed(uv_handle_t *h);

static void maybe_freed(struct mesh_resolver *r)
{
    if (r->state != RES_CLOSING || r->handles)
        return;
    void (*done)(void *) = r->closed;
    void *data = r->closed_data;
    mesh_free(r);
    ares_library_cleanup();
    if (done)
        done(data);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct mesh_resolver *r = h->data;
    if (h->type == UV_POLL) {
        struct watch *w = container_of((uv_poll_t *)h, struct watch, poll);
        mesh_free(w);
    }
    r->handles--;
    maybe_freed(r);
}

static void on_timer(uv_timer_t *t);

/* Arms the timer for c-ares' next deadline, or stops it when nothing is pending. */
static void rearm(struct mesh_resolver *r)
{
    if (r->state != RES_RUNNING)
        return;
    struct timeval tv;
    struct timeval *next = ares_timeout(r->channel, NULL, &tv);
    if (!next) {
        uv_timer_stop(&r->timer);
        return;
    }
    uint64_t ms = (uint64_t)next->tv_sec * 1000 + (uint64_t)(next->tv_usec + 999) / 1000;
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct mesh_resolver *r = container_of(t, struct mesh_resolver, timer);
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(r);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct watch *w = container_of(p, struct watch, poll);
    struct mesh_resolver *r = w->r;
    /* An error on the socket: let c-ares read and write it to find out and give up on it. */
    bool rd = status < 0 || (events & UV_READABLE), wr = status < 0 || (events & UV_WRITABLE);
    ares_process_fd(r->channel, rd ? w->fd : ARES_SOCKET_BAD, wr ? w->fd : ARES_SOCKET_BAD);
    rearm(r);
}

static void close_watch(struct mesh_resolver *r, struct watch **link)
{
    struct watch *w = *link;
    *link = w->next;
    uv_close((uv_handle_t *)&w->poll, on_handle_closed);
    (void)r;
}

/* c-ares opens, changes or closes a socket: watch it accordingly. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct mesh_resolver *r = data;
    struct watch **link = &r->watches;
    while (*link && (*link)->fd != fd)
        link = &(*link)->next;
    if (!readable && !writable) {
        if (*link)
            close_watch(r, link);
        return;
    }
    struct watch *w = *link;
    if (!w) {
        w = mesh_calloc(1, sizeof(*w));
        /* Without a watch the query times out through the timer: slower, not stuck. */
        if (!w || uv_poll_init_socket(r->loop, &w->poll, fd) < 0) {
            mesh_free(w);
            return;
        }
        w->fd = fd;
        w->r = r;
        w->poll.data = r;
        w->next = r->watches;
        r->watches = w;
        r->handles++;
    }
    uv_poll_start(&w->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

static int errno_of(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return -ENOENT;
    case ARES_ETIMEOUT:
        return -ETIMEDOUT;
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
    case ARES_ECONNREFUSED:
        return -EAGAIN;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        return -ECANCELED;
    case ARES_EBADNAME:
        return -EINVAL;
    default:
        return -EIO;
    }
}

static int cmp_ipport(const void *a, const void *b)
{
    return mesh_ipport_cmp(a, b);
}

/* Copies the addresses of `ai` into q's answer: sorted, unique, the lowest TTL. */
static void fill_answer(struct mesh_resolver_query *q, int status, struct ares_addrinfo *ai)
{
    struct mesh_resolver_answer *a = &q->answer;
    size_t n = 0;
    int ttl = -1;
    for (struct ares_addrinfo_node *nd = ai ? ai->nodes : NULL; nd; nd = nd->ai_next) {
        struct mesh_ipport p = {0};
        if (nd->ai_family == AF_INET && nd->ai_addrlen >= sizeof(struct sockaddr_in)) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)nd->ai_addr;
            memcpy(p.ip, &sin->sin_addr, 4);
            p.family = AF_INET;
        } else if (nd->ai_family == AF_INET6 && nd->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)nd->ai_addr;
            memcpy(p.ip, &s6->sin6_addr, 16);
            p.family = AF_INET6;
        } else {
            continue;
        }
        if (ttl < 0 || nd->ai_ttl < ttl)
            ttl = nd->ai_ttl;
        if (n < MESH_RESOLVER_ADDRS_MAX)
            q->addrs[n++] = p;
    }
    qsort(q->addrs, n, sizeof(q->addrs[0]), cmp_ipport);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!k || !mesh_ipport_equal(&q->addrs[k - 1], &q->addrs[i]))
            q->addrs[k++] = q->addrs[i];
    }
    a->status = errno_of(status);
    a->why = ares_strerror(status);
    if (a->status == 0 && k == 0) {
        a->status = -ENOENT;
        a->why = "no address in the answer";
    }
    a->addrs = q->addrs;
    a->n = a->status == 0 ? k : 0;
    a->ttl = ttl > 0 ? (uint32_t)ttl : 0;
}

static void deliver(struct mesh_resolver_query *q)
{
    if (q->cb)
        q->cb(&q->answer, q->data);
    else if (q->raw_cb)
        q->raw_cb(q->answer.status, q->raw, q->raw_len, q->data);
    mesh_free(q->raw);
    mesh_free(q);
}

static void on_deliver(uv_timer_t *t)
{
    struct mesh_resolver *r = container_of(t, struct mesh_resolver, deliver);
    struct mesh_resolver_query *q = r->done_head;
    r->done_head = r->done_tail = NULL;
    while (q) {
        struct mesh_resolver_query *next = q->next_done;
        deliver(q);
        q = next;
    }
}

static void queue_done(struct mesh_resolver_query *q)
{
    if (q->r->done_tail)
        q->r->done_tail->next_done = q;
    else
        q->r->done_head = q;
    q->r->done_tail = q;
    uv_timer_start(&q->r->deliver, on_deliver, 0, 0);
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct mesh_resolver_query *q = arg;
    (void)timeouts;
    fill_answer(q, status, ai);
    if (ai)
        ares_freeaddrinfo(ai);
    if (q->in_flight) {
        q->in_flight = false;
        deliver(q);
        return;
    }
    /* Answered inside ares_getaddrinfo (the hosts file, a bad name): deliver from the loop. */
    queue_done(q);
}

/* After c-ares took q: a query it answered at once (from its cache, or an error) is queued
 * for delivery already; otherwise c-ares holds q until its callback. Returns 0. */
static int issued(struct mesh_resolver *r, struct mesh_resolver_query *q,
                  struct mesh_resolver_query **ret)
{
    bool pending = true;
    for (struct mesh_resolver_query *d = r->done_head; d; d = d->next_done)
        pending = pending && d != q;
    if (pending)
        q->in_flight = true;
    if (ret)
        *ret = q;
    rearm(r);
    return 0;
}

int mesh_resolver_query(struct mesh_resolver *r, const char *name, mesh_resolver_cb cb, void *data,
                        struct mesh_resolver_query **ret)
{
    if (r->state != RES_RUNNING)
        return -ECANCELED;
    struct mesh_resolver_query *q = mesh_calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->r = r;
    q->cb = cb;
    q->data = data;
    /* An address is its own answer (c-ares 1.18 would still ask the name servers). */
    struct mesh_ipport lit;
    if (mesh_ipport_from_ip(name, 0, &lit) == 0) {
        q->addrs[0] = lit;
        q->answer = (struct mesh_resolver_answer){.why = "", .addrs = q->addrs, .n = 1};
        queue_done(q);
        if (ret)
            *ret = q;
        return 0;
    }
    struct ares_addrinfo_hints hints = {
        .ai_family = AF_UNSPEC,
        /* No sorting by reachability: it connect()s a socket per address; we sort. */
        .ai_flags = ARES_AI_NOSORT,
    };
    ares_getaddrinfo(r->channel, name, NULL, &hints, on_addrinfo, q);
    return issued(r, q, ret);
}

static void on_send(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct mesh_resolver_query *q = arg;
    (void)timeouts;
    q->answer.status = errno_of(status);
    q->answer.why = ares_strerror(status);
    if (status == ARES_SUCCESS && abuf && alen > 0) {
        q->raw = mesh_memdup(abuf, (size_t)alen);
        q->raw_len = q->raw ? (size_t)alen : 0;
        if (!q->raw)
            q->answer.status = -ENOMEM;
    } else if (q->answer.status == 0) {
        q->answer.status = -EIO;
    }
    if (q->in_flight) {
        q->in_flight = false;
        deliver(q);
        return;
    }
    queue_done(q);
}

int mesh_resolver_send(struct mesh_resolver *r, const uint8_t *msg, size_t len,
                       mesh_resolver_raw_cb cb, void *data, struct mesh_resolver_query **ret)
{
    if (r->state != RES_RUNNING)
        return -ECANCELED;
    if (len < 12 || len > 65535)
        return -EINVAL;
    struct mesh_resolver_query *q = mesh_calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->r = r;
    q->raw_cb = cb;
    q->data = data;
    ares_send(r->channel, msg, (int)len, on_send, q);
    return issued(r, q, ret);
}

void mesh_resolver_cancel(struct mesh_resolver_query *q)
{
    if (q) {
        q->cb = NULL;
        q->raw_cb = NULL;
    }
}

int mesh_resolver_new(uv_loop_t *loop, const struct mesh_resolver_options *o,
                      struct mesh_resolver **ret)
{
    struct mesh_resolver *r = mesh_calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int err = -ENOMEM;
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        mesh_free(r);
        return -ENOMEM;
    }
    r->loop = loop;
    struct ares_options opts = {
        .sock_state_cb = on_sock_state,
        .sock_state_cb_data = r,
        .timeout = o && o->timeout_ms > 0 ? o->timeout_ms : 2000,
        .tries = o && o->tries > 0 ? o->tries : 2,
    };
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    int st = ares_init_options(&r->channel, &opts, mask);
    if (st != ARES_SUCCESS) {
        err = st == ARES_ENOMEM ? -ENOMEM : -EIO;
        goto fail;
    }
    r->channel_up = true;
    if (o && o->servers && o->servers[0] &&
        ares_set_servers_ports_csv(r->channel, o->servers) != ARES_SUCCESS) {
        err = -EINVAL;
        goto fail;
    }
    uv_timer_init(loop, &r->timer);
    uv_timer_init(loop, &r->deliver);
    r->timer.data = r->deliver.data = r;
    r->handles = 2;
    r->state = RES_RUNNING;
    *ret = r;
    return 0;
fail:
    if (r->channel_up)
        ares_destroy(r->channel);
    mesh_free(r);
    ares_library_cleanup();
    return err;
}

int mesh_resolver_servers(struct mesh_resolver *r, struct mesh_addr *ret, size_t cap)
{
    struct ares_addr_port_node *list = NULL;
    int st = ares_get_servers_ports(r->channel, &list);
    if (st != ARES_SUCCESS)
        return st == ARES_ENOMEM ? -ENOMEM : 0;
    size_t n = 0;
    for (struct ares_addr_port_node *s = list; s; s = s->next, n++) {
        if (n >= cap)
            continue;
        char ip[INET6_ADDRSTRLEN] = "";
        inet_ntop(s->family,
                  s->family == AF_INET ? (const void *)&s->addr.addr4
                                       : (const void *)&s->addr.addr6,
                  ip, sizeof(ip));
        if (mesh_addr_from_ip(ip, (uint16_t)(s->udp_port ? s->udp_port : 53), &ret[n]) < 0)
            memset(&ret[n], 0, sizeof(ret[n]));
    }
    ares_free_data(list);
    return (int)n;
}

void mesh_resolver_close(struct mesh_resolver *r, void (*done)(void *data), void *data)
{
    if (!r || r->state != RES_RUNNING)
        return;
    /* Queries end with ARES_EDESTRUCTION and sockets close through on_sock_state; a
     * callback that asks again meanwhile is refused (-ECANCELED). */
    r->state = RES_CLOSING;
    ares_destroy(r->channel);
    r->channel_up = false;
    on_deliver(&r->deliver);
    r->closed = done;
    r->closed_data = data;
    while (r->watches)
        close_watch(r, &r->watches);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->deliver, on_handle_closed);
}

const char *mesh_resolver_check_server(const char *s)
{
    if (mesh_is_ip_literal(s))
        return NULL;
    struct mesh_addr a;
    const char *why = NULL;
    if (mesh_addr_parse(s, &a, &why) < 0 || mesh_addr_is_unix(&a) || mesh_addr_port(&a) == 0)
        return "must be an IP address, \"ip:port\" or \"[ipv6]:port\"";
    return NULL;
}
