/*
 * The DNS message parser and builder (common/dns_msg.h): what it accepts, what it refuses
 * and why, EDNS0, truncation at record boundaries, and names built from text.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/dns_msg.h"
#include "tests/unit/unit.h"

static size_t put_name(uint8_t *p, const char *s)
{
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, p, 300);
    mesh_dns_put_name(&b, s);
    assert_int_equal(b.err, 0);
    return b.len;
}

/* A query for `name` of `type`, with an OPT record of `opt` bytes when opt is not 0. */
static size_t query(uint8_t *p, const char *name, uint16_t type, uint16_t opt)
{
    struct mesh_dns_header h = {
        .id = 0xbeef, .flags = MESH_DNS_FLAG_RD, .qdcount = 1, .arcount = opt ? 1 : 0};
    mesh_dns_header_write(p, &h);
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, p, 512);
    b.len = MESH_DNS_HEADER_LEN;
    mesh_dns_put_name(&b, name);
    mesh_dns_put_u16(&b, type);
    mesh_dns_put_u16(&b, MESH_DNS_CLASS_IN);
    if (opt)
        mesh_dns_put_opt(&b, opt);
    assert_int_equal(b.err, 0);
    return b.len;
}

static void test_query_parses(void **state)
{
    (void)state;
    uint8_t p[512];
    size_t n = query(p, "api.shop.svc.cluster.local", MESH_DNS_TYPE_AAAA, 0);
    struct mesh_dns_msg m;
    const char *why = NULL;
    assert_int_equal(mesh_dns_parse(p, n, &m, &why), 0);
    assert_int_equal(m.h.id, 0xbeef);
    assert_true(m.has_question);
    assert_string_equal(m.qname, "api.shop.svc.cluster.local");
    assert_int_equal(m.qtype, MESH_DNS_TYPE_AAAA);
    assert_int_equal(m.qclass, MESH_DNS_CLASS_IN);
    assert_int_equal(m.question_end, n);
    assert_false(m.has_opt);
    assert_int_equal(m.udp_size, 512);

    n = query(p, "example.com", MESH_DNS_TYPE_A, 4096);
    assert_int_equal(mesh_dns_parse(p, n, &m, &why), 0);
    assert_true(m.has_opt);
    assert_int_equal(m.udp_size, 4096);
    /* A payload size under 512 counts as 512 (RFC 6891 section 6.2.5). */
    n = query(p, "example.com", MESH_DNS_TYPE_A, 100);
    assert_int_equal(mesh_dns_parse(p, n, &m, &why), 0);
    assert_int_equal(m.udp_size, 512);
}

static void test_root_and_escapes(void **state)
{
    (void)state;
    uint8_t p[64] = {0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1};
    struct mesh_dns_msg m;
    assert_int_equal(mesh_dns_parse(p, 17, &m, NULL), 0);
    assert_string_equal(m.qname, ".");
    /* "a.b" as one label, and a byte 0: escaped, never confused with two labels. */
    static const uint8_t q[] = {0, 1,   0,   0,   0, 1,   0, 0, 0, 0, 0, 0,
                                3, 'a', '.', 'b', 2, 'x', 0, 0, 0, 1, 0, 1};
    assert_int_equal(mesh_dns_parse(q, sizeof(q), &m, NULL), 0);
    assert_string_equal(m.qname, "a\\046b.x\\000");
}

