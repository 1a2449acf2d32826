/*
 * The DNS responder's decisions (dns/answer.c): which names are the mesh's, what a mesh
 * name gets (VIPs, NODATA with an SOA), what is forwarded, refused or dropped; and the
 * responder's life on a loop: started on an ephemeral port, answering a mesh name over
 * UDP, closed with no handle or allocation left.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "catalog/catalog.h"
#include "common/dns_msg.h"
#include "dns/dns-int.h"
#include "tests/unit/unit.h"

static const char *const domains[] = {"cluster.local", "corp.example"};
static const struct mesh_dns__names names = {
    .domains = domains,
    .n_domains = 2,
    .consul_domain = "consul",
    .consul_datacenter = "dc1",
    .consul_namespace = "default",
    .ttl = 30,
};

static bool match(const char *q, const char *want_ns, const char *want_name)
{
    char ns[64], name[64];
    if (!mesh_dns__match(&names, q, ns, name))
        return want_ns == NULL;
    return want_ns && strcmp(ns, want_ns) == 0 && strcmp(name, want_name) == 0;
}

static void test_match(void **state)
{
    (void)state;
    assert_true(match("api.shop", "shop", "api"));
    assert_true(match("api.shop.", "shop", "api"));
    assert_true(match("API.Shop", "shop", "api"));
    assert_true(match("api.shop.svc", "shop", "api"));
    assert_true(match("api.shop.svc.cluster.local", "shop", "api"));
    assert_true(match("api.shop.svc.cluster.local.", "shop", "api"));
    assert_true(match("api.shop.svc.corp.example", "shop", "api"));
    assert_true(match("web.service.consul", "default", "web"));
    assert_true(match("web.service.dc1.consul", "default", "web"));
    assert_true(match("web.service.dc2.consul", NULL, NULL));
    assert_true(match("api.shop.svc.other.local", NULL, NULL));
    assert_true(match("x.api.shop.svc.cluster.local", NULL, NULL));
    assert_true(match("api", NULL, NULL));
    assert_true(match(".", NULL, NULL));
    assert_true(match("a\\046b.shop", NULL, NULL));
    assert_true(match("under_score.shop", NULL, NULL));
    assert_true(match("api..shop", NULL, NULL));
    assert_true(match("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.svc", NULL, NULL));
}

static int lookup(void *data, const char *ns, const char *name, struct mesh_vip_pair *ret)
{
    (void)data;
    memset(ret, 0, sizeof(*ret));
    if (strcmp(ns, "shop") != 0 || strcmp(name, "api") != 0)
        return -ENOENT;
    mesh_ipport_from_ip("240.240.1.2", 0, &ret->v4);
    mesh_ipport_from_ip("2001:2::1:2", 0, &ret->v6);
    return 0;
}

static size_t query(uint8_t *p, uint16_t flags, const char *name, uint16_t type, bool opt)
{
    struct mesh_dns_header h = {.id = 0x4242, .flags = flags, .qdcount = 1, .arcount = opt};
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, p, 512);
    uint8_t hdr[12];
    mesh_dns_header_write(hdr, &h);
    mesh_dns_put_bytes(&b, hdr, 12);
    mesh_dns_put_name(&b, name);
    mesh_dns_put_u16(&b, type);
    mesh_dns_put_u16(&b, MESH_DNS_CLASS_IN);
    if (opt)
        mesh_dns_put_opt(&b, 1232);
    assert_int_equal(b.err, 0);
    return b.len;
}

static enum mesh_dns__action handle(const uint8_t *q, size_t len, struct mesh_dns_msg *ret)
{
    static uint8_t out[4096];
    size_t n = 0;
    struct mesh_dns_msg m;
    const char *why = NULL;
    enum mesh_dns__action a =
        mesh_dns__handle(&names, lookup, NULL, q, len, out, sizeof(out), &n, &m, &why);
    if (a == MESH_DNS__MESH || a == MESH_DNS__ERROR)
        assert_int_equal(mesh_dns_parse(out, n, ret, NULL), 0);
    if (a == MESH_DNS__MESH && ret->h.ancount) {
        /* The first answer's data is the last 4 or 16 bytes before any OPT. */
        size_t end = n - (ret->has_opt ? 11 : 0);
        memcpy(ret->qname, out + end - (ret->qtype == MESH_DNS_TYPE_A ? 4 : 16), 16);
    }
    return a;
}

