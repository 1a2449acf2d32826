/*
 * The agent's private parts, shared by the files that each do one of its jobs: agent.c
 * (lifecycle), agent_registries.c (the registry sink and slots), agent_dataplane.c (proxy
 * updates), agent_controller.c (identity, controller watch, reports and membership),
 * agent_reload.c, agent_status.c (introspection), local_state.c and readiness.c (what
 * READY=1 and /readyz wait for, the status line).
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
    struct mesh_hosts *hosts; /* host-name endpoints (agent/hosts.h) */
    struct mesh_proxy *proxy;
    struct mesh_trace_exporter *tracer; /* NULL: tracing off (agent/trace_export.h) */
    struct mesh_resources *resources;
    struct mesh_certs *certs;     /* NULL: identity.mode "none" */
    struct mesh_ctl_watch *watch; /* resources from the controller (controller mode) */
    struct mesh_ctl_report *report;
    struct mesh_local_health *local_health; /* the workloads' health, for the reports */
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
    bool ready_flushed;         /* the data plane was built once the registries were in */
    char *locals_saved;         /* what local-services.json holds (as written) */
    struct mesh_agent_dns *dns; /* the DNS responder and virtual IPs; NULL: off */
    char *capture_applied;      /* the capture section whose rules are installed; NULL: none */
    uint64_t capture_version;   /* the catalog version whose endpoints they capture */
    uint64_t capture_addrs_sum; /* and a checksum of the ClusterIPs they capture */
};

struct mesh_certs;
struct mesh_ctl_report_ops;
struct mesh_ctl_watch;
struct mesh_http_options;

/* agent.c */
/* Wall-clock seconds, and such a time as ISO 8601 UTC. */
double mesh_agent__now(void);
void mesh_agent__format_time(double t, char *out, size_t n);
/* Logs every config error (and how many more were not kept). */
void mesh_agent__log_errors(const struct mesh_cfg_errors *e);
/* Log level and format: the command line's, else the config's. */
void mesh_agent__apply_log_settings(struct mesh_agent *a);

/* agent_tracing.c: the span exporter when an endpoint is set (start); on a reload, before
 * a->cfg becomes `next`: a new exporter when its part of the config changed, and the ratio. */
int mesh_agent__tracing_start(struct mesh_agent *a);
void mesh_agent__tracing_reload(struct mesh_agent *a, const struct mesh_agent_config *next);

/* agent_dns.c */
struct mesh_agent_dns;
struct mesh_buf;
struct mesh_vip_table;
/* Loads the virtual IPs and starts the DNS responder when dns_responder.enabled. Returns 0
 * or a negative errno / libuv error. */
int mesh_agent__dns_start(struct mesh_agent *a);
/* The catalog changed: services get or lose their virtual IPs. */
void mesh_agent__dns_on_catalog_change(struct mesh_agent *a);
/* Saves the virtual IPs and closes the responder. */
void mesh_agent__dns_stop(struct mesh_agent *a);
void mesh_agent__dns_metrics(const struct mesh_agent *a, struct mesh_buf *b);
/* The virtual-IP table, or NULL when the responder is off. */
struct mesh_vip_table *mesh_agent__vips(const struct mesh_agent *a);

/* agent_dataplane.c */
/* Hands the data plane what the agent knows now (at once, or coalesced a little later). */
void mesh_agent__flush(struct mesh_agent *a);
void mesh_agent__schedule(struct mesh_agent *a);
/* The proxy's HTTP options from the config's proxy.http. */
struct mesh_http_options mesh_agent__http_options(const struct mesh_agent_http_config *h);

/* agent_capture.c: transparent capture (docs/capture.md) */
struct mesh_proxy_capture;
/* Installs the rules at start (replacing a crashed run's); with capture off, removes any
 * left behind. Returns 0 or -errno (a conflict: -EEXIST), logged. */
int mesh_agent__capture_start(struct mesh_agent *a);
/* After a data-plane update: the endpoints captured follow the catalog, the rules the config. */
void mesh_agent__capture_update(struct mesh_agent *a);
/* Removes the rules that fail open. */
void mesh_agent__capture_stop(struct mesh_agent *a);
/* What the proxy is told of the capture listeners. */
void mesh_agent__capture_inputs(const struct mesh_agent *a, struct mesh_proxy_capture *ret);
/* Frees what capture_inputs allocated, after the proxy's update. */
void mesh_agent__capture_inputs_done(struct mesh_proxy_capture *c);

/* agent_registries.c */
/* The catalog changed: keep it (last-known-good) and update the data plane. */
void mesh_agent__on_catalog_change(void *data);
/* A slot running rc's adapter (created, not started), with a reference on cfg. Returns 0
 * or -errno. */
int mesh_agent__slot_new(struct mesh_agent *a, struct mesh_agent_config *cfg,
                         const struct mesh_registry_config *rc, struct slot **ret);
/* Stops the adapter; the slot frees itself once it has stopped. */
void mesh_agent__slot_stop(struct slot *s);
/* Creates a->hosts from the config's "dns" section (agent_registries.c). */
int mesh_agent__hosts_new(struct mesh_agent *a);
/* Hands a->hosts the host names' addresses the catalog holds (loaded from the LKG file). */
int mesh_agent__hosts_remember(struct mesh_agent *a);
void mesh_agent__slot_free(struct slot *s);
/* Tells the catalog its sources, in the slots' order. Returns 0 or -errno. */
int mesh_agent__set_catalog_sources(struct mesh_agent *a, struct slot **slots, size_t n);
/* The running slot with rc's name, or -1. */
int mesh_agent__find_slot(const struct mesh_agent *a, const struct mesh_registry_config *rc);
/* s starts with the local services old knew of (see agent_registries.c). */
void mesh_agent__inherit_locals(struct slot *s, const struct slot *old);

/* agent_controller.c */
extern const struct mesh_ctl_report_ops mesh_agent__report_ops;
/* The certificate manager the config asks for (NULL for none). Returns 0 or -errno. */
int mesh_agent__make_certs(struct mesh_agent *a, const struct mesh_agent_config *cfg,
                           struct mesh_certs **ret);
/* The controller's resources, in controller mode (else NULL). Returns 0 or -errno. */
int mesh_agent__make_watch(struct mesh_agent *a, const struct mesh_agent_config *cfg,
                           struct mesh_certs *certs, struct mesh_ctl_watch **ret);
/* Whether a reload leaves the certificate manager as it is. */
bool mesh_agent__identity_equal(const struct mesh_agent_config *a,
                                const struct mesh_agent_config *b);
/* The membership kept in the state dir, read back at start. */
void mesh_agent__load_members(struct mesh_agent *a);
/* Frees the keys of a membership map and empties it. */
void mesh_agent__clear_members(struct mesh_hmap *m);

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
