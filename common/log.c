#define MESH_LOG_MODULE "log"

#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/sd.h"

atomic_int mesh_log__max_level = MESH_LOG_INFO;
static atomic_int log_format = MESH_LOG_FORMAT_TEXT;
static const char *log_ident = "mesh";

/* Entries are formatted on the stack; longer messages are truncated, never allocated. */
#define LOG_LINE_MAX 8192
#define LOG_FIELDS_MAX 16

static const char *const level_names[] = {
    [MESH_LOG_ERROR] = "error", [MESH_LOG_WARNING] = "warning", [MESH_LOG_NOTICE] = "notice",
    [MESH_LOG_INFO] = "info",   [MESH_LOG_DEBUG] = "debug",
};

void mesh_log_setup(const char *ident, enum mesh_log_level level, enum mesh_log_format format)
{
    log_ident = ident;
    mesh_log_set_level(level);
    mesh_log_set_format(format);
}

void mesh_log_set_level(enum mesh_log_level level)
{
    atomic_store(&mesh_log__max_level, (int)level);
}

void mesh_log_set_format(enum mesh_log_format format)
{
    atomic_store(&log_format, (int)format);
}

enum mesh_log_format mesh_log_get_format(void)
{
    return (enum mesh_log_format)atomic_load(&log_format);
}

const char *mesh_log_level_name(enum mesh_log_level level)
{
    if (level < MESH_LOG_ERROR || level > MESH_LOG_DEBUG)
        return "unknown";
    return level_names[level];
}

int mesh_log_level_parse(const char *s, enum mesh_log_level *ret_level)
{
    for (int l = MESH_LOG_ERROR; l <= MESH_LOG_DEBUG; l++) {
        if (strcasecmp(s, level_names[l]) == 0) {
            *ret_level = (enum mesh_log_level)l;
            return 0;
        }
    }
    if (strcasecmp(s, "warn") == 0) {
        *ret_level = MESH_LOG_WARNING;
        return 0;
    }
    return -EINVAL;
}

int mesh_log_format_parse(const char *s, enum mesh_log_format *ret_format)
{
    static const char *const names[] = {"text", "json", "journal"};
    for (size_t i = 0; i < MESH_ARRAY_SIZE(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *ret_format = (enum mesh_log_format)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool mesh_log_stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
        return false;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static void format_time(char *out, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/*
 * Appends `s` to a text line with control characters escaped, so that an entry never
 * spans two lines whatever a user's string holds: \n, \r, \t, and \xNN for the others.
 */
static void append_escaped(struct mesh_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = s;
    for (const char *c = s;; c++) {
        unsigned char ch = (unsigned char)*c;
        if (ch >= 0x20 && ch != 0x7f)
            continue;
        mesh_buf_append(b, run, (size_t)(c - run));
        if (!ch)
            return;
        char esc[4] = {'\\', 0, 0, 0};
        size_t n = 2;
        if (ch == '\n' || ch == '\r' || ch == '\t') {
            esc[1] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
        } else {
            esc[1] = 'x';
            esc[2] = hex[ch >> 4];
            esc[3] = hex[ch & 15];
            n = 4;
        }
        mesh_buf_append(b, esc, n);
        run = c + 1;
    }
}

static void write_journal(int level, const char *module, const char *file, int line,
                          const char *func, const char *msgid, const struct mesh_log_field *fields,
                          const char *msg)
{
    char prio[4], lines[16], keys[LOG_FIELDS_MAX][64];
    struct mesh_sd_field f[9 + LOG_FIELDS_MAX];
    size_t n = 0;
    snprintf(prio, sizeof(prio), "%d", level);
    snprintf(lines, sizeof(lines), "%d", line);
#define ADD(k, v) (f[n++] = (struct mesh_sd_field){k, v, strlen(v)})
    ADD("MESSAGE", msg);
    ADD("PRIORITY", prio);
    ADD("SYSLOG_IDENTIFIER", log_ident);
    ADD("MESH_MODULE", module);
    ADD("CODE_FILE", file);
    ADD("CODE_LINE", lines);
    ADD("CODE_FUNC", func);
    if (msgid)
        ADD("MESSAGE_ID", msgid);
    for (size_t i = 0; fields && fields[i].key && i < LOG_FIELDS_MAX; i++) {
        /* Our keys are lower_snake_case; journal fields are MESH_<KEY> in upper case. */
        size_t k = (size_t)snprintf(keys[i], sizeof(keys[i]), "MESH_");
        for (const char *c = fields[i].key; *c && k < sizeof(keys[i]) - 1; c++)
            keys[i][k++] = (*c >= 'a' && *c <= 'z') ? (char)(*c - 'a' + 'A') : *c;
        keys[i][k] = '\0';
        ADD(keys[i], fields[i].value ? fields[i].value : "");
    }
#undef ADD
    if (mesh_sd_journal_send(f, n) < 0) {
        /* The journal is gone (or was never there): do not lose the entry. */
        char out[LOG_LINE_MAX + 64];
        struct mesh_buf b;
        mesh_buf_init_fixed(&b, out, sizeof(out) - 1);
        mesh_buf_appendf(&b, "<%d>%s: ", level, module);
        append_escaped(&b, msg);
        out[b.len] = '\n';
        write_all(out, b.len + 1);
    }
}

void mesh_log__write(int level, const char *module, const char *file, int line, const char *func,
                     const char *msgid, const struct mesh_log_field *fields, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    int format = atomic_load_explicit(&log_format, memory_order_relaxed);
    if (format == MESH_LOG_FORMAT_JOURNAL) {
        write_journal(level, module, file, line, func, msgid, fields, msg);
        return;
    }

    char ts[40];
    format_time(ts, sizeof(ts));
    /* A stack-backed buffer: the line is assembled without touching the heap. */
    char out[LOG_LINE_MAX + 1024];
    struct mesh_buf b;
    mesh_buf_init_fixed(&b, out, sizeof(out) - 1); /* keeps a byte for the newline */
    const char *lname = mesh_log_level_name((enum mesh_log_level)level);
    if (format == MESH_LOG_FORMAT_JSON) {
        mesh_buf_appendf(&b, "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":", ts,
                         lname, module);
        mesh_buf_append_json_str(&b, msg, strlen(msg));
        if (msgid)
            mesh_buf_appendf(&b, ",\"message_id\":\"%s\"", msgid);
        for (size_t i = 0; fields && fields[i].key; i++) {
            mesh_buf_appendf(&b, ",\"%s\":", fields[i].key);
            const char *v = fields[i].value ? fields[i].value : "";
            mesh_buf_append_json_str(&b, v, strlen(v));
        }
        mesh_buf_append(&b, "}", 1);
    } else {
        mesh_buf_appendf(&b, "%s %-7s [%s] ", ts, lname, module);
        append_escaped(&b, msg);
        for (size_t i = 0; fields && fields[i].key; i++) {
            mesh_buf_appendf(&b, " %s=", fields[i].key);
            append_escaped(&b, fields[i].value ? fields[i].value : "");
        }
    }
    /* The buffer may have refused the tail (over max); a truncated line still ends. */
    out[b.len] = '\n';
    write_all(out, b.len + 1);
}
