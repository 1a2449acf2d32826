#define MESH_LOG_MODULE "mtls"

/*
 * The inbound mTLS listener: a caller's agent connects, both sides present SVIDs, and the
 * SNI "<service>.<namespace>" names the local service wanted. Once the handshake is done
 * (the caller's certificate chained to the bundle and checked as an SVID), the caller's
 * SPIFFE ID meets the service's AuthorizationPolicy; a TCP service is then spliced as from
 * its inbound listener, an HTTP one served request by request with that identity.
 */
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/health_check-int.h"
#include "proxy/http_proxy-int.h"
#include "proxy/worker-int.h"
#include "resources/authz.h"

#define HANDSHAKE_TIMEOUT_MS 10000

struct mtls_handshake {
    struct mtls_handshake *prev, *next;
    struct mesh_worker *w;
    struct mesh_io *io; /* NULL once handed on or closed */
    uv_timer_t timer;
};

static void unlink_handshake(struct mtls_handshake *h)
{
    struct mesh_worker *w = h->w;
    if (h->prev)
        h->prev->next = h->next;
    else
        w->handshakes = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
}

static void on_timer_closed(uv_handle_t *t)
{
    struct mtls_handshake *h = t->data;
    struct mesh_worker *w = h->w;
    mesh_free(h);
    w->n_conns--;
    atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
    mesh_worker_maybe_exit(w);
}

/* Ends the handshake stage; the io goes on (handed) or is closed. */
static void finish(struct mtls_handshake *h, bool close_io)
{
    if (h->io && close_io)
        mesh_io_close(h->io, NULL);
    h->io = NULL;
    unlink_handshake(h);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

static void peer_name(struct mesh_io *io, char *out, size_t size)
{
    struct mesh_addr a = {0};
    int len = sizeof(a.ss);
    if (uv_tcp_getpeername(&io->tcp, (struct sockaddr *)&a.ss, &len) == 0) {
        a.len = (socklen_t)len;
        mesh_addr_format(&a, out, size);
    } else {
        snprintf(out, size, "?");
    }
}

static void on_handshake(struct mesh_io *io, int status)
{
    struct mtls_handshake *h = io->tcp.data;
    struct mesh_worker *w = h->w;
    SSL *ssl = mesh_io_ssl(io);
    char from[MESH_ADDR_STRLEN];
    if (status < 0) {
        atomic_fetch_add_explicit(&w->shared->tls_failed[0], 1, memory_order_relaxed);
        const char *why = mesh_tls_refusal(ssl);
        peer_name(io, from, sizeof(from));
        if (mesh_io_tls_silent(io))
            mesh_log_debug("%s connected to the mTLS port and left without a word", from);
        else
            mesh_log_warn("refused an mTLS connection from %s: %s", from,
                          why ? why : mesh_io_tls_error(io));
        finish(h, true);
        return;
    }
    atomic_fetch_add_explicit(&w->shared->tls_ok[0], 1, memory_order_relaxed);
    if (SSL_session_reused(ssl))
        atomic_fetch_add_explicit(&w->shared->tls_resumed[0], 1, memory_order_relaxed);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct snap_listener *l = w->snap ? mesh_snapshot_sni_listener(w->snap, sni) : NULL;
    const char *peer = mesh_tls_peer_id(ssl);
    if (!l || w->stopping) {
        finish(h, true); /* the service went away during the handshake */
        return;
    }
    if (mesh_tls_alpn_is_health(ssl)) {
        struct mesh_io *asked = h->io;
        finish(h, false);
        mesh_health_serve(w, asked); /* another agent asks how the service is */
        return;
    }
    if (!l->http && l->authz && !mesh_authz_allows(l->authz, NULL, peer)) {
        atomic_fetch_add_explicit(&w->shared->authz_denied_tcp, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->dest->state->authz_denied, 1, memory_order_relaxed);
        peer_name(io, from, sizeof(from));
        mesh_log_warn("denied %s (%s) a connection to %s: AuthorizationPolicy", peer, from,
                      l->description);
        finish(h, true);
        return;
    }
    struct mesh_io *handed = h->io;
    finish(h, false);
    if (l->http && w->http)
        mesh_http_adopt(w, handed, l, peer);
    else
        mesh_tcp_adopt_peer(w, handed, l->key, peer);
}

static void on_timeout(uv_timer_t *t)
{
    struct mtls_handshake *h = t->data;
    atomic_fetch_add_explicit(&h->w->shared->tls_failed[0], 1, memory_order_relaxed);
    char from[MESH_ADDR_STRLEN];
    peer_name(h->io, from, sizeof(from));
    mesh_log_warn("refused an mTLS connection from %s: no handshake within %d ms", from,
                  HANDSHAKE_TIMEOUT_MS);
    finish(h, true);
}

void mesh_mtls_accept(struct mesh_worker *w, struct mesh_io *io)
{
    struct mtls_handshake *h = mesh_calloc(1, sizeof(*h));
    SSL *ssl =
        h && w->snap && w->snap->tls && !w->stopping ? mesh_tls_server_session(w->snap->tls) : NULL;
    if (!ssl) {
        mesh_free(h);
        mesh_io_close(io, NULL);
        return;
    }
    h->w = w;
    h->io = io;
    io->tcp.data = h;
    uv_timer_init(&w->loop, &h->timer);
    h->timer.data = h;
    h->next = w->handshakes;
    if (w->handshakes)
        w->handshakes->prev = h;
    w->handshakes = h;
    w->n_conns++;
    atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
    uv_tcp_nodelay(&io->tcp, 1);
    uv_timer_start(&h->timer, on_timeout, HANDSHAKE_TIMEOUT_MS, 0);
    if (mesh_io_tls_start(io, ssl, on_handshake) < 0)
        finish(h, true);
}

void mesh_mtls_close_all(struct mesh_worker *w)
{
    while (w->handshakes)
        finish(w->handshakes, true);
    mesh_health_serve_close_all(w);
}
