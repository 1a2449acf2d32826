/*
 * The data plane's listening sockets, kept by the main loop: bound once per worker
 * (SO_REUSEPORT) and handed to the workers after the snapshot that routes them.
 *
 * A listener that cannot bind is reported (log with MESSAGE_ID, status, metrics,
 * readiness) and retried. A listener that moves — the same role (kind and description,
 * "shop/web -> shop/api") at a new address — and cannot bind its new address leaves the
 * old one serving in its place until it can: the caller then routes the old address.
 *
 * An update: mesh_listeners_prepare (mark, bind, stand in), build and post the snapshot,
 * mesh_listeners_commit (hand new sockets over, close what is no longer wanted).
 */
#ifndef MESH_PROXY_LISTENERS_H
#define MESH_PROXY_LISTENERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/addr.h"
#include "common/hmap.h"
#include "proxy/proxy-int.h"

struct mesh_worker;

struct mesh_listeners {
    struct mesh_hmap map; /* key -> struct lrec */
    size_t errors;        /* wanted and not bound */
    uint64_t last_retry;  /* loop ms */
    struct mesh_worker *workers;
    int n_workers;
    int backlog;
};

void mesh_listeners_init(struct mesh_listeners *ls, int backlog);
/* Once the workers run: where sockets go. */
void mesh_listeners_set_workers(struct mesh_listeners *ls, struct mesh_worker *workers, int n);
/* Closes what was never handed over and frees the records (the workers own the rest). */
void mesh_listeners_done(struct mesh_listeners *ls);

/* Marks what `wl` wants, binds what is new, and points each wanted listener that cannot
 * bind where it moved to at its old, still bound address (rewriting wl[k].key/addr). */
void mesh_listeners_prepare(struct mesh_listeners *ls, struct want_listener *wl, size_t n);
/* After the snapshot is posted: hands new sockets to the workers, closes the unwanted.
 * The caller wakes the workers. */
void mesh_listeners_commit(struct mesh_listeners *ls);
/* Retries failed listeners (at most every few seconds, at `now` loop ms); those `snap`
 * routes go to the workers at once. Returns how many bound (the caller wakes the workers
 * and makes an update for the others). */
size_t mesh_listeners_retry(struct mesh_listeners *ls, const struct mesh_proxy_snapshot *snap,
                            uint64_t now);

/* Whether a listener is bound and waits for an update to reach the workers. */
bool mesh_listeners_pending(const struct mesh_listeners *ls);
/* The state of the listener at `key`: true when bound; *ret_error its error or NULL. */
bool mesh_listeners_state(const struct mesh_listeners *ls, const char *key, const char **ret_error);
/* Appends to `list` the wanted listeners `snap` does not route (they cannot bind where
 * they moved to), as status objects. */
void mesh_listeners_status(const struct mesh_listeners *ls, const struct mesh_proxy_snapshot *snap,
                           json_t *list);
/* The first wanted listener that is not bound, described; false when none. */
bool mesh_listeners_problem(const struct mesh_listeners *ls, char *out, size_t n);
/* Whether nothing holds `a` now (it could be listened on). Returns 0 or -errno. */
int mesh_listeners_can_listen(const struct mesh_addr *a);

#endif
