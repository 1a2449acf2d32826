/* MESH_CFG_RESTART: which keys only a restart applies, and which of them two configs change. */
#include <errno.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "tests/unit/unit.h"

struct inner {
    char *a;
    int b;
};

struct outer {
    char *name;
    char *secret;
    int n;
    struct inner in;
    struct inner whole;
    bool x;
};

static const struct mesh_cfg_field inner_fields[] = {
    {.key = "a",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct inner, a),
     .def = "",
     .flags = MESH_CFG_RESTART},
    {.key = "b", .type = MESH_CFG_INT, MESH_CFG_FIELD(struct inner, b)},
    {0},
};

static const struct mesh_cfg_schema inner_schema = {.size = sizeof(struct inner),
                                                    .fields = inner_fields};

static const struct mesh_cfg_field outer_fields[] = {
    {.key = "name",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct outer, name),
     .def = "",
     .flags = MESH_CFG_RESTART},
    {.key = "secret",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct outer, secret),
     .def = "",
     .flags = MESH_CFG_RESTART | MESH_CFG_SECRET},
    {.key = "n", .type = MESH_CFG_INT, MESH_CFG_FIELD(struct outer, n)},
    {.key = "in",
     .type = MESH_CFG_OBJECT,
     MESH_CFG_FIELD(struct outer, in),
     .schema = &inner_schema},
    {.key = "whole",
     .type = MESH_CFG_OBJECT,
     MESH_CFG_FIELD(struct outer, whole),
     .schema = &inner_schema,
     .flags = MESH_CFG_RESTART},
    {.key = "x", .type = MESH_CFG_BOOL, MESH_CFG_FIELD(struct outer, x), .flags = MESH_CFG_RESTART},
    {0},
};

static const struct mesh_cfg_schema outer_schema = {.size = sizeof(struct outer),
                                                    .fields = outer_fields};

static void decode(const char *text, struct outer *o)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_cfg_ctx ctx;
    mesh_cfg_ctx_init(&ctx, "t", &errors);
    json_t *json = json_loads(text, 0, NULL);
    assert_non_null(json);
    assert_int_equal(mesh_cfg_defaults(&outer_schema, o), 0);
    assert_int_equal(mesh_cfg_decode(&ctx, &outer_schema, json, o), 0);
    json_decref(json);
    mesh_cfg_errors_done(&errors);
}

/* The paths that differ between the base config and `text`, as one string. */
static void changes(const char *text, int want_n, const char *want)
{
    static const char base[] = "{\"name\": \"a\", \"secret\": \"s\", \"n\": 1, \"in\": {\"a\": "
                               "\"x\", \"b\": 1}, \"whole\": {\"a\": \"y\", \"b\": 2}}";
    struct outer a, b;
    decode(base, &a);
    decode(text, &b);
    struct mesh_buf keys;
    mesh_buf_init(&keys, 4096);
    assert_int_equal(mesh_cfg_restart_changes(&outer_schema, &a, &b, &keys), want_n);
    assert_string_equal(keys.data ? keys.data : "", want);
    mesh_buf_done(&keys);
    mesh_cfg_free(&outer_schema, &a);
    mesh_cfg_free(&outer_schema, &b);
}

static void test_changes_of_flagged_keys(void **state)
{
    (void)state;
    /* The same values: nothing; unflagged keys, inside an unflagged object too: nothing. */
    changes("{\"name\": \"a\", \"secret\": \"s\", \"n\": 1, \"in\": {\"a\": \"x\", \"b\": 1}, "
            "\"whole\": {\"a\": \"y\", \"b\": 2}}",
            0, "");
    changes("{\"name\": \"a\", \"secret\": \"s\", \"n\": 7, \"in\": {\"a\": \"x\", \"b\": 9}, "
            "\"whole\": {\"a\": \"y\", \"b\": 2}}",
            0, "");
    /* A secret is compared by its value, not by its redacted encoding. */
    changes("{\"name\": \"a\", \"secret\": \"t\", \"n\": 1, \"in\": {\"a\": \"x\", \"b\": 1}, "
            "\"whole\": {\"a\": \"y\", \"b\": 2}}",
            1, "secret");
    /* A flagged key inside an object, and a flagged object whole (by any of its keys). */
    changes("{\"name\": \"b\", \"secret\": \"s\", \"n\": 1, \"in\": {\"a\": \"z\", \"b\": 1}, "
            "\"whole\": {\"a\": \"y\", \"b\": 3}, \"x\": true}",
            4, "name, in.a, whole, x");
}

static void test_flagged_keys(void **state)
{
    (void)state;
    struct mesh_buf keys;
    mesh_buf_init(&keys, 4096);
    assert_int_equal(mesh_cfg_restart_keys(&outer_schema, &keys), 4 + 1);
    assert_string_equal(keys.data, "name, secret, in.a, whole, x");
    mesh_buf_done(&keys);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    struct outer a, b;
    decode("{\"n\": 1, \"x\": true}", &a);
    decode("{\"n\": 2}", &b);
    int r = -ENOMEM;
    for (long n = 0; r == -ENOMEM && n < 100; n++) {
        struct mesh_buf keys;
        mesh_buf_init(&keys, 4096);
        mesh_alloc_fail_after(n);
        r = mesh_cfg_restart_changes(&outer_schema, &a, &b, &keys);
        mesh_alloc_fail_after(-1);
        mesh_buf_done(&keys);
    }
    assert_int_equal(r, 1);
    mesh_cfg_free(&outer_schema, &a);
    mesh_cfg_free(&outer_schema, &b);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_changes_of_flagged_keys),
        UNIT_TEST(test_flagged_keys),
        UNIT_TEST(test_allocation_failures),
    };
    return cmocka_run_group_tests_name("cfg_restart", tests, NULL, NULL);
}
