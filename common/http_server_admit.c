#define MESH_LOG_MODULE "http"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/http_server-int.h"
#include "common/log.h"

/* Whether bytes wait unread in the connection's socket: a request on its way, not idleness. */
static bool has_unread(struct mesh_http_conn *c)
{
    uv_os_fd_t fd;
    int n = 0;
    if (uv_fileno((const uv_handle_t *)mesh_io_stream(c->io), &fd) < 0 ||
        ioctl(fd, FIONREAD, &n) < 0)
        return false;
    return n > 0;
}

/*
 * The connection to close to make room, but never `except` (of client `cl` when set): of
 * those only waiting for a request (none begun, or a head begun and unfinished), the one
 * waiting the longest. One with bytes unread in its socket (a request on its way: a burst of
 * accepts can run before the read) is not chosen. NULL when there is none.
 */
static struct mesh_http_conn *oldest_waiting(struct mesh_http_server *s,
                                             const struct mesh_http_conn *except,
                                             const struct mesh_http_client *cl)
{
    struct mesh_http_conn *best = NULL;
    for (struct mesh_http_conn *c = s->conns; c; c = c->next) {
        if (c == except || c->state != MESH_HTTP_CONN_HEAD || (cl && c->client != cl) ||
            (best && c->waiting_since >= best->waiting_since) || has_unread(c))
            continue;
        best = c;
    }
    return best;
}

/*
 * Makes room for the new connection c under the limits, closing the oldest connection that
 * only waits for a request (its client's first, when the client is at its own limit).
 * Returns false when there is nothing to close: c must be refused.
 */
static bool make_room(struct mesh_http_server *s, struct mesh_http_conn *c)
{
    size_t per_client = s->opts.max_connections_per_client;
    struct mesh_http_conn *victim = NULL;
    if (per_client && c->client->conns > per_client) {
        if (!(victim = oldest_waiting(s, c, c->client)))
            return false;
    } else if (s->conns_open > s->opts.max_connections) {
        if (!(victim = oldest_waiting(s, c, NULL)))
            return false;
    } else {
        return true;
    }
    s->stats.connections_evicted++;
    mesh_log_debug("closing a waiting connection of %s to make room for %s", victim->peer, c->peer);
    mesh_http__conn_close(victim);
    return true;
}

/* Says why to a refused plain-HTTP client (best effort, never blocks), then closes. */
static void conn_refuse_at_once(struct mesh_http_conn *c, bool plain)
{
    static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                              "Content-Length: 22\r\nConnection: close\r\n\r\n"
                              "too many connections\r\n";
    c->srv->stats.connections_refused++;
    mesh_log_debug("refusing a connection from %s: too many connections", c->peer);
    if (plain) {
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)msg, sizeof(msg) - 1);
        mesh_io_try_write(c->io, &b, 1);
    }
    mesh_http__conn_close(c);
}

/* Sets the peer's address, name and client of an accepted connection. Returns 0 or -ENOMEM. */
static int conn_identify(struct mesh_http_conn *c, bool is_unix)
{
    char key[MESH_HTTP_CLIENT_KEYLEN];
    int len = sizeof(c->peer_addr.ss);
    if (!is_unix &&
        uv_tcp_getpeername(&c->io->tcp, (struct sockaddr *)&c->peer_addr.ss, &len) == 0) {
        c->peer_addr.len = (socklen_t)len;
        mesh_addr_format(&c->peer_addr, c->peer, sizeof(c->peer));
        uv_tcp_nodelay(&c->io->tcp, 1);
    } else {
        memset(&c->peer_addr, 0, sizeof(c->peer_addr));
        c->peer_addr.ss.ss_family = AF_UNIX;
        strcpy(c->peer, "unix");
    }
    mesh_http_client_key(&c->peer_addr, key);
    c->client = mesh_http_clients_ref(&c->srv->clients, key);
    return c->client ? 0 : -ENOMEM;
}

bool mesh_http__admit(struct mesh_http_server *s, struct mesh_http_conn *c, bool is_unix)
{
    if (conn_identify(c, is_unix) < 0) {
        mesh_http__conn_close(c);
        return false;
    }
    if (!make_room(s, c)) {
        conn_refuse_at_once(c, is_unix || !s->opts.tls);
        return false;
    }
    return true;
}
