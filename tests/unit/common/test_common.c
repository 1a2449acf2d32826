/* Small common pieces: strings, durations, buffers, hash map, addresses, labels, files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/atom.h"
#include "common/buf.h"
#include "common/cfg.h"
#include "common/fs.h"
#include "common/hmap.h"
#include "common/labels.h"
#include "common/sd.h"
#include "common/strutil.h"
#include "tests/unit/unit.h"

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"0", 0},         {"250ms", 250},  {"10s", 10000},
              {"1m30s", 90000}, {"2h", 7200000}, {"1h1m1s1ms", 3661001}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t ms;
        assert_int_equal(mesh_parse_duration_ms(ok[i].s, &ms), 0);
        assert_int_equal(ms, ok[i].ms);
        char back[32];
        mesh_format_duration_ms(ms, back, sizeof(back));
        uint64_t again;
        assert_int_equal(mesh_parse_duration_ms(back, &again), 0);
        assert_int_equal(again, ms);
    }
    static const char *const bad[] = {
        "", "s", "10", "10 s", "-1s", "1d", "1.5s", "ms10", "99999999999999999999s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms;
        if (mesh_parse_duration_ms(bad[i], &ms) == 0)
            fail_msg("accepted '%s'", bad[i]);
    }
}

static void test_suggest(void **state)
{
    (void)state;
    static const char *const words[] = {"directory", "poll_interval", "name", NULL};
    assert_string_equal(mesh_str_suggest("directroy", words), "directory");
    assert_string_equal(mesh_str_suggest("nme", words), "name");
    assert_null(mesh_str_suggest("zzz", words));
    assert_null(mesh_str_suggest("a", words));
    assert_int_equal(mesh_str_distance("kitten", "sitting", 5), 3);
    assert_int_equal(mesh_str_distance("a", "abcdef", 2), 3); /* capped */
}

/* (The name rules are in test_names.c.) */
static void test_parse_u64(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(mesh_parse_u64("18446744073709551615", 20, &v), 0);
    assert_int_equal(mesh_parse_u64("18446744073709551616", 20, &v), -ERANGE);
    assert_int_equal(mesh_parse_u64("1a", 2, &v), -EINVAL);
}

static void test_buf(void **state)
{
    (void)state;
    struct mesh_buf b;
    mesh_buf_init(&b, 8);
    assert_int_equal(mesh_buf_append_str(&b, "1234"), 0);
    assert_int_equal(mesh_buf_appendf(&b, "%d", 5678), 0);
    assert_int_equal(mesh_buf_append_str(&b, "9"), -EMSGSIZE);
    assert_int_equal(b.len, 8);
    assert_int_equal(b.err, -EMSGSIZE);
    assert_string_equal(b.data, "12345678");
    mesh_buf_consume(&b, 3);
    assert_string_equal(b.data, "45678");
    mesh_buf_done(&b);

    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    mesh_buf_append_json_str(&b, "a\"b\\\n\x01", 6);
    assert_string_equal(b.data, "\"a\\\"b\\\\\\n\\u0001\"");
    mesh_buf_done(&b);

    char small[8];
    mesh_buf_init_fixed(&b, small, sizeof(small));
    assert_int_equal(mesh_buf_append_str(&b, "1234567"), 0);
    assert_int_equal(mesh_buf_append_str(&b, "8"), -EMSGSIZE);
    assert_string_equal(small, "1234567");
}

static void test_hmap(void **state)
{
    (void)state;
    struct mesh_hmap m;
    mesh_hmap_init(&m);
    char keys[2000][16];
    for (int i = 0; i < 2000; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
        assert_int_equal(mesh_hmap_put(&m, keys[i], &keys[i]), 0);
    }
    assert_int_equal(m.n, 2000);
    for (int i = 0; i < 2000; i += 2)
        assert_ptr_equal(mesh_hmap_remove(&m, keys[i]), &keys[i]);
    assert_int_equal(m.n, 1000);
    for (int i = 0; i < 2000; i++)
        assert_ptr_equal(mesh_hmap_get(&m, keys[i]), i % 2 ? (void *)&keys[i] : NULL);
    /* Re-adding after removals reuses tombstones and keeps lookups right. */
    for (int i = 0; i < 2000; i += 2)
        assert_int_equal(mesh_hmap_put(&m, keys[i], &keys[i]), 0);
    size_t seen = 0, i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(&m, &i, &e))
        seen++;
    assert_int_equal(seen, 2000);
    mesh_hmap_done(&m);
}

