/*
 * The responder's parts: deciding what a query gets (answer.c, no I/O, so that unit tests
 * and the fuzz target call it directly) and serving it over UDP and TCP (server.c, tcp.c).
 */
#ifndef MESH_DNS_INT_H
#define MESH_DNS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/vip.h"
#include "common/addr.h"
#include "common/dns_msg.h"
#include "common/resolver.h"
#include "dns/dns.h"

/* Which names are the mesh's. Strings borrowed. */
struct mesh_dns__names {
    const char *const *domains;
    size_t n_domains;
    const char *consul_domain;     /* NULL: none */
    const char *consul_datacenter; /* NULL: none */
    const char *consul_namespace;
    uint32_t ttl;
};

/*
 * The service a name means, if the mesh has it: fills *ret (a family may be missing) and
 * returns 0, or -ENOENT when no mesh service has that name.
 */
typedef int (*mesh_dns__lookup_fn)(void *data, const char *ns, const char *name,
                                   struct mesh_vip_pair *ret);

enum mesh_dns__action {
    MESH_DNS__MESH,    /* out holds the mesh's answer */
    MESH_DNS__FORWARD, /* send the query upstream */
    MESH_DNS__ERROR,   /* out holds FORMERR or NOTIMP */
    MESH_DNS__DROP,    /* no answer at all (not a query, or unreadable) */
};

/*
 * Decides what the query q[0..len) gets. Writes an answer into out (cap bytes, at least
 * 512) and its length into *ret_len for MESH and ERROR; fills *ret_msg with the parsed
 * query for MESH and FORWARD. *ret_why says why for ERROR and DROP.
 */
enum mesh_dns__action mesh_dns__handle(const struct mesh_dns__names *names,
                                       mesh_dns__lookup_fn lookup, void *data, const uint8_t *q,
                                       size_t len, uint8_t *out, size_t cap, size_t *ret_len,
                                       struct mesh_dns_msg *ret_msg, const char **ret_why);

/*
 * Matches a name (text, as mesh_dns_parse gives it) against the mesh's forms; on a match
 * copies the namespace and service (lowercased) into ns and name (64 bytes each) and
 * returns true.
 */
bool mesh_dns__match(const struct mesh_dns__names *names, const char *qname, char *ns, char *name);

/* Writes a reply with `rcode` to query q (its ID, flags and question if readable) into out;
 * returns its length (0 when q has no readable header). */
size_t mesh_dns__error_reply(const uint8_t *q, size_t len, const struct mesh_dns_msg *m,
                             bool question_ok, unsigned rcode, uint8_t *out, size_t cap);

/* ---- the running responder (server.c, tcp.c) ---- */

enum { DNS_INIT, DNS_RUNNING, DNS_CLOSING };

struct mesh_dns_conn;

/* A query sent upstream: the client's copy, and where the answer goes. */
struct mesh_dns__pending {
    struct mesh_dns *d;
    struct mesh_dns_conn *conn; /* TCP; NULL: UDP to `peer` */
    struct sockaddr_storage peer;
    struct mesh_resolver_query *q;
    uint8_t *query; /* the client's message */
    size_t len;
    uint16_t udp_limit;              /* the most a UDP answer may hold */
    uint16_t opt_size;               /* the OPT size to add back when cutting; 0: none */
    struct mesh_dns__pending **list; /* the list it is in */
    struct mesh_dns__pending *prev, *next;
};

#define MESH_DNS__TCP_PENDING_MAX 32 /* queries upstream per connection */

/* One TCP client: length-prefixed messages, several in flight, an idle timer. */
struct mesh_dns_conn {
    uv_tcp_t tcp;
    uv_timer_t idle;
    struct mesh_dns *d;
    int handles;
    bool closing;
    struct mesh_dns__pending *pending;
    int n_pending;
    size_t in_len;
    uint8_t in[2 + MESH_DNS_MSG_MAX];
    struct mesh_dns_conn *prev, *next;
};

struct mesh_dns {
    uv_loop_t *loop;
    int state;
    struct mesh_dns_options o;
    char **domains;
    struct mesh_dns__names names;
    struct mesh_addr listen;
    const struct mesh_catalog *catalog;
    struct mesh_vip_table *vips;
    struct mesh_resolver *resolver;
    uv_udp_t udp;
    uv_tcp_t tcp;
    unsigned handles;                      /* open handles, the resolver counted as one */
    struct mesh_dns__pending *udp_pending; /* UDP queries upstream */
    struct mesh_dns_conn *conns;           /* the most recently active first */
    struct mesh_dns_conn *conns_tail;
    int n_conns;
    int n_forwarded; /* in flight */
    struct mesh_dns_stats stats;
    void (*closed)(void *data);
    void *closed_data;
    uint8_t in[MESH_DNS_MSG_MAX];  /* one UDP datagram */
    uint8_t out[MESH_DNS_MSG_MAX]; /* one answer being written */
};

/*
 * Handles one query from a client (conn NULL: UDP from peer): answers it from the mesh,
 * refuses it, or sends it upstream. server.c.
 */
void mesh_dns__query(struct mesh_dns *d, struct mesh_dns_conn *conn, const struct sockaddr *peer,
                     const uint8_t *q, size_t len);
/* Sends an answer to a TCP client (copied, length prefix added). tcp.c. */
void mesh_dns__tcp_send(struct mesh_dns_conn *c, const uint8_t *msg, size_t len);
/* Starts and stops the TCP side. tcp.c. */
int mesh_dns__tcp_start(struct mesh_dns *d);
void mesh_dns__tcp_close_all(struct mesh_dns *d);
/* A handle of d closed; d is freed after the last. server.c. */
void mesh_dns__handle_closed(struct mesh_dns *d);
/* Frees a pending query (cancelling it upstream). server.c. */
void mesh_dns__pending_free(struct mesh_dns__pending *p);

#endif
