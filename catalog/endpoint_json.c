#include "catalog/endpoint_json.h"

#include <errno.h>
#include <string.h>

#include "catalog/catalog.h"
#include "common/alloc.h"
#include "common/atom.h"
#include "common/names.h"

#define E(member) MESH_CFG_FIELD(struct mesh_endpoint_config, member)

const char *const mesh_endpoint_health_choices[] = {"healthy", "unhealthy", "draining", NULL};

/* An IP literal, or a host name the agent resolves (docs/catalog.md, "Host names"). */
static const char *check_address(const char *s)
{
    if (mesh_is_ip_literal(s))
        return NULL;
    const char *why = mesh_name_check_host(s);
    return why ? "not an IPv4 or IPv6 address nor a host name (RFC 1123: labels of letters, "
                 "digits and '-', the last one not all digits)"
               : NULL;
}

static const char *check_label_value(const char *s)
{
    const char *why = NULL;
    return mesh_label_value_valid(s, &why) ? NULL : why;
}

static const struct mesh_cfg_field endpoint_fields[] = {
    {.key = "address",
     .type = MESH_CFG_STRING,
     E(address),
     .flags = MESH_CFG_REQUIRED,
     .expect = "an IPv4 or IPv6 address or a host name",
     .check = check_address},
    {.key = "port",
     .type = MESH_CFG_INT,
     E(port),
     .flags = MESH_CFG_REQUIRED,
     .min = 1,
     .max = 65535},
    {.key = "weight",
     .type = MESH_CFG_INT,
     E(weight),
     .min = 1,
     .max = MESH_WEIGHT_MAX,
     .def_int = 1},
    {.key = "zone",
     .type = MESH_CFG_STRING,
     E(zone),
     .expect = "a zone name",
     .check = check_label_value},
    {.key = "node",
     .type = MESH_CFG_STRING,
     E(node),
     .expect = "a node name",
     .check = mesh_name_check_node},
    {.key = "health",
     .type = MESH_CFG_ENUM,
     E(health),
     .choices = mesh_endpoint_health_choices,
     .def = "healthy"},
    {.key = "host",
     .type = MESH_CFG_STRING,
     E(host),
     .expect = "the host name the address was resolved from",
     .check = mesh_name_check_host},
    {.key = "labels", .type = MESH_CFG_LABELS, E(labels)},
    {.key = "mesh_port", .type = MESH_CFG_INT, E(mesh_port), .min = 0, .max = 65535},
    {0},
};

static void check_endpoint(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_endpoint_config *e = obj;
    if (e->host && e->address && !mesh_is_ip_literal(e->address))
        mesh_cfg_error(ctx, "'host' goes with an IP address; a host name goes in 'address'");
}

const struct mesh_cfg_schema mesh_endpoint_schema = {
    .size = sizeof(struct mesh_endpoint_config),
    .fields = endpoint_fields,
    .check = check_endpoint,
};

unsigned mesh_endpoint_health_flags(int choice)
{
    switch (choice) {
    case 0:
        return MESH_EP_READY | MESH_EP_SERVING;
    case 2:
        return MESH_EP_SERVING | MESH_EP_TERMINATING;
    default:
        return 0;
    }
}

static int health_choice(unsigned flags)
{
    if (flags & MESH_EP_TERMINATING)
        return 2;
    return (flags & MESH_EP_READY) ? 0 : 1;
}

int mesh_endpoint_from_config(const struct mesh_endpoint_config *in, struct mesh_endpoint *out)
{
    struct mesh_endpoint ep = {0};
    const char *host = in->host;
    if (!in->address)
        return -EINVAL;
    if (mesh_ipport_from_ip(in->address, (uint16_t)in->port, &ep.addr) < 0) {
        /* A name: no address until the agent resolves it. */
        if (in->host)
            return -EINVAL;
        host = in->address;
        ep.addr.port = (uint16_t)in->port;
    }
    int r = host ? mesh_endpoint_set_host(&ep, host) : 0;
    if (r < 0)
        return r;
    ep.weight = (uint32_t)in->weight;
    ep.mesh_port = (uint16_t)in->mesh_port;
    ep.health = mesh_endpoint_health_flags(in->health);
    if ((in->zone && !(ep.zone = mesh_atom(in->zone))) ||
        (in->node && !(ep.node = mesh_atom(in->node))) ||
        mesh_labels_copy(&ep.labels, &in->labels) < 0) {
        mesh_endpoint_done(&ep);
        return -ENOMEM;
    }
    *out = ep;
    return 0;
}

