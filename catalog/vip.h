/*
 * Virtual IPs: one IPv4 and one IPv6 address per mesh service ("namespace/name"), drawn
 * from two configured ranges (default 240.240.0.0/16, as Istio's DNS proxy allocates, and
 * 2001:2::/48), looked up both ways: service -> addresses for the DNS responder, address ->
 * service for a captured connection's original destination.
 *
 * Stable: a service's first choice is a hash of its key, so a table rebuilt from nothing
 * gives mostly the same addresses; collisions take the next free one. The table is saved by
 * its owner (mesh_vip_encode) and read back at start (mesh_vip_load), which checks every
 * entry. A service that leaves the catalog keeps its addresses for `keep_ms`, so one that
 * flaps keeps them; after that they are free again.
 *
 * Changes (sync, load) are made on the main loop; lookups may come from any thread (a
 * read-write lock guards the table).
 */
#ifndef MESH_CATALOG_VIP_H
#define MESH_CATALOG_VIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/cfg.h"

#define MESH_VIP_DEFAULT_V4 "240.240.0.0/16"
#define MESH_VIP_DEFAULT_V6 "2001:2::/48"
#define MESH_VIP_FILE "vips.json"
#define MESH_VIP_FILE_MAX (64 * 1024 * 1024)
#define MESH_VIP_SERVICES_MAX 1000000

struct mesh_vip_table;
struct mesh_buf;

struct mesh_vip_options {
    const char *v4_range; /* "a.b.c.d/len", 8 <= len <= 30; NULL or "": the default */
    const char *v6_range; /* "x::/len", 8 <= len <= 126; NULL or "": the default */
    uint64_t keep_ms;     /* how long a vanished service keeps its addresses */
};

/* The addresses of one service; a family without one has family 0. */
struct mesh_vip_pair {
    struct mesh_ipport v4, v6;
};

/*
 * Checks a range as the config names it. Returns NULL, or why not (a constant string).
 * `family` is AF_INET or AF_INET6.
 */
const char *mesh_vip_check_range(const char *s, int family);

/* Creates an empty table. Returns 0, -EINVAL (a bad range) or -ENOMEM. */
int mesh_vip_table_new(const struct mesh_vip_options *o, struct mesh_vip_table **ret);
void mesh_vip_table_free(struct mesh_vip_table *t);

/*
 * Makes the table follow the services `keys` ("namespace/name", n of them): each gets its
 * addresses (kept if it had them); one missing since before now_ms - keep_ms loses them.
 * Returns 1 when the table changed (it should be saved), 0 when not, or -ENOMEM (the table
 * is then still consistent, some services without addresses).
 */
int mesh_vip_sync(struct mesh_vip_table *t, const char *const *keys, size_t n, uint64_t now_ms);

/* The addresses of service `key`. Returns 0 or -ENOENT. Any thread. */
int mesh_vip_lookup_service(struct mesh_vip_table *t, const char *key, struct mesh_vip_pair *ret);
/*
 * The service an address belongs to (the port is ignored): its key is copied into `ret_key`
 * (n bytes). Returns 0, -ENOENT, or -ENOSPC when n is too small. Any thread.
 */
int mesh_vip_lookup_addr(struct mesh_vip_table *t, const struct mesh_ipport *ip, char *ret_key,
                         size_t n);
/* True when `ip` lies in one of the table's ranges (whether allocated or not). */
bool mesh_vip_in_range(const struct mesh_vip_table *t, const struct mesh_ipport *ip);
/* Services with addresses, those kept after they vanished included. */
size_t mesh_vip_count(struct mesh_vip_table *t);
/* What the last sync could not do: a full range leaves services without an address. */
struct mesh_vip_stats {
    size_t unassigned[2]; /* services in the catalog without an IPv4 [0] / IPv6 [1] address */
    uint64_t probes;      /* addresses tried since the table was made (a measure of work) */
};
void mesh_vip_get_stats(struct mesh_vip_table *t, struct mesh_vip_stats *ret);

/*
 * Appends the table as the JSON document mesh_vip_load reads; errors sticky in b->err.
 * Times are wall-clock milliseconds (now_ms is the same clock as mesh_vip_sync's).
 */
void mesh_vip_encode(struct mesh_vip_table *t, struct mesh_buf *b);
/*
 * Replaces the table's entries with those of a document (`name` in messages), in one
 * critical section. Entries outside the ranges, duplicated, or for bad keys are errors
 * (in `errors`) and are dropped alone: the other services keep their addresses, and the next
 * sync gives the dropped ones new addresses. Returns the number of services loaded (errors
 * may have been added), -EINVAL when the document cannot be read at all (nothing loaded),
 * or -ENOMEM (nothing loaded).
 */
int mesh_vip_load(struct mesh_vip_table *t, const char *name, const char *data, size_t len,
                  struct mesh_cfg_errors *errors);

#endif
