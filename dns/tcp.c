#define MESH_LOG_MODULE "dns"

/*
 * DNS over TCP (RFC 7766): each message has a two-byte length prefix; a client may send
 * several queries on one connection without waiting, and answers may come back in any
 * order. A connection with nothing in flight that has not sent or received a whole message
 * for the idle timeout is closed (bytes that never make a message do not keep it open, RFC
 * 7766 6.2.3); at the connection limit the least recently active idle connection is closed
 * to make room, and a new one is refused only when every connection has queries in flight.
 */
#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "dns/dns-int.h"

struct write_req {
    uv_write_t req;
    size_t len;
    uint8_t data[];
};

static void conn_close(struct mesh_dns_conn *c);

static void conn_unlink(struct mesh_dns_conn *c)
{
    struct mesh_dns *d = c->d;
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        d->conns_tail = c->prev;
    c->prev = c->next = NULL;
}

static void conn_push_front(struct mesh_dns_conn *c)
{
    struct mesh_dns *d = c->d;
    c->prev = NULL;
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    else
        d->conns_tail = c;
    d->conns = c;
}

/* A whole message came in or went out: the idle timeout starts again, and c goes to the
 * front of the list (the last to be closed to make room). */
static void conn_active(struct mesh_dns_conn *c)
{
    uv_timer_again(&c->idle);
    if (c->d->conns != c) {
        conn_unlink(c);
        conn_push_front(c);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct mesh_dns_conn *c = h->data;
    if (--c->handles)
        return;
    struct mesh_dns *d = c->d;
    mesh_free(c);
    mesh_dns__handle_closed(d);
}

static void conn_close(struct mesh_dns_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    struct mesh_dns *d = c->d;
    while (c->pending)
        mesh_dns__pending_free(c->pending);
    conn_unlink(c);
    d->n_conns--;
    /* d counts the connection as one handle until both of its own have closed. */
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->idle, on_conn_closed);
}

static void on_idle(uv_timer_t *t)
{
    struct mesh_dns_conn *c = container_of(t, struct mesh_dns_conn, idle);
    if (c->n_pending) {
        /* Answers still due: an upstream answers or times out before long. */
        uv_timer_again(t);
        return;
    }
    conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = container_of(req, struct write_req, req);
    struct mesh_dns_conn *c = req->handle->data;
    mesh_free(w);
    if (status < 0 && status != UV_ECANCELED)
        conn_close(c);
}

void mesh_dns__tcp_send(struct mesh_dns_conn *c, const uint8_t *msg, size_t len)
{
    if (c->closing || len > MESH_DNS_MSG_MAX)
        return;
    /* A client that does not read its answers does not get to fill our memory. */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 4 * MESH_DNS_MSG_MAX) {
        conn_close(c);
        return;
    }
    struct write_req *w = mesh_malloc(sizeof(*w) + 2 + len);
    if (!w) {
        conn_close(c);
        return;
    }
    w->data[0] = (uint8_t)(len >> 8);
    w->data[1] = (uint8_t)len;
    memcpy(w->data + 2, msg, len);
    w->len = 2 + len;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        mesh_free(w);
        conn_close(c);
        return;
    }
    conn_active(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mesh_dns_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->in + c->in_len, (unsigned)(sizeof(c->in) - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mesh_dns_conn *c = s->data;
    (void)buf;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->in_len += (size_t)nread;
    size_t off = 0;
    while (!c->closing && c->in_len - off >= 2) {
        size_t len = (size_t)c->in[off] << 8 | c->in[off + 1];
        if (len < MESH_DNS_HEADER_LEN) {
            /* Not a DNS message: the stream cannot be trusted to stay in step. */
            c->d->stats.malformed++;
            conn_close(c);
            return;
        }
        if (c->in_len - off - 2 < len)
            break;
        conn_active(c);
        mesh_dns__query(c->d, c, NULL, c->in + off + 2, len);
        off += 2 + len;
    }
    if (c->closing)
        return;
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct mesh_dns *d = container_of((uv_tcp_t *)server, struct mesh_dns, tcp);
    if (status < 0 || d->state != DNS_RUNNING)
        return;
    struct mesh_dns_conn *c = mesh_calloc(1, sizeof(*c));
    if (!c || uv_tcp_init(d->loop, &c->tcp) < 0) {
        mesh_free(c);
        return;
    }
    c->d = d;
    c->tcp.data = c;
    c->idle.data = c;
    uv_timer_init(d->loop, &c->idle);
    c->handles = 2;
    d->handles++;
    conn_push_front(c);
    d->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    if (d->n_conns > d->o.max_tcp_connections) {
        /* Room is made by closing the least recently active connection with nothing in
         * flight: clients that hold a slot without finishing a message cannot lock out
         * others. Only when every one has queries in flight is the new one refused. */
        struct mesh_dns_conn *old = d->conns_tail;
        while (old && (old == c || old->n_pending))
            old = old->prev;
        d->stats.tcp_refused++;
        if (!old) {
            mesh_log_debug("DNS over TCP: %d busy connections, closing a new one", d->n_conns - 1);
            conn_close(c);
            return;
        }
        mesh_log_debug("DNS over TCP: %d connections, closing the least recently active",
                       d->n_conns - 1);
        conn_close(old);
    }
    uv_timer_start(&c->idle, on_idle, d->o.tcp_idle_timeout_ms, d->o.tcp_idle_timeout_ms);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        conn_close(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    mesh_dns__handle_closed(h->data);
}

int mesh_dns__tcp_start(struct mesh_dns *d)
{
    int r = uv_tcp_init(d->loop, &d->tcp);
    if (r < 0)
        return r;
    d->tcp.data = d;
    d->handles++;
    r = uv_tcp_bind(&d->tcp, (const struct sockaddr *)&d->listen.ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&d->tcp, 128, on_connection);
    return r;
}

void mesh_dns__tcp_close_all(struct mesh_dns *d)
{
    while (d->conns)
        conn_close(d->conns);
    if (d->tcp.data == d && !uv_is_closing((uv_handle_t *)&d->tcp))
        uv_close((uv_handle_t *)&d->tcp, on_listener_closed);
}
