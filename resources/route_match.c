/*
 * Route matches: string matches (exact, prefix, regex, present), the match schema, and
 * whether a match holds for a request. Used by routing and by authorization rules.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/strutil.h"
#include "resources/route-int.h"

/* ---- string matches: {"exact": s} | {"prefix": s} | {"regex": s} | {"present": true} ---- */

static void string_match_done(struct mesh_string_match *m)
{
    if (m->has_regex)
        regfree(&m->re);
    m->has_regex = false;
    mesh_free(m->value);
    m->value = NULL;
}

static int decode_string_match(struct mesh_cfg_ctx *ctx, json_t *v, struct mesh_string_match *m)
{
    static const char *const kinds[] = {"exact", "prefix", "regex", "present", NULL};
    /* Envoy's StringMatcher: one kind, and "ignore_case" beside it. */
    json_t *ic = json_is_object(v) ? json_object_get(v, "ignore_case") : NULL;
    if (!json_is_object(v) || json_object_size(v) != (ic ? 2u : 1u)) {
        mesh_cfg_error(ctx, "expected one of {\"exact\": ...}, {\"prefix\": ...}, "
                            "{\"regex\": ...}, {\"present\": true}, with an optional "
                            "\"ignore_case\": true");
        return -EINVAL;
    }
    void *it = json_object_iter(v);
    if (strcmp(json_object_iter_key(it), "ignore_case") == 0)
        it = json_object_iter_next(v, it);
    const char *key = json_object_iter_key(it);
    json_t *val = json_object_iter_value(it);
    if (ic && !json_is_boolean(ic)) {
        size_t at = mesh_cfg_path_push_key(ctx, "ignore_case");
        mesh_cfg_error(ctx, "expected true or false");
        mesh_cfg_path_pop(ctx, at);
        return -EINVAL;
    }
    m->ignore_case = json_is_true(ic);
    int kind = -1;
    for (int i = 0; kinds[i]; i++) {
        if (strcmp(kinds[i], key) == 0)
            kind = i;
    }
    size_t old = mesh_cfg_path_push_key(ctx, key);
    int r = 0;
    if (kind < 0) {
        const char *hint = mesh_str_suggest(key, kinds);
        if (hint)
            mesh_cfg_error(ctx, "unknown match '%s' (did you mean '%s'?)", key, hint);
        else
            mesh_cfg_error(ctx, "unknown match '%s': exact, prefix, regex or present", key);
        r = -EINVAL;
    } else if (kind == MESH_MATCH_PRESENT) {
        if (!json_is_true(val)) {
            mesh_cfg_error(ctx, "expected true");
            r = -EINVAL;
        }
    } else if (!json_is_string(val)) {
        char got[64];
        mesh_cfg_describe(val, got, sizeof(got));
        mesh_cfg_error(ctx, "expected a string, got %s", got);
        r = -EINVAL;
    } else if (!(m->value = mesh_strdup(json_string_value(val)))) {
        r = -ENOMEM;
    } else if (kind == MESH_MATCH_REGEX) {
        int rc =
            regcomp(&m->re, m->value, REG_EXTENDED | REG_NOSUB | (m->ignore_case ? REG_ICASE : 0));
        if (rc != 0) {
            char why[128];
            regerror(rc, &m->re, why, sizeof(why));
            mesh_cfg_error(ctx, "invalid regular expression \"%s\": %s", m->value, why);
            r = -EINVAL;
        } else {
            m->has_regex = true;
        }
    }
    mesh_cfg_path_pop(ctx, old);
    m->kind = kind < 0 ? 0 : kind;
    return r;
}

static int decode_path_match(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_match *rm =
        container_of((struct mesh_string_match *)field, struct mesh_route_match, path);
    int r = decode_string_match(ctx, v, field);
    rm->has_path = r == 0;
    if (r == 0 && rm->path.kind != MESH_MATCH_REGEX && rm->path.kind != MESH_MATCH_PRESENT &&
        rm->path.value[0] != '/') {
        mesh_cfg_error(ctx, "a path starts with '/', got \"%s\"", rm->path.value);
        return -EINVAL;
    }
    return r;
}

static void free_path_match(void *field)
{
    string_match_done(field);
}

static int decode_host_match(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_match *rm =
        container_of((struct mesh_string_match *)field, struct mesh_route_match, host);
    int r = decode_string_match(ctx, v, field);
    rm->has_host = r == 0;
    if (r == 0 && rm->host.kind != MESH_MATCH_REGEX) {
        for (char *p = rm->host.value; p && *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    return r;
}

/* {"name": match, ...} -> an array of named matches; header names are lower-cased. */
struct named_list {
    struct mesh_named_match *v;
    size_t n;
};

static void named_free(struct mesh_named_match *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mesh_free(v[i].name);
        string_match_done(&v[i].match);
    }
    mesh_free(v);
}

static int decode_named(struct mesh_cfg_ctx *ctx, json_t *v, struct mesh_named_match **ret,
                        size_t *ret_n, bool header)
{
    if (!json_is_object(v)) {
        mesh_cfg_error(ctx, "expected an object of name: match");
        return -EINVAL;
    }
    size_t n = json_object_size(v), k = 0;
    struct mesh_named_match *list = mesh_calloc(n ? n : 1, sizeof(*list));
    if (!list)
        return -ENOMEM;
    int r = 0;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        size_t old = mesh_cfg_path_push_key(ctx, key);
        if (header && !mesh_route__is_token(key)) {
            mesh_cfg_error(ctx, "'%s' is not a valid header name", key);
            r = -EINVAL;
        } else if (!(list[k].name = mesh_strdup(key))) {
            r = -ENOMEM;
        } else {
            if (header) {
                for (char *p = list[k].name; *p; p++)
                    *p = (char)tolower((unsigned char)*p);
            }
            if (decode_string_match(ctx, val, &list[k].match) < 0)
                r = -EINVAL;
        }
        k++;
        mesh_cfg_path_pop(ctx, old);
    }
    *ret = list;
    *ret_n = k;
    return r;
}

