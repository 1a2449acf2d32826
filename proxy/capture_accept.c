#define MESH_LOG_MODULE "capture"

/*
 * A connection nftables redirected to a capture listener (worker threads). The kernel
 * keeps where it was going (conntrack): SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST for IPv6.
 *
 *   outbound  to the endpoint IP:port (or virtual IP) of a mesh service: the service's
 *             CAPTURED route, served as an explicit listener is (HTTP by the service's
 *             protocol, routes, mTLS to the remote agents); anything else is passed
 *             through in plain TCP, or refused (capture.outbound.unknown_destination)
 *   inbound   plaintext from the network to a local workload's port (mTLS arrives on the
 *             agent's own mTLS port, which is never captured): refused under strict,
 *             handed to the workload under permissive; counted apart either way
 *
 * A connection made straight to a capture listener, not redirected, has itself as its
 * original destination: it is refused (passing it through would loop).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/prom.h"
#include "proxy/http_proxy-int.h"
#include "proxy/worker-int.h"

/* From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>, which do not mix
 * with glibc's <netinet/in.h>. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

enum { OUT_MESH, OUT_PASSTHROUGH, OUT_REFUSED };
enum { IN_ACCEPTED, IN_REFUSED };

/* Where the connection was going before nftables redirected it. Returns 0 or -errno (not
 * redirected: -ENOENT, or the socket's own address). */
static int original_dst(struct mesh_io *io, struct mesh_addr *ret)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&io->tcp, &fd) < 0)
        return -EBADF;
    struct mesh_addr local = {0};
    socklen_t len = sizeof(local.ss);
    if (getsockname(fd, (struct sockaddr *)&local.ss, &len) < 0)
        return -errno;
    local.len = len;
    memset(ret, 0, sizeof(*ret));
    len = sizeof(ret->ss);
    int r = local.ss.ss_family == AF_INET6
                ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ret->ss, &len)
                : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ret->ss, &len);
    if (r < 0)
        return -errno;
    ret->len = len;
    /* By address and port: the kernel's sockaddr may differ in its padding. */
    struct mesh_ipport o, l;
    if (mesh_ipport_from_addr(ret, &o) < 0 || mesh_ipport_from_addr(&local, &l) < 0)
        return -EAFNOSUPPORT;
    return mesh_ipport_equal(&o, &l) ? -ENOENT : 0;
}

/* Closes with a reset: the caller sees "connection refused" at its first read or write. */
static void refuse(struct mesh_io *io)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&io->tcp, &fd) == 0) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    mesh_io_close(io, NULL);
}

/* True when the connection's local address is a loopback one (127.0.0.0/8, ::1, or
 * ::ffff:127.x on a dual-stack socket): where the output hook's redirect lands. */
static bool landed_on_loopback(uv_os_fd_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return true; /* unknown: not named */
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family != AF_INET6)
        return true;
    const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* The workload of this host the connection comes from (a pod of this node, by its address):
 * its identity and the certificate its calls present; or NULL. Only a connection the pods
 * chain redirected (prerouting: it lands on the address of the interface it came in on) can
 * be a pod's; one the outbound chain redirected (output: it lands on loopback) is a host
 * process's, whatever its source address, which is the node's own, never to be taken for a
 * pod's (docs/capture.md, "The calling pod"). */
static const struct snap_capture_source *source_of(const struct mesh_proxy_snapshot *s,
                                                   struct mesh_io *io)
{
    uv_os_fd_t fd;
    struct mesh_addr peer = {0};
    socklen_t len = sizeof(peer.ss);
    char ip[MESH_ADDR_STRLEN];
    if (!s->capture_sources.n || uv_fileno((uv_handle_t *)&io->tcp, &fd) < 0 ||
        landed_on_loopback(fd) || getpeername(fd, (struct sockaddr *)&peer.ss, &len) < 0)
        return NULL;
    peer.len = len;
    return mesh_hmap_get(&s->capture_sources, mesh_addr_ip(&peer, ip, sizeof(ip)));
}

/* Serves io on a route as its listener would; src: the caller, or NULL (upstream mTLS then
 * presents the listener's identity, the node's). */
static void serve(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *t,
                  const struct snap_capture_source *src)
{
    const struct mesh_tls_identity *as = src ? src->as : NULL;
    if (t->http && w->http)
        mesh_http_adopt_as(w, io, t, src ? src->id : NULL, src != NULL);
    else
        mesh_tcp_adopt_as(w, io, t->key, as, src != NULL);
}

