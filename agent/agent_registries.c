#define MESH_LOG_MODULE "agent"

/* The agent's registries: the sink each adapter reports to, and the slots that run them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent-int.h"
#include "agent/hosts.h"
#include "agent/lkg.h"
#include "agent/registries.h"
#include "common/alloc.h"
#include "common/log.h"

/* ---- the registry sink ---- */

static void sink_set_service(void *data, struct mesh_registry *r,
                             const struct mesh_service_update *u)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    /* Host names in endpoint addresses are expanded on the way (agent/hosts.h). */
    int ret = s->agent->hosts ? mesh_hosts_set_service(s->agent->hosts, s, s->rc->name, u)
                              : mesh_catalog_update(s->agent->catalog, s->rc->name, u);
    if (ret < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "service '%s/%s' refused by the catalog: %s", u->namespace,
                 u->name, strerror(-ret));
        s->errors++;
        mesh_free(s->last_error);
        s->last_error = mesh_strdup(msg);
        mesh_log_warn("registry '%s': %s", s->rc->name, msg);
    }
}

static void sink_set_local(void *data, struct mesh_registry *r, const struct mesh_local_service *v,
                           size_t n)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    struct mesh_local_service *copy = mesh_calloc(n ? n : 1, sizeof(*copy));
    size_t k = 0;
    for (; copy && k < n; k++) {
        if (mesh_local_service_copy(&copy[k], &v[k]) < 0)
            break;
    }
    if (!copy || k < n) {
        for (size_t i = 0; i < k; i++)
            mesh_local_service_done(&copy[i]);
        mesh_free(copy);
        s->errors++;
        mesh_log_error("registry '%s': out of memory keeping local services", s->rc->name);
        return;
    }
    for (size_t i = 0; i < s->n_locals; i++)
        mesh_local_service_done(&s->locals[i]);
    mesh_free(s->locals);
    s->locals = copy;
    s->n_locals = n;
    mesh_agent__save_locals(s->agent);
    mesh_agent__schedule(s->agent);
}

/* A registry's ClusterIPs or pods changed: the capture rules and the proxy follow. */
static void sink_addresses(void *data, struct mesh_registry *r)
{
    struct slot *s = data;
    (void)r;
    if (!s->stopping)
        mesh_agent__schedule(s->agent);
}

static void sink_sync_begin(void *data, struct mesh_registry *r)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    mesh_catalog_sync_begin(s->agent->catalog, s->rc->name);
    if (s->agent->hosts)
        mesh_hosts_sync_begin(s->agent->hosts, s);
}

static void sink_sync_end(void *data, struct mesh_registry *r)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    mesh_catalog_sync_end(s->agent->catalog, s->rc->name);
    if (s->agent->hosts)
        mesh_hosts_sync_end(s->agent->hosts, s);
    if (!s->synced)
        mesh_log_info("registry '%s' synced", s->rc->name);
    s->synced = true;
    s->syncs++;
    s->last_sync = mesh_agent__now();
    mesh_agent__maybe_ready(s->agent);
}

static void sink_error(void *data, struct mesh_registry *r, const char *message)
{
    struct slot *s = data;
    (void)r;
    if (s->stopping)
        return;
    s->errors++;
    mesh_free(s->last_error);
    s->last_error = mesh_strdup(message);
}

/* ---- host-name endpoints ---- */

static int hosts_apply(void *data, const char *source, const struct mesh_service_update *u)
{
    struct mesh_agent *a = data;
    return mesh_catalog_update(a->catalog, source, u);
}

int mesh_agent__hosts_new(struct mesh_agent *a)
{
    struct mesh_buf servers;
    const struct mesh_agent_dns_config *d = &a->cfg->dns;
    mesh_buf_init(&servers, MESH_BUF_UNLIMITED);
    for (size_t i = 0; i < d->servers.n; i++)
        mesh_buf_appendf(&servers, "%s%s", i ? "," : "", d->servers.v[i]);
    int r = servers.err;
    if (r >= 0) {
        struct mesh_resolver_options o = {
            .servers = d->servers.n ? servers.data : NULL,
            .timeout_ms = (int)d->timeout_ms,
        };
        r = mesh_hosts_new(a->loop, &o, hosts_apply, a, &a->hosts);
    }
    mesh_buf_done(&servers);
    return r;
}

