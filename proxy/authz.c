#include "proxy/authz.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/names.h"
#include "common/spiffe.h"

static const char *check_principal(const char *s)
{
    const char *star = strchr(s, '*');
    if (star && strchr(star + 1, '*'))
        return "at most one '*'";
    if (strcmp(s, "*") == 0 || (strncmp(s, "spiffe://", 9) == 0 && s[9]))
        return NULL;
    return "a SPIFFE ID (spiffe://...), a pattern with one '*', or \"*\"";
}

static int decode_rule_matches(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_authz_rule *r =
        container_of((struct mesh_route_match **)field, struct mesh_authz_rule, matches);
    return mesh_route_matches_decode(ctx, v, &r->matches, &r->n_matches);
}

static void free_rule_matches(void *field)
{
    struct mesh_authz_rule *r =
        container_of((struct mesh_route_match **)field, struct mesh_authz_rule, matches);
    mesh_route_matches_free(r->matches, r->n_matches);
    r->matches = NULL;
    r->n_matches = 0;
}

#define R(m) MESH_CFG_FIELD(struct mesh_authz_rule, m)

static const struct mesh_cfg_field rule_fields[] = {
    {.key = "match",
     .type = MESH_CFG_CUSTOM,
     R(matches),
     .decode = decode_rule_matches,
     .free = free_rule_matches},
    {.key = "principals",
     .type = MESH_CFG_STRINGS,
     R(principals),
     .max = 1000,
     .expect = "a SPIFFE ID",
     .check = check_principal},
    {.key = "namespaces",
     .type = MESH_CFG_STRINGS,
     R(namespaces),
     .max = 1000,
     .expect = "a namespace",
     .check = mesh_name_check_dns_label},
    {0},
};

static const struct mesh_cfg_schema rule_schema = {sizeof(struct mesh_authz_rule), rule_fields,
                                                   NULL};

static int decode_rules(struct mesh_cfg_ctx *ctx, json_t *v, struct mesh_authz_rule **ret,
                        size_t *ret_n)
{
    if (!json_is_array(v) || json_array_size(v) > 1000) {
        mesh_cfg_error(ctx, "expected an array of at most 1000 rules");
        return -EINVAL;
    }
    size_t n = json_array_size(v);
    struct mesh_authz_rule *rules = mesh_calloc(n ? n : 1, sizeof(*rules));
    if (!rules)
        return -ENOMEM;
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        size_t old = mesh_cfg_path_push_index(ctx, i);
        if (mesh_cfg_defaults(&rule_schema, &rules[i]) < 0 ||
            mesh_cfg_decode(ctx, &rule_schema, json_array_get(v, i), &rules[i]) < 0)
            r = -EINVAL;
        mesh_cfg_path_pop(ctx, old);
    }
    *ret = rules;
    *ret_n = n;
    return r;
}

static void free_rules(struct mesh_authz_rule *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mesh_cfg_free(&rule_schema, &v[i]);
    mesh_free(v);
}

static int decode_allow(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_authz *a = container_of((struct mesh_authz_rule **)field, struct mesh_authz, allow);
    return decode_rules(ctx, v, &a->allow, &a->n_allow);
}

static int decode_deny(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_authz *a = container_of((struct mesh_authz_rule **)field, struct mesh_authz, deny);
    return decode_rules(ctx, v, &a->deny, &a->n_deny);
}

static void free_allow(void *field)
{
    struct mesh_authz *a = container_of((struct mesh_authz_rule **)field, struct mesh_authz, allow);
    free_rules(a->allow, a->n_allow);
    a->allow = NULL;
    a->n_allow = 0;
}

static void free_deny(void *field)
{
    struct mesh_authz *a = container_of((struct mesh_authz_rule **)field, struct mesh_authz, deny);
    free_rules(a->deny, a->n_deny);
    a->deny = NULL;
    a->n_deny = 0;
}

static void check_authz(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_authz *a = obj;
    if (!a->allow && !a->deny)
        mesh_cfg_error(ctx, "a policy needs \"allow\" or \"deny\" rules");
}

#define A(m) MESH_CFG_FIELD(struct mesh_authz, m)

static const struct mesh_cfg_field authz_fields[] = {
    {.key = "service",
     .type = MESH_CFG_STRING,
     A(service),
     .expect = "a service name",
     .check = mesh_name_check_dns_label},
    {.key = "allow", .type = MESH_CFG_CUSTOM, A(allow), .decode = decode_allow, .free = free_allow},
    {.key = "deny", .type = MESH_CFG_CUSTOM, A(deny), .decode = decode_deny, .free = free_deny},
    {0},
};

const struct mesh_cfg_schema mesh_authz_schema = {
    .size = sizeof(struct mesh_authz),
    .fields = authz_fields,
    .check = check_authz,
};

int mesh_authz_defaults(struct mesh_authz *a)
{
    return mesh_cfg_defaults(&mesh_authz_schema, a);
}

void mesh_authz_done(struct mesh_authz *a)
{
    mesh_cfg_free(&mesh_authz_schema, a);
}

/* The namespace in "spiffe://td/ns/<ns>/...": copied into out, or false. */
static bool id_namespace(const char *id, char *out, size_t size)
{
    const char *p = id ? strstr(id, "://") : NULL;
    p = p ? strchr(p + 3, '/') : NULL;
    if (!p || strncmp(p, "/ns/", 4) != 0)
        return false;
    p += 4;
    size_t n = strcspn(p, "/");
    if (!n || n >= size)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static bool rule_holds(const struct mesh_authz_rule *rule, const struct mesh_http_request *r,
                       const char *identity, bool deny)
{
    if (identity && !identity[0])
        identity = NULL;
    if (rule->principals.n) {
        bool known = false;
        for (size_t i = 0; identity && i < rule->principals.n && !known; i++)
            known = mesh_spiffe_match(rule->principals.v[i], identity);
        if (!known)
            return false;
    }
    if (rule->namespaces.n) {
        char ns[64];
        bool known = false;
        bool has = id_namespace(identity, ns, sizeof(ns));
        for (size_t i = 0; has && i < rule->namespaces.n && !known; i++)
            known = strcmp(rule->namespaces.v[i], ns) == 0;
        if (!known)
            return false;
    }
    if (!rule->n_matches)
        return true;
    if (!r)
        return deny; /* a connection has no request: deny more, allow less */
    for (size_t i = 0; i < rule->n_matches; i++) {
        if (mesh_route_match_holds(&rule->matches[i], r))
            return true;
    }
    return false;
}

bool mesh_authz_allows(const struct mesh_authz *a, const struct mesh_http_request *r,
                       const char *identity)
{
    for (size_t i = 0; i < a->n_deny; i++) {
        if (rule_holds(&a->deny[i], r, identity, true))
            return false;
    }
    if (!a->allow)
        return true;
    for (size_t i = 0; i < a->n_allow; i++) {
        if (rule_holds(&a->allow[i], r, identity, false))
            return true;
    }
    return false;
}
