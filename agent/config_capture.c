#define MESH_LOG_MODULE "config"

/* The "capture" section of agent.json (agent/config_capture.h, docs/capture.md). */
#include "agent/config_capture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "capture/capture.h"
#include "common/addr.h"
#include "common/alloc.h"
#include "common/macros.h"

static const char *const modes[] = {"services", "all", NULL};
static const char *const inbound_modes[] = {"strict", "permissive", NULL};
static const char *const fails[] = {"auto", "open", "closed", NULL};
static const char *const unknowns[] = {"passthrough", "refuse", NULL};

/* A list of whole numbers in [min, max], each once; into a uint16_t or uint32_t array. */
static int decode_numbers(struct mesh_cfg_ctx *ctx, json_t *json, void **v, size_t *n, size_t width,
                          long long min, long long max, const char *what)
{
    char got[64];
    if (!json_is_array(json) || json_array_size(json) > MESH_AGENT_CAPTURE_LIST_MAX) {
        mesh_cfg_describe(json, got, sizeof(got));
        mesh_cfg_error(ctx, "expected a list of at most %d %s, got %s", MESH_AGENT_CAPTURE_LIST_MAX,
                       what, got);
        return -EINVAL;
    }
    mesh_free(*v);
    *n = 0;
    *v = mesh_calloc(json_array_size(json) + 1, width);
    if (!*v)
        return -ENOMEM;
    int r = 0;
    size_t i;
    json_t *item;
    json_array_foreach(json, i, item)
    {
        size_t old = mesh_cfg_path_push_index(ctx, i);
        long long x = json_is_integer(item) ? json_integer_value(item) : min - 1;
        bool dup = false;
        for (size_t k = 0; k < *n; k++) {
            long long y = width == 2 ? ((uint16_t *)*v)[k] : ((uint32_t *)*v)[k];
            dup = dup || y == x;
        }
        if (x < min || x > max) {
            mesh_cfg_describe(item, got, sizeof(got));
            mesh_cfg_error(ctx, "expected %s (%lld to %lld), got %s", what, min, max, got);
            r = -EINVAL;
        } else if (dup) {
            mesh_cfg_error(ctx, "%lld is listed twice", x);
            r = -EINVAL;
        } else if (width == 2) {
            ((uint16_t *)*v)[(*n)++] = (uint16_t)x;
        } else {
            ((uint32_t *)*v)[(*n)++] = (uint32_t)x;
        }
        mesh_cfg_path_pop(ctx, old);
    }
    return r;
}

static int decode_ports(struct mesh_cfg_ctx *ctx, json_t *json, void *field)
{
    struct mesh_agent_capture_ports *p = field;
    return decode_numbers(ctx, json, (void **)&p->v, &p->n, sizeof(uint16_t), 1, 65535, "ports");
}

static int decode_uids(struct mesh_cfg_ctx *ctx, json_t *json, void *field)
{
    struct mesh_agent_capture_uids *u = field;
    return decode_numbers(ctx, json, (void **)&u->v, &u->n, sizeof(uint32_t), 0, 4294967294LL,
                          "user IDs");
}

static void free_ports(void *field)
{
    struct mesh_agent_capture_ports *p = field;
    mesh_free(p->v);
    p->v = NULL;
    p->n = 0;
}

static void free_uids(void *field)
{
    struct mesh_agent_capture_uids *u = field;
    mesh_free(u->v);
    u->v = NULL;
    u->n = 0;
}

static json_t *encode_ports(const void *field)
{
    const struct mesh_agent_capture_ports *p = field;
    json_t *a = json_array();
    for (size_t i = 0; a && i < p->n; i++)
        json_array_append_new(a, json_integer(p->v[i]));
    return a;
}

static json_t *encode_uids(const void *field)
{
    const struct mesh_agent_capture_uids *u = field;
    json_t *a = json_array();
    for (size_t i = 0; a && i < u->n; i++)
        json_array_append_new(a, json_integer(u->v[i]));
    return a;
}

