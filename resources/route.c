/*
 * The Route resource's schema: virtual-host rules (matches, destinations, actions), their
 * lists and the resource itself. Matches are in route_match.c, actions in route_actions.c.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/strutil.h"
#include "resources/route-int.h"

const char *mesh_route__check_dns_label(const char *s)
{
    return mesh_is_dns_label(s) ? NULL : "must be a DNS label";
}

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
     .check = mesh_route__check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     D(namespace),
     .expect = "a namespace",
     .check = mesh_route__check_dns_label},
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

/* matches and destinations are decoded as lists, then their items moved into the rule. */
static int decode_matches(struct mesh_cfg_ctx *ctx, json_t *v, void *field);
static int decode_dests(struct mesh_cfg_ctx *ctx, json_t *v, void *field);
static void free_matches(void *field);
static void free_dests(void *field);

#define RU(m) MESH_CFG_FIELD(struct mesh_route_rule, m)

static const struct mesh_cfg_field rule_fields[] = {
    {.key = "match",
     .type = MESH_CFG_CUSTOM,
     RU(matches),
     .decode = decode_matches,
     .free = free_matches},
    {.key = "destinations",
     .type = MESH_CFG_CUSTOM,
     RU(dests),
     .decode = decode_dests,
     .free = free_dests},
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

static const struct mesh_cfg_field dest_list_field = {
    .key = "destinations", .type = MESH_CFG_LIST, .schema = &dest_schema, .max = 64};

/* Decodes a JSON array with a list field's schema into (items, n). */
int mesh_route__decode_list_into(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *lf,
                                 json_t *v, void **items, size_t *n)
{
    struct {
        struct mesh_cfg_list list;
    } holder = {0};
    const struct mesh_cfg_field fields[] = {
        {.key = lf->key, .type = MESH_CFG_LIST, .offset = 0, .schema = lf->schema, .max = lf->max},
        {0},
    };
    const struct mesh_cfg_schema schema = {sizeof(holder), fields, NULL};
    json_t *wrap = json_pack("{s:O}", lf->key, v);
    if (!wrap)
        return -ENOMEM;
    /* The list's own key would be pushed twice: undo the field's segment first. */
    size_t cut = ctx->path_len - strlen(lf->key) - 1;
    char saved[sizeof(ctx->path)];
    memcpy(saved, ctx->path, sizeof(saved));
    size_t saved_len = ctx->path_len;
    mesh_cfg_path_pop(ctx, cut);
    int r = mesh_cfg_decode(ctx, &schema, wrap, &holder);
    memcpy(ctx->path, saved, sizeof(saved));
    ctx->path_len = saved_len;
    json_decref(wrap);
    *items = holder.list.items;
    *n = holder.list.n;
    return r;
}

static int decode_matches(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_rule *rule =
        container_of((struct mesh_route_match **)field, struct mesh_route_rule, matches);
    return mesh_route_matches_decode(ctx, v, &rule->matches, &rule->n_matches);
}

static int decode_dests(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_rule *rule =
        container_of((struct mesh_route_destination **)field, struct mesh_route_rule, dests);
    int r = mesh_route__decode_list_into(ctx, &dest_list_field, v, (void **)&rule->dests,
                                         &rule->n_dests);
    if (r == 0 && rule->n_dests == 0) {
        mesh_cfg_error(ctx, "expected at least one destination");
        return -EINVAL;
    }
    return r;
}

static void free_matches(void *field)
{
    struct mesh_route_rule *rule =
        container_of((struct mesh_route_match **)field, struct mesh_route_rule, matches);
    mesh_route_matches_free(rule->matches, rule->n_matches);
    rule->matches = NULL;
    rule->n_matches = 0;
}

static void free_dests(void *field)
{
    struct mesh_route_rule *rule =
        container_of((struct mesh_route_destination **)field, struct mesh_route_rule, dests);
    for (size_t i = 0; i < rule->n_dests; i++)
        mesh_cfg_free(&dest_schema, &rule->dests[i]);
    mesh_free(rule->dests);
    rule->dests = NULL;
    rule->n_dests = 0;
}

static const struct mesh_cfg_field rules_field = {
    .key = "rules", .type = MESH_CFG_LIST, .schema = &rule_schema, .max = 256};

static int decode_rules(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route *route =
        container_of((struct mesh_route_rule **)field, struct mesh_route, rules);
    return mesh_route__decode_list_into(ctx, &rules_field, v, (void **)&route->rules,
                                        &route->n_rules);
}

static void free_rules(void *field)
{
    struct mesh_route *route =
        container_of((struct mesh_route_rule **)field, struct mesh_route, rules);
    for (size_t i = 0; i < route->n_rules; i++)
        mesh_cfg_free(&rule_schema, &route->rules[i]);
    mesh_free(route->rules);
    route->rules = NULL;
    route->n_rules = 0;
}

#define RT(m) MESH_CFG_FIELD(struct mesh_route, m)

static const struct mesh_cfg_field route_fields[] = {
    {.key = "service",
     .type = MESH_CFG_STRING,
     RT(service),
     .expect = "a service name",
     .check = mesh_route__check_dns_label},
    {.key = "rules",
     .type = MESH_CFG_CUSTOM,
     RT(rules),
     .flags = MESH_CFG_REQUIRED,
     .decode = decode_rules,
     .free = free_rules},
    {0},
};

const struct mesh_cfg_schema mesh_route_schema = {
    .size = sizeof(struct mesh_route),
    .fields = route_fields,
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