static void test_addr(void **state)
{
    (void)state;
    struct mesh_addr a;
    const char *why;
    char out[MESH_ADDR_STRLEN];
    assert_int_equal(mesh_addr_parse("127.0.0.1:15000", &a, &why), 0);
    assert_string_equal(mesh_addr_format(&a, out, sizeof(out)), "127.0.0.1:15000");
    assert_int_equal(mesh_addr_parse("[::1]:80", &a, &why), 0);
    assert_string_equal(mesh_addr_format(&a, out, sizeof(out)), "[::1]:80");
    assert_int_equal(mesh_addr_parse("unix:/run/x.sock", &a, &why), 0);
    assert_true(mesh_addr_is_unix(&a));
    assert_string_equal(mesh_addr_format(&a, out, sizeof(out)), "unix:/run/x.sock");
    static const char *const bad[] = {"",      "1.2.3.4",      "1.2.3.4:", "1.2.3.4:x",
                                      ":80",   "::1:80",       "[::1]80",  "host:80",
                                      "unix:", "1.2.3.4:65536"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (mesh_addr_parse(bad[i], &a, &why) == 0)
            fail_msg("accepted '%s'", bad[i]);
        assert_non_null(why);
    }
}

static void test_labels(void **state)
{
    (void)state;
    struct mesh_labels l = {0}, c = {0};
    assert_int_equal(mesh_labels_set(&l, "b", "2"), 0);
    assert_int_equal(mesh_labels_set(&l, "a", "1"), 0);
    assert_int_equal(mesh_labels_set(&l, "b", "3"), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0].key, "a");
    assert_string_equal(mesh_labels_get(&l, "b"), "3");
    assert_int_equal(mesh_labels_copy(&c, &l), 0);
    assert_true(mesh_labels_equal(&l, &c));
    mesh_labels_set(&c, "a", "x");
    assert_false(mesh_labels_equal(&l, &c));
    mesh_labels_done(&l);
    mesh_labels_done(&c);
    assert_true(mesh_label_key_valid("app.kubernetes.io/name", NULL));
    assert_false(mesh_label_key_valid("/name", NULL));
    assert_false(mesh_label_key_valid("a/b/c", NULL));
    assert_true(mesh_label_value_valid("", NULL));
    assert_false(mesh_label_value_valid("-a", NULL));
}

