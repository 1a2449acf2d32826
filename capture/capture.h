/*
 * Transparent capture: the nftables rules that send local workloads' TCP to the agent's
 * capture listeners, installed and removed through libnftables in a table of the agent's
 * own (docs/capture.md).
 *
 * Everything here runs on the caller's thread and talks to the kernel over netlink: it is
 * quick but blocking, called at start, stop, reload and when the set of mesh endpoints
 * changes. Functions return 0 or a negative errno, and put a message naming what went wrong
 * (a table, chain, rule) in `err` when they fail.
 */
#ifndef MESH_CAPTURE_H
#define MESH_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/addr.h"
#include "common/buf.h"

#define MESH_CAPTURE_TABLE_DEFAULT "mesh_agent"
#define MESH_CAPTURE_TABLE_MAX 32
/* The chains of the table, one per direction. */
#define MESH_CAPTURE_CHAIN_OUT "outbound"
#define MESH_CAPTURE_CHAIN_IN "inbound"
/* Kubernetes node mode: the node's pods' TCP, which crosses prerouting (outbound part). */
#define MESH_CAPTURE_CHAIN_PODS "pods"
/* The pods chain's priority: before kube-proxy's DNAT (iptables-nft's nat PREROUTING and
 * nftables mode's dstnat, both -100), so that a connection to a ClusterIP is redirected
 * while its destination is still the ClusterIP (what SO_ORIGINAL_DST then reports); once a
 * nat chain has rewritten the destination, later nat chains of the hook are not run for it. */
#define MESH_CAPTURE_PODS_PRIORITY (-110)
#define MESH_CAPTURE_IFNAME_MAX 15 /* IFNAMSIZ - 1 */

/* Which parts: bits for mesh_capture_remove. */
#define MESH_CAPTURE_OUTBOUND 0x1u
#define MESH_CAPTURE_INBOUND 0x2u
#define MESH_CAPTURE_ALL (MESH_CAPTURE_OUTBOUND | MESH_CAPTURE_INBOUND)

/* What to install. Borrowed for the call only. */
struct mesh_capture_spec {
    const char *table; /* letters, digits, '_'; at most MESH_CAPTURE_TABLE_MAX */
    bool ipv6;         /* also capture IPv6 (the ip6 rules) */
    /* Outbound: the output hook, TCP of local processes. */
    bool outbound;
    bool outbound_all;               /* all outbound TCP; else `dests` and `include_cidrs` */
    uint16_t outbound_port;          /* the outbound capture listener (on loopback) */
    const struct mesh_ipport *dests; /* endpoints of mesh services, IP and port */
    size_t n_dests;
    const char *const *include_cidrs; /* e.g. the VIP range "240.240.0.0/16" */
    size_t n_include_cidrs;
    const uint16_t *include_ports; /* with include_cidrs or outbound_all: only these; none: any */
    size_t n_include_ports;
    const char *const *exclude_cidrs;
    size_t n_exclude_cidrs;
    const uint16_t *exclude_ports;
    size_t n_exclude_ports;
    const uint32_t *exclude_uids; /* the agent's own user first: nothing it sends loops */
    size_t n_exclude_uids;
    uint16_t dns_port; /* IPv4 DNS (UDP and TCP port 53) of local processes to this port on
                        * loopback, the DNS responder; 0: none. Loopback DNS is left alone. */
    /* Inbound: the prerouting hook, TCP from the network to local workloads' ports. */
    bool inbound;
    uint16_t inbound_port;         /* the inbound capture listener */
    const uint16_t *inbound_ports; /* the workloads' ports */
    size_t n_inbound_ports;
    /* Kubernetes node mode (with outbound): TCP of the node's pods, from these source CIDRs
     * or arriving on these interfaces ("cali*", "cni0"), to `dests` (endpoints and
     * ClusterIPs of mesh services) goes to the outbound capture port. None: no pods chain. */
    const char *const *pod_cidrs;
    size_t n_pod_cidrs;
    const char *const *pod_interfaces;
    size_t n_pod_interfaces;
    uint16_t pods_exclude_port; /* the node's own mTLS port: never redirected; 0: none */
};

/* Checks a table name, a CIDR ("10.0.0.0/8", "fd00::/8", or an address alone): NULL when
 * valid, else why not. What reaches the rule text is checked by these first. */
const char *mesh_capture_check_table(const char *name);
const char *mesh_capture_check_cidr(const char *cidr);
/* An interface name or pattern: at most 15 of letters, digits, '-', '_', '.', with one '*'
 * at the end only ("cali*", "veth*", "cni0"). NULL when valid, else why not. */
const char *mesh_capture_check_ifname(const char *name);

/*
 * Appends to `out` the nft script that replaces the table with the one `s` describes, in
 * one transaction: "add table" and "delete table" (leftovers of a crashed run go), then the
 * table with its sets, chains and rules. Returns 0, -EINVAL (err says which value) or
 * -ENOMEM.
 */
int mesh_capture_script(const struct mesh_capture_spec *s, struct mesh_buf *out, char *err,
                        size_t n);
/* Appends the script that replaces the elements of the endpoint sets with s->dests (the
 * table must exist). Same returns. */
int mesh_capture_dests_script(const struct mesh_capture_spec *s, struct mesh_buf *out, char *err,
                              size_t n);

/*
 * Looks through a ruleset as `nft -j list ruleset` prints it for what would fight with `s`:
 * another mesh's tables or chains (Istio's ISTIO_*, Linkerd's PROXY_INIT_*), or a
 * REDIRECT, TPROXY or DNAT rule (native or iptables-nft's xt targets) on TCP that reaches
 * the hooks `s` uses, on ports `s` captures. Its own table (s->table, family inet) is
 * left out. Returns 0 when none, 1 with the first one described in `err`, or -EINVAL when
 * the JSON is not a ruleset.
 */
int mesh_capture_conflicts(const json_t *ruleset, const struct mesh_capture_spec *s, char *err,
                           size_t n);

/* Reads the ruleset, checks it (mesh_capture_conflicts) and installs `s` in one
 * transaction; nothing is installed when a conflict is found (-EEXIST) or the kernel
 * refuses the script (-EINVAL, err has nft's message). */
int mesh_capture_install(const struct mesh_capture_spec *s, char *err, size_t n);
/* Replaces the endpoint sets' elements (a catalog change), in one transaction. */
int mesh_capture_update_dests(const struct mesh_capture_spec *s, char *err, size_t n);
/*
 * Removes the chains of `parts` (MESH_CAPTURE_*) from `table`, and the table once no chain
 * of ours is left in it, in one transaction. Nothing installed is not an error.
 */
int mesh_capture_remove(const char *table, unsigned parts, char *err, size_t n);
/*
 * What is installed: *ret is {"installed": bool, "table": "inet <name>", "chains":
 * [{"name", "hook", "rules"}], "sets": {"<name>": elements}} (the caller's), and, when
 * `text` is not NULL, the table as `nft list table` prints it is appended there.
 */
int mesh_capture_status(const char *table, json_t **ret, struct mesh_buf *text, char *err,
                        size_t n);

#endif