#define PORTS(key_, T, m)                                                                          \
    {                                                                                              \
        .key = key_, .type = MESH_CFG_CUSTOM, MESH_CFG_FIELD(T, m), .decode = decode_ports,        \
        .free = free_ports, .encode = encode_ports                                                 \
    }

static void check_cidrs(struct mesh_cfg_ctx *ctx, const char *key, const struct mesh_cfg_strings *s)
{
    size_t o1 = mesh_cfg_path_push_key(ctx, key);
    /* The spec puts them in an array of this size (agent/capture_cli.h). */
    if (s->n > MESH_AGENT_CAPTURE_LIST_MAX)
        mesh_cfg_error(ctx, "at most %d CIDRs, got %zu", MESH_AGENT_CAPTURE_LIST_MAX, s->n);
    for (size_t i = 0; i < s->n; i++) {
        const char *why = mesh_capture_check_cidr(s->v[i]);
        if (!why)
            continue;
        size_t o2 = mesh_cfg_path_push_index(ctx, i);
        mesh_cfg_error(ctx, "'%s' %s", s->v[i], why);
        mesh_cfg_path_pop(ctx, o2);
    }
    mesh_cfg_path_pop(ctx, o1);
}

static void check_outbound(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_agent_capture_outbound_config *o = obj;
    check_cidrs(ctx, "include_cidrs", &o->include_cidrs);
    check_cidrs(ctx, "exclude_cidrs", &o->exclude_cidrs);
}

#define O(m) MESH_CFG_FIELD(struct mesh_agent_capture_outbound_config, m)

static const struct mesh_cfg_field outbound_fields[] = {
    {.key = "enabled", .type = MESH_CFG_BOOL, O(enabled), .def_int = 1},
    {.key = "mode", .type = MESH_CFG_ENUM, O(mode), .choices = modes, .def = "services"},
    {.key = "listen_port",
     .type = MESH_CFG_INT,
     O(listen_port),
     .min = 1,
     .max = 65535,
     .def_int = 15002},
    {.key = "include_cidrs",
     .type = MESH_CFG_STRINGS,
     O(include_cidrs),
     .expect = "a list of CIDRs like \"240.240.0.0/16\""},
    PORTS("include_ports", struct mesh_agent_capture_outbound_config, include_ports),
    {.key = "exclude_cidrs",
     .type = MESH_CFG_STRINGS,
     O(exclude_cidrs),
     .expect = "a list of CIDRs like \"10.0.0.0/8\""},
    PORTS("exclude_ports", struct mesh_agent_capture_outbound_config, exclude_ports),
    {.key = "exclude_uids",
     .type = MESH_CFG_CUSTOM,
     O(exclude_uids),
     .decode = decode_uids,
     .free = free_uids,
     .encode = encode_uids},
    {.key = "unknown_destination",
     .type = MESH_CFG_ENUM,
     O(unknown),
     .choices = unknowns,
     .def = "passthrough"},
    {.key = "fail", .type = MESH_CFG_ENUM, O(fail), .choices = fails, .def = "auto"},
    {0},
};

static const struct mesh_cfg_schema outbound_schema = {
    .size = sizeof(struct mesh_agent_capture_outbound_config),
    .fields = outbound_fields,
    .check = check_outbound,
};

#define I(m) MESH_CFG_FIELD(struct mesh_agent_capture_inbound_config, m)

static const struct mesh_cfg_field inbound_fields[] = {
    PORTS("ports", struct mesh_agent_capture_inbound_config, ports),
    {.key = "mode", .type = MESH_CFG_ENUM, I(mode), .choices = inbound_modes, .def = "strict"},
    {.key = "listen_port",
     .type = MESH_CFG_INT,
     I(listen_port),
     .min = 1,
     .max = 65535,
     .def_int = 15006},
    {.key = "fail", .type = MESH_CFG_ENUM, I(fail), .choices = fails, .def = "auto"},
    {0},
};