static void test_atomic_write(void **state)
{
    (void)state;
    char dir[] = "/tmp/mesh-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/sub/state", dir);
    assert_int_equal(mesh_fs_mkdir_private(path, 0700), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    chmod(path, 0755);
    assert_int_equal(mesh_fs_mkdir_private(path, 0700), 0); /* tightened again */
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    snprintf(path, sizeof(path), "%s/sub/state/file", dir);
    assert_int_equal(mesh_fs_write_atomic(path, "one", 3, 0600), 0);
    assert_int_equal(mesh_fs_write_atomic(path, "two!", 4, 0600), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *data;
    size_t len;
    assert_int_equal(mesh_fs_read_file(path, 100, &data, &len), 0);
    assert_int_equal(len, 4);
    assert_string_equal(data, "two!");
    mesh_free(data);
    assert_int_equal(mesh_fs_read_file(path, 3, &data, &len), -EFBIG);
    assert_int_equal(mesh_fs_read_file("/nonexistent/x", 3, &data, &len), -ENOENT);
    /* Nothing but the file is left: no temporary files. */

    /* Piece by piece: the old content stays until commit; an error leaves it too. */
    char cmd[512];
    struct mesh_fs_atomic w;
    assert_int_equal(mesh_fs_atomic_begin(&w, path, 0600), 0);
    assert_int_equal(mesh_fs_atomic_write(&w, "th", 2), 0);
    assert_int_equal(mesh_fs_atomic_write(&w, "ree", 3), 0);
    assert_int_equal(mesh_fs_read_file(path, 100, &data, &len), 0);
    assert_string_equal(data, "two!");
    mesh_free(data);
    assert_int_equal(mesh_fs_atomic_commit(&w), 0);
    assert_int_equal(mesh_fs_read_file(path, 100, &data, &len), 0);
    assert_string_equal(data, "three");
    mesh_free(data);
    assert_int_equal(mesh_fs_atomic_begin(&w, path, 0600), 0);
    mesh_fs_atomic_write(&w, "four", 4);
    w.err = -ENOSPC; /* as a failed write leaves it */
    assert_int_equal(mesh_fs_atomic_write(&w, "more", 4), -ENOSPC);
    assert_int_equal(mesh_fs_atomic_commit(&w), -ENOSPC);
    assert_int_equal(mesh_fs_read_file(path, 100, &data, &len), 0);
    assert_string_equal(data, "three");
    mesh_free(data);
    snprintf(cmd, sizeof(cmd), "%s/no/such/dir/file", dir);
    assert_int_equal(mesh_fs_atomic_begin(&w, cmd, 0600), -ENOENT);
    assert_int_equal(mesh_fs_atomic_commit(&w), -ENOENT);

    /* Nothing but the file is left: no temporary files. */
    snprintf(cmd, sizeof(cmd), "test $(ls -A %s/sub/state | wc -l) -eq 1 && rm -rf %s", dir, dir);
    assert_int_equal(system(cmd), 0);
}

/* Atoms: one copy per distinct value, gone with its last reference. */
static void test_atoms(void **state)
{
    (void)state;
    size_t before = mesh_atom_count();
    char buf[16];
    snprintf(buf, sizeof(buf), "zone-%d", 1);
    const char *a = mesh_atom("zone-1"), *b = mesh_atom(buf), *c = mesh_atom_n("zone-2x", 6);
    assert_ptr_equal(a, b); /* equal strings, one atom */
    assert_string_equal(c, "zone-2");
    assert_ptr_not_equal(a, c);
    assert_int_equal(mesh_atom_count(), before + 2);
    assert_ptr_equal(mesh_atom_ref(a), a);
    assert_null(mesh_atom(NULL));
    assert_null(mesh_atom_ref(NULL));
    mesh_atom_unref(NULL);
    mesh_atom_unref(a);
    mesh_atom_unref(b);
    assert_int_equal(mesh_atom_count(), before + 2); /* one reference left */
    mesh_atom_unref(a);
    mesh_atom_unref(c);
    assert_int_equal(mesh_atom_count(), before);
    mesh_alloc_fail_after(0);
    assert_null(mesh_atom("out of memory"));
    mesh_alloc_fail_after(-1);
}

/* Compact addresses order, print and convert as mesh_addr does. */
static void test_ipport(void **state)
{
    (void)state;
    struct mesh_ipport a, b, c;
    assert_int_equal(mesh_ipport_from_ip("10.0.0.2", 80, &a), 0);
    assert_int_equal(mesh_ipport_from_ip("10.0.0.10", 80, &b), 0);
    assert_int_equal(mesh_ipport_from_ip("fd00::1", 8443, &c), 0);
    struct mesh_ipport bad;
    assert_int_equal(mesh_ipport_from_ip("db.local", 80, &bad), -EINVAL);
    assert_true(mesh_ipport_cmp(&a, &b) < 0); /* by address bytes, not text */
    assert_true(mesh_ipport_cmp(&b, &c) < 0); /* IPv4 before IPv6 */
    struct mesh_ipport a81 = a;
    a81.port = 81;
    assert_true(mesh_ipport_cmp(&a, &a81) < 0);
    assert_false(mesh_ipport_equal(&a, &a81));
    char out[MESH_ADDR_STRLEN];
    assert_string_equal(mesh_ipport_format(&a, out, sizeof(out)), "10.0.0.2:80");
    assert_string_equal(mesh_ipport_format(&c, out, sizeof(out)), "[fd00::1]:8443");
    assert_string_equal(mesh_ipport_ip(&c, out, sizeof(out)), "fd00::1");
    struct mesh_addr full, parsed;
    mesh_ipport_to_addr(&c, &full);
    assert_int_equal(mesh_addr_parse("[fd00::1]:8443", &parsed, NULL), 0);
    assert_true(mesh_addr_equal(&full, &parsed));
    struct mesh_ipport back;
    assert_int_equal(mesh_ipport_from_addr(&parsed, &back), 0);
    assert_true(mesh_ipport_equal(&back, &c));
    assert_int_equal(mesh_addr_parse("unix:/run/x.sock", &parsed, NULL), 0);
    assert_int_equal(mesh_ipport_from_addr(&parsed, &back), -EINVAL);
}

struct small {
    char *name;
    int n;
    struct mesh_cfg_strings tags;
};

static const struct mesh_cfg_field small_fields[] = {
    {.key = "name",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct small, name),
     .flags = MESH_CFG_REQUIRED | MESH_CFG_SECRET},
    {.key = "n", .type = MESH_CFG_INT, MESH_CFG_FIELD(struct small, n), .min = -5, .max = 5},
    {.key = "tags", .type = MESH_CFG_STRINGS, MESH_CFG_FIELD(struct small, tags), .max = 2},
    {0},
};

