/*
 * common/resolver: c-ares on a libuv loop. A responder on 127.0.0.1 (a uv_udp socket in the
 * same loop) answers A and AAAA queries with fixed records, as RFC 1035 4.1 lays them out,
 * so the loop runs both sides and nothing blocks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include <uv.h>

#include "common/resolver.h"
#include "tests/unit/unit.h"

struct responder {
    uv_udp_t udp;
    uint16_t port;
    int rcode;   /* 0: answer; else this RCODE with no records */
    bool silent; /* answer nothing */
    unsigned asked;
    char buf[512];
};

struct result {
    int calls;
    struct mesh_resolver_answer a;
    struct mesh_ipport addrs[8];
};

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    struct responder *r = h->data;
    (void)size;
    *buf = uv_buf_init(r->buf, sizeof(r->buf));
}

static void on_sent(uv_udp_send_t *req, int status)
{
    (void)status;
    mesh_free(req);
}

/* Appends one answer record whose owner points at the question (offset 12). */
static size_t put_rr(uint8_t *p, uint16_t type, uint32_t ttl, const void *rdata, uint16_t len)
{
    uint8_t h[12] = {0xc0,
                     12,
                     (uint8_t)(type >> 8),
                     (uint8_t)type,
                     0,
                     1,
                     (uint8_t)(ttl >> 24),
                     (uint8_t)(ttl >> 16),
                     (uint8_t)(ttl >> 8),
                     (uint8_t)ttl,
                     (uint8_t)(len >> 8),
                     (uint8_t)len};
    memcpy(p, h, 12);
    memcpy(p + 12, rdata, len);
    return 12u + len;
}

static void on_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags)
{
    struct responder *r = u->data;
    (void)flags;
    if (n < 12 + 5 || !from)
        return;
    r->asked++;
    if (r->silent)
        return;
    const uint8_t *q = (const uint8_t *)buf->base;
    size_t off = 12;
    while (off < (size_t)n && q[off])
        off += q[off] + 1u;
    size_t qend = off + 5; /* the root's zero, QTYPE, QCLASS */
    assert_true(qend <= (size_t)n);
    uint16_t qtype = (uint16_t)(q[off + 1] << 8 | q[off + 2]);
    uv_udp_send_t *req = mesh_malloc(sizeof(*req) + 512);
    assert_non_null(req);
    uint8_t *out = (uint8_t *)(req + 1);
    memcpy(out, q, qend);
    out[2] = 0x84 | (q[2] & 0x01); /* QR, AA, RD copied */
    out[3] = (uint8_t)(0x80 | r->rcode);
    memset(out + 6, 0, 6); /* ANCOUNT, NSCOUNT, ARCOUNT (an OPT is not echoed) */
    size_t len = qend;
    unsigned an = 0;
    if (r->rcode == 0 && qtype == 1) {
        static const uint8_t a1[4] = {127, 0, 0, 9}, a2[4] = {127, 0, 0, 8};
        len += put_rr(out + len, 1, 30, a1, 4);
        len += put_rr(out + len, 1, 20, a2, 4);
        len += put_rr(out + len, 1, 30, a1, 4); /* a duplicate: one address */
        an = 3;
    } else if (r->rcode == 0 && qtype == 28) {
        uint8_t a6[16] = {0};
        a6[15] = 1;
        len += put_rr(out + len, 28, 60, a6, 16);
        an = 1;
    }
    out[7] = (uint8_t)an;
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    assert_int_equal(uv_udp_send(req, u, &b, 1, from, on_sent), 0);
}

static void responder_start(uv_loop_t *loop, struct responder *r)
{
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    assert_int_equal(uv_udp_init(loop, &r->udp), 0);
    r->udp.data = r;
    assert_int_equal(uv_udp_bind(&r->udp, (const struct sockaddr *)&sin, 0), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    assert_int_equal(uv_udp_getsockname(&r->udp, (struct sockaddr *)&ss, &len), 0);
    r->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    assert_int_equal(uv_udp_recv_start(&r->udp, on_alloc, on_recv), 0);
}

static void on_answer(const struct mesh_resolver_answer *a, void *data)
{
    struct result *res = data;
    res->calls++;
    res->a = *a;
    assert_true(a->n <= 8);
    memcpy(res->addrs, a->addrs, a->n * sizeof(*a->addrs));
    res->a.addrs = res->addrs;
}

static void on_closed(void *data)
{
    (*(int *)data)++;
}

static void run_until(uv_loop_t *loop, const int *calls)
{
    while (*calls == 0)
        assert_true(uv_run(loop, UV_RUN_ONCE) || *calls);
}

static void finish(uv_loop_t *loop, struct mesh_resolver *r, struct responder *resp)
{
    int closed = 0;
    mesh_resolver_close(r, on_closed, &closed);
    if (resp)
        uv_close((uv_handle_t *)&resp->udp, NULL);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(loop), 0);
}

