#define MESH_LOG_MODULE "capture"

/*
 * Transparent capture in the daemon (docs/capture.md): the rules go in at start (leftovers
 * of a crashed run are replaced in the same transaction), follow the catalog's endpoints and
 * the config on reload, and come out at stop unless their direction fails closed. Also
 * what the proxy is told of the capture listeners.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent-int.h"
#include "agent/capture_cli.h"
#include "agent/config.h"
#include "capture/capture.h"
#include "catalog/catalog.h"
#include "common/alloc.h"
#include "common/log.h"
#include "proxy/proxy.h"
#include "registry-adapters/kubernetes/k8s_addrs.h"

int mesh_agent_capture_spec(const struct mesh_agent_config *cfg, uint32_t agent_uid,
                            const struct mesh_ipport *dests, size_t n,
                            struct mesh_capture_spec *ret,
                            struct mesh_agent_capture_scratch *scratch)
{
    const struct mesh_agent_capture_config *c = &cfg->capture;
    const struct mesh_agent_capture_outbound_config *o = &c->outbound;
    uint32_t *uids = scratch->uids;
    uids[0] = agent_uid;
    if (o->exclude_uids.n) /* v is NULL when none are listed */
        memcpy(uids + 1, o->exclude_uids.v, o->exclude_uids.n * sizeof(*uids));
    size_t n_cidrs = 0;
    for (size_t i = 0; i < o->include_cidrs.n; i++)
        scratch->cidrs[n_cidrs++] = o->include_cidrs.v[i];
    const struct mesh_agent_dns_responder_config *d = &cfg->dns_responder;
    if (d->enabled) {
        scratch->cidrs[n_cidrs++] = d->ipv4_range;
        if (c->ipv6)
            scratch->cidrs[n_cidrs++] = d->ipv6_range;
    }
    *ret = (struct mesh_capture_spec){
        .table = c->table,
        .ipv6 = c->ipv6,
        .outbound = o->enabled,
        .outbound_all = o->mode == MESH_CAPTURE_MODE_ALL,
        .outbound_port = (uint16_t)o->listen_port,
        .dests = dests,
        .n_dests = n,
        .include_cidrs = scratch->cidrs,
        .n_include_cidrs = n_cidrs,
        .include_ports = o->include_ports.v,
        .n_include_ports = o->include_ports.n,
        .exclude_cidrs = (const char *const *)o->exclude_cidrs.v,
        .n_exclude_cidrs = o->exclude_cidrs.n,
        .exclude_ports = o->exclude_ports.v,
        .n_exclude_ports = o->exclude_ports.n,
        .exclude_uids = uids,
        .n_exclude_uids = o->exclude_uids.n + 1,
        .dns_port = mesh_agent__capture_dns_port(NULL, c, d->enabled, d->listen),
        .inbound = c->inbound.ports.n > 0,
        .inbound_port = (uint16_t)c->inbound.listen_port,
        .inbound_ports = c->inbound.ports.v,
        .n_inbound_ports = c->inbound.ports.n,
        .pod_cidrs = (const char *const *)c->pods.cidrs.v,
        .n_pod_cidrs = c->pods.cidrs.n,
        .pod_interfaces = (const char *const *)c->pods.interfaces.v,
        .n_pod_interfaces = c->pods.interfaces.n,
        .pods_exclude_port = mesh_addr_port(&cfg->inbound_addr),
    };
    return 0;
}

unsigned mesh_agent_capture_open_parts(const struct mesh_agent_capture_config *c)
{
    if (!c->enabled)
        return MESH_CAPTURE_ALL;
    unsigned parts = 0;
    if (!mesh_agent_capture_fail_closed(c, false))
        parts |= MESH_CAPTURE_OUTBOUND;
    if (!mesh_agent_capture_fail_closed(c, true))
        parts |= MESH_CAPTURE_INBOUND;
    return parts;
}