static const struct mesh_cfg_schema small_schema = {sizeof(struct small), small_fields, NULL};

static void test_cfg_engine(void **state)
{
    (void)state;
    struct mesh_cfg_errors errors = {0};
    struct mesh_cfg_ctx ctx;
    struct small s;
    json_t *j = json_loads("{\"name\": \"x\", \"n\": -5, \"tags\": [\"a\", \"b\"], \"weird "
                           "key\": 1}",
                           0, NULL);
    mesh_cfg_ctx_init(&ctx, "f.json", &errors);
    assert_int_equal(mesh_cfg_defaults(&small_schema, &s), 0);
    assert_int_equal(mesh_cfg_decode(&ctx, &small_schema, j, &s), -EINVAL);
    assert_int_equal(errors.n, 1);
    assert_string_equal(errors.v[0], "f.json: $[\"weird key\"]: unknown key 'weird key'");
    assert_int_equal(s.n, -5);
    assert_int_equal(s.tags.n, 2);
    json_t *enc = mesh_cfg_encode(&small_schema, &s);
    assert_string_equal(json_string_value(json_object_get(enc, "name")), "<redacted>");
    json_decref(enc);
    mesh_cfg_free(&small_schema, &s);
    json_decref(j);
    mesh_cfg_errors_done(&errors);

    j = json_loads("{\"tags\": [\"a\", \"b\", \"c\"], \"n\": 6}", 0, NULL);
    mesh_cfg_ctx_init(&ctx, NULL, &errors);
    mesh_cfg_defaults(&small_schema, &s);
    mesh_cfg_decode(&ctx, &small_schema, j, &s);
    char *all = mesh_cfg_errors_join(&errors);
    assert_contains(all, "$.name: required key is missing");
    assert_contains(all, "$.n: expected an integer from -5 to 5, got 6");
    assert_contains(all, "$.tags: expected at most 2 items, got 3");
    mesh_free(all);
    mesh_cfg_free(&small_schema, &s);
    json_decref(j);
    mesh_cfg_errors_done(&errors);
}

/* A typed array of objects, as resources hold their rules: items and count apart. */
struct holder {
    struct small *items;
    size_t n_items;
    struct small *other; /* absent in the documents below */
    size_t n_other;
};

static const struct mesh_cfg_field holder_fields[] = {
    {.key = "items",
     MESH_CFG_ARRAY_OF(struct holder, items, n_items),
     .schema = &small_schema,
     .max = 3},
    {.key = "other", MESH_CFG_ARRAY_OF(struct holder, other, n_other), .schema = &small_schema},
    {0},
};

static const struct mesh_cfg_schema holder_schema = {sizeof(struct holder), holder_fields, NULL};

static int holder_step(struct mesh_cfg_ctx *ctx, json_t *doc, void *data)
{
    return mesh_cfg_decode(ctx, &holder_schema, doc, data);
}

static int parse_holder(const char *text, struct mesh_cfg_errors *errors, struct holder *h)
{
    assert_int_equal(mesh_cfg_defaults(&holder_schema, h), 0);
    return mesh_cfg_parse_doc("h.json", text, strlen(text), errors, holder_step, h);
}

