#include "resources/authz.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/names.h"
#include "common/spiffe.h"
#include "common/strutil.h"
#include "resources/route-int.h"

static const char *check_principal(const char *s)
{
    const char *star = strchr(s, '*');
    if (star && strchr(star + 1, '*'))
        return "at most one '*'";
    if (strcmp(s, "*") == 0 || (strncmp(s, "spiffe://", 9) == 0 && s[9]))
        return NULL;
    return "a SPIFFE ID (spiffe://...), a pattern with one '*', or \"*\"";
}

#define R(m) MESH_CFG_FIELD(struct mesh_authz_rule, m)

static const struct mesh_cfg_field rule_fields[] = {
    {.key = "match",
     MESH_CFG_ARRAY_OF(struct mesh_authz_rule, matches, n_matches),
     .schema = &mesh_route__match_schema,
     .max = 64},
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
    /* Present, even empty, is not absent: "allow": [] allows nobody. */
    {.key = "allow",
     MESH_CFG_ARRAY_OF(struct mesh_authz, allow, n_allow),
     .schema = &rule_schema,
     .max = 1000,
     .expect = "an array of at most 1000 rules"},
    {.key = "deny",
     MESH_CFG_ARRAY_OF(struct mesh_authz, deny, n_deny),
     .schema = &rule_schema,
     .max = 1000,
     .expect = "an array of at most 1000 rules"},
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

/*
 * Whether a principal pattern names the caller (its ID already read in the current form).
 * A pattern in the older form of a VM service's ID (.../ns/<ns>/svc/<name>) is read in the
 * current form too, so policies written before the change keep their meaning through the
 * transition (docs/identity.md).
 */
static bool principal_matches(const char *pattern, const char *identity)
{
    char now[MESH_SPIFFE_ID_MAX + 1];
    if (mesh_spiffe_match(pattern, identity))
        return true;
    return strstr(pattern, "/svc/") && mesh_spiffe_canonical(pattern, now, sizeof(now)) &&
           mesh_spiffe_match(now, identity);
}

static bool rule_holds(const struct mesh_authz_rule *rule, const struct mesh_http_request *r,
                       const char *identity, bool deny)
{
    if (identity && !identity[0])
        identity = NULL;
    if (rule->principals.n) {
        bool known = false;
        for (size_t i = 0; identity && i < rule->principals.n && !known; i++)
            known = principal_matches(rule->principals.v[i], identity);
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
    /* A caller still presenting the older form of its ID is judged by the current one. */
    char now[MESH_SPIFFE_ID_MAX + 1];
    if (identity && strstr(identity, "/svc/") && mesh_spiffe_canonical(identity, now, sizeof(now)))
        identity = now;
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
