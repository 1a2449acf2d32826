/* Request path normalization (issue #13: authorization bypasses by path). */
#include <errno.h>
#include <stdio.h>

#include "common/path_normalize.h"
#include "tests/unit/unit.h"

static const struct mesh_path_options defaults = MESH_PATH_OPTIONS_DEFAULT;

/* Normalizes `in` with o; returns the result ("!" + the reason when refused). */
static const char *norm(const char *in, const struct mesh_path_options *o)
{
    static char out[256], res[300];
    const char *why = NULL;
    int n = mesh_path_normalize(in, strlen(in), o, out, sizeof(out), &why);
    if (n < 0) {
        snprintf(res, sizeof(res), "!%s", why ? why : "?");
        return res;
    }
    snprintf(res, sizeof(res), "%.*s", n, out);
    /* Every result is a fixed point. */
    char again[256];
    int m = mesh_path_normalize(res, (size_t)n, o, again, sizeof(again), &why);
    if (m != n || memcmp(again, res, (size_t)n) != 0)
        fail_msg("'%s' -> '%s' is not stable", in, res);
    return res;
}

static void test_bypasses_of_issue_13(void **state)
{
    (void)state;
    static const char *const to_admin[] = {
        "/admin",          "//admin",       "/./admin",          "/x/../admin",      "/%61dmin",
        "/%2e/admin",      "/%2E%2e/admin", "///admin",          "/a/b/../../admin", "/../admin",
        "/x/%2e%2e/admin", "/.//admin",     "/%41dmin/../admin",
    };
    for (size_t i = 0; i < sizeof(to_admin) / sizeof(to_admin[0]); i++) {
        const char *got = norm(to_admin[i], &defaults);
        if (strcmp(got, "/admin") != 0)
            fail_msg("'%s' -> '%s', expected '/admin'", to_admin[i], got);
    }
}

static void test_rfc3986_examples(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        /* RFC 3986 5.2.4's own examples, as origin-form paths. */
        {"/a/b/c/./../../g", "/a/g"},
        {"/mid/content=5/../6", "/mid/6"},
        /* Trailing slashes are kept, and made by a final dot segment. */
        {"/a/", "/a/"},
        {"/a/.", "/a/"},
        {"/a/b/..", "/a/"},
        {"/..", "/"},
        {"/", "/"},
        {"/.", "/"},
        /* Escapes: unreserved ones decoded, others upper-cased. */
        {"/%7euser/%7E", "/~user/~"},
        {"/a%20b%3f", "/a%20b%3F"},
        {"/%25%32%66", "/%252f"},
        {"/a..b/.c/..d", "/a..b/.c/..d"},
        /* Sub-delimiters, ':' and '@' are path characters. */
        {"/a;b=c/@x:y/!$&'()*+,", "/a;b=c/@x:y/!$&'()*+,"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = norm(cases[i].in, &defaults);
        if (strcmp(got, cases[i].out) != 0)
            fail_msg("'%s' -> '%s', expected '%s'", cases[i].in, got, cases[i].out);
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b", /* escaped slashes: rejected by default */
        "/a%",    "/a%4",   "/a%zz",  "/a%4g", /* bad escapes */
        "/a\"b",  "/a<b",   "/a{b}",  "/a|b",  "/a^b", "/a`b", "/a[0]", "/a#b", /* not URI chars */
        "a/b",    "*", /* not an origin-form path */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *got = norm(bad[i], &defaults);
        if (got[0] != '!')
            fail_msg("'%s' accepted as '%s'", bad[i], got);
    }
    char out[4];
    const char *why;
    assert_int_equal(mesh_path_normalize("/abcdef", 7, &defaults, out, sizeof(out), &why),
                     -ENOBUFS);
}

static void test_escaped_slash_actions(void **state)
{
    (void)state;
    struct mesh_path_options keep = defaults, decode = defaults;
    keep.escaped_slashes = MESH_PATH_SLASHES_KEEP;
    decode.escaped_slashes = MESH_PATH_SLASHES_DECODE;
    assert_string_equal(norm("/a%2fb/%5c/..%2F", &keep), "/a%2Fb/%5C/..%2F");
    assert_string_equal(norm("/a\\b", &keep), "/a\\b");
    assert_string_equal(norm("/a%2fb", &decode), "/a/b");
    assert_string_equal(norm("/%2F%2fadmin", &decode), "/admin");
    assert_string_equal(norm("/x/..%2F..%2Fadmin", &decode), "/admin");
    assert_string_equal(norm("/x\\..\\admin", &decode), "/admin");
    /* Decoding merges even with merge_slashes off: the action is decode-and-merge. */
    decode.merge_slashes = false;
    assert_string_equal(norm("/a%2F%2Fb//c", &decode), "/a/b/c");
}

static void test_switched_off(void **state)
{
    (void)state;
    struct mesh_path_options none = {
        .normalize = false, .merge_slashes = false, .escaped_slashes = MESH_PATH_SLASHES_KEEP};
    /* Everything as it came, bad escapes and dot segments included. */
    const char *raw = "//a/./../%2f%zz/%61{}";
    assert_string_equal(norm(raw, &none), raw);
    struct mesh_path_options merge = none;
    merge.merge_slashes = true;
    assert_string_equal(norm("//a///b/./", &merge), "/a/b/./");
    struct mesh_path_options dots = defaults;
    dots.merge_slashes = false;
    assert_string_equal(norm("//a//../b", &dots), "//a/b");
    assert_string_equal(norm("/a//..", &dots), "/a/");
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_bypasses_of_issue_13),
        UNIT_TEST(test_rfc3986_examples),
        UNIT_TEST(test_refused),
        UNIT_TEST(test_escaped_slash_actions),
        UNIT_TEST(test_switched_off),
    };
    return cmocka_run_group_tests_name("path_normalize", tests, NULL, NULL);
}
