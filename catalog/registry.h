/*
 * The registry adapter interface.
 *
 * An adapter learns services from one source (files, Consul, Kubernetes) and tells the
 * agent through its sink: the full endpoint set of a service whenever it changes, the list
 * of services running on this host, and the bounds of each full sync so that what was not
 * seen in a full sync can be removed (and nothing before). Adapters never touch the proxy
 * or the catalog directly.
 *
 * Adding a registry: one folder under registry-adapters/ that defines a
 * `const struct mesh_registry_ops`, and one line in agent/registries.c.
 *
 * Lifecycle: create -> start -> (refresh)* -> stop(done) -> destroy. Everything runs on
 * the agent's main loop, sink calls included.
 */
#ifndef MESH_REGISTRY_H
#define MESH_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "catalog/service.h"
#include "common/buf.h"
#include "common/cfg.h"

struct mesh_registry;

/* Facts about this host that adapters need (local services become endpoints here). */
struct mesh_registry_env {
    const char *node_name;
    bool node_name_guessed;   /* node_name is the hostname, not a configured name */
    const char *zone;         /* may be "" */
    const char *node_address; /* IP that other hosts reach; may be "" */
    const char *trust_domain;
    uint16_t mesh_port; /* this agent's inbound mTLS port; 0: no mTLS */
};

/* One entry of "registries" in agent.json: the shared keys plus the adapter's own. */
struct mesh_registry_config {
    char *type;
    char *name;
    char *namespace; /* for sources without namespaces */
    bool merge;      /* unite with other registries' endpoints of the same service */
    const struct mesh_registry_ops *ops;
    void *adapter; /* decoded with ops->config_schema */
};

struct mesh_registry_sink {
    void *data;
    /* Replaces all that `r` says about one service; no endpoints removes it. */
    void (*set_service)(void *data, struct mesh_registry *r, const struct mesh_service_update *u);
    /* Replaces the services `r` says run on this host. */
    void (*set_local)(void *data, struct mesh_registry *r, const struct mesh_local_service *v,
                      size_t n);
    /* A full sync starts; services of `r` not set before sync_end are then removed. */
    void (*sync_begin)(void *data, struct mesh_registry *r);
    void (*sync_end)(void *data, struct mesh_registry *r);
    /* A problem worth counting and showing (the adapter keeps its last good state). */
    void (*error)(void *data, struct mesh_registry *r, const char *message);
    /* Optional: what the adapter's own address lookups answer changed (the kubernetes one:
     * its Services' ClusterIPs, this node's pods' identities, k8s_addrs.h), with no change
     * of a service the catalog would see. */
    void (*addresses)(void *data, struct mesh_registry *r);
};

typedef void (*mesh_registry_stopped_cb)(struct mesh_registry *r, void *data);

struct mesh_registry_ops {
    const char *type;
    /* Keys of this adapter in a registries[] entry, decoded into cfg->adapter. */
    const struct mesh_cfg_schema *config_schema;
    /*
     * Creates the adapter. `cfg` and `env` must outlive it (the agent config owns them).
     * Returns 0 or a negative errno.
     */
    int (*create)(uv_loop_t *loop, const struct mesh_registry_config *cfg,
                  const struct mesh_registry_env *env, const struct mesh_registry_sink *sink,
                  struct mesh_registry **ret);
    /*
     * Checks what the adapter would read at start, without a loop (mesh-agent validate):
     * adds every problem to `errors`. Optional.
     */
    void (*validate)(const struct mesh_registry_config *cfg, const struct mesh_registry_env *env,
                     struct mesh_cfg_errors *errors);
    /* Starts watching. The first full sync is reported through sync_end. */
    int (*start)(struct mesh_registry *r);
    /* Re-reads the source now (SIGHUP). Optional. */
    void (*refresh)(struct mesh_registry *r);
    /* Stops; `done` runs on the loop once every handle is closed. */
    void (*stop)(struct mesh_registry *r, mesh_registry_stopped_cb done, void *data);
    void (*destroy)(struct mesh_registry *r);
    /*
     * The services whose workloads run on this host, as every registry together reports
     * them (borrowed for the call), whenever they change; for adapters that publish them
     * (Consul registration). Optional.
     */
    void (*local_services)(struct mesh_registry *r, const struct mesh_local_service *const *v,
                           size_t n);
    /* Adds adapter-specific status fields to `out`. Optional. */
    void (*status)(struct mesh_registry *r, json_t *out);
    /*
     * Appends adapter-specific metric families, called once for all adapters of this type
     * so that each family's samples stay together, as the text format requires. Optional.
     */
    void (*metrics)(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b);
};

/* The base every adapter embeds first. */
struct mesh_registry {
    const struct mesh_registry_ops *ops;
    const struct mesh_registry_config *cfg;
    const struct mesh_registry_env *env;
    struct mesh_registry_sink sink;
    uv_loop_t *loop;
};

/* Fills the base; adapters call it from create. */
void mesh_registry_init(struct mesh_registry *r, const struct mesh_registry_ops *ops,
                        uv_loop_t *loop, const struct mesh_registry_config *cfg,
                        const struct mesh_registry_env *env, const struct mesh_registry_sink *sink);

/*
 * For adapters of remote sources: the last problem, logged once while it lasts (a source
 * that keeps failing the same way is news once), shown by status, and counted through the
 * sink every time. `problem` is the adapter's (mesh_free it).
 */
void mesh_registry_problem(struct mesh_registry *r, char **problem, const char *msg);
/* The source answered well: logs "`what` again" once after a problem and forgets it.
 * Returns the time now, in seconds since the epoch (for "last success" figures). */
double mesh_registry_recovered(struct mesh_registry *r, char **problem, const char *what);

/* Wrappers that treat missing optional ops as no-ops. */
void mesh_registry_refresh(struct mesh_registry *r);
void mesh_registry_status(struct mesh_registry *r, json_t *out);
void mesh_registry_local_services(struct mesh_registry *r,
                                  const struct mesh_local_service *const *v, size_t n);

#endif
