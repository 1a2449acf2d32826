/*
 * systemd glue: sd_notify() messages (READY, RELOADING with MONOTONIC_USEC, STOPPING,
 * STATUS) and the watchdog, pinged from the event loop at half of WATCHDOG_USEC so that a
 * stuck loop gets the service restarted. Without NOTIFY_SOCKET every call is a no-op.
 */
#ifndef MESH_NOTIFY_H
#define MESH_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct mesh_notify {
    uv_timer_t watchdog;
    uint64_t interval_ms; /* 0: no watchdog */
    uint64_t pings;
};

/* Starts the watchdog timer when the service manager asked for one. Returns 0. */
int mesh_notify_init(uv_loop_t *loop, struct mesh_notify *n);
void mesh_notify_ready(const char *status);
void mesh_notify_reloading(void);
void mesh_notify_stopping(void);
void mesh_notify_status(const char *status);
/* Start-up failed: STATUS= says why, ERRNO= the error (a positive errno), as systemd
 * shows them in `systemctl status`. */
void mesh_notify_failed(int err, const char *status);
/* Closes the timer; the struct may be freed once done(handle) runs. */
void mesh_notify_close(struct mesh_notify *n, uv_close_cb done);

#endif