/* Every malformed message is refused with its reason. */
static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        const char *why;
    } cases[] = {
        {"short", "\x12\x34\x01", 3, "shorter than a DNS header"},
        {"pointer to itself", "\0\1\0\0\0\1\0\0\0\0\0\0\xc0\x0c\0\1\0\1", 18, "backwards"},
        {"pointer forward", "\0\1\0\0\0\1\0\0\0\0\0\0\xc0\x10\0\1\0\1\0", 19, "backwards"},
        {"pointer into the header", "\0\1\0\0\0\1\0\0\0\0\0\0\xc0\x0b\0\1\0\1", 18,
         "into the header"},
        /* An answer's name points at the question's type field, whose bytes read on as
         * labels into the answer itself: cut after it, the name would change (the fuzzer
         * found it). */
        {"name running into its pointer",
         "\x12\x34\0\0\0\1\0\1\0\0\0\0\0\0\1\0\1\xc0\x0e\0\1\0\1\0\0\0\x3c\0\2\3\4", 31,
         "runs into the name pointing at it"},
        {"reserved label",
         "\0\1\0\0\0\1\0\0\0\0\0\0\x41"
         "a\0\0\1\0\1",
         19, "reserved"},
        {"label past end",
         "\0\1\0\0\0\1\0\0\0\0\0\0\x05"
         "ab",
         15, "past the end"},
        {"no type", "\0\1\0\0\0\1\0\0\0\0\0\0\0\0", 14, "type or class"},
        {"trailing", "\0\1\0\0\0\1\0\0\0\0\0\0\0\0\1\0\1zz", 19, "after the last record"},
        {"missing record", "\0\1\0\0\0\1\0\1\0\0\0\0\0\0\1\0\1", 17, "past the end"},
        {"rdata past end", "\0\1\x81\x80\0\1\0\1\0\0\0\0\0\0\1\0\1\0\0\1\0\1\0\0\0\0\0\x09\1", 29,
         "data runs past"},
        {"OPT in answers", "\0\1\x81\x80\0\1\0\1\0\0\0\0\0\0\1\0\1\0\0\x29\x10\0\0\0\0\0\0\0", 28,
         "outside the additional"},
        {"two OPT",
         "\0\1\0\0\0\1\0\0\0\0\0\2\0\0\1\0\1\0\0\x29\x10\0\0\0\0\0\0\0\0\0\x29\x10\0\0\0\0\0\0\0",
         39, "more than one OPT"},
        {"OPT not root", "\0\1\0\0\0\1\0\0\0\0\0\1\0\0\1\0\1\1x\0\0\x29\x10\0\0\0\0\0\0\0", 30,
         "not owned by the root"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mesh_dns_msg m;
        const char *why = NULL;
        int r = mesh_dns_parse((const uint8_t *)cases[i].bytes, cases[i].len, &m, &why);
        if (r != -EBADMSG || !why || !strstr(why, cases[i].why))
            fail_msg("%s: got %d '%s', expected '%s'", cases[i].what, r, why ? why : "",
                     cases[i].why);
    }
}

static void test_name_limits(void **state)
{
    (void)state;
    uint8_t p[600];
    struct mesh_dns_header h = {.qdcount = 1};
    mesh_dns_header_write(p, &h);
    size_t off = MESH_DNS_HEADER_LEN;
    /* Four labels of 63 bytes: 256 bytes with the root, one too many. */
    for (int i = 0; i < 4; i++) {
        p[off++] = 63;
        memset(p + off, 'a', 63);
        off += 63;
    }
    p[off++] = 0;
    memcpy(p + off, "\0\1\0\1", 4);
    off += 4;
    const char *why = NULL;
    struct mesh_dns_msg m;
    assert_int_equal(mesh_dns_parse(p, off, &m, &why), -EBADMSG);
    assert_contains(why, "longer than 255");

    /* A chain of pointers each one step back: allowed up to the limit, then refused. */
    uint8_t c[2048];
    memset(c, 0, sizeof(c));
    struct mesh_dns_header ch = {.flags = MESH_DNS_FLAG_QR, .qdcount = 1, .ancount = 100};
    mesh_dns_header_write(c, &ch);
    size_t o = MESH_DNS_HEADER_LEN;
    c[o++] = 1;
    c[o++] = 'a';
    c[o++] = 0;
    memcpy(c + o, "\0\1\0\1", 4);
    o += 4;
    size_t prev = MESH_DNS_HEADER_LEN;
    for (int i = 0; i < 100; i++) {
        size_t here = o;
        c[o++] = 1;
        c[o++] = 'b';
        c[o++] = (uint8_t)(0xc0 | prev >> 8);
        c[o++] = (uint8_t)prev;
        memcpy(c + o, "\0\1\0\1\0\0\0\0\0\0", 10);
        o += 10;
        prev = here;
    }
    assert_int_equal(mesh_dns_parse(c, o, &m, &why), -EBADMSG);
    assert_contains(why, "too many compression pointers");
}

