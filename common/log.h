/*
 * Logging: mesh_log_<level>(fmt, ...) with printf checking. Each .c file defines
 * MESH_LOG_MODULE before including this header; it names the module in every line.
 *
 * Three outputs: text lines on stderr (default), JSON lines on stderr, or native journald
 * entries (PRIORITY, MESSAGE, CODE_*, SYSLOG_IDENTIFIER, MESH_MODULE, MESSAGE_ID and
 * MESH_<FIELD>) when running under systemd with stderr connected to the journal
 * (JOURNAL_STREAM). A text entry is always one line: control characters in the message
 * and in field values (a newline in a user's string) are escaped as \n, \t, \xNN.
 * Safe to call from any thread: each entry is written with one system call.
 *
 * Events operators alert on carry a message id (common/msgid.h) and the fields that say
 * where they happened, "registry" and "service" (journald: MESH_REGISTRY, MESH_SERVICE):
 *
 *   mesh_log_id(MESH_LOG_WARNING, MESH_MSGID_REGISTRY_DOWN,
 *               MESH_LOG_FIELDS({"registry", name}), "registry '%s' is down: %s", name, why);
 */
#ifndef MESH_LOG_H
#define MESH_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

#include "common/macros.h"
#include "common/msgid.h"

/* Values are syslog priorities, as journald's PRIORITY field wants them. */
enum mesh_log_level {
    MESH_LOG_ERROR = 3,
    MESH_LOG_WARNING = 4,
    MESH_LOG_NOTICE = 5,
    MESH_LOG_INFO = 6,
    MESH_LOG_DEBUG = 7,
};

enum mesh_log_format {
    MESH_LOG_FORMAT_TEXT,
    MESH_LOG_FORMAT_JSON,
    MESH_LOG_FORMAT_JOURNAL,
};

/* A structured field. Keys are lower_snake_case; journald gets them as MESH_<KEY>. */
struct mesh_log_field {
    const char *key;
    const char *value;
};

/* A field list for one call: MESH_LOG_FIELDS({"registry", name}, {"service", svc}). */
#define MESH_LOG_FIELDS(...) ((const struct mesh_log_field[]){__VA_ARGS__, {NULL, NULL}})

extern atomic_int mesh_log__max_level;

/* `ident` must outlive logging (a string literal). */
void mesh_log_setup(const char *ident, enum mesh_log_level level, enum mesh_log_format format);
void mesh_log_set_level(enum mesh_log_level level);
void mesh_log_set_format(enum mesh_log_format format);
enum mesh_log_format mesh_log_get_format(void);
/* Parses "error", "warning"/"warn", "notice", "info", "debug". Returns 0 or -EINVAL. */
int mesh_log_level_parse(const char *s, enum mesh_log_level *ret_level);
/* Parses "text", "json", "journal". Returns 0 or -EINVAL. */
int mesh_log_format_parse(const char *s, enum mesh_log_format *ret_format);
const char *mesh_log_level_name(enum mesh_log_level level);
/* True when JOURNAL_STREAM names the device:inode of our stderr (see systemd.exec(5)). */
bool mesh_log_stderr_is_journal(void);

void mesh_log__write(int level, const char *module, const char *file, int line, const char *func,
                     const char *msgid, const struct mesh_log_field *fields, const char *fmt, ...)
    MESH_PRINTF(8, 9);

static inline bool mesh_log_enabled(int level)
{
    return level <= atomic_load_explicit(&mesh_log__max_level, memory_order_relaxed);
}

/*
 * `msgid` is NULL or a MESH_MSGID_* constant; `fields` is NULL or an array ended by a
 * {NULL, NULL} entry (MESH_LOG_FIELDS makes one).
 */
#define mesh_log_id(level, msgid, fields, ...)                                                     \
    do {                                                                                           \
        if (mesh_log_enabled(level))                                                               \
            mesh_log__write(level, MESH_LOG_MODULE, __FILE__, __LINE__, __func__, msgid, fields,   \
                            __VA_ARGS__);                                                          \
    } while (0)

#define mesh_log_fields(level, fields, ...) mesh_log_id(level, NULL, fields, __VA_ARGS__)
#define mesh_log(level, ...) mesh_log_id(level, NULL, NULL, __VA_ARGS__)
#define mesh_log_error(...) mesh_log(MESH_LOG_ERROR, __VA_ARGS__)
#define mesh_log_warn(...) mesh_log(MESH_LOG_WARNING, __VA_ARGS__)
#define mesh_log_notice(...) mesh_log(MESH_LOG_NOTICE, __VA_ARGS__)
#define mesh_log_info(...) mesh_log(MESH_LOG_INFO, __VA_ARGS__)
#define mesh_log_debug(...) mesh_log(MESH_LOG_DEBUG, __VA_ARGS__)

#endif
