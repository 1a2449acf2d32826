#define MESH_LOG_MODULE "agent"

/*
 * The agent's identity and controller glue: the certificate manager, the controller's
 * resources (watch), the reports and the mesh membership they answer with.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent-int.h"
#include "agent/certs.h"
#include "agent/ctl_report.h"
#include "agent/ctl_watch.h"
#include "agent/local_health.h"
#include "catalog/view.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/spiffe.h"
#include "mesh-version.h"
#include "proxy/proxy.h"

static void on_certs_changed(void *data)
{
    struct mesh_agent *a = data;
    mesh_ctl_watch_kick(a->watch); /* the first node certificate lets it start */
    mesh_agent__schedule(a);
}

void mesh_agent__clear_members(struct mesh_hmap *m)
{
    size_t i = 0;
    const struct mesh_hmap_entry *e;
    while (mesh_hmap_next(m, &i, &e))
        mesh_free((char *)(uintptr_t)e->key);
    mesh_hmap_done(m);
    mesh_hmap_init(m);
}

static void members_path(const struct mesh_agent *a, char *out, size_t n)
{
    snprintf(out, n, "%s/controller-members.json", a->cfg->state_dir);
}

/* The membership answered to a report: endpoints at these addresses run an agent. Kept in
 * the state dir: a restart while the controller is away still knows them. */
static void on_members(void *data, json_t *members)
{
    struct mesh_agent *a = data;
    struct mesh_hmap next;
    mesh_hmap_init(&next);
    size_t i;
    json_t *m;
    bool changed = false;
    json_array_foreach(members, i, m)
    {
        const char *node = json_string_value(json_object_get(m, "node"));
        const char *ip = json_string_value(json_object_get(m, "address"));
        json_int_t port = json_integer_value(json_object_get(m, "inbound_port"));
        struct mesh_addr tmp;
        if (!node || !ip || port < 1 || port > 65535 || strcmp(node, a->cfg->node.name) == 0 ||
            mesh_addr_from_ip(ip, 1, &tmp) < 0 || mesh_hmap_get(&next, ip))
            continue;
        char *key = mesh_strdup(ip);
        if (!key || mesh_hmap_put(&next, key, (void *)(uintptr_t)port) < 0) {
            mesh_free(key);
            continue;
        }
        changed |= mesh_hmap_get(&a->members, ip) != (void *)(uintptr_t)port;
    }
    changed |= next.n != a->members.n;
    if (!changed) {
        mesh_agent__clear_members(&next);
        mesh_hmap_done(&next);
        return;
    }
    mesh_agent__clear_members(&a->members);
    mesh_hmap_done(&a->members);
    a->members = next;
    a->members_version++;
    mesh_log_info("mesh membership: %zu other agents", next.n);
    mesh_agent__schedule(a);
    char path[4200], *text = json_dumps(members, JSON_COMPACT);
    members_path(a, path, sizeof(path));
    int r = text ? mesh_fs_write_atomic(path, text, strlen(text), 0600) : -ENOMEM;
    if (r < 0)
        mesh_log_warn("cannot keep the mesh membership in %s: %s", path, strerror(-r));
    mesh_free(text);
}

void mesh_agent__load_members(struct mesh_agent *a)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    members_path(a, path, sizeof(path));
    if (mesh_fs_read_file(path, 16 * 1024 * 1024, &text, &len) < 0)
        return;
    json_t *doc = json_loadb(text, len, 0, NULL);
    mesh_free(text);
    if (json_is_array(doc))
        on_members(a, doc);
    json_decref(doc);
}

/*
 * A local service as the mesh's registry keeps it: what a caller on another host needs.
 * Its labels and health are those of the endpoint this host's registries publish for it
 * (the port callers use: its inbound port, else the workload's).
 */
