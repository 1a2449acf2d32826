/*
 * Endpoints given by host name: the agent's step between the registries and the catalog.
 *
 * A registry reports an endpoint whose address is a name (service files, Consul) with
 * `host` set and no address. Before the update reaches the catalog, it is expanded here: one
 * endpoint per address of the name's last good answer (A and AAAA), with the same port,
 * labels, weight and health, each keeping `host`. The catalog, the last-known-good file and
 * the proxy so see addresses only, and a name that never resolved contributes no endpoints.
 *
 * Each name is resolved by common/resolver (c-ares on the loop) when first used, then again
 * when its answer's TTL runs out, clamped to [MESH_HOSTS_TTL_MIN_S, MESH_HOSTS_TTL_MAX_S].
 * A failed resolution keeps the last good answer, logs a warning when the name starts (and
 * an info line when it stops) failing, is counted in mesh_dns_resolutions_total and shown
 * in /v1/status; it is retried with backoff from 1 s to MESH_HOSTS_RETRY_MAX_S. When an
 * answer changes, every service using the name is expanded again and handed to `apply`.
 *
 * Main loop only. Lifecycle: new -> set_service/sync_* /forget* -> close(done).
 */
#ifndef MESH_AGENT_HOSTS_H
#define MESH_AGENT_HOSTS_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

#include "catalog/service.h"
#include "common/buf.h"
#include "common/resolver.h"

#define MESH_HOSTS_TTL_MIN_S 1     /* a TTL of 0 (the hosts file) or 1 s: ask again in 1 s */
#define MESH_HOSTS_TTL_MAX_S 300   /* ask again at least every 5 minutes */
#define MESH_HOSTS_RETRY_MAX_S 30  /* the longest wait after failures */
#define MESH_HOSTS_NAMES_MAX 10000 /* names in use at once */
#define MESH_HOSTS_REMEMBER_S 60   /* how long a remembered answer waits for a registry */

struct mesh_hosts;

/* Hands an expanded update to the catalog for registry `source`; returns what it returned. */
typedef int (*mesh_hosts_apply_cb)(void *data, const char *source,
                                   const struct mesh_service_update *u);

/* `o` is read during the call. Returns 0, -EINVAL (bad servers) or -ENOMEM. */
int mesh_hosts_new(uv_loop_t *loop, const struct mesh_resolver_options *o,
                   mesh_hosts_apply_cb apply, void *data, struct mesh_hosts **ret);
/*
 * What registry `owner` (an opaque key: the reporting slot) under name `source` says about
 * one service. With no names in it, it goes to `apply` as it is; with names, a copy is kept
 * and the expansion goes to `apply`, now and whenever a name's answer changes. Returns what
 * apply returned, or -ENOMEM.
 */
int mesh_hosts_set_service(struct mesh_hosts *h, const void *owner, const char *source,
                           const struct mesh_service_update *u);
/* A full sync of `owner` starts / ends: services it did not set in between are forgotten. */
void mesh_hosts_sync_begin(struct mesh_hosts *h, const void *owner);
void mesh_hosts_sync_end(struct mesh_hosts *h, const void *owner);
/*
 * Remembers address `addr` (its port ignored) of host `name` (an atom), as the last-known-
 * good file has it, before the registries report: a name given again is expanded with what
 * it resolved to before the restart until it is answered anew (and kept if that fails). A
 * name no registry gives within MESH_HOSTS_REMEMBER_S is forgotten. Returns 0 or -ENOMEM.
 */
int mesh_hosts_remember(struct mesh_hosts *h, const char *name, const struct mesh_ipport *addr);
/* Forgets everything `owner` set (it stops). */
void mesh_hosts_forget(struct mesh_hosts *h, const void *owner);

/* {"servers": ..., "names": [{"name", "state", "addresses", "ttl", "error", ...}]} */
json_t *mesh_hosts_status(const struct mesh_hosts *h);
/* mesh_dns_resolutions_total{result}, mesh_dns_names{state}. */
void mesh_hosts_metrics(const struct mesh_hosts *h, struct mesh_buf *b);

/* Stops resolving; `done` runs on the loop when every handle is closed. Accepts NULL. */
void mesh_hosts_close(struct mesh_hosts *h, void (*done)(void *data), void *data);

#endif
