/*
 * The Route resource's schema: virtual-host rules (matches, destinations, actions), their
 * lists and the resource itself. Matches are in route_match.c, actions in route_actions.c.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/names.h"
#include "common/strutil.h"
#include "resources/route-int.h"

bool mesh_route__is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

bool mesh_route__is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

#define D(m) MESH_CFG_FIELD(struct mesh_route_destination, m)

static const struct mesh_cfg_field dest_fields[] = {
    {.key = "service",
     .type = MESH_CFG_STRING,
     D(service),
     .flags = MESH_CFG_REQUIRED,
     .expect = "a service name",
     .check = mesh_name_check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     D(namespace),
     .expect = "a namespace",
     .check = mesh_name_check_dns_label},
    {.key = "subset", .type = MESH_CFG_LABELS, D(subset)},
    {.key = "weight", .type = MESH_CFG_INT, D(weight), .def_int = 1, .min = 0, .max = 1000000},
    {0},
};

static const struct mesh_cfg_schema dest_schema = {
    .size = sizeof(struct mesh_route_destination),
    .fields = dest_fields,
};

struct rule_lists {
    struct mesh_cfg_list matches;
    struct mesh_cfg_list dests;
};

static void check_rule(struct mesh_cfg_ctx *ctx, void *obj)
{
    struct mesh_route_rule *r = obj;
    int actions = (r->n_dests > 0) + r->has_redirect + r->has_direct;
    if (actions != 1)
        mesh_cfg_error(ctx, "a rule needs exactly one of \"destinations\", \"redirect\", "
                            "\"direct_response\"");
    int total = 0;
    for (size_t i = 0; i < r->n_dests; i++)
        total += r->dests[i].weight;
    if (r->n_dests && total == 0)
        mesh_cfg_error(ctx, "the destinations' weights add up to 0");
    if (r->rewrite_prefix) {
        bool prefixes = r->n_matches > 0;
        for (size_t i = 0; i < r->n_matches; i++)
            prefixes &= r->matches[i].has_path && r->matches[i].path.kind == MESH_MATCH_PREFIX;
        if (!prefixes)
            mesh_cfg_error(ctx, "\"rewrite\" needs every match to have a path prefix");
    }
}

#define RU(m) MESH_CFG_FIELD(struct mesh_route_rule, m)

static const struct mesh_cfg_field rule_fields[] = {
    {.key = "name",
     .type = MESH_CFG_STRING,
     RU(name),
     .expect = "a rule name",
     .check = mesh_name_check_dns_label},
    {.key = "match",
     MESH_CFG_ARRAY_OF(struct mesh_route_rule, matches, n_matches),
     .schema = &mesh_route__match_schema,
     .max = 64},
    {.key = "destinations",
     MESH_CFG_ARRAY_OF(struct mesh_route_rule, dests, n_dests),
     .flags = MESH_CFG_NONEMPTY,
     .schema = &dest_schema,
     .max = 64},
    {.key = "redirect",
     .type = MESH_CFG_CUSTOM,
     RU(has_redirect),
     .decode = mesh_route__decode_redirect,
     .free = mesh_route__free_redirect},
    {.key = "direct_response",
     .type = MESH_CFG_CUSTOM,
     RU(has_direct),
     .decode = mesh_route__decode_direct,
     .free = mesh_route__free_direct},
    {.key = "rewrite",
     .type = MESH_CFG_CUSTOM,
     RU(rewrite_prefix),
     .decode = mesh_route__decode_rewrite,
     .free = mesh_route__free_rewrite},
    {.key = "request_headers",
     .type = MESH_CFG_OBJECT,
     RU(request_headers),
     .schema = &mesh_route__header_ops_schema},
    {.key = "response_headers",
     .type = MESH_CFG_OBJECT,
     RU(response_headers),
     .schema = &mesh_route__header_ops_schema},
    {.key = "timeout", .type = MESH_CFG_DURATION, RU(timeout_ms), .def = "15s", .max = 86400000},
    {.key = "per_try_timeout",
     .type = MESH_CFG_DURATION,
     RU(per_try_timeout_ms),
     .def = "0",
     .max = 86400000},
    {.key = "retries", .type = MESH_CFG_OBJECT, RU(retries), .schema = &mesh_route__retry_schema},
    {.key = "fault", .type = MESH_CFG_OBJECT, RU(fault), .schema = &mesh_route__fault_schema},
    {.key = "rate_limit",
     .type = MESH_CFG_CUSTOM,
     RU(rate_limit),
     .decode = mesh_rate_limit_decode},
    {0},
};

static const struct mesh_cfg_schema rule_schema = {
    .size = sizeof(struct mesh_route_rule),
    .fields = rule_fields,
    .check = check_rule,
};

#define RT(m) MESH_CFG_FIELD(struct mesh_route, m)

static const struct mesh_cfg_field route_fields[] = {
    {.key = "service",
     .type = MESH_CFG_STRING,
     RT(service),
     .expect = "a service name",
     .check = mesh_name_check_dns_label},
    {.key = "rules",
     MESH_CFG_ARRAY_OF(struct mesh_route, rules, n_rules),
     .flags = MESH_CFG_REQUIRED,
     .schema = &rule_schema,
     .max = 256},
    {0},
};

/* Rule names are unique within a route: they key its rules' metrics. */
static void check_route(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_route *r = obj;
    for (size_t i = 0; i < r->n_rules; i++) {
        for (size_t k = 0; r->rules[i].name && k < i; k++) {
            if (r->rules[k].name && strcmp(r->rules[k].name, r->rules[i].name) == 0)
                mesh_cfg_error(ctx, "rules[%zu] and rules[%zu] are both named '%s'", k, i,
                               r->rules[i].name);
        }
    }
}

const struct mesh_cfg_schema mesh_route_schema = {
    .size = sizeof(struct mesh_route),
    .fields = route_fields,
    .check = check_route,
};

int mesh_route_defaults(struct mesh_route *r)
{
    return mesh_cfg_defaults(&mesh_route_schema, r);
}

void mesh_route_done(struct mesh_route *r)
{
    mesh_cfg_free(&mesh_route_schema, r);
}

int mesh_route_rule_defaults(struct mesh_route_rule *r)
{
    return mesh_cfg_defaults(&rule_schema, r);
}

void mesh_route_rule_done(struct mesh_route_rule *r)
{
    mesh_cfg_free(&rule_schema, r);
}