static const struct mesh_cfg_schema inbound_schema = {
    .size = sizeof(struct mesh_agent_capture_inbound_config),
    .fields = inbound_fields,
};

static void check_pods(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_agent_capture_pods_config *p = obj;
    check_cidrs(ctx, "cidrs", &p->cidrs);
    size_t o1 = mesh_cfg_path_push_key(ctx, "interfaces");
    if (p->interfaces.n > MESH_AGENT_CAPTURE_LIST_MAX)
        mesh_cfg_error(ctx, "at most %d interfaces, got %zu", MESH_AGENT_CAPTURE_LIST_MAX,
                       p->interfaces.n);
    for (size_t i = 0; i < p->interfaces.n; i++) {
        const char *why = mesh_capture_check_ifname(p->interfaces.v[i]);
        if (!why)
            continue;
        size_t o2 = mesh_cfg_path_push_index(ctx, i);
        mesh_cfg_error(ctx, "'%s' %s", p->interfaces.v[i], why);
        mesh_cfg_path_pop(ctx, o2);
    }
    mesh_cfg_path_pop(ctx, o1);
}

#define P(m) MESH_CFG_FIELD(struct mesh_agent_capture_pods_config, m)

static const struct mesh_cfg_field pods_fields[] = {
    {.key = "cidrs",
     .type = MESH_CFG_STRINGS,
     P(cidrs),
     .expect = "a list of CIDRs like \"10.244.1.0/24\""},
    {.key = "interfaces",
     .type = MESH_CFG_STRINGS,
     P(interfaces),
     .expect = "a list of interface names or patterns like \"cali*\""},
    {0},
};

static const struct mesh_cfg_schema pods_schema = {
    .size = sizeof(struct mesh_agent_capture_pods_config),
    .fields = pods_fields,
    .check = check_pods,
};

static void check_capture(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_agent_capture_config *c = obj;
    if (!c->enabled)
        return;
    if (!c->outbound.enabled && !c->inbound.ports.n)
        mesh_cfg_error(ctx, "enabled, but captures nothing: set outbound.enabled or inbound.ports");
    if (!c->outbound.enabled && (c->pods.cidrs.n || c->pods.interfaces.n)) {
        size_t o1 = mesh_cfg_path_push_key(ctx, "pods");
        mesh_cfg_error(ctx, "pods' traffic goes to the outbound capture listener, but "
                            "outbound.enabled is false");
        mesh_cfg_path_pop(ctx, o1);
    }
    if (c->outbound.enabled && c->inbound.ports.n &&
        c->outbound.listen_port == c->inbound.listen_port)
        mesh_cfg_error(ctx, "outbound.listen_port and inbound.listen_port are both %d",
                       c->inbound.listen_port);
    for (size_t i = 0; i < c->inbound.ports.n; i++) {
        if (c->inbound.ports.v[i] == c->inbound.listen_port ||
            c->inbound.ports.v[i] == c->outbound.listen_port)
            mesh_cfg_error(ctx,
                           "inbound.ports[%zu] is %u, a capture listener's own port: "
                           "its traffic would loop",
                           i, (unsigned)c->inbound.ports.v[i]);
    }
}

#define C(m) MESH_CFG_FIELD(struct mesh_agent_capture_config, m)

static const struct mesh_cfg_field capture_fields[] = {
    {.key = "enabled", .type = MESH_CFG_BOOL, C(enabled), .def_int = 0},
    {.key = "table",
     .type = MESH_CFG_STRING,
     C(table),
     .def = MESH_CAPTURE_TABLE_DEFAULT,
     .expect = "an nftables table name (letters, digits, '_')",
     .check = mesh_capture_check_table},
    {.key = "ipv6", .type = MESH_CFG_BOOL, C(ipv6), .def_int = 0},
    {.key = "dns", .type = MESH_CFG_BOOL, C(dns), .def_int = 0},
    {.key = "outbound", .type = MESH_CFG_OBJECT, C(outbound), .schema = &outbound_schema},
    {.key = "inbound", .type = MESH_CFG_OBJECT, C(inbound), .schema = &inbound_schema},
    {.key = "pods", .type = MESH_CFG_OBJECT, C(pods), .schema = &pods_schema},
    {0},
};