const char *mesh_agent_capture_parts_name(unsigned parts)
{
    return parts == MESH_CAPTURE_ALL        ? "outbound and inbound"
           : parts == MESH_CAPTURE_INBOUND  ? "inbound"
           : parts == MESH_CAPTURE_OUTBOUND ? "outbound"
                                            : "no";
}

/* The other addresses of mesh services the registries know (Kubernetes ClusterIPs), into
 * *ret (the caller's; names borrowed from the registries until their next event). */
static int service_addrs(const struct mesh_agent *a, struct mesh_service_addr **ret, size_t *ret_n)
{
    struct mesh_service_addr *v = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i]->stopping)
            continue;
        if (mesh_k8s_service_addrs(a->slots[i]->r, &v, &cap, &n) < 0) {
            mesh_free(v);
            return -ENOMEM;
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

/* A checksum of the services' other addresses (FNV-1a): a Service's ClusterIP can come
 * without a change of the catalog (its slices came first). */
static uint64_t addrs_sum(const struct mesh_agent *a)
{
    struct mesh_service_addr *v = NULL;
    size_t n = 0;
    uint64_t h = 14695981039346656037ULL;
    if (service_addrs(a, &v, &n) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const struct mesh_ipport *x = &v[i].addr;
        unsigned char b[19];
        memcpy(b, x->ip, 16);
        b[16] = (unsigned char)(x->port >> 8);
        b[17] = (unsigned char)x->port;
        b[18] = x->family;
        for (size_t k = 0; k < sizeof(b); k++)
            h = (h ^ b[k]) * 1099511628211ULL;
        for (const char *q = v[i].service; *q; q++)
            h = (h ^ (unsigned char)*q) * 1099511628211ULL;
    }
    mesh_free(v);
    return h;
}

/* The endpoints of every mesh service, and its other addresses (ClusterIPs), to capture in
 * "services" mode and from pods (the caller's). */
static int catalog_dests(const struct mesh_agent *a, struct mesh_ipport **ret, size_t *ret_n)
{
    const struct mesh_catalog *cat = a->catalog;
    struct mesh_service **services = NULL;
    size_t n_services = 0, n = 0, cap = 0, n_addrs = 0;
    struct mesh_ipport *v = NULL;
    struct mesh_service_addr *addrs = NULL;
    int r = service_addrs(a, &addrs, &n_addrs);
    for (size_t i = 0; r == 0 && i < n_addrs; i++) {
        const char *slash = strchr(addrs[i].service, '/');
        char ns[256];
        snprintf(ns, sizeof(ns), "%.*s", slash ? (int)(slash - addrs[i].service) : 0,
                 addrs[i].service);
        if (!slash || !mesh_catalog_get(cat, ns, slash + 1))
            continue; /* not a mesh service */
        if ((r = mesh_grow((void **)&v, &cap, n + 1, sizeof(*v))) == 0)
            v[n++] = addrs[i].addr;
    }
    mesh_free(addrs);
    if (r == 0)
        r = mesh_catalog_list(cat, &services, &n_services);
    for (size_t i = 0; r == 0 && i < n_services; i++) {
        for (size_t k = 0; r == 0 && k < services[i]->n_endpoints; k++) {
            const struct mesh_endpoint *ep = &services[i]->endpoints[k];
            if (!ep->addr.family)
                continue; /* a host name not resolved yet */
            if ((r = mesh_grow((void **)&v, &cap, n + 1, sizeof(*v))) == 0)
                v[n++] = ep->addr;
        }
    }
    mesh_free(services);
    if (r < 0) {
        mesh_free(v);
        return r;
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

/* The capture section as applied, to tell a reload that changes it. */
static char *encode(const struct mesh_agent_capture_config *c)
{
    json_t *j = mesh_cfg_encode(&mesh_agent__capture_schema, c);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

/* Installs the rules of the current config with the catalog's endpoints now (the whole
 * table, in one transaction). */
static int install(struct mesh_agent *a, char *err, size_t n)
{
    const struct mesh_agent_capture_config *c = &a->cfg->capture;
    struct mesh_ipport *dests = NULL;
    size_t n_dests = 0;
    int r = catalog_dests(a, &dests, &n_dests);
    if (r < 0) {
        snprintf(err, n, "out of memory");
        return r;
    }
    struct mesh_agent_capture_scratch scratch;
    struct mesh_capture_spec spec;
    mesh_agent_capture_spec(a->cfg, (uint32_t)geteuid(), dests, n_dests, &spec, &scratch);
    r = mesh_capture_install(&spec, err, n);
    mesh_free(dests);
    if (r == 0) {
        a->capture_version = mesh_catalog_version(a->catalog);
        a->capture_addrs_sum = addrs_sum(a);
        mesh_free(a->capture_applied);
        a->capture_applied = encode(c);
        mesh_log_info("capture rules installed in table inet %s (%zu endpoints%s%s)", c->table,
                      n_dests, c->outbound.enabled ? ", outbound" : "",
                      c->inbound.ports.n ? ", inbound" : "");
    }
    return r;
}

int mesh_agent__capture_start(struct mesh_agent *a)
{
    const struct mesh_agent_capture_config *c = &a->cfg->capture;
    char err[1024];
    if (!c->enabled) {
        /* Rules a run with capture on left behind would send traffic nowhere. */
        if (mesh_capture_remove(c->table, MESH_CAPTURE_ALL, err, sizeof(err)) < 0)
            mesh_log_debug("no capture leftovers removed: %s", err);
        return 0;
    }
    if (geteuid() == 0)
        mesh_log_warn("capture: the agent runs as root, so every root process's TCP is left "
                      "out of outbound capture (it excludes its own user); run it as its own "
                      "user (docs/capture.md)");
    int r = install(a, err, sizeof(err));
    if (r < 0)
        mesh_log_error("cannot install the capture rules: %s; nothing is installed", err);
    return r;
}

void mesh_agent__capture_update(struct mesh_agent *a)
{
    const struct mesh_agent_capture_config *c = &a->cfg->capture;
    char err[1024];
    char *now = c->enabled ? encode(c) : NULL;
    bool changed = (now == NULL) != (a->capture_applied == NULL) ||
                   (now && strcmp(now, a->capture_applied) != 0);
    mesh_free(now);
    if (changed && !c->enabled) {
        if (mesh_capture_remove(c->table, MESH_CAPTURE_ALL, err, sizeof(err)) < 0)
            mesh_log_error("cannot remove the capture rules: %s", err);
        mesh_free(a->capture_applied);
        a->capture_applied = NULL;
        return;
    }
    if (!c->enabled)
        return;
    if (changed) {
        if (install(a, err, sizeof(err)) < 0)
            mesh_log_error("cannot install the new capture rules: %s; the previous ones stay", err);
        return;
    }
    bool pods = c->pods.cidrs.n || c->pods.interfaces.n;
    if (!c->outbound.enabled || (c->outbound.mode == MESH_CAPTURE_MODE_ALL && !pods))
        return;
    uint64_t sum = addrs_sum(a);
    if (a->capture_version == mesh_catalog_version(a->catalog) && a->capture_addrs_sum == sum)
        return;
    struct mesh_ipport *dests = NULL;
    size_t n_dests = 0;
    if (catalog_dests(a, &dests, &n_dests) < 0) {
        mesh_log_error("out of memory updating the captured endpoints");
        return;
    }
    struct mesh_agent_capture_scratch scratch;
    struct mesh_capture_spec spec;
    mesh_agent_capture_spec(a->cfg, (uint32_t)geteuid(), dests, n_dests, &spec, &scratch);
    if (mesh_capture_update_dests(&spec, err, sizeof(err)) < 0) {
        mesh_log_error("cannot update the captured endpoints: %s; the previous ones stay", err);
    } else {
        a->capture_version = mesh_catalog_version(a->catalog);
        a->capture_addrs_sum = sum;
    }
    mesh_free(dests);
}

void mesh_agent__capture_stop(struct mesh_agent *a)
{
    const struct mesh_agent_capture_config *c = &a->cfg->capture;
    if (!a->capture_applied)
        return;
    char err[1024];
    unsigned parts = mesh_agent_capture_open_parts(c);
    if (parts && mesh_capture_remove(c->table, parts, err, sizeof(err)) < 0)
        mesh_log_error("cannot remove the capture rules: %s", err);
    else if (parts != MESH_CAPTURE_ALL)
        mesh_log_notice("capture: the %s rules stay while the agent is stopped (fail: closed)",
                        mesh_agent_capture_parts_name(MESH_CAPTURE_ALL & ~parts));
    mesh_free(a->capture_applied);
    a->capture_applied = NULL;
}

void mesh_agent__capture_inputs(const struct mesh_agent *a, struct mesh_proxy_capture *ret)
{
    const struct mesh_agent_capture_config *c = &a->cfg->capture;
    memset(ret, 0, sizeof(*ret));
    /* Pods' connections are redirected in prerouting, to the address of the interface they
     * came in on: the listener takes the wildcard then (a connection made to it directly is
     * refused: it was not redirected). */
    bool pods = c->pods.cidrs.n || c->pods.interfaces.n;
    if (c->outbound.enabled) {
        mesh_addr_from_ip(pods ? "0.0.0.0" : "127.0.0.1", (uint16_t)c->outbound.listen_port,
                          &ret->outbound);
        if (c->ipv6)
            mesh_addr_from_ip(pods ? "::" : "::1", (uint16_t)c->outbound.listen_port,
                              &ret->outbound6);
    }
    if (c->inbound.ports.n) {
        /* Prerouting's redirect sends to the address of the interface it came in on. */
        mesh_addr_from_ip("0.0.0.0", (uint16_t)c->inbound.listen_port, &ret->inbound);
        if (c->ipv6)
            mesh_addr_from_ip("::", (uint16_t)c->inbound.listen_port, &ret->inbound6);
    }
    ret->refuse_unknown = c->outbound.unknown == MESH_CAPTURE_REFUSE;
    ret->permissive = c->inbound.mode == MESH_CAPTURE_PERMISSIVE;
    ret->vips = mesh_agent__vips(a); /* NULL when the DNS responder is off */
    struct mesh_service_addr *addrs = NULL;
    size_t n = 0;
    if (c->outbound.enabled && service_addrs(a, &addrs, &n) < 0)
        mesh_log_error("out of memory listing the services' ClusterIPs; calls to them are "
                       "not captured");
    ret->service_addrs = addrs;
    ret->n_service_addrs = n;
    /* This node's pods by IP, so that a captured call names its caller. */
    struct mesh_workload_identity *ids = NULL;
    size_t cap = 0;
    n = 0;
    for (size_t i = 0; (c->pods.cidrs.n || c->pods.interfaces.n) && i < a->n_slots; i++) {
        if (!a->slots[i]->stopping && mesh_k8s_pod_identities(a->slots[i]->r, &ids, &cap, &n) < 0) {
            mesh_log_error("out of memory listing this node's pods; captured calls name no "
                           "caller");
            break;
        }
    }
    ret->sources = ids;
    ret->n_sources = n;
    ret->pods = pods;
}

void mesh_agent__capture_inputs_done(struct mesh_proxy_capture *c)
{
    mesh_free((void *)(uintptr_t)c->service_addrs);
    c->service_addrs = NULL;
    c->n_service_addrs = 0;
    for (size_t i = 0; i < c->n_sources; i++)
        mesh_free((void *)(uintptr_t)c->sources[i].identity);
    mesh_free((void *)(uintptr_t)c->sources);
    c->sources = NULL;
    c->n_sources = 0;
}

uint32_t mesh_agent_capture_cli_uid(void)
{
    /* The CLI runs as root; the daemon, under systemd, as mesh-agent. */
    const struct passwd *pw = geteuid() == 0 ? getpwnam("mesh-agent") : NULL;
    return pw ? (uint32_t)pw->pw_uid : (uint32_t)geteuid();
}