static int decode_headers_match(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_match *m =
        container_of((struct mesh_named_match **)field, struct mesh_route_match, headers);
    return decode_named(ctx, v, &m->headers, &m->n_headers, true);
}

static void free_headers_match(void *field)
{
    struct mesh_route_match *m =
        container_of((struct mesh_named_match **)field, struct mesh_route_match, headers);
    named_free(m->headers, m->n_headers);
    m->headers = NULL;
    m->n_headers = 0;
}

static int decode_query_match(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_match *m =
        container_of((struct mesh_named_match **)field, struct mesh_route_match, query);
    return decode_named(ctx, v, &m->query, &m->n_query, false);
}

static void free_query_match(void *field)
{
    struct mesh_route_match *m =
        container_of((struct mesh_named_match **)field, struct mesh_route_match, query);
    named_free(m->query, m->n_query);
    m->query = NULL;
    m->n_query = 0;
}

static const char *check_method(const char *s)
{
    for (const char *p = s; *p; p++) {
        if (!(*p >= 'A' && *p <= 'Z'))
            return "a method is upper-case letters";
    }
    return *s ? NULL : "a method is upper-case letters";
}

#define M(m) MESH_CFG_FIELD(struct mesh_route_match, m)

static const struct mesh_cfg_field match_fields[] = {
    {.key = "host",
     .type = MESH_CFG_CUSTOM,
     M(host),
     .decode = decode_host_match,
     .free = free_path_match},
    {.key = "path",
     .type = MESH_CFG_CUSTOM,
     M(path),
     .decode = decode_path_match,
     .free = free_path_match},
    {.key = "methods",
     .type = MESH_CFG_STRINGS,
     M(methods),
     .max = 16,
     .expect = "a method like \"GET\"",
     .check = check_method},
    {.key = "headers",
     .type = MESH_CFG_CUSTOM,
     M(headers),
     .decode = decode_headers_match,
     .free = free_headers_match},
    {.key = "query",
     .type = MESH_CFG_CUSTOM,
     M(query),
     .decode = decode_query_match,
     .free = free_query_match},
    {0},
};

const struct mesh_cfg_schema mesh_route__match_schema = {
    .size = sizeof(struct mesh_route_match),
    .fields = match_fields,
};

bool mesh_string_match(const struct mesh_string_match *m, const char *s, size_t len)
{
    size_t vlen;
    switch (m->kind) {
    case MESH_MATCH_EXACT:
        vlen = strlen(m->value);
        return vlen == len &&
               (m->ignore_case ? strncasecmp(m->value, s, len) : memcmp(m->value, s, len)) == 0;
    case MESH_MATCH_PREFIX:
        vlen = strlen(m->value);
        return vlen <= len &&
               (m->ignore_case ? strncasecmp(m->value, s, vlen) : memcmp(m->value, s, vlen)) == 0;
    case MESH_MATCH_REGEX: {
        /* regexec wants a C string; paths and values are short and bounded. */
        char tmp[8192];
        if (len >= sizeof(tmp))
            return false;
        memcpy(tmp, s, len);
        tmp[len] = '\0';
        return regexec(&m->re, tmp, 0, NULL, 0) == 0;
    }
    case MESH_MATCH_PRESENT:
        return true;
    }
    return false;
}

static bool header_matches(const struct mesh_named_match *m, const struct mesh_http_request *r)
{
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct mesh_http_header *h = &r->headers[i];
        if (mesh_http_header_is(h, m->name) && mesh_string_match(&m->match, h->value, h->value_len))
            return true;
    }
    return false;
}

static bool query_matches(const struct mesh_named_match *m, const struct mesh_http_request *r)
{
    char v[1024];
    int n = mesh_http_query_get(r->query, r->query_len, m->name, v, sizeof(v));
    return n >= 0 && mesh_string_match(&m->match, v, (size_t)n);
}

/* The Host without its port, lower-cased into buf; false when too long. */
static bool host_of(const struct mesh_http_request *r, char *buf, size_t size, size_t *ret_len)
{
    size_t n = r->host ? r->host_len : 0;
    if (n >= size)
        return false;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)tolower((unsigned char)r->host[i]);
    buf[n] = '\0';
    char *colon = strrchr(buf, ':');
    if (colon && !strchr(colon, ']'))
        n = (size_t)(colon - buf);
    *ret_len = n;
    return true;
}

bool mesh_route_match_holds(const struct mesh_route_match *m, const struct mesh_http_request *r)
{
    if (m->has_host) {
        char host[256];
        size_t len;
        if (!host_of(r, host, sizeof(host), &len) || !mesh_string_match(&m->host, host, len))
            return false;
    }
    if (m->has_path && !mesh_string_match(&m->path, r->path, r->path_len))
        return false;
    if (m->methods.n) {
        bool any = false;
        for (size_t i = 0; i < m->methods.n && !any; i++)
            any = strlen(m->methods.v[i]) == r->method_len &&
                  memcmp(m->methods.v[i], r->method, r->method_len) == 0;
        if (!any)
            return false;
    }
    for (size_t i = 0; i < m->n_headers; i++) {
        if (!header_matches(&m->headers[i], r))
            return false;
    }
    for (size_t i = 0; i < m->n_query; i++) {
        if (!query_matches(&m->query[i], r))
            return false;
    }
    return true;
}