static void test_cfg_arrays(void **state)
{
    (void)state;
    struct mesh_cfg_errors errors = {0};
    struct holder h;
    assert_int_equal(parse_holder("{\"items\": [{\"name\": \"a\", \"n\": 1}, "
                                  "{\"name\": \"b\"}]}",
                                  &errors, &h),
                     0);
    assert_int_equal(h.n_items, 2);
    assert_string_equal(h.items[1].name, "b");
    assert_int_equal(h.items[0].n, 1);
    assert_null(h.other); /* absent */
    json_t *enc = mesh_cfg_encode(&holder_schema, &h);
    assert_int_equal(json_array_size(json_object_get(enc, "items")), 2);
    json_decref(enc);
    mesh_cfg_free(&holder_schema, &h);
    assert_null(h.items);
    assert_int_equal(h.n_items, 0);

    /* Present and empty is not absent: the array is there, with no item. */
    assert_int_equal(parse_holder("{\"items\": []}", &errors, &h), 0);
    assert_non_null(h.items);
    assert_int_equal(h.n_items, 0);
    mesh_cfg_free(&holder_schema, &h);

    /* Errors name the item; what decoded before stays freeable. */
    assert_int_equal(parse_holder("{\"items\": [{\"name\": \"a\"}, {\"n\": 9}]}", &errors, &h),
                     -EINVAL);
    char *all = mesh_cfg_errors_join(&errors);
    assert_contains(all, "h.json: $.items[1].name: required key is missing");
    assert_contains(all, "h.json: $.items[1].n: expected an integer from -5 to 5, got 9");
    mesh_free(all);
    mesh_cfg_free(&holder_schema, &h);
    mesh_cfg_errors_done(&errors);
    assert_int_equal(parse_holder("{\"items\": [{}, {}, {}, {}]}", &errors, &h), -EINVAL);
    assert_contains(errors.v[0], "$.items: expected at most 3 items, got 4");
    mesh_cfg_free(&holder_schema, &h);
    mesh_cfg_errors_done(&errors);
    assert_int_equal(parse_holder("{\"items\": [", &errors, &h), -EINVAL);
    assert_int_equal(errors.n, 1);
    mesh_cfg_free(&holder_schema, &h);
    mesh_cfg_errors_done(&errors);

    /* Every allocation failing in turn: -ENOMEM or success, never a leak or a crash. */
    const char *doc = "{\"items\": [{\"name\": \"a\", \"tags\": [\"x\"]}, {\"name\": \"b\"}]}";
    for (long n = 0;; n++) {
        mesh_alloc_fail_after(n);
        int r = parse_holder(doc, &errors, &h);
        mesh_alloc_fail_after(-1);
        mesh_cfg_free(&holder_schema, &h);
        mesh_cfg_errors_done(&errors);
        if (r == 0)
            break;
        assert_true(r == -ENOMEM || r == -EINVAL);
    }
}

static int bind_dgram(const char *name, struct sockaddr_un *sun)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    strcpy(sun->sun_path, name);
    socklen_t len = sizeof(sa_family_t) + strlen(name) + (name[0] == '@' ? 0 : 1);
    if (name[0] == '@')
        sun->sun_path[0] = '\0';
    assert_int_equal(bind(fd, (struct sockaddr *)sun, len), 0);
    return fd;
}

static void test_sd_notify(void **state)
{
    (void)state;
    char buf[128];
    struct sockaddr_un sun;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(mesh_sd_notify("READY=1"), 0);

    char path[64];
    snprintf(path, sizeof(path), "/tmp/mesh-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = bind_dgram(path, &sun);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(mesh_sd_notify("READY=1\nSTATUS=ok"), 1);
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "READY=1\nSTATUS=ok");
    close(fd);
    unlink(path);

    char abstract[64];
    snprintf(abstract, sizeof(abstract), "@mesh-test-%d", (int)getpid());
    fd = bind_dgram(abstract, &sun);
    setenv("NOTIFY_SOCKET", abstract, 1);
    assert_int_equal(mesh_sd_notify("WATCHDOG=1"), 1);
    n = recv(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    assert_string_equal(buf, "WATCHDOG=1");
    close(fd);

    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(mesh_sd_notify("READY=1"), -EINVAL);
    unsetenv("NOTIFY_SOCKET");
}

static void test_sd_watchdog(void **state)
{
    (void)state;
    uint64_t usec = 0;
    char pid[32];
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(mesh_sd_watchdog(&usec), 0);
    setenv("WATCHDOG_USEC", "3000000", 1);
    assert_int_equal(mesh_sd_watchdog(&usec), 1);
    assert_int_equal(usec, 3000000);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(mesh_sd_watchdog(&usec), 1);
    setenv("WATCHDOG_PID", "1", 1);
    assert_int_equal(mesh_sd_watchdog(&usec), 0);
    setenv("WATCHDOG_PID", "x", 1);
    assert_int_equal(mesh_sd_watchdog(&usec), -EINVAL);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "0", 1);
    assert_int_equal(mesh_sd_watchdog(&usec), -EINVAL);
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_durations),  UNIT_TEST(test_suggest),      UNIT_TEST(test_parse_u64),
        UNIT_TEST(test_buf),        UNIT_TEST(test_hmap),         UNIT_TEST(test_addr),
        UNIT_TEST(test_labels),     UNIT_TEST(test_atomic_write), UNIT_TEST(test_cfg_engine),
        UNIT_TEST(test_cfg_arrays), UNIT_TEST(test_sd_notify),    UNIT_TEST(test_sd_watchdog),
        UNIT_TEST(test_atoms),      UNIT_TEST(test_ipport),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