int mesh_agent__hosts_remember(struct mesh_agent *a)
{
    struct mesh_service **list = NULL;
    size_t n = 0;
    int r = a->hosts ? mesh_catalog_list(a->catalog, &list, &n) : 0;
    for (size_t i = 0; r >= 0 && i < n; i++) {
        for (size_t j = 0; r >= 0 && j < list[i]->n_endpoints; j++) {
            const struct mesh_endpoint *ep = &list[i]->endpoints[j];
            if (ep->host && ep->addr.family)
                r = mesh_hosts_remember(a->hosts, ep->host, &ep->addr);
        }
    }
    mesh_free(list);
    return r;
}

void mesh_agent__on_catalog_change(void *data)
{
    struct mesh_agent *a = data;
    if (a->lkg && a->state != AGENT_STOPPING)
        mesh_lkg_schedule(a->lkg, a->catalog);
    mesh_agent__dns_on_catalog_change(a);
    mesh_agent__schedule(a);
}

/* ---- registry slots ---- */

void mesh_agent__slot_free(struct slot *s)
{
    if (s->r)
        s->r->ops->destroy(s->r);
    for (size_t i = 0; i < s->n_locals; i++)
        mesh_local_service_done(&s->locals[i]);
    mesh_free(s->locals);
    mesh_free(s->last_error);
    mesh_agent_config_unref(s->cfg);
    mesh_free(s);
}

int mesh_agent__slot_new(struct mesh_agent *a, struct mesh_agent_config *cfg,
                         const struct mesh_registry_config *rc, struct slot **ret)
{
    struct slot *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->agent = a;
    s->rc = rc;
    s->cfg = mesh_agent_config_ref(cfg);
    struct mesh_registry_sink sink = {
        .data = s,
        .set_service = sink_set_service,
        .set_local = sink_set_local,
        .sync_begin = sink_sync_begin,
        .sync_end = sink_sync_end,
        .error = sink_error,
        .addresses = sink_addresses,
    };
    int r = rc->ops->create(a->loop, rc, &cfg->env, &sink, &s->r);
    if (r < 0) {
        s->r = NULL;
        mesh_agent__slot_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

static void on_slot_stopped(struct mesh_registry *r, void *data)
{
    struct slot *s = data;
    (void)r;
    mesh_agent__slot_free(s);
}

void mesh_agent__slot_stop(struct slot *s)
{
    s->stopping = true;
    if (s->agent->hosts)
        mesh_hosts_forget(s->agent->hosts, s);
    s->r->ops->stop(s->r, on_slot_stopped, s);
}

int mesh_agent__set_catalog_sources(struct mesh_agent *a, struct slot **slots, size_t n)
{
    struct mesh_catalog_source src[MESH_AGENT_REGISTRIES_MAX];
    for (size_t i = 0; i < n; i++)
        src[i] = (struct mesh_catalog_source){slots[i]->rc->name, slots[i]->rc->type,
                                              slots[i]->rc->merge,
                                              mesh_registries_rank(slots[i]->rc->type)};
    return mesh_catalog_set_sources(a->catalog, src, n);
}

/* The running slot with rc's name, or -1. */
int mesh_agent__find_slot(const struct mesh_agent *a, const struct mesh_registry_config *rc)
{
    for (size_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i] && strcmp(a->slots[i]->rc->name, rc->name) == 0)
            return (int)i;
    }
    return -1;
}

/*
 * A registry whose config changed starts with what its predecessor knew of this host's
 * services, so the listeners of those services stay up until the new one has synced.
 */
void mesh_agent__inherit_locals(struct slot *s, const struct slot *old)
{
    sink_set_local(s, s->r, old->locals, old->n_locals);
}
