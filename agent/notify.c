#define MESH_LOG_MODULE "systemd"

#include "agent/notify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/sd.h"

static void on_watchdog(uv_timer_t *t)
{
    struct mesh_notify *n = t->data;
    mesh_sd_notify("WATCHDOG=1");
    n->pings++;
}

int mesh_notify_init(uv_loop_t *loop, struct mesh_notify *n)
{
    uint64_t usec = 0;
    memset(n, 0, sizeof(*n));
    uv_timer_init(loop, &n->watchdog);
    n->watchdog.data = n;
    if (mesh_sd_watchdog(&usec) > 0) {
        n->interval_ms = usec / 2000;
        if (n->interval_ms == 0)
            n->interval_ms = 1;
        /* Ping at once: the first interval may be most of the budget already. */
        on_watchdog(&n->watchdog);
        uv_timer_start(&n->watchdog, on_watchdog, n->interval_ms, n->interval_ms);
        /* The timer must not keep the loop alive during shutdown on its own. */
        uv_unref((uv_handle_t *)&n->watchdog);
        mesh_log_info("watchdog enabled: pinging every %" PRIu64 " ms", n->interval_ms);
    }
    return 0;
}

/* Sends `prefix` and STATUS= with the status made one line (a newline starts a field). */
static void notify_with_status(const char *prefix, const char *status)
{
    char line[512], msg[1024];
    snprintf(line, sizeof(line), "%s", status ? status : "");
    for (char *p = line; *p; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }
    snprintf(msg, sizeof(msg), "%sSTATUS=%s", prefix, line);
    mesh_sd_notify(msg);
}

void mesh_notify_ready(const char *status)
{
    notify_with_status("READY=1\n", status);
}

void mesh_notify_reloading(void)
{
    struct timespec ts;
    char msg[128];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
             (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
    mesh_sd_notify(msg);
}

void mesh_notify_stopping(void)
{
    mesh_sd_notify("STOPPING=1");
}

void mesh_notify_status(const char *status)
{
    notify_with_status("", status);
}

void mesh_notify_failed(int err, const char *status)
{
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "ERRNO=%d\n", err > 0 ? err : EINVAL);
    notify_with_status(prefix, status);
}

void mesh_notify_close(struct mesh_notify *n, uv_close_cb done)
{
    uv_close((uv_handle_t *)&n->watchdog, done);
}