void mesh_json_write_str(struct mesh_buf *b, const char *s)
{
    mesh_buf_append_json_str(b, s, strlen(s));
}

static void write_json(struct mesh_buf *b, const struct mesh_endpoint *ep,
                       const struct mesh_service *s, bool all)
{
    const char *registry = s ? mesh_service_ep_label(s, ep, MESH_CATALOG_REGISTRY_LABEL) : NULL;
    char ip[MESH_ADDR_STRLEN];
    mesh_buf_append_str(b, "{\"address\":");
    if (mesh_endpoint_unresolved(ep)) {
        mesh_json_write_str(b, ep->host);
    } else {
        mesh_json_write_str(b, mesh_ipport_ip(&ep->addr, ip, sizeof(ip)));
        if (ep->host) {
            mesh_buf_append_str(b, ",\"host\":");
            mesh_json_write_str(b, ep->host);
        }
    }
    mesh_buf_appendf(b, ",\"port\":%u", ep->addr.port);
    if (all || ep->weight != 1)
        mesh_buf_appendf(b, ",\"weight\":%u", ep->weight);
    int health = health_choice(ep->health);
    if (all || health != 0)
        mesh_buf_appendf(b, ",\"health\":\"%s\"", mesh_endpoint_health_choices[health]);
    if (ep->mesh_port)
        mesh_buf_appendf(b, ",\"mesh_port\":%u", ep->mesh_port);
    if (ep->zone) {
        mesh_buf_append_str(b, ",\"zone\":");
        mesh_json_write_str(b, ep->zone);
    }
    if (ep->node) {
        mesh_buf_append_str(b, ",\"node\":");
        mesh_json_write_str(b, ep->node);
    }
    if (s && ep->also) {
        mesh_buf_append_str(b, ",\"registries\":[");
        for (size_t i = 0, n = 0; i < s->n_sources; i++) {
            if (!mesh_service_ep_from(s, ep, s->sources[i]))
                continue;
            mesh_buf_append_str(b, n++ ? "," : "");
            mesh_json_write_str(b, s->sources[i]);
        }
        mesh_buf_append_str(b, "]");
    }
    if (!all && !ep->labels.n) {
        mesh_buf_append_str(b, "}");
        return;
    }
    mesh_buf_append_str(b, ",\"labels\":{");
    const char *sep = "";
    if (registry) {
        mesh_buf_append_str(b, "\"" MESH_CATALOG_REGISTRY_LABEL "\":");
        mesh_json_write_str(b, registry);
        sep = ",";
    }
    for (size_t i = 0; i < ep->labels.n; i++) {
        if (registry && strcmp(ep->labels.v[i].key, MESH_CATALOG_REGISTRY_LABEL) == 0)
            continue; /* the source's own value gives way, as in mesh_service_ep_label */
        mesh_buf_append_str(b, sep);
        sep = ",";
        mesh_json_write_str(b, ep->labels.v[i].key);
        mesh_buf_append_str(b, ":");
        mesh_json_write_str(b, ep->labels.v[i].value);
    }
    mesh_buf_append_str(b, "}}");
}

void mesh_endpoint_write_json(struct mesh_buf *b, const struct mesh_endpoint *ep)
{
    write_json(b, ep, NULL, false);
}

void mesh_endpoint_write_json_from(struct mesh_buf *b, const struct mesh_service *s,
                                   const struct mesh_endpoint *ep)
{
    write_json(b, ep, s, true);
}