static struct mesh_resolver *resolver_for(uv_loop_t *loop, const struct responder *resp,
                                          int timeout_ms)
{
    char servers[64];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u", resp->port);
    struct mesh_resolver_options o = {.servers = servers, .timeout_ms = timeout_ms, .tries = 1};
    struct mesh_resolver *r = NULL;
    assert_int_equal(mesh_resolver_new(loop, &o, &r), 0);
    return r;
}

/* Every address of A and AAAA, sorted, without duplicates; the lowest TTL. */
static void test_answer_has_every_address(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct responder resp = {0};
    responder_start(&loop, &resp);
    struct mesh_resolver *r = resolver_for(&loop, &resp, 2000);
    struct result res = {0};
    assert_int_equal(mesh_resolver_query(r, "api.svc.test", on_answer, &res, NULL), 0);
    assert_int_equal(res.calls, 0); /* never from inside the call */
    run_until(&loop, &res.calls);
    assert_int_equal(res.a.status, 0);
    assert_int_equal(res.a.n, 3);
    char ip[64];
    assert_string_equal(mesh_ipport_ip(&res.a.addrs[0], ip, sizeof(ip)), "127.0.0.8");
    assert_string_equal(mesh_ipport_ip(&res.a.addrs[1], ip, sizeof(ip)), "127.0.0.9");
    assert_string_equal(mesh_ipport_ip(&res.a.addrs[2], ip, sizeof(ip)), "::1");
    assert_int_equal(res.a.ttl, 20);
    assert_int_equal(resp.asked, 2);
    finish(&loop, r, &resp);
}

static void test_server_failure_and_timeout(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct responder resp = {.rcode = 2}; /* SERVFAIL */
    responder_start(&loop, &resp);
    struct mesh_resolver *r = resolver_for(&loop, &resp, 200);
    struct result res = {0};
    assert_int_equal(mesh_resolver_query(r, "api.svc.test", on_answer, &res, NULL), 0);
    run_until(&loop, &res.calls);
    assert_int_equal(res.a.status, -EAGAIN);
    assert_int_equal(res.a.n, 0);
    assert_non_null(res.a.why);

    resp.rcode = 3; /* NXDOMAIN */
    memset(&res, 0, sizeof(res));
    assert_int_equal(mesh_resolver_query(r, "gone.svc.test", on_answer, &res, NULL), 0);
    run_until(&loop, &res.calls);
    assert_int_equal(res.a.status, -ENOENT);

    resp.silent = true; /* the timer ends it */
    memset(&res, 0, sizeof(res));
    assert_int_equal(mesh_resolver_query(r, "api.svc.test", on_answer, &res, NULL), 0);
    run_until(&loop, &res.calls);
    assert_int_equal(res.a.status, -ETIMEDOUT);
    finish(&loop, r, &resp);
}

/* An address needs no server: still answered from the loop, not inside the call. */
static void test_literal_and_cancel(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct responder resp = {.silent = true};
    responder_start(&loop, &resp);
    struct mesh_resolver *r = resolver_for(&loop, &resp, 5000);
    struct result lit = {0}, cancelled = {0}, closing = {0};
    assert_int_equal(mesh_resolver_query(r, "127.0.0.5", on_answer, &lit, NULL), 0);
    assert_int_equal(lit.calls, 0);
    struct mesh_resolver_query *q = NULL;
    assert_int_equal(mesh_resolver_query(r, "a.svc.test", on_answer, &cancelled, &q), 0);
    mesh_resolver_cancel(q);
    assert_int_equal(mesh_resolver_query(r, "b.svc.test", on_answer, &closing, NULL), 0);
    run_until(&loop, &lit.calls);
    assert_int_equal(lit.a.status, 0);
    assert_int_equal(lit.a.n, 1);
    /* Closing ends the queries still asked: the cancelled one silently. */
    finish(&loop, r, &resp);
    assert_int_equal(cancelled.calls, 0);
    assert_int_equal(closing.calls, 1);
    assert_int_equal(closing.a.status, -ECANCELED);
}

static void test_servers_config(void **state)
{
    (void)state;
    const char *good[] = {"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53", "10.0.0.2:53"};
    const char *bad[] = {"",      "dns.example", "127.0.0.1:",  "127.0.0.1:99999",
                         "[::1]", "unix:/x",     "127.0.0.1:0", "1.2.3.4:53,5.6.7.8"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_null(mesh_resolver_check_server(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mesh_resolver_check_server(bad[i]) == NULL)
            fail_msg("'%s' accepted", bad[i]);
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct mesh_resolver *r = NULL;
    struct mesh_resolver_options o = {.servers = "not an address"};
    assert_int_equal(mesh_resolver_new(&loop, &o, &r), -EINVAL);
    assert_null(r);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_answer_has_every_address),
        UNIT_TEST(test_server_failure_and_timeout),
        UNIT_TEST(test_literal_and_cancel),
        UNIT_TEST(test_servers_config),
    };
    return cmocka_run_group_tests_name("resolver", tests, NULL, NULL);
}
