#define MESH_LOG_MODULE "dns"

#include <errno.h>
#include <string.h>

#include "catalog/view.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/prom.h"
#include "dns/dns-int.h"

/* What a UDP answer may hold at most, whatever the client offers (RFC 6891 section 6.2.5
 * leaves it to us; 4096 is what resolvers offer by default). */
#define UDP_ANSWER_MAX 4096

static int lookup(void *data, const char *ns, const char *name, struct mesh_vip_pair *ret)
{
    struct mesh_dns *d = data;
    if (!d->catalog || !mesh_catalog_get(d->catalog, ns, name))
        return -ENOENT;
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    memset(ret, 0, sizeof(*ret));
    /* A service without an address (the range is full) gets NODATA. */
    mesh_vip_lookup_service(d->vips, key, ret);
    return 0;
}

static void list_add(struct mesh_dns__pending **head, struct mesh_dns__pending *p)
{
    p->list = head;
    p->prev = NULL;
    p->next = *head;
    if (*head)
        (*head)->prev = p;
    *head = p;
}

static void list_remove(struct mesh_dns__pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        *p->list = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* Takes p off its list and the counts: what happens to its connection after this (closed by
 * the answer's own write) no longer reaches p. */
static void pending_detach(struct mesh_dns__pending *p)
{
    if (!p->list)
        return;
    list_remove(p);
    p->list = NULL;
    if (p->conn)
        p->conn->n_pending--;
    p->d->n_forwarded--;
}

void mesh_dns__pending_free(struct mesh_dns__pending *p)
{
    if (!p)
        return;
    pending_detach(p);
    mesh_resolver_cancel(p->q);
    mesh_free(p->query);
    mesh_free(p);
}

/* Sends an answer to where the query came from; UDP answers are cut to the client's size. */
static void reply(struct mesh_dns *d, struct mesh_dns_conn *conn, const struct sockaddr *peer,
                  uint8_t *msg, size_t len, const struct mesh_dns_msg *m, size_t udp_limit,
                  uint16_t opt_size)
{
    if (conn) {
        mesh_dns__tcp_send(conn, msg, len);
        return;
    }
    if (len > udp_limit) {
        int n = m ? mesh_dns_truncate(msg, len, m, udp_limit, opt_size) : -EMSGSIZE;
        if (n < 0)
            return;
        len = (size_t)n;
        d->stats.truncated++;
    }
    uv_buf_t b = uv_buf_init((char *)msg, (unsigned)len);
    /* A full socket buffer drops the answer, as UDP may; the client asks again. */
    uv_udp_try_send(&d->udp, &b, 1, peer);
}

static void on_upstream(int status, const uint8_t *msg, size_t len, void *data)
{
    struct mesh_dns__pending *p = data;
    struct mesh_dns *d = p->d;
    p->q = NULL;
    /* reply() may close the connection, which frees the queries still on its list. */
    pending_detach(p);
    struct mesh_dns_msg m, qm;
    const char *why = NULL;
    size_t n = 0;
    bool ok = false;
    if (status == 0 && len <= sizeof(d->out)) {
        memcpy(d->out, msg, len);
        /* The client's ID back in place of c-ares' own. */
        d->out[0] = p->query[0];
        d->out[1] = p->query[1];
        ok = mesh_dns_parse(d->out, len, &m, &why) == 0;
        n = len;
        if (!ok)
            mesh_log_info("upstream answer to a query refused: %s", why);
    } else {
        mesh_log_debug("upstream failed: %s", strerror(-status));
    }
    if (ok) {
        d->stats.forwarded++;
        reply(d, p->conn, (const struct sockaddr *)&p->peer, d->out, n, &m, p->udp_limit,
              p->opt_size);
    } else {
        d->stats.failed++;
        mesh_dns_parse(p->query, p->len, &qm, NULL);
        n = mesh_dns__error_reply(p->query, p->len, &qm, true, MESH_DNS_RCODE_SERVFAIL, d->out,
                                  sizeof(d->out));
        if (n)
            reply(d, p->conn, (const struct sockaddr *)&p->peer, d->out, n, NULL, p->udp_limit, 0);
    }
    mesh_dns__pending_free(p);
}

static void forward(struct mesh_dns *d, struct mesh_dns_conn *conn, const struct sockaddr *peer,
                    const uint8_t *q, size_t len, const struct mesh_dns_msg *m)
{
    size_t limit = m->has_opt ? m->udp_size : MESH_DNS_UDP_MIN;
    if (limit > UDP_ANSWER_MAX)
        limit = UDP_ANSWER_MAX;
    struct mesh_dns__pending *p = NULL;
    if (d->n_forwarded >= d->o.max_forwarded ||
        (conn && conn->n_pending >= MESH_DNS__TCP_PENDING_MAX))
        goto fail;
    p = mesh_calloc(1, sizeof(*p));
    if (!p || !(p->query = mesh_memdup(q, len)))
        goto fail;
    p->d = d;
    p->conn = conn;
    p->len = len;
    p->udp_limit = (uint16_t)limit;
    p->opt_size = m->has_opt ? (uint16_t)limit : 0;
    if (peer)
        memcpy(&p->peer, peer,
               peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in));
    d->n_forwarded++;
    list_add(conn ? &conn->pending : &d->udp_pending, p);
    if (conn)
        conn->n_pending++;
    if (mesh_resolver_send(d->resolver, q, len, on_upstream, p, &p->q) < 0) {
        p->q = NULL;
        mesh_dns__pending_free(p);
        p = NULL;
        goto fail;
    }
    return;
fail:
    if (p) {
        mesh_free(p->query);
        mesh_free(p);
    }
    d->stats.failed++;
    size_t n =
        mesh_dns__error_reply(q, len, m, true, MESH_DNS_RCODE_SERVFAIL, d->out, sizeof(d->out));
    if (n)
        reply(d, conn, peer, d->out, n, NULL, limit, 0);
}

void mesh_dns__query(struct mesh_dns *d, struct mesh_dns_conn *conn, const struct sockaddr *peer,
                     const uint8_t *q, size_t len)
{
    struct mesh_dns_msg m;
    size_t n = 0;
    const char *why = NULL;
    enum mesh_dns__action a =
        mesh_dns__handle(&d->names, lookup, d, q, len, d->out, sizeof(d->out), &n, &m, &why);
    switch (a) {
    case MESH_DNS__MESH: {
        d->stats.mesh++;
        size_t limit = m.has_opt ? m.udp_size : MESH_DNS_UDP_MIN;
        struct mesh_dns_msg am;
        if (mesh_dns_parse(d->out, n, &am, NULL) == 0)
            reply(d, conn, peer, d->out, n, &am, limit > UDP_ANSWER_MAX ? UDP_ANSWER_MAX : limit,
                  m.has_opt ? 1232 : 0);
        break;
    }
    case MESH_DNS__FORWARD:
        forward(d, conn, peer, q, len, &m);
        break;
    case MESH_DNS__ERROR:
        d->stats.malformed++;
        mesh_log_debug("malformed query: %s", why);
        if (n)
            reply(d, conn, peer, d->out, n, NULL, MESH_DNS_UDP_MIN, 0);
        break;
    case MESH_DNS__DROP:
        d->stats.malformed++;
        mesh_log_debug("query dropped: %s", why);
        break;
    }
}

static void on_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mesh_dns *d = container_of((uv_udp_t *)h, struct mesh_dns, udp);
    (void)suggested;
    *buf = uv_buf_init((char *)d->in, sizeof(d->in));
}