static json_t *local_service_json(const struct mesh_agent *a, const struct mesh_local_service *l)
{
    uint16_t port = mesh_addr_port(&l->inbound);
    if (!port)
        port = mesh_addr_port(&l->addr);
    char id[600];
    if (l->identity)
        snprintf(id, sizeof(id), "%s", l->identity);
    else
        mesh_spiffe_service_id(id, sizeof(id), a->cfg->trust_domain, l->namespace, l->name);
    json_t *labels = json_object();
    const char *health = "healthy";
    const struct mesh_service *s = mesh_catalog_get(a->catalog, l->namespace, l->name);
    for (size_t i = 0; s && i < s->n_endpoints; i++) {
        const struct mesh_endpoint *ep = &s->endpoints[i];
        if (!ep->node || strcmp(ep->node, a->cfg->node.name) != 0 || ep->addr.port != port)
            continue;
        for (size_t k = 0; k < ep->labels.n; k++)
            json_object_set_new(labels, ep->labels.v[k].key, json_string(ep->labels.v[k].value));
        if (!(ep->health & MESH_EP_READY))
            health = ep->health & MESH_EP_SERVING ? "draining" : "unhealthy";
        break;
    }
    /* The agent's own check: a workload that refuses connections is down. */
    if (mesh_local_health_get(a->local_health, &l->addr) == 0)
        health = "unhealthy";
    return json_pack("{s:s, s:s, s:s, s:i, s:o, s:s, s:s}", "namespace", l->namespace, "name",
                     l->name, "protocol", mesh_protocol_names[l->protocol], "port", (int)port,
                     "labels", labels ? labels : json_object(), "identity", id, "health", health);
}

static json_t *build_report(void *data)
{
    struct mesh_agent *a = data;
    json_t *services = json_array(), *certs = json_array();
    for (size_t i = 0; i < a->n_slots; i++) {
        for (size_t j = 0; j < a->slots[i]->n_locals; j++)
            json_array_append_new(services, local_service_json(a, &a->slots[i]->locals[j]));
    }
    const struct mesh_tls_material *m = mesh_certs_material(a->certs);
    for (size_t i = 0; m && i < m->n; i++)
        json_array_append_new(certs, json_pack("{s:s, s:I}", "id", m->ids[i].id, "not_after",
                                               (json_int_t)m->ids[i].not_after));
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:i, s:o, s:I, s:o, s:{s:i}}", "version", MESH_VERSION,
                  "address", a->cfg->node.address ? a->cfg->node.address : "", "zone",
                  a->cfg->node.zone ? a->cfg->node.zone : "", "inbound_port",
                  (int)mesh_addr_port(&a->cfg->inbound_addr), "services", services, "config_index",
                  (json_int_t)mesh_ctl_watch_index(a->watch), "certificates", certs, "counters",
                  "active_connections", a->proxy ? mesh_proxy_active(a->proxy) : 0);
    /* The traffic between services, for the controller's service graph; a report without
     * it (short of memory) still says everything else. */
    json_t *traffic = a->proxy ? mesh_proxy_traffic(a->proxy, MESH_REPORT_MAX_EDGES) : NULL;
    if (doc && traffic)
        json_object_set_new(doc, "traffic", traffic);
    else
        json_decref(traffic);
    return doc;
}

const struct mesh_ctl_report_ops mesh_agent__report_ops = {.build = build_report,
                                                           .members = on_members};

/* The controller's resources, in controller mode. Returns 0 or -errno. */
int mesh_agent__make_watch(struct mesh_agent *a, const struct mesh_agent_config *cfg,
                           struct mesh_certs *certs, struct mesh_ctl_watch **ret)
{
    *ret = NULL;
    if (!mesh_certs_mode_uses_controller(cfg->identity.mode))
        return 0;
    return mesh_ctl_watch_new(a->loop, a->ctl, cfg->identity.controller, cfg->state_dir, certs,
                              a->resources, ret);
}

/* The certificate manager the config asks for (NULL for none). Returns 0 or -errno. */
int mesh_agent__make_certs(struct mesh_agent *a, const struct mesh_agent_config *cfg,
                           struct mesh_certs **ret)
{
    int r;
    if (mesh_certs_mode_uses_controller(cfg->identity.mode) && !a->ctl &&
        (r = mesh_http_client_new(a->loop, NULL, &a->ctl)) < 0) {
        *ret = NULL;
        return r;
    }
    return mesh_certs_new(a->loop, a->ctl, cfg, on_certs_changed, a, ret); /* "none": NULL */
}

/* Whether a reload leaves the certificate manager as it is (the encoded section holds
 * every identity key, mode included). */
bool mesh_agent__identity_equal(const struct mesh_agent_config *a,
                                const struct mesh_agent_config *b)
{
    json_t *ja = mesh_agent_config_to_json(a), *jb = mesh_agent_config_to_json(b);
    bool eq = ja && jb &&
              json_equal(json_object_get(ja, "identity"), json_object_get(jb, "identity")) &&
              strcmp(a->trust_domain, b->trust_domain) == 0;
    json_decref(ja);
    json_decref(jb);
    return eq;
}
