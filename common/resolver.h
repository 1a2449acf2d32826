/*
 * Host name resolution on a libuv loop, by c-ares (>= 1.16; Debian 12 ships 1.18.1): the
 * resolver's sockets are watched with uv_poll and its timeouts run on a uv_timer, so nothing
 * blocks the loop, and every answer carries the lowest TTL of its records (ares_getaddrinfo
 * fills ai_ttl; getaddrinfo(3) has no TTL). Both A and AAAA are asked for; every address of
 * the answer is returned.
 *
 * Name servers are those of /etc/resolv.conf, and /etc/hosts is consulted first, as c-ares
 * reads them (a hosts-file answer has TTL 0), unless `servers` names others.
 *
 * Lifecycle: new -> query* -> close(done). Callbacks run on the resolver's loop. One owner.
 */
#ifndef MESH_RESOLVER_H
#define MESH_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/addr.h"

#define MESH_RESOLVER_ADDRS_MAX 64 /* addresses kept of one answer */

struct mesh_resolver;
struct mesh_resolver_query;

struct mesh_resolver_options {
    const char *servers; /* "ip[:port],[ip6]:port,...", or NULL: /etc/resolv.conf */
    int timeout_ms;      /* per try; 0: 2000 */
    int tries;           /* 0: 2 */
};

/*
 * The result of one query. On success (status 0) `addrs` (ports 0, sorted, without
 * duplicates) and `ttl` (seconds) are set; `n` may be 0 only when status is not 0. On
 * failure status is a negative errno (-ENOENT: no such name or no address; -ETIMEDOUT;
 * -EAGAIN: the server failed or refused; -ECANCELED: the resolver closes; -EIO otherwise)
 * and `why` is c-ares' message. Borrowed for the call.
 */
struct mesh_resolver_answer {
    int status;
    const char *why;
    const struct mesh_ipport *addrs;
    size_t n;
    uint32_t ttl;
};

typedef void (*mesh_resolver_cb)(const struct mesh_resolver_answer *a, void *data);

/* Creates a resolver on `loop`. Returns 0, -EINVAL (bad servers) or -ENOMEM. */
int mesh_resolver_new(uv_loop_t *loop, const struct mesh_resolver_options *o,
                      struct mesh_resolver **ret);
/*
 * Starts resolving `name`; `cb` runs once, later, on the loop (never from inside this call),
 * unless the query is cancelled first. *ret (optional) is the query's handle, valid until cb
 * runs or it is cancelled. Returns 0 or -ENOMEM.
 */
int mesh_resolver_query(struct mesh_resolver *r, const char *name, mesh_resolver_cb cb, void *data,
                        struct mesh_resolver_query **ret);
/*
 * Sends a DNS message as it is (`len` bytes, copied) to the name servers, by UDP and, when
 * the answer comes back truncated, again by TCP, as c-ares does. `cb` runs once, later, on
 * the loop, unless the query is cancelled first: with status 0 and the whole answer (its ID
 * is c-ares' own, not the message's; borrowed for the call), or a negative errno as for
 * mesh_resolver_query (-EAGAIN when every server failed or refused) and no message.
 * Returns 0, -EINVAL (not a message's size) or -ENOMEM.
 */
typedef void (*mesh_resolver_raw_cb)(int status, const uint8_t *msg, size_t len, void *data);
int mesh_resolver_send(struct mesh_resolver *r, const uint8_t *msg, size_t len,
                       mesh_resolver_raw_cb cb, void *data, struct mesh_resolver_query **ret);
/* Its callback will not run. The query's memory goes when c-ares lets go of it. */
void mesh_resolver_cancel(struct mesh_resolver_query *q);
/*
 * The name servers queries go to, as c-ares holds them (the configured ones, or those of
 * /etc/resolv.conf): up to `cap` into ret (port 53 where none was given). Returns how many
 * there are (may exceed cap) or -ENOMEM.
 */
int mesh_resolver_servers(struct mesh_resolver *r, struct mesh_addr *ret, size_t cap);
/*
 * Cancels every query (their callbacks run with -ECANCELED unless cancelled) and closes the
 * handles; `done` runs on the loop once all are closed, and the resolver is then freed.
 */
void mesh_resolver_close(struct mesh_resolver *r, void (*done)(void *data), void *data);

/*
 * Checks one name server as the config names it: an IP literal, "ip:port" or "[ip6]:port".
 * Returns NULL, or why not (a constant string); the shape of a config `.check`.
 */
const char *mesh_resolver_check_server(const char *s);

#endif