static void on_udp_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *peer, unsigned flags)
{
    struct mesh_dns *d = container_of(u, struct mesh_dns, udp);
    (void)buf;
    if (nread <= 0 || !peer || d->state != DNS_RUNNING)
        return;
    if (flags & UV_UDP_PARTIAL) {
        d->stats.malformed++;
        return;
    }
    mesh_dns__query(d, NULL, peer, d->in, (size_t)nread);
}

int mesh_dns_new(uv_loop_t *loop, const struct mesh_dns_options *o,
                 const struct mesh_catalog *catalog, struct mesh_vip_table *vips,
                 struct mesh_dns **ret)
{
    struct mesh_dns *d = mesh_calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    int r = -ENOMEM;
    d->loop = loop;
    d->o = *o;
    d->catalog = catalog;
    d->vips = vips;
    if (mesh_addr_parse(o->listen ? o->listen : MESH_DNS_DEFAULT_LISTEN, &d->listen, NULL) < 0 ||
        mesh_addr_is_unix(&d->listen)) {
        r = -EINVAL;
        goto fail;
    }
    if (!d->o.max_forwarded)
        d->o.max_forwarded = 1024;
    if (!d->o.max_tcp_connections)
        d->o.max_tcp_connections = 64;
    if (!d->o.tcp_idle_timeout_ms)
        d->o.tcp_idle_timeout_ms = 10000;
    d->domains = mesh_calloc(o->n_domains + 1, sizeof(char *));
    if (!d->domains)
        goto fail;
    for (size_t i = 0; i < o->n_domains; i++) {
        if (!(d->domains[i] = mesh_strdup(o->domains[i])))
            goto fail;
    }
    d->names = (struct mesh_dns__names){
        .domains = (const char *const *)d->domains,
        .n_domains = o->n_domains,
        .consul_domain = o->consul_domain && o->consul_domain[0] ? o->consul_domain : NULL,
        .consul_datacenter = o->consul_datacenter,
        .consul_namespace = o->consul_namespace ? o->consul_namespace : "default",
        .ttl = o->ttl,
    };
    struct mesh_resolver_options ro = {
        .servers = o->upstreams,
        .timeout_ms = (int)(o->upstream_timeout_ms ? o->upstream_timeout_ms : 2000),
        .tries = 2,
    };
    r = mesh_resolver_new(loop, &ro, &d->resolver);
    if (r < 0)
        goto fail;
    d->handles = 1;
    d->state = DNS_INIT;
    *ret = d;
    return 0;
fail:
    if (d->domains) {
        for (size_t i = 0; i < o->n_domains; i++)
            mesh_free(d->domains[i]);
    }
    mesh_free(d->domains);
    mesh_free(d);
    return r;
}

