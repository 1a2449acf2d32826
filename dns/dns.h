/*
 * The agent's DNS responder: answers A and AAAA for mesh names with the service's virtual
 * IPs (catalog/vip.h) and forwards every other query, unchanged, to the upstream resolvers
 * through c-ares (common/resolver.h), giving the client the upstream's answer under its own
 * ID. UDP and TCP (length-prefixed, several queries per connection) on one local address.
 *
 * Mesh names, matched without regard to case and only for services the catalog has:
 *   <service>.<namespace>
 *   <service>.<namespace>.svc
 *   <service>.<namespace>.svc.<domain>          for each configured domain (cluster.local)
 *   <service>.service.<consul domain>           when a Consul domain is configured; the
 *   <service>.service.<dc>.<consul domain>      service is looked up in consul_namespace
 * A mesh service asked for another type gets NODATA with an SOA (RFC 2308); a name that is
 * not a mesh service is forwarded, even under svc.<domain> (other Kubernetes services).
 *
 * UDP answers longer than 512 bytes, or the client's EDNS0 size, are cut with TC set so the
 * client asks again over TCP. An upstream that fails or does not answer gives SERVFAIL.
 * Malformed queries get FORMERR when their header can be read; responses sent to the
 * responder are dropped.
 *
 * Lifecycle: new -> start -> close(done). Main loop only; callbacks on that loop.
 */
#ifndef MESH_DNS_H
#define MESH_DNS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "catalog/view.h"
#include "catalog/vip.h"

#define MESH_DNS_DEFAULT_LISTEN "127.0.0.1:15053"

struct mesh_dns;
struct mesh_buf;

struct mesh_dns_options {
    const char *listen;         /* "ip:port" for both UDP and TCP */
    const char *const *domains; /* cluster domains ("cluster.local"), n_domains of them */
    size_t n_domains;
    const char *consul_domain;     /* "" or NULL: no Consul-style names */
    const char *consul_datacenter; /* "" or NULL: only <service>.service.<consul domain> */
    const char *consul_namespace;  /* the namespace Consul services are in ("default") */
    const char *upstreams;         /* "ip[:port],..." for c-ares; NULL or "": resolv.conf */
    uint32_t ttl;                  /* seconds, of mesh answers */
    uint64_t upstream_timeout_ms;  /* per try; two tries per server */
    int max_tcp_connections;
    uint64_t tcp_idle_timeout_ms;
    int max_forwarded; /* forwarded queries in flight; more get SERVFAIL */
};

/* Queries by kind, for metrics and tests. */
struct mesh_dns_stats {
    uint64_t mesh;      /* answered from the mesh (VIPs, NODATA) */
    uint64_t forwarded; /* answered by an upstream */
    uint64_t failed;    /* SERVFAIL: upstream failed, timed out, or too many in flight */
    uint64_t malformed; /* FORMERR or dropped */
    uint64_t truncated; /* UDP answers cut with TC */
    uint64_t tcp_refused;
};

/*
 * Creates a responder. `catalog` and `vips` are borrowed and must outlive it (the catalog
 * pointer may be NULL: nothing is a mesh name). The options are copied. Returns 0, -EINVAL
 * (a bad address or upstream) or -ENOMEM.
 */
int mesh_dns_new(uv_loop_t *loop, const struct mesh_dns_options *o,
                 const struct mesh_catalog *catalog, struct mesh_vip_table *vips,
                 struct mesh_dns **ret);
/* Binds and starts serving UDP and TCP. Returns 0 or a negative libuv error. */
int mesh_dns_start(struct mesh_dns *d);
/* The port bound (useful with port 0), or 0 before start. */
uint16_t mesh_dns_port(const struct mesh_dns *d);
/*
 * Stops serving: closes the sockets and connections and cancels forwarded queries; `done`
 * runs on the loop when everything is closed, and the responder is then freed. NULL is
 * accepted (done does not run).
 */
void mesh_dns_close(struct mesh_dns *d, void (*done)(void *data), void *data);
void mesh_dns_stats(const struct mesh_dns *d, struct mesh_dns_stats *ret);
/* Appends the responder's metric families in the Prometheus text format. */
void mesh_dns_metrics(const struct mesh_dns *d, struct mesh_buf *b);

#endif