static void test_answers(void **state)
{
    (void)state;
    uint8_t q[512];
    struct mesh_dns_msg r;
    size_t n = query(q, MESH_DNS_FLAG_RD, "api.shop.svc.cluster.local", MESH_DNS_TYPE_A, false);
    assert_int_equal(handle(q, n, &r), MESH_DNS__MESH);
    assert_int_equal(r.h.id, 0x4242);
    assert_int_equal(r.h.flags & 0xf, MESH_DNS_RCODE_NOERROR);
    assert_true(r.h.flags & MESH_DNS_FLAG_AA);
    assert_true(r.h.flags & MESH_DNS_FLAG_RD);
    assert_int_equal(r.h.ancount, 1);
    assert_memory_equal(r.qname, "\xf0\xf0\x01\x02", 4);

    n = query(q, 0, "API.shop", MESH_DNS_TYPE_AAAA, true);
    assert_int_equal(handle(q, n, &r), MESH_DNS__MESH);
    assert_int_equal(r.h.ancount, 1);
    assert_true(r.has_opt);
    assert_memory_equal(r.qname, "\x20\x01\x00\x02\0\0\0\0\0\0\0\0\0\x01\0\x02", 16);

    n = query(q, 0, "api.shop", MESH_DNS_TYPE_ANY, false);
    assert_int_equal(handle(q, n, &r), MESH_DNS__MESH);
    assert_int_equal(r.h.ancount, 2);

    /* Another type: NODATA with an SOA. */
    n = query(q, 0, "api.shop", 15, false);
    assert_int_equal(handle(q, n, &r), MESH_DNS__MESH);
    assert_int_equal(r.h.flags & 0xf, MESH_DNS_RCODE_NOERROR);
    assert_int_equal(r.h.ancount, 0);
    assert_int_equal(r.h.nscount, 1);

    /* Not a mesh service, even under svc.cluster.local: forwarded. */
    n = query(q, 0, "db.prod.svc.cluster.local", MESH_DNS_TYPE_A, false);
    assert_int_equal(handle(q, n, &r), MESH_DNS__FORWARD);
    n = query(q, 0, "example.com", MESH_DNS_TYPE_A, false);
    assert_int_equal(handle(q, n, &r), MESH_DNS__FORWARD);
}

static void test_refusals(void **state)
{
    (void)state;
    uint8_t q[512];
    struct mesh_dns_msg r;
    size_t n = query(q, MESH_DNS_FLAG_QR, "api.shop", MESH_DNS_TYPE_A, false);
    assert_int_equal(handle(q, n, &r), MESH_DNS__DROP);
    assert_int_equal(handle(q, 5, &r), MESH_DNS__DROP);
    /* Truncated question: FORMERR with the ID, no question. */
    n = query(q, 0, "api.shop", MESH_DNS_TYPE_A, false);
    assert_int_equal(handle(q, n - 2, &r), MESH_DNS__ERROR);
    assert_int_equal(r.h.flags & 0xf, MESH_DNS_RCODE_FORMERR);
    assert_int_equal(r.h.id, 0x4242);
    assert_int_equal(r.h.qdcount, 0);
    /* Another opcode: NOTIMP. */
    n = query(q, 2u << 11, "api.shop", MESH_DNS_TYPE_A, false);
    assert_int_equal(handle(q, n, &r), MESH_DNS__ERROR);
    assert_int_equal(r.h.flags & 0xf, MESH_DNS_RCODE_NOTIMP);
    /* An EDNS version we do not speak, for a mesh name: BADVERS in the OPT. */
    n = query(q, 0, "api.shop", MESH_DNS_TYPE_A, true);
    q[n - 11 + 6] = 1; /* the OPT's TTL: extended RCODE 0, then version 1 */
    assert_int_equal(handle(q, n, &r), MESH_DNS__ERROR);
    assert_int_equal(r.h.flags & 0xf, 0);
    assert_true(r.has_opt);
    assert_int_equal(r.h.ancount, 0);
    /* No question. */
    static const uint8_t empty[12] = {0, 9};
    assert_int_equal(handle(empty, 12, &r), MESH_DNS__ERROR);
    assert_int_equal(r.h.flags & 0xf, MESH_DNS_RCODE_FORMERR);
}

/* ---- on a loop ---- */

struct live {
    uv_loop_t loop;
    struct mesh_catalog *catalog;
    struct mesh_vip_table *vips;
    struct mesh_dns *dns;
    uv_udp_t client;
    uint8_t answer[512];
    ssize_t answer_len;
    bool closed;
};

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    struct live *l = h->data;
    (void)s;
    *b = uv_buf_init((char *)l->answer, sizeof(l->answer));
}