static void on_closed(uv_handle_t *h)
{
    mesh_dns__handle_closed(h->data);
}

/*
 * Refuses an upstream that is the responder itself, as c-ares holds them (so those read from
 * /etc/resolv.conf too, e.g. "nameserver 127.0.0.1" with the responder on port 53): every
 * forwarded query would come back and go out again until the timeouts. Returns 0 or -ELOOP.
 */
static int check_upstreams(struct mesh_dns *d)
{
    struct mesh_addr s[16];
    int n = mesh_resolver_servers(d->resolver, s, sizeof(s) / sizeof(s[0]));
    if (n < 0)
        return n;
    for (int i = 0; i < n && i < (int)(sizeof(s) / sizeof(s[0])); i++) {
        if (!mesh_addr_reaches(&d->listen, &s[i]))
            continue;
        char a[128], l[128];
        mesh_log_error("upstream name server %s (%s) reaches the DNS responder's own address %s: "
                       "every forwarded query would come back to it; set "
                       "dns_responder.upstreams to the real name servers",
                       mesh_addr_format(&s[i], a, sizeof(a)),
                       d->o.upstreams && d->o.upstreams[0] ? "dns_responder.upstreams"
                                                           : "from /etc/resolv.conf",
                       mesh_addr_format(&d->listen, l, sizeof(l)));
        return -ELOOP;
    }
    return 0;
}

int mesh_dns_start(struct mesh_dns *d)
{
    if (d->state != DNS_INIT)
        return UV_EINVAL;
    /* A loop is a config error whoever holds the port: a fixed port is checked before
     * binding, port 0 once UDP has picked it. */
    bool fixed = mesh_addr_port(&d->listen) != 0;
    int r = fixed ? check_upstreams(d) : 0;
    if (r < 0)
        return r;
    r = uv_udp_init(d->loop, &d->udp);
    if (r < 0)
        return r;
    d->udp.data = d;
    d->handles++;
    d->state = DNS_RUNNING;
    r = uv_udp_bind(&d->udp, (const struct sockaddr *)&d->listen.ss, 0);
    if (r == 0)
        r = uv_udp_recv_start(&d->udp, on_udp_alloc, on_udp_recv);
    if (r == 0) {
        /* Port 0 binds UDP first; TCP takes the same port. */
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        if (uv_udp_getsockname(&d->udp, (struct sockaddr *)&ss, &len) == 0)
            memcpy(&d->listen.ss, &ss, (size_t)len);
        if (!fixed)
            r = check_upstreams(d);
    }
    if (r == 0)
        r = mesh_dns__tcp_start(d);
    return r;
}

