/*
 * The agent's keys that only a restart applies: the schema flags them (MESH_CFG_RESTART),
 * a reload compares by the flags, and docs/config.md lists exactly those.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "agent/config.h"
#include "common/buf.h"
#include "common/fs.h"
#include "tests/unit/unit.h"

#define RESTART_KEYS                                                                               \
    "node.name, state_dir, proxy.workers, proxy.buffer_size, proxy.http, dns, "                    \
    "dns_responder"

static void test_restart_keys(void **state)
{
    (void)state;
    struct mesh_buf keys;
    mesh_buf_init(&keys, 4096);
    assert_int_equal(mesh_agent_config_restart_keys(&keys), 7);
    assert_string_equal(keys.data, RESTART_KEYS);
    mesh_buf_done(&keys);
}

static struct mesh_agent_config *parse(const char *json)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    assert_int_equal(mesh_agent_config_parse("x", json, strlen(json), &errors, &cfg), 0);
    return cfg;
}

static void test_changes_name_the_keys(void **state)
{
    (void)state;
    struct mesh_agent_config *a = parse("{\"node\": {\"name\": \"a\"}, \"log\": {\"level\": "
                                        "\"info\"}}");
    struct mesh_agent_config *b =
        parse("{\"node\": {\"name\": \"b\", \"zone\": \"z\"}, \"log\": {\"level\": \"debug\"}, "
              "\"proxy\": {\"max_connections\": 5, \"http\": {\"idle_timeout\": \"5s\"}}}");
    struct mesh_buf keys;
    mesh_buf_init(&keys, 4096);
    assert_int_equal(mesh_agent_config_restart_changes(a, a, &keys), 0);
    assert_int_equal(keys.len, 0);
    /* node.zone, log.level and proxy.max_connections are reloadable. */
    assert_int_equal(mesh_agent_config_restart_changes(a, b, &keys), 2);
    assert_string_equal(keys.data, "node.name, proxy.http");
    mesh_buf_done(&keys);
    mesh_agent_config_unref(a);
    mesh_agent_config_unref(b);
}

static bool is_restart_key(const char *key, const char *flagged)
{
    size_t n = strlen(key);
    const char *p = flagged;
    while ((p = strstr(p, key))) {
        bool starts = p == flagged || p[-1] == ' ';
        if (starts && (p[n] == ',' || p[n] == '\0'))
            return true;
        p += n;
    }
    /* Inside a flagged object: "proxy.http.idle_timeout" under "proxy.http". */
    const char *dot = strrchr(key, '.');
    if (!dot)
        return false;
    char parent[128];
    snprintf(parent, sizeof(parent), "%.*s", (int)(dot - key), key);
    return is_restart_key(parent, flagged);
}

/* The `keys` of a piece of markdown, each after ", " (the format of the flags' list). */
static void backticked(const char *from, const char *to, struct mesh_buf *out)
{
    for (const char *p = from; (p = memchr(p, '`', (size_t)(to - p))) && p < to;) {
        const char *end = memchr(p + 1, '`', (size_t)(to - p - 1));
        if (!end)
            break;
        mesh_buf_appendf(out, "%s%.*s", out->len ? ", " : "", (int)(end - p - 1), p + 1);
        p = end + 1;
    }
}

/* docs/config.md lists the flagged keys in its Reload section and marks their rows. */
static void test_docs_list_the_restart_keys(void **state)
{
    (void)state;
    char *doc = NULL;
    size_t len = 0;
    assert_int_equal(mesh_fs_read_file(MESH_SOURCE_DIR "/docs/config.md", 1 << 20, &doc, &len), 0);
    struct mesh_buf flagged, listed;
    mesh_buf_init(&flagged, 4096);
    mesh_buf_init(&listed, 4096);
    mesh_agent_config_restart_keys(&flagged);

    const char *intro = "Only a restart applies these keys:";
    const char *p = strstr(doc, intro);
    assert_non_null(p);
    p += strlen(intro);
    const char *end = strstr(p, " (");
    const char *stop = strstr(p, ". ");
    if (stop && (!end || stop < end))
        end = stop;
    assert_non_null(end);
    backticked(p, end, &listed);
    /* The docs' order need not be the schema's: compare as sets. */
    const char *keys[] = {"node.name",         "state_dir",  "proxy.workers",
                          "proxy.buffer_size", "proxy.http", "dns"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        assert_true(is_restart_key(keys[i], flagged.data));
        if (!is_restart_key(keys[i], listed.data))
            fail_msg("docs/config.md does not list '%s' among the restart-only keys", keys[i]);
    }
    assert_string_equal(flagged.data, RESTART_KEYS);
    assert_int_equal(listed.len, flagged.len);

    /* The key table: "restart to change" on exactly the rows of flagged keys. */
    size_t rows = 0;
    const char *table = strstr(doc, "| key | type | default | meaning |");
    assert_non_null(table);
    for (const char *row = strchr(table, '\n') + 1; row[0] == '|'; row = strchr(row, '\n') + 1) {
        const char *eol = strchr(row, '\n');
        const char *cell = strchr(row + 1, '|');
        assert_non_null(eol);
        if (row[2] != '`')
            continue;
        struct mesh_buf row_keys;
        mesh_buf_init(&row_keys, 4096);
        backticked(row, cell, &row_keys);
        bool says = memmem(row, (size_t)(eol - row), "restart to change", 17) != NULL;
        char *k = row_keys.data, *save = NULL;
        for (char *t = strtok_r(k, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            if (is_restart_key(t, flagged.data) != says)
                fail_msg("docs/config.md: the row of '%s' %s \"restart to change\"", t,
                         says ? "says" : "does not say");
            rows += says;
        }
        mesh_buf_done(&row_keys);
    }
    assert_true(rows >= 5);
    mesh_buf_done(&flagged);
    mesh_buf_done(&listed);
    mesh_free(doc);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_restart_keys),
        UNIT_TEST(test_changes_name_the_keys),
        UNIT_TEST(test_docs_list_the_restart_keys),
    };
    return cmocka_run_group_tests_name("agent_config_restart", tests, NULL, NULL);
}
