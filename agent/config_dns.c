#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "agent/config_dns-int.h"
#include "common/addr.h"
#include "common/names.h"
#include "common/resolver.h"

#define KEEP_MARGIN_MS 60000

#define D(m) MESH_CFG_FIELD(struct mesh_agent_dns_responder_config, m)

static const char *check_listen(const char *s)
{
    struct mesh_addr a;
    const char *why = NULL;
    if (mesh_addr_parse(s, &a, &why) < 0)
        return why;
    if (mesh_addr_is_unix(&a) || mesh_addr_port(&a) == 0)
        return "must be \"ip:port\" with a port (UDP and TCP listen on it)";
    return NULL;
}

static const char *check_domain(const char *s)
{
    return !s[0] ? NULL : mesh_name_check_host(s);
}

static const char *check_label(const char *s)
{
    return !s[0] ? NULL : mesh_name_check_dns_label(s);
}

static const char *check_v4(const char *s)
{
    return mesh_vip_check_range(s, AF_INET);
}

static const char *check_v6(const char *s)
{
    return mesh_vip_check_range(s, AF_INET6);
}

static void check_strings(struct mesh_cfg_ctx *ctx, const char *key,
                          const struct mesh_cfg_strings *v, const char *(*check)(const char *))
{
    size_t o1 = mesh_cfg_path_push_key(ctx, key);
    for (size_t i = 0; i < v->n; i++) {
        const char *why = check(v->v[i]);
        if (!why)
            continue;
        size_t o2 = mesh_cfg_path_push_index(ctx, i);
        mesh_cfg_error(ctx, "'%s' %s", v->v[i], why);
        mesh_cfg_path_pop(ctx, o2);
    }
    mesh_cfg_path_pop(ctx, o1);
}

static const char *check_domain_item(const char *s)
{
    return !s[0] ? "is empty" : mesh_name_check_host(s);
}

static void check_responder(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_agent_dns_responder_config *c = obj;
    check_strings(ctx, "upstreams", &c->upstreams, mesh_resolver_check_server);
    check_strings(ctx, "domains", &c->domains, check_domain_item);
    /* An address is given to another service only after every answer that named it has
     * left the clients' caches: the TTL, and a minute for clocks and late lookups. */
    if (c->keep_ms < c->ttl_ms + KEEP_MARGIN_MS) {
        size_t o1 = mesh_cfg_path_push_key(ctx, "keep");
        mesh_cfg_error(ctx,
                       "must be at least the ttl (%llus) plus 1m: a client may still connect "
                       "to an address from a cached answer after its service left",
                       (unsigned long long)(c->ttl_ms / 1000));
        mesh_cfg_path_pop(ctx, o1);
    }
    /* The responder must not be its own upstream: every forwarded query would loop. */
    struct mesh_addr l, u;
    if (mesh_addr_parse(c->listen, &l, NULL) < 0)
        return;
    for (size_t i = 0; i < c->upstreams.n; i++) {
        char buf[128];
        const char *s = c->upstreams.v[i];
        if (mesh_is_ip_literal(s)) {
            snprintf(buf, sizeof(buf), strchr(s, ':') ? "[%s]:53" : "%s:53", s);
            s = buf;
        }
        if (mesh_addr_parse(s, &u, NULL) == 0 && mesh_addr_reaches(&l, &u)) {
            size_t o1 = mesh_cfg_path_push_key(ctx, "upstreams");
            size_t o2 = mesh_cfg_path_push_index(ctx, i);
            mesh_cfg_error(ctx,
                           "'%s' reaches the responder's own listen address %s: every forwarded "
                           "query would come back to it",
                           c->upstreams.v[i], c->listen);
            mesh_cfg_path_pop(ctx, o2);
            mesh_cfg_path_pop(ctx, o1);
        }
    }
}

