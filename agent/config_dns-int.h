/*
 * The "dns_responder" section of agent.json (agent/config_dns.c): the schema config.c
 * embeds, and the responder's options built from it.
 */
#ifndef MESH_AGENT_CONFIG_DNS_INT_H
#define MESH_AGENT_CONFIG_DNS_INT_H

#include "agent/config.h"
#include "catalog/vip.h"
#include "common/cfg.h"
#include "dns/dns.h"

extern const struct mesh_cfg_schema mesh_agent__dns_responder_schema;

/*
 * The responder's and the VIP table's options from the section; strings borrowed from c.
 * `upstreams` (n bytes) receives the upstream servers joined with commas.
 */
void mesh_agent__dns_options(const struct mesh_agent_dns_responder_config *c,
                             struct mesh_dns_options *ret_dns, struct mesh_vip_options *ret_vip,
                             char *upstreams, size_t n);

#endif
