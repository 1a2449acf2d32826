/* Logging: one line per text entry whatever the strings hold; message ids and fields. */
#define MESH_LOG_MODULE "test"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sd.h"
#include "tests/unit/unit.h"

/* What the code under test writes to stderr goes to a file while `fn` runs. */
static char captured[16384];

static void capture_begin(int *saved, char *path, size_t n)
{
    snprintf(path, n, "/tmp/mesh-log-test-%d", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    *saved = dup(STDERR_FILENO);
    assert_true(*saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);
}

static void capture_end(int saved, const char *path)
{
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(captured, 1, sizeof(captured) - 1, f);
    captured[n] = '\0';
    fclose(f);
    unlink(path);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_text_entry_is_one_line(void **state)
{
    (void)state;
    int saved;
    char path[64];
    mesh_log_setup("mesh-test", MESH_LOG_INFO, MESH_LOG_FORMAT_TEXT);
    capture_begin(&saved, path, sizeof(path));
    const char *user = "evil\n2024-01-01T00:00:00.000Z error   [agent] forged\r\x1b[31m\ttab";
    mesh_log_id(MESH_LOG_WARNING, MESH_MSGID_REGISTRY_DOWN,
                MESH_LOG_FIELDS({"registry", "k\n8s"}, {"service", "shop/api"}),
                "registry down: '%s'", user);
    capture_end(saved, path);
    assert_int_equal(count_lines(captured), 1);
    assert_contains(captured, "registry down: 'evil\\n2024-01-01T00:00:00.000Z error   [agent] "
                              "forged\\r\\x1b[31m\\ttab'");
    assert_contains(captured, " registry=k\\n8s service=shop/api\n");
}

static void test_json_entry_carries_the_message_id(void **state)
{
    (void)state;
    int saved;
    char path[64];
    mesh_log_setup("mesh-test", MESH_LOG_INFO, MESH_LOG_FORMAT_JSON);
    capture_begin(&saved, path, sizeof(path));
    mesh_log_id(MESH_LOG_NOTICE, MESH_MSGID_RELIST, MESH_LOG_FIELDS({"registry", "k8s"}),
                "listing again:\n%s", "410");
    mesh_log_info("no id here");
    capture_end(saved, path);
    assert_int_equal(count_lines(captured), 2);
    assert_contains(captured, "\"msg\":\"listing again:\\n410\",\"message_id\":\"" MESH_MSGID_RELIST
                              "\",\"registry\":\"k8s\"}\n");
    assert_true(strstr(strchr(captured, '\n') + 1, "message_id") == NULL);
    mesh_log_setup("mesh-test", MESH_LOG_INFO, MESH_LOG_FORMAT_TEXT);
}

static void test_journal_entry_fields(void **state)
{
    (void)state;
    static char sock_path[64];
    snprintf(sock_path, sizeof(sock_path), "/tmp/mesh-journal-test-%d.sock", (int)getpid());
    unlink(sock_path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    mesh_sd__set_journal_socket(sock_path);
    mesh_log_setup("mesh-test", MESH_LOG_INFO, MESH_LOG_FORMAT_JOURNAL);
    mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_CERT_FAILED, MESH_LOG_FIELDS({"service", "shop/api"}),
                "cannot issue %s", "x");
    char buf[8192];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_contains(buf, "MESSAGE=cannot issue x\n");
    assert_contains(buf, "PRIORITY=3\n");
    assert_contains(buf, "MESSAGE_ID=" MESH_MSGID_CERT_FAILED "\n");
    assert_contains(buf, "MESH_SERVICE=shop/api\n");
    assert_contains(buf, "SYSLOG_IDENTIFIER=mesh-test\n");
    close(fd);
    unlink(sock_path);
    mesh_sd__set_journal_socket(MESH_SD_JOURNAL_SOCKET);
    mesh_log_setup("mesh-test", MESH_LOG_INFO, MESH_LOG_FORMAT_TEXT);
}

/* Message ids are 128-bit: 32 lower-case hex digits, and no two alike. */
static void test_message_ids_are_well_formed(void **state)
{
    (void)state;
    const char *ids[] = {
        MESH_MSGID_START_FAILED,    MESH_MSGID_READY,        MESH_MSGID_RELOAD_FAILED,
        MESH_MSGID_LISTENER_FAILED, MESH_MSGID_RELIST,       MESH_MSGID_REGISTRY_DOWN,
        MESH_MSGID_REGISTRY_UP,     MESH_MSGID_CERT_ISSUED,  MESH_MSGID_CERT_FAILED,
        MESH_MSGID_CERT_EXPIRING,   MESH_MSGID_CERT_EXPIRED,
    };
    for (size_t i = 0; i < MESH_ARRAY_SIZE(ids); i++) {
        assert_int_equal(strlen(ids[i]), 32);
        assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]);
    }
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_text_entry_is_one_line),
        UNIT_TEST(test_json_entry_carries_the_message_id),
        UNIT_TEST(test_journal_entry_fields),
        UNIT_TEST(test_message_ids_are_well_formed),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