static void on_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *b, const struct sockaddr *a,
                    unsigned flags)
{
    struct live *l = u->data;
    (void)b;
    (void)flags;
    if (n > 0 && a) {
        l->answer_len = n;
        uv_udp_recv_stop(u);
    }
}

static void on_dns_closed(void *data)
{
    ((struct live *)data)->closed = true;
}

static void test_live_udp(void **state)
{
    (void)state;
    struct live l = {0};
    assert_int_equal(uv_loop_init(&l.loop), 0);
    assert_int_equal(mesh_catalog_new(&l.catalog), 0);
    struct mesh_catalog_source src = {.name = "t", .type = "static", .merge = true};
    assert_int_equal(mesh_catalog_set_sources(l.catalog, &src, 1), 0);
    struct mesh_service_update u = {.namespace = "shop", .name = "api", .exists = true};
    assert_int_equal(mesh_catalog_update(l.catalog, "t", &u), 1);
    assert_int_equal(mesh_vip_table_new(NULL, &l.vips), 0);
    const char *keys[] = {"shop/api"};
    assert_int_equal(mesh_vip_sync(l.vips, keys, 1, 1), 1);
    struct mesh_dns_options o = {.listen = "127.0.0.1:0",
                                 .domains = domains,
                                 .n_domains = 1,
                                 .upstreams = "127.0.0.1:9",
                                 .ttl = 5};
    /* Port 0 picks UDP's port, which TCP may find taken by another program: try again. */
    int r = UV_EADDRINUSE;
    for (int i = 0; i < 20 && r == UV_EADDRINUSE; i++) {
        assert_int_equal(mesh_dns_new(&l.loop, &o, l.catalog, l.vips, &l.dns), 0);
        r = mesh_dns_start(l.dns);
        if (r == UV_EADDRINUSE) {
            mesh_dns_close(l.dns, NULL, NULL);
            uv_run(&l.loop, UV_RUN_DEFAULT);
        }
    }
    assert_int_equal(r, 0);
    uint16_t port = mesh_dns_port(l.dns);
    assert_true(port > 0);

    uv_udp_init(&l.loop, &l.client);
    l.client.data = &l;
    uint8_t q[512];
    size_t n = query(q, MESH_DNS_FLAG_RD, "api.shop", MESH_DNS_TYPE_A, false);
    struct sockaddr_in to;
    uv_ip4_addr("127.0.0.1", port, &to);
    uv_buf_t b = uv_buf_init((char *)q, (unsigned)n);
    assert_int_equal(uv_udp_try_send(&l.client, &b, 1, (const struct sockaddr *)&to), (int)n);
    uv_udp_recv_start(&l.client, on_alloc, on_recv);
    while (l.answer_len == 0)
        uv_run(&l.loop, UV_RUN_ONCE);
    struct mesh_dns_msg m;
    assert_int_equal(mesh_dns_parse(l.answer, (size_t)l.answer_len, &m, NULL), 0);
    assert_int_equal(m.h.ancount, 1);
    assert_memory_equal(l.answer + l.answer_len - 4, "\xf0\xf0", 2);
    struct mesh_dns_stats st;
    mesh_dns_stats(l.dns, &st);
    assert_int_equal(st.mesh, 1);

    mesh_dns_close(l.dns, on_dns_closed, &l);
    uv_close((uv_handle_t *)&l.client, NULL);
    assert_int_equal(uv_run(&l.loop, UV_RUN_DEFAULT), 0);
    assert_true(l.closed);
    assert_int_equal(uv_loop_close(&l.loop), 0);
    mesh_vip_table_free(l.vips);
    mesh_catalog_free(l.catalog);
}