uint16_t mesh_dns_port(const struct mesh_dns *d)
{
    return d->state == DNS_RUNNING ? mesh_addr_port(&d->listen) : 0;
}

void mesh_dns__handle_closed(struct mesh_dns *d)
{
    if (--d->handles)
        return;
    void (*done)(void *) = d->closed;
    void *data = d->closed_data;
    for (size_t i = 0; i < d->o.n_domains; i++)
        mesh_free(d->domains[i]);
    mesh_free(d->domains);
    mesh_free(d);
    if (done)
        done(data);
}

static void on_resolver_closed(void *data)
{
    mesh_dns__handle_closed(data);
}

void mesh_dns_close(struct mesh_dns *d, void (*done)(void *data), void *data)
{
    if (!d || d->state == DNS_CLOSING)
        return;
    bool started = d->state == DNS_RUNNING;
    d->state = DNS_CLOSING;
    d->closed = done;
    d->closed_data = data;
    while (d->udp_pending)
        mesh_dns__pending_free(d->udp_pending);
    if (started) {
        mesh_dns__tcp_close_all(d);
        uv_close((uv_handle_t *)&d->udp, on_closed);
    }
    mesh_resolver_close(d->resolver, on_resolver_closed, d);
}

void mesh_dns_stats(const struct mesh_dns *d, struct mesh_dns_stats *ret)
{
    *ret = d->stats;
}

void mesh_dns_metrics(const struct mesh_dns *d, struct mesh_buf *b)
{
    mesh_prom_family(b, "mesh_dns_responder_queries_total", "counter",
                     "DNS queries the responder answered, by kind: mesh (a mesh name, from the "
                     "virtual IPs), forwarded (by an upstream), failed (SERVFAIL), malformed "
                     "(FORMERR or dropped).");
    struct {
        const char *kind;
        uint64_t v;
    } k[] = {{"mesh", d->stats.mesh},
             {"forwarded", d->stats.forwarded},
             {"failed", d->stats.failed},
             {"malformed", d->stats.malformed}};
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        struct mesh_prom_label l[] = {{"kind", k[i].kind}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_dns_responder_queries_total", l, (double)k[i].v);
    }
    mesh_prom_family(b, "mesh_dns_responder_truncated_total", "counter",
                     "UDP answers cut with TC set, for the client to ask over TCP.");
    mesh_prom_sample(b, "mesh_dns_responder_truncated_total", NULL, (double)d->stats.truncated);
    mesh_prom_family(b, "mesh_dns_responder_tcp_connections", "gauge",
                     "Open DNS-over-TCP connections.");
    mesh_prom_sample(b, "mesh_dns_responder_tcp_connections", NULL, (double)d->n_conns);
    mesh_prom_family(b, "mesh_dns_responder_tcp_refused_total", "counter",
                     "DNS-over-TCP connections closed at the connection limit: the least "
                     "recently active idle one, or a new one when all have queries in flight.");
    mesh_prom_sample(b, "mesh_dns_responder_tcp_refused_total", NULL, (double)d->stats.tcp_refused);
    mesh_prom_family(b, "mesh_dns_responder_forwarded_inflight", "gauge",
                     "Queries sent upstream and not yet answered.");
    mesh_prom_sample(b, "mesh_dns_responder_forwarded_inflight", NULL, (double)d->n_forwarded);
    mesh_prom_family(b, "mesh_dns_responder_vips", "gauge",
                     "Services with virtual IPs, those kept after they left the catalog included.");
    mesh_prom_sample(b, "mesh_dns_responder_vips", NULL, (double)mesh_vip_count(d->vips));
    struct mesh_vip_stats st;
    mesh_vip_get_stats(d->vips, &st);
    mesh_prom_family(b, "mesh_dns_responder_vips_unassigned", "gauge",
                     "Services without a virtual IP of a family: its range is full.");
    for (int f = 0; f < 2; f++) {
        struct mesh_prom_label l[] = {{"family", f ? "ipv6" : "ipv4"}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_dns_responder_vips_unassigned", l, (double)st.unassigned[f]);
    }
}