static void outbound(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l,
                     const struct mesh_addr *orig, int r)
{
    const struct mesh_proxy_snapshot *s = w->snap;
    char key[MESH_ADDR_STRLEN + 8];
    const struct snap_listener *t = NULL;
    if (r == 0) {
        t = mesh_hmap_get(&s->capture_index, mesh_addr_format(orig, key, sizeof(key)));
        if (!t) {
            memcpy(key, "vip:", 4);
            mesh_addr_ip(orig, key + 4, sizeof(key) - 4);
            t = mesh_hmap_get(&s->capture_index, key);
        }
    }
    if (t) {
        atomic_fetch_add_explicit(&w->shared->capture_out[OUT_MESH], 1, memory_order_relaxed);
        const struct snap_capture_source *src = source_of(s, io);
        if (s->capture_pods)
            atomic_fetch_add_explicit(&w->shared->capture_pod_callers[src ? 0 : 1], 1,
                                      memory_order_relaxed);
        serve(w, io, t, src);
        return;
    }
    if (r < 0 || s->capture_refuse_unknown) {
        atomic_fetch_add_explicit(&w->shared->capture_out[OUT_REFUSED], 1, memory_order_relaxed);
        mesh_addr_format(orig, key, sizeof(key));
        mesh_tcp_log_refusal(w,
                             r < 0 ? "not redirected by the capture rules"
                                   : "no mesh service there (unknown_destination: refuse)",
                             r < 0 ? l->key : key);
        refuse(io);
        return;
    }
    atomic_fetch_add_explicit(&w->shared->capture_out[OUT_PASSTHROUGH], 1, memory_order_relaxed);
    mesh_tcp_adopt_direct(w, io, l->key, orig);
}

static void inbound(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l,
                    const struct mesh_addr *orig, int r)
{
    const struct mesh_proxy_snapshot *s = w->snap;
    char key[MESH_ADDR_STRLEN + 16];
    const struct snap_listener *t = NULL;
    if (r == 0) {
        snprintf(key, sizeof(key), "capture-in:%u", (unsigned)mesh_addr_port(orig));
        t = mesh_snapshot_listener(s, key);
    }
    if (!t || !s->capture_permissive) {
        atomic_fetch_add_explicit(&w->shared->capture_in_plain[IN_REFUSED], 1,
                                  memory_order_relaxed);
        mesh_addr_format(orig, key, sizeof(key));
        mesh_tcp_log_refusal(w,
                             r < 0 ? "not redirected by the capture rules"
                             : t   ? "plaintext from the network (inbound mode strict)"
                                   : "no local workload on that port",
                             r < 0 ? l->key : key);
        refuse(io);
        return;
    }
    atomic_fetch_add_explicit(&w->shared->capture_in_plain[IN_ACCEPTED], 1, memory_order_relaxed);
    serve(w, io, t, NULL);
}

void mesh_capture_accept(struct mesh_worker *w, struct mesh_io *io, const struct snap_listener *l)
{
    if (w->stopping || !w->snap) {
        refuse(io);
        return;
    }
    struct mesh_addr orig;
    int r = original_dst(io, &orig);
    if (l->kind == MESH_LISTENER_CAPTURE_OUT)
        outbound(w, io, l, &orig, r);
    else
        inbound(w, io, l, &orig, r);
}

void mesh_capture_metrics(struct mesh_proxy_shared *sh, struct mesh_buf *b)
{
    static const char *const out[] = {"mesh", "passthrough", "refused"};
    mesh_prom_family(b, "mesh_capture_outbound_connections_total", "counter",
                     "Captured outbound connections: to a mesh service, passed through to their "
                     "original destination, refused.");
    for (int i = 0; i < 3; i++)
        mesh_prom_sample(b, "mesh_capture_outbound_connections_total",
                         (struct mesh_prom_label[]){{"result", out[i]}, {0}},
                         (double)atomic_load(&sh->capture_out[i]));
    mesh_prom_family(b, "mesh_capture_inbound_plaintext_total", "counter",
                     "Plaintext connections from the network to captured workload ports: "
                     "accepted (permissive), refused (strict). mTLS is counted by "
                     "mesh_proxy_tls_handshakes_total.");
    for (int i = 0; i < 2; i++)
        mesh_prom_sample(b, "mesh_capture_inbound_plaintext_total",
                         (struct mesh_prom_label[]){{"result", i ? "refused" : "accepted"}, {0}},
                         (double)atomic_load(&sh->capture_in_plain[i]));
    mesh_prom_family(b, "mesh_capture_pod_callers_total", "counter",
                     "Captured calls to mesh services with pods captured (capture.pods): the "
                     "caller named by its pod's identity (access log), or unknown.");
    for (int i = 0; i < 2; i++)
        mesh_prom_sample(b, "mesh_capture_pod_callers_total",
                         (struct mesh_prom_label[]){{"caller", i ? "unknown" : "named"}, {0}},
                         (double)atomic_load(&sh->capture_pod_callers[i]));
    mesh_prom_family(b, "mesh_capture_pod_identity_total", "counter",
                     "Calls of named pods to remote agents over mTLS (HTTP: per request; TCP: "
                     "per connection), counted when mTLS is chosen: they present the pod's "
                     "identity, or the node's (no certificate held for its account then).");
    for (int i = 0; i < 2; i++)
        mesh_prom_sample(b, "mesh_capture_pod_identity_total",
                         (struct mesh_prom_label[]){{"presented", i ? "node" : "pod"}, {0}},
                         (double)atomic_load(&sh->capture_pod_identity[i]));
}
