/*
 * systemd's stable wire protocols, spoken without libsystemd (which would pull five more
 * libraries into every process): sd_notify(3) datagrams to $NOTIFY_SOCKET, the watchdog
 * settings of sd_watchdog_enabled(3), and journald's native protocol
 * (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/). See docs/systemd.md.
 *
 * All functions are thread-safe and never block.
 */
#ifndef MESH_SD_H
#define MESH_SD_H

#include <stddef.h>
#include <stdint.h>

/*
 * Sends `state` ("READY=1\nSTATUS=...") to $NOTIFY_SOCKET (a path, or "@name" in the
 * abstract namespace). Returns 1 when sent, 0 when there is no socket, or -errno.
 */
int mesh_sd_notify(const char *state);

/*
 * The watchdog interval the service manager asked for: returns 1 with *ret_usec set when
 * WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is this process), 0 when not, -EINVAL
 * when the variables are malformed.
 */
int mesh_sd_watchdog(uint64_t *ret_usec);

/* A journal field; the key is upper case [A-Z0-9_], the value any bytes. */
struct mesh_sd_field {
    const char *key;
    const char *value;
    size_t value_len;
};

/*
 * Sends one journal entry to journald's native socket. Values holding a newline use the
 * length-prefixed form. Returns 0 or -errno (the caller falls back to stderr).
 */
int mesh_sd_journal_send(const struct mesh_sd_field *fields, size_t n);

/* Where journald listens. */
#define MESH_SD_JOURNAL_SOCKET "/run/systemd/journal/socket"
/* For tests: sends journal entries to `path` instead (a string that outlives logging). */
void mesh_sd__set_journal_socket(const char *path);

#endif
