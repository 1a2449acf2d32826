/* The mesh's name rules (common/names.h): one rule per kind of name, one message each. */
#include <errno.h>
#include <string.h>

#include "common/cfg.h"
#include "common/names.h"
#include "tests/unit/unit.h"

static const char label63[] = "a12345678901234567890123456789012345678901234567890123456789012";

static void test_dns_label(void **state)
{
    (void)state;
    const char *good[] = {"a", "0", "a-1", "api", "my-service-2", "1abc", label63};
    const char *bad[] = {"", "-a", "a-", "A", "Api", "a_b", "a.b", "a b", "é", "a\n"};
    assert_int_equal(strlen(label63), 63);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(mesh_name_is_dns_label(good[i]));
        assert_null(mesh_name_check_dns_label(good[i]));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(mesh_name_is_dns_label(bad[i]));
        /* One rule, one message, whatever is wrong. */
        assert_string_equal(mesh_name_check_dns_label(bad[i]),
                            "must be a DNS label: 1 to 63 lowercase letters, digits and '-', "
                            "starting and ending with a letter or digit");
    }
    char long64[65];
    memset(long64, 'a', 64);
    long64[64] = '\0';
    assert_false(mesh_name_is_dns_label(long64));
}

static void test_node(void **state)
{
    (void)state;
    const char *good[] = {"a", "vm-1", "node-1.eu-west.internal", "10.0.0.1", "a.b-c.d", label63};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(mesh_name_is_node(good[i]));
        assert_null(mesh_name_check_node(good[i]));
    }
    static const struct {
        const char *name, *why;
    } bad[] = {
        {"", "must be 1 to 253 characters"},
        {"Node-1", "only lowercase letters, digits, '-' and '.' are allowed"},
        {"a_b", "only lowercase letters, digits, '-' and '.' are allowed"},
        {"a b", "only lowercase letters, digits, '-' and '.' are allowed"},
        {"-a", "must start and end with a letter or digit"},
        {"a.", "must start and end with a letter or digit"},
        {".a", "must start and end with a letter or digit"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(mesh_name_is_node(bad[i].name));
        assert_string_equal(mesh_name_check_node(bad[i].name), bad[i].why);
    }
    char n253[254], n254[255];
    memset(n253, 'a', 253);
    n253[253] = '\0';
    memset(n254, 'a', 254);
    n254[254] = '\0';
    assert_true(mesh_name_is_node(n253));
    assert_string_equal(mesh_name_check_node(n254), "must be 1 to 253 characters");
}

/* The checks plug into a config field as they are. */
struct doc {
    char *name;
    char *node;
};

static void test_as_cfg_checks(void **state)
{
    (void)state;
    static const struct mesh_cfg_field fields[] = {
        {.key = "name",
         .type = MESH_CFG_STRING,
         MESH_CFG_FIELD(struct doc, name),
         .expect = "a DNS label",
         .check = mesh_name_check_dns_label},
        {.key = "node",
         .type = MESH_CFG_STRING,
         MESH_CFG_FIELD(struct doc, node),
         .expect = "a node name",
         .check = mesh_name_check_node},
        {0},
    };
    static const struct mesh_cfg_schema schema = {.size = sizeof(struct doc), .fields = fields};
    struct mesh_cfg_errors errors = {0};
    struct mesh_cfg_ctx ctx;
    struct doc d;
    mesh_cfg_ctx_init(&ctx, "f", &errors);
    json_t *json = json_loads("{\"name\": \"Api\", \"node\": \"-n\"}", 0, NULL);
    assert_int_equal(mesh_cfg_defaults(&schema, &d), 0);
    assert_int_equal(mesh_cfg_decode(&ctx, &schema, json, &d), -EINVAL);
    assert_int_equal(errors.n, 2);
    assert_string_equal(errors.v[0], "f: $.name: expected a DNS label, got \"Api\": must be a DNS "
                                     "label: 1 to 63 lowercase letters, digits and '-', starting "
                                     "and ending with a letter or digit");
    assert_string_equal(errors.v[1], "f: $.node: expected a node name, got \"-n\": must start and "
                                     "end with a letter or digit");
    json_decref(json);
    mesh_cfg_free(&schema, &d);
    mesh_cfg_errors_done(&errors);
}

/* Host names where an endpoint address may be one (service files, Consul, the LKG file). */
static void test_host(void **state)
{
    (void)state;
    const char *good[] = {"a",      "api.svc.test", "API.Example.com", "api.example.com.",
                          "x-1.y2", "1a.example",   "db.10.internal",  "a.b1",
                          label63};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(mesh_name_is_host(good[i]));
        assert_null(mesh_name_check_host(good[i]));
    }
    static const char *const bad[] = {
        "",           /* empty */
        ".",          /* the root alone */
        "a..b",       /* an empty label */
        ".a",         /* an empty first label */
        "a.b..",      /* two trailing dots */
        "-a.test",    /* a label starting with '-' */
        "a-.test",    /* ending with '-' */
        "a_b.test",   /* '_' */
        "a b",        /* a space */
        "1.2.3.4",    /* an IPv4 address is not a name */
        "1.2.3",      /* nor what reads like one */
        "api.123",    /* a last label of digits */
        "::1",        /* an IPv6 address */
        "api.test\n", /* a control character */
        "\xc3\xa9.test",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(mesh_name_is_host(bad[i]));
        assert_non_null(mesh_name_check_host(bad[i]));
    }
    assert_string_equal(mesh_name_check_host("1.2.3.4"),
                        "must be a host name or an IP address: the last label is all digits");
    char label64[80];
    memset(label64, 'a', 64);
    strcpy(label64 + 64, ".test");
    assert_false(mesh_name_is_host(label64));
    /* 253 characters is the most, a trailing dot not counted. */
    char n[260];
    for (size_t i = 0; i < 253; i++)
        n[i] = (i % 2) ? '.' : 'a';
    n[253] = '\0';
    assert_true(mesh_name_is_host(n));
    strcpy(n + 253, ".");
    assert_true(mesh_name_is_host(n));
    strcpy(n + 253, ".a");
    assert_false(mesh_name_is_host(n));
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_dns_label),
        UNIT_TEST(test_node),
        UNIT_TEST(test_host),
        UNIT_TEST(test_as_cfg_checks),
    };
    return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
