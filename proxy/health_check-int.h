/*
 * Active TCP health checks, on the main loop: every interval, a connect to each endpoint of
 * each destination whose policy asks for checks, with a timeout. healthy_threshold passes
 * in a row mark an endpoint healthy again, unhealthy_threshold failures in a row mark it
 * unhealthy (no new connections). Endpoints start healthy, so a restart sends traffic at
 * once. Verdicts land in the shared endpoint state that workers read.
 */
#ifndef MESH_HEALTH_CHECK_H
#define MESH_HEALTH_CHECK_H

#include <uv.h>

#include "proxy/proxy-int.h"

struct mesh_health_checker;

int mesh_health_checker_new(uv_loop_t *loop, struct mesh_proxy_shared *shared,
                            struct mesh_health_checker **ret);
/* Checks what `snap` asks for from now on (main loop). Returns 0 or -ENOMEM. */
int mesh_health_checker_update(struct mesh_health_checker *hc,
                               const struct mesh_proxy_snapshot *snap);
/* Stops; done(data) once every probe in flight has finished. */
void mesh_health_checker_close(struct mesh_health_checker *hc, void (*done)(void *data),
                               void *data);
uint64_t mesh_health_checker_probes(const struct mesh_health_checker *hc);

/* "HTTP/1.1 200 ...": the status once the status line is in, -EAGAIN before, or -EINVAL. */
int mesh_health_status_of(const char *b, size_t n);

/* Whether a health query's target is in the one plain form health_serve.c sends on: a path
 * of [A-Za-z0-9-._~/] with no dot segment and no "//", and an optional query of those and
 * [=&%+,]: nothing for normalization to change, so that deny rules see what the workload
 * will. */
bool mesh_health_plain_target(const char *s, size_t n);

struct mesh_worker;
struct mesh_io;
/*
 * health_serve.c, on a worker: answers the health query of another agent on io, an mTLS
 * connection that agreed on ALPN "mesh-health" (taking io), by checking the workload its
 * SNI names. Closes every query in progress with close_all.
 */
void mesh_health_serve(struct mesh_worker *w, struct mesh_io *io);
void mesh_health_serve_close_all(struct mesh_worker *w);

#endif
