/*
 * The agent's private parts, shared by agent.c (lifecycle, registries, reload,
 * introspection) and readiness.c (what READY=1 and /readyz wait for, the status line).
 */
#ifndef MESH_AGENT_INT_H
#define MESH_AGENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "agent/agent.h"
#include "agent/notify.h"
#include "common/hmap.h"

enum agent_state { AGENT_INIT, AGENT_STARTING, AGENT_READY, AGENT_STOPPING };

/* A running registry adapter and what the agent tracks about it. */
struct slot {
    struct mesh_agent *agent;
    struct mesh_registry *r;
    struct mesh_agent_config *cfg; /* the config r->cfg points into (a reference) */
    const struct mesh_registry_config *rc;
    bool stopping;
    bool synced;
    double last_sync;
    uint64_t syncs;
    uint64_t errors;
    char *last_error;
    struct mesh_local_service *locals;
    size_t n_locals;
};

struct mesh_agent {
    uv_loop_t *loop;
    enum agent_state state;
    struct mesh_agent_options opts;
    char *config_path; /* NULL: embedded defaults */
    struct mesh_agent_config *cfg;
    struct mesh_catalog *catalog;
    struct slot **slots;
    size_t n_slots;
    struct mesh_admin *admin;
    struct mesh_lkg *lkg;
    struct mesh_proxy *proxy;
    struct mesh_resources *resources;
    struct mesh_certs *certs;     /* NULL: identity.mode "none" */
    struct mesh_ctl_watch *watch; /* resources from the controller (controller mode) */
    struct mesh_ctl_report *report;
    struct mesh_http_client *ctl; /* calls to the controller (made for the first that needs it) */
    struct mesh_hmap members;     /* the controller's membership: IP -> mTLS port (keys owned) */
    uint64_t members_version;
    uv_timer_t update_timer; /* coalesces proxy updates (see mesh_agent__schedule) */
    bool update_pending;
    uint64_t update_cost_ns; /* how long the last snapshot took to build */
    uint64_t update_done_ms; /* when it was built (loop time) */
    struct mesh_notify notify;
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t sync_timer;
    bool sync_timed_out;
    double start_time;
    uint64_t reloads_ok;
    uint64_t reloads_failed;
    bool last_reload_ok;
    double last_reload_time;
    double last_reload_ok_time;
    char *last_reload_error;
    int exit_code;
    int lkg_loaded;
    bool ready_flushed; /* the data plane was built once the registries were in */
    char *locals_saved; /* what local-services.json holds (as written) */
};

/* Wall-clock seconds, and such a time as ISO 8601 UTC. */
double mesh_agent__now(void);
void mesh_agent__format_time(double t, char *out, size_t n);
/* Hands the data plane what the agent knows now (at once, or coalesced a little later). */
void mesh_agent__flush(struct mesh_agent *a);
void mesh_agent__schedule(struct mesh_agent *a);

/* local_state.c: this host's services kept in the state dir (and read back at start, for
 * registries that have not synced yet). */
void mesh_agent__save_locals(struct mesh_agent *a);
void mesh_agent__restore_locals(struct mesh_agent *a);

/* readiness.c */
/* The one-line summary for STATUS= and /v1/status. */
void mesh_agent__status_line(const struct mesh_agent *a, char *out, size_t n);
/* Sends READY=1 once every promise of readiness holds; else updates the status. */
void mesh_agent__maybe_ready(struct mesh_agent *a);
/* The registries' sync timeout: ready with what is known. */
void mesh_agent__on_sync_timeout(uv_timer_t *t);
/* The data plane took a snapshot or bound a listener that had failed. */
void mesh_agent__on_proxy_changed(void *data);

#endif