static void test_truncate(void **state)
{
    (void)state;
    uint8_t p[4096];
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, p, sizeof(p));
    struct mesh_dns_header h = {.id = 7,
                                .flags = MESH_DNS_FLAG_QR | MESH_DNS_FLAG_RD,
                                .qdcount = 1,
                                .ancount = 20,
                                .arcount = 1};
    uint8_t hdr[12];
    mesh_dns_header_write(hdr, &h);
    mesh_dns_put_bytes(&b, hdr, 12);
    mesh_dns_put_name(&b, "big.example");
    mesh_dns_put_u16(&b, 16);
    mesh_dns_put_u16(&b, 1);
    uint8_t txt[51];
    txt[0] = 50;
    memset(txt + 1, 't', 50);
    for (int i = 0; i < 20; i++) {
        mesh_dns_put_pointer(&b, 12);
        mesh_dns_put_rr_tail(&b, 16, 1, 60, txt, sizeof(txt));
    }
    mesh_dns_put_opt(&b, 1232);
    assert_int_equal(b.err, 0);
    struct mesh_dns_msg m, t;
    assert_int_equal(mesh_dns_parse(p, b.len, &m, NULL), 0);
    assert_true(b.len > 512);
    int n = mesh_dns_truncate(p, b.len, &m, 512, 1232);
    assert_true(n > 0 && n <= 512);
    assert_int_equal(mesh_dns_parse(p, (size_t)n, &t, NULL), 0);
    assert_true(t.h.flags & MESH_DNS_FLAG_TC);
    assert_int_equal(t.h.id, 7);
    /* Each record is 12 + 51 bytes: (512 - 29 - 11) / 63 of them fit. */
    assert_int_equal(t.h.ancount, (512 - 29 - 11) / 63);
    assert_true(t.has_opt);
    /* Too small for even the question. */
    assert_int_equal(mesh_dns_parse(p, (size_t)n, &m, NULL), 0);
    assert_int_equal(mesh_dns_truncate(p, (size_t)n, &m, 20, 0), -EMSGSIZE);
}

/* An answer of `an` A records, `ns` 63-byte authority records, 20 big additional records
 * and an OPT record whose TTL says DO (RFC 3225). */
static size_t big_tail(uint8_t *p, size_t cap, unsigned an, unsigned ns, unsigned rcode)
{
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, p, cap);
    struct mesh_dns_header h = {.id = 9,
                                .flags = (uint16_t)(MESH_DNS_FLAG_QR | MESH_DNS_FLAG_RD | rcode),
                                .qdcount = 1,
                                .ancount = (uint16_t)an,
                                .nscount = (uint16_t)ns,
                                .arcount = 21};
    uint8_t hdr[12];
    mesh_dns_header_write(hdr, &h);
    mesh_dns_put_bytes(&b, hdr, 12);
    mesh_dns_put_name(&b, "x.example");
    mesh_dns_put_u16(&b, 1);
    mesh_dns_put_u16(&b, 1);
    for (unsigned i = 0; i < an; i++) {
        mesh_dns_put_pointer(&b, 12);
        mesh_dns_put_rr_tail(&b, 1, 1, 60, "\xc0\0\2\1", 4);
    }
    uint8_t txt[51];
    txt[0] = 50;
    memset(txt + 1, 't', 50);
    for (unsigned i = 0; i < ns; i++) {
        mesh_dns_put_pointer(&b, 12);
        mesh_dns_put_rr_tail(&b, 16, 1, 60, txt, sizeof(txt));
    }
    for (int i = 0; i < 20; i++) {
        mesh_dns_put_pointer(&b, 12);
        mesh_dns_put_rr_tail(&b, 16, 1, 60, txt, sizeof(txt));
    }
    uint8_t root = 0;
    mesh_dns_put_bytes(&b, &root, 1);
    mesh_dns_put_rr_tail(&b, MESH_DNS_TYPE_OPT, 4096, 0x8000, NULL, 0);
    assert_int_equal(b.err, 0);
    return b.len;
}