static const struct mesh_cfg_field responder_fields[] = {
    {.key = "enabled", .type = MESH_CFG_BOOL, D(enabled), .def_int = 0},
    {.key = "listen",
     .type = MESH_CFG_STRING,
     D(listen),
     .def = MESH_DNS_DEFAULT_LISTEN,
     .expect = "an \"ip:port\" address",
     .check = check_listen},
    {.key = "domains",
     .type = MESH_CFG_STRINGS,
     D(domains),
     .expect = "a list of cluster domains like \"cluster.local\""},
    {.key = "consul_domain",
     .type = MESH_CFG_STRING,
     D(consul_domain),
     .def = "",
     .expect = "a domain like \"consul\", or \"\" for none",
     .check = check_domain},
    {.key = "consul_datacenter",
     .type = MESH_CFG_STRING,
     D(consul_datacenter),
     .def = "",
     .expect = "a datacenter name (DNS label), or \"\"",
     .check = check_label},
    {.key = "consul_namespace",
     .type = MESH_CFG_STRING,
     D(consul_namespace),
     .def = "default",
     .expect = "the namespace Consul services are in (DNS label)",
     .check = mesh_name_check_dns_label},
    {.key = "ipv4_range",
     .type = MESH_CFG_STRING,
     D(ipv4_range),
     .def = MESH_VIP_DEFAULT_V4,
     .expect = "an IPv4 prefix like \"240.240.0.0/16\"",
     .check = check_v4},
    {.key = "ipv6_range",
     .type = MESH_CFG_STRING,
     D(ipv6_range),
     .def = MESH_VIP_DEFAULT_V6,
     .expect = "an IPv6 prefix like \"2001:2::/48\"",
     .check = check_v6},
    {.key = "keep",
     .type = MESH_CFG_DURATION,
     D(keep_ms),
     .def = "1h",
     .min = 0,
     .max = 30ull * 86400000},
    {.key = "upstreams",
     .type = MESH_CFG_STRINGS,
     D(upstreams),
     .expect = "a list of name servers, \"ip\" or \"ip:port\""},
    {.key = "upstream_timeout",
     .type = MESH_CFG_DURATION,
     D(upstream_timeout_ms),
     .def = "2s",
     .min = 100,
     .max = 30000},
    {.key = "ttl", .type = MESH_CFG_DURATION, D(ttl_ms), .def = "30s", .min = 1000, .max = 3600000},
    {.key = "max_tcp_connections",
     .type = MESH_CFG_INT,
     D(max_tcp_connections),
     .def_int = 64,
     .min = 1,
     .max = 100000},
    {.key = "tcp_idle_timeout",
     .type = MESH_CFG_DURATION,
     D(tcp_idle_timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 600000},
    {.key = "max_forwarded",
     .type = MESH_CFG_INT,
     D(max_forwarded),
     .def_int = 1024,
     .min = 1,
     .max = 65536,
     .expect = "how many forwarded queries may wait for an upstream, 1 to 65536"},
    {0},
};

const struct mesh_cfg_schema mesh_agent__dns_responder_schema = {
    .size = sizeof(struct mesh_agent_dns_responder_config),
    .fields = responder_fields,
    .check = check_responder,
};

static const char *const default_domains[] = {"cluster.local"};

void mesh_agent__dns_options(const struct mesh_agent_dns_responder_config *c,
                             struct mesh_dns_options *ret_dns, struct mesh_vip_options *ret_vip,
                             char *upstreams, size_t n)
{
    size_t len = 0;
    upstreams[0] = '\0';
    for (size_t i = 0; i < c->upstreams.n && len < n; i++)
        len += (size_t)snprintf(upstreams + len, n - len, "%s%s", i ? "," : "", c->upstreams.v[i]);
    *ret_dns = (struct mesh_dns_options){
        .listen = c->listen,
        .domains = c->domains.n ? (const char *const *)c->domains.v : default_domains,
        .n_domains = c->domains.n ? c->domains.n : 1,
        .consul_domain = c->consul_domain,
        .consul_datacenter = c->consul_datacenter,
        .consul_namespace = c->consul_namespace,
        .upstreams = upstreams,
        .ttl = (uint32_t)(c->ttl_ms / 1000),
        .upstream_timeout_ms = c->upstream_timeout_ms,
        .max_tcp_connections = c->max_tcp_connections,
        .tcp_idle_timeout_ms = c->tcp_idle_timeout_ms,
        .max_forwarded = c->max_forwarded,
    };
    *ret_vip = (struct mesh_vip_options){
        .v4_range = c->ipv4_range,
        .v6_range = c->ipv6_range,
        .keep_ms = c->keep_ms,
    };
}