static void test_error_reply_keeps_edns_and_cd(void **state)
{
    (void)state;
    /* RFC 6891 7: a query with OPT gets OPT back, errors included; CD is copied (RFC 4035
     * 3.2.2). */
    uint8_t q[512], out[512];
    size_t n = query(q, MESH_DNS_FLAG_RD | MESH_DNS_FLAG_CD, "x.example", MESH_DNS_TYPE_A, true);
    struct mesh_dns_msg m, r;
    assert_int_equal(mesh_dns_parse(q, n, &m, NULL), 0);
    size_t len = mesh_dns__error_reply(q, n, &m, true, MESH_DNS_RCODE_SERVFAIL, out, sizeof(out));
    assert_int_equal(mesh_dns_parse(out, len, &r, NULL), 0);
    assert_true(r.h.flags & MESH_DNS_FLAG_CD);
    assert_int_equal(r.h.flags & 0xf, MESH_DNS_RCODE_SERVFAIL);
    assert_true(r.has_opt);
    assert_int_equal(r.h.arcount, 1);
    /* Without OPT in the query, none in the reply. */
    n = query(q, MESH_DNS_FLAG_RD, "x.example", MESH_DNS_TYPE_A, false);
    assert_int_equal(mesh_dns_parse(q, n, &m, NULL), 0);
    len = mesh_dns__error_reply(q, n, &m, true, MESH_DNS_RCODE_SERVFAIL, out, sizeof(out));
    assert_int_equal(mesh_dns_parse(out, len, &r, NULL), 0);
    assert_false(r.has_opt);
    assert_false(r.h.flags & MESH_DNS_FLAG_CD);
}

/* A port free for UDP and TCP on 127.0.0.1 now (bound, read back, closed). */
/* A port bound on 127.0.0.1 by UDP socket *fd (the caller closes it). */
static uint16_t held_port(int *ret_fd)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *ret_fd = fd;
    return ntohs(a.sin_port);
}

static uint16_t free_port(void)
{
    int fd;
    uint16_t p = held_port(&fd);
    close(fd);
    return p;
}

/* Starts a responder listening on `host`:lport forwarding to `upstream`:uport; returns
 * what mesh_dns_start said. */
static int start_with(const char *host, uint16_t lport, const char *upstream, uint16_t uport)
{
    char l[64], u[64];
    snprintf(l, sizeof(l), "%s:%u", host, lport);
    snprintf(u, sizeof(u), "%s:%u", upstream, uport);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct mesh_vip_table *vips;
    assert_int_equal(mesh_vip_table_new(NULL, &vips), 0);
    struct mesh_dns_options o = {
        .listen = l, .domains = domains, .n_domains = 1, .upstreams = u, .ttl = 5};
    struct mesh_dns *d;
    assert_int_equal(mesh_dns_new(&loop, &o, NULL, vips, &d), 0);
    int r = mesh_dns_start(d);
    mesh_dns_close(d, NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    mesh_vip_table_free(vips);
    return r;
}

/* start_with on a free port of its own: another program may take the port between
 * free_port() and the bind (two suites on one machine do), so a taken port is tried again. */
static int start_free(const char *host, const char *upstream, uint16_t uport)
{
    int r = UV_EADDRINUSE;
    for (int i = 0; i < 20 && r == UV_EADDRINUSE; i++)
        r = start_with(host, free_port(), upstream, uport);
    return r;
}

static void test_refuses_itself_as_upstream(void **state)
{
    (void)state;
    /* Upstreams as c-ares holds them (from the config or resolv.conf) that reach the listen
     * address: every forwarded query would come back to the responder. */
    int held;
    uint16_t p = held_port(&held); /* taken: the loop is found before any bind */
    assert_int_equal(start_with("0.0.0.0", p, "127.0.0.1", p), -ELOOP);
    assert_int_equal(start_with("0.0.0.0", p, "127.0.0.53", p), -ELOOP);
    assert_int_equal(start_with("127.0.0.1", p, "127.0.0.1", p), -ELOOP);
    assert_int_equal(start_with("127.0.0.1", p, "192.0.2.1:53,0.0.0.0", p), -ELOOP);
    assert_int_equal(start_with("[::]", p, "127.0.0.1", p), -ELOOP);
    close(held);
    /* Another port, or another loopback address than the one listened on: no loop. (The
     * refusals above need no port: a fixed port is checked before it is bound.) */
    assert_int_equal(start_free("127.0.0.1", "127.0.0.1", 9), 0);
    p = free_port();
    int r = UV_EADDRINUSE;
    for (int i = 0; i < 20 && r == UV_EADDRINUSE; i++, p = free_port())
        r = start_with("127.0.0.1", p, "127.0.0.2", p);
    assert_int_equal(r, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_match),
        UNIT_TEST(test_answers),
        UNIT_TEST(test_refusals),
        UNIT_TEST(test_live_udp),
        UNIT_TEST(test_refuses_itself_as_upstream),
        UNIT_TEST(test_error_reply_keeps_edns_and_cd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