static void test_truncate_sets_tc_only_for_answers(void **state)
{
    (void)state;
    /* RFC 2181 9: TC only when the answer itself was cut. Dropping the additional section
     * of a whole answer is no truncation; the upstream's OPT (DO, extended RCODE) stays. */
    uint8_t p[4096];
    struct mesh_dns_msg m, t;
    size_t len = big_tail(p, sizeof(p), 2, 0, 0);
    assert_int_equal(mesh_dns_parse(p, len, &m, NULL), 0);
    int n = mesh_dns_truncate(p, len, &m, 512, 1232);
    assert_true(n > 0 && n <= 512);
    assert_int_equal(mesh_dns_parse(p, (size_t)n, &t, NULL), 0);
    assert_false(t.h.flags & MESH_DNS_FLAG_TC);
    assert_int_equal(t.h.ancount, 2);
    assert_int_equal(t.h.arcount, 1);
    assert_true(t.has_opt);
    /* The OPT record ends the message: its TTL (extended RCODE, version, DO) as upstream's. */
    assert_memory_equal(p + n - 6, "\0\0\x80\0", 4);
    /* A negative answer keeps its SOA (authority) when it fits: no TC either. */
    len = big_tail(p, sizeof(p), 0, 1, 3);
    assert_int_equal(mesh_dns_parse(p, len, &m, NULL), 0);
    n = mesh_dns_truncate(p, len, &m, 512, 1232);
    assert_int_equal(mesh_dns_parse(p, (size_t)n, &t, NULL), 0);
    assert_false(t.h.flags & MESH_DNS_FLAG_TC);
    assert_int_equal(t.h.nscount, 1);
    /* One that loses it is cut: TC. */
    len = big_tail(p, sizeof(p), 0, 1, 3);
    assert_int_equal(mesh_dns_parse(p, len, &m, NULL), 0);
    n = mesh_dns_truncate(p, len, &m, 60, 1232);
    assert_true(n > 0);
    assert_int_equal(mesh_dns_parse(p, (size_t)n, &t, NULL), 0);
    assert_true(t.h.flags & MESH_DNS_FLAG_TC);
    assert_int_equal(t.h.nscount, 0);
}

static void test_builder(void **state)
{
    (void)state;
    uint8_t p[300];
    assert_int_equal(put_name(p, "a.bc."), 6);
    assert_memory_equal(p, "\1a\2bc\0", 6);
    assert_int_equal(put_name(p, "."), 1);
    struct mesh_dns_builder b;
    mesh_dns_builder_init(&b, p, sizeof(p));
    mesh_dns_put_name(&b, "a..b");
    assert_int_equal(b.err, -EINVAL);
    mesh_dns_builder_init(&b, p, sizeof(p));
    mesh_dns_put_name(&b, "bad name");
    assert_int_equal(b.err, -EINVAL);
    mesh_dns_builder_init(&b, p, 3);
    mesh_dns_put_u32(&b, 1);
    assert_int_equal(b.err, -EMSGSIZE);
    assert_string_equal(mesh_dns_rcode_name(3), "NXDOMAIN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_query_parses), UNIT_TEST(test_root_and_escapes),
        UNIT_TEST(test_refusals),     UNIT_TEST(test_name_limits),
        UNIT_TEST(test_truncate),     UNIT_TEST(test_truncate_sets_tc_only_for_answers),
        UNIT_TEST(test_builder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
