/*
 * The registry's parts shared by its files: catalog.c (checks, reports, leases, blocking
 * queries) and catalog_doc.c (the catalog kept up to date service by service, and the
 * answers built from it). Main loop only.
 */
#ifndef MESH_CONTROLLER_CATALOG_INT_H
#define MESH_CONTROLLER_CATALOG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/hmap.h"
#include "controller/catalog.h"

#define MESH_CTL_CATALOG_TEXTS 8 /* answers kept for the current index: one per "since" */

struct mesh_ctl_catalog_entry {
    char address[64];
    int inbound_port;
    char *zone; /* NULL: none */
    json_t *services;
    uint64_t seen_ms;
    bool lapsed; /* past its grace: its endpoints are unhealthy */
    char node[];
};

struct mesh_ctl_catalog_waiter {
    struct mesh_ctl_catalog_waiter *prev, *next;
    struct mesh_ctl_catalog *c;
    struct mesh_http_exchange *ex;
    uint64_t index; /* what the agent has */
    uv_timer_t timer;
};

struct mesh_ctl_catalog_text {
    char *text; /* the answer of the current index since `since` (0: the whole catalog) */
    size_t len;
    uint64_t since;
};

struct mesh_ctl_catalog {
    uv_loop_t *loop;
    struct mesh_ctl_catalog_options o;
    struct mesh_hmap nodes; /* name -> struct mesh_ctl_catalog_entry */
    uint64_t index;
    uint64_t changes;
    uint64_t warm_until; /* loop time: until then, queries of agents that knew one wait */
    uint64_t tick_ms, last_tick, judge_after; /* leases are judged after a stall again */
    uv_timer_t lease_timer, wake_timer;
    struct mesh_ctl_catalog_waiter *waiters;
    uint64_t parked;
    /*
     * The catalog as of built_index, and for each service the index of its last change, or
     * of its removal: what an answer "since N" holds. Deltas reach back to `floor`. Only
     * the services named in `dirty` are built again (from the nodes `by_service` lists), so
     * a change costs what it touches, not the whole mesh.
     */
    json_t *current;    /* "ns/name" -> service object */
    json_t *modified;   /* "ns/name" -> index */
    json_t *removed;    /* "ns/name" -> index */
    json_t *by_service; /* "ns/name" -> {node: true}: the nodes that report it */
    json_t *dirty;      /* "ns/name" -> true: to build again */
    uint64_t built_index, floor;
    bool reindex; /* noting a node's services failed: index every node again */
    struct mesh_ctl_catalog_text texts[MESH_CTL_CATALOG_TEXTS];
    uint64_t texts_index; /* the index the texts answer */
    size_t texts_next;    /* the slot taken next when all are used */
    int open_handles;
    bool closing;
};

/* Creates and frees the catalog's document state (current, modified, removed, ...).
 * Returns 0 or -ENOMEM. */
int mesh_ctl__catalog_doc_init(struct mesh_ctl_catalog *c);
void mesh_ctl__catalog_doc_done(struct mesh_ctl_catalog *c);
/*
 * A node's services take part in (`in`) or leave the catalog: the services it reports are
 * built again at the next answer. Called with the node's old services (in = false) before
 * they are replaced, and its new ones (in = true) after; with in = true alone when only its
 * health (a lapse) changed. Returns 0 or -ENOMEM.
 */
int mesh_ctl__catalog_node_index(struct mesh_ctl_catalog *c, const struct mesh_ctl_catalog_entry *e,
                                 bool in);
/*
 * The answer for an agent that has `since` (borrowed, valid until the next change):
 * {"index", "full": false, "services": [changed since], "removed": ["ns/name", ...]}, or the
 * whole catalog ("full": true) when it has none, one from before `floor` or from another
 * history. Returns 0 or -ENOMEM.
 */
int mesh_ctl__catalog_text(struct mesh_ctl_catalog *c, uint64_t since, const char **ret_text,
                           size_t *ret_len);

#endif
