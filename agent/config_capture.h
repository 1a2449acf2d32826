/*
 * The "capture" section of agent.json: transparent capture of local workloads' TCP
 * (docs/capture.md). Decoded by the schema in agent/config_capture.c, kept apart from
 * config.c. Off unless "enabled" is true.
 */
#ifndef MESH_AGENT_CONFIG_CAPTURE_H
#define MESH_AGENT_CONFIG_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"

#define MESH_AGENT_CAPTURE_LIST_MAX 64

enum mesh_capture_mode { MESH_CAPTURE_MODE_SERVICES, MESH_CAPTURE_MODE_ALL };
enum mesh_capture_inbound_mode { MESH_CAPTURE_STRICT, MESH_CAPTURE_PERMISSIVE };
/* What happens to captured traffic while the agent is not running (docs/capture.md). */
enum mesh_capture_fail { MESH_CAPTURE_FAIL_AUTO, MESH_CAPTURE_FAIL_OPEN, MESH_CAPTURE_FAIL_CLOSED };
enum mesh_capture_unknown { MESH_CAPTURE_PASSTHROUGH, MESH_CAPTURE_REFUSE };

struct mesh_agent_capture_ports {
    uint16_t *v;
    size_t n;
};

struct mesh_agent_capture_uids {
    uint32_t *v;
    size_t n;
};

struct mesh_agent_capture_outbound_config {
    bool enabled;
    int mode; /* enum mesh_capture_mode */
    int listen_port;
    struct mesh_cfg_strings include_cidrs; /* e.g. the VIP range */
    struct mesh_agent_capture_ports include_ports;
    struct mesh_cfg_strings exclude_cidrs;
    struct mesh_agent_capture_ports exclude_ports;
    struct mesh_agent_capture_uids exclude_uids;
    int unknown; /* enum mesh_capture_unknown */
    int fail;    /* enum mesh_capture_fail; auto: open */
};

struct mesh_agent_capture_inbound_config {
    struct mesh_agent_capture_ports ports; /* none: inbound capture off */
    int mode;                              /* enum mesh_capture_inbound_mode */
    int listen_port;
    int fail; /* enum mesh_capture_fail; auto: closed when strict, else open */
};

/* Kubernetes node mode: the node's pods, by source CIDR and/or host-side interface. */
struct mesh_agent_capture_pods_config {
    struct mesh_cfg_strings cidrs;      /* the node's pod CIDR(s), "10.244.1.0/24" */
    struct mesh_cfg_strings interfaces; /* "cali*", "veth*", "cni0" */
};

struct mesh_agent_capture_config {
    bool enabled;
    char *table;
    bool ipv6;
    bool dns; /* local processes' DNS to the DNS responder */
    struct mesh_agent_capture_outbound_config outbound;
    struct mesh_agent_capture_inbound_config inbound;
    struct mesh_agent_capture_pods_config pods;
};

extern const struct mesh_cfg_schema mesh_agent__capture_schema;

/*
 * Refuses a capture listener port that is also the port of one of the agent's other
 * listeners (`keys` name them in messages, `values` are their "ip:port"): the capture
 * listeners bind loopback or the wildcard, which overlap them.
 */
void mesh_agent__capture_check_ports(struct mesh_cfg_ctx *ctx,
                                     const struct mesh_agent_capture_config *c,
                                     const char *const *keys, const char *const *values, size_t n);

/*
 * What "capture.dns" needs of the DNS responder (checked with the whole config): it runs,
 * on IPv4 loopback or the wildcard, where a redirect in the output hook lands. Returns the
 * responder's port to redirect DNS to, 0 when DNS is not captured (errors go to ctx, which
 * may be NULL once the config is valid).
 */
uint16_t mesh_agent__capture_dns_port(struct mesh_cfg_ctx *ctx,
                                      const struct mesh_agent_capture_config *c, bool responder_on,
                                      const char *responder_listen);

/* Whether a direction's rules stay while the agent is not running. */
bool mesh_agent_capture_fail_closed(const struct mesh_agent_capture_config *c, bool inbound);

#endif