const struct mesh_cfg_schema mesh_agent__capture_schema = {
    .size = sizeof(struct mesh_agent_capture_config),
    .fields = capture_fields,
    .check = check_capture,
};

void mesh_agent__capture_check_ports(struct mesh_cfg_ctx *ctx,
                                     const struct mesh_agent_capture_config *c,
                                     const char *const *keys, const char *const *values, size_t n)
{
    if (!c->enabled)
        return;
    const struct {
        const char *key;
        int port;
        bool on;
    } ours[] = {
        {"outbound", c->outbound.listen_port, c->outbound.enabled},
        {"inbound", c->inbound.listen_port, c->inbound.ports.n > 0},
    };
    for (size_t i = 0; i < MESH_ARRAY_SIZE(ours); i++) {
        for (size_t j = 0; ours[i].on && j < n; j++) {
            struct mesh_addr a;
            if (!values[j] || mesh_addr_parse(values[j], &a, NULL) < 0 || mesh_addr_is_unix(&a) ||
                mesh_addr_port(&a) != ours[i].port)
                continue;
            size_t o1 = mesh_cfg_path_push_key(ctx, "capture");
            size_t o2 = mesh_cfg_path_push_key(ctx, ours[i].key);
            size_t o3 = mesh_cfg_path_push_key(ctx, "listen_port");
            mesh_cfg_error(ctx, "%d is also the port of %s ('%s'): choose another", ours[i].port,
                           keys[j], values[j]);
            mesh_cfg_path_pop(ctx, o3);
            mesh_cfg_path_pop(ctx, o2);
            mesh_cfg_path_pop(ctx, o1);
        }
    }
}

uint16_t mesh_agent__capture_dns_port(struct mesh_cfg_ctx *ctx,
                                      const struct mesh_agent_capture_config *c, bool responder_on,
                                      const char *responder_listen)
{
    if (!c->enabled || !c->dns)
        return 0;
    const char *why = NULL;
    struct mesh_addr a;
    if (!responder_on)
        why = "dns_responder.enabled is false";
    else if (!c->outbound.enabled)
        why = "capture.outbound.enabled is false";
    else if (mesh_addr_parse(responder_listen, &a, NULL) < 0 || a.ss.ss_family != AF_INET ||
             (((const struct sockaddr_in *)&a.ss)->sin_addr.s_addr != htonl(INADDR_LOOPBACK) &&
              ((const struct sockaddr_in *)&a.ss)->sin_addr.s_addr != htonl(INADDR_ANY)))
        why = "dns_responder.listen is not on 127.0.0.1 or 0.0.0.0 (a redirect lands on "
              "127.0.0.1)";
    if (why) {
        if (ctx) {
            size_t o1 = mesh_cfg_path_push_key(ctx, "capture");
            size_t o2 = mesh_cfg_path_push_key(ctx, "dns");
            mesh_cfg_error(ctx, "captures DNS, but %s", why);
            mesh_cfg_path_pop(ctx, o2);
            mesh_cfg_path_pop(ctx, o1);
        }
        return 0;
    }
    return mesh_addr_port(&a);
}

bool mesh_agent_capture_fail_closed(const struct mesh_agent_capture_config *c, bool inbound)
{
    int fail = inbound ? c->inbound.fail : c->outbound.fail;
    if (fail != MESH_CAPTURE_FAIL_AUTO)
        return fail == MESH_CAPTURE_FAIL_CLOSED;
    return inbound && c->inbound.mode == MESH_CAPTURE_STRICT;
}
