#include "proxy/route.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/names.h"
#include "common/strutil.h"

static bool is_token(const char *s)
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

static bool is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

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
        if (header && !is_token(key)) {
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

static const struct mesh_cfg_schema match_schema = {
    .size = sizeof(struct mesh_route_match),
    .fields = match_fields,
};

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

/* ---- header operations: {"set": {...}, "add": {...}, "remove": [...]} ---- */

static int decode_header_map(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_labels *l = field;
    if (!json_is_object(v)) {
        mesh_cfg_error(ctx, "expected an object of header: value");
        return -EINVAL;
    }
    int r = 0;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        size_t old = mesh_cfg_path_push_key(ctx, key);
        if (!is_token(key)) {
            mesh_cfg_error(ctx, "'%s' is not a valid header name", key);
            r = -EINVAL;
        } else if (!json_is_string(val) || !is_field_value(json_string_value(val))) {
            mesh_cfg_error(ctx, "expected a header value (a string without control characters)");
            r = -EINVAL;
        } else if (mesh_labels_set(l, key, json_string_value(val)) < 0) {
            r = -ENOMEM;
        }
        mesh_cfg_path_pop(ctx, old);
    }
    return r;
}

static void free_header_map(void *field)
{
    mesh_labels_done(field);
}

static const char *check_header_name(const char *s)
{
    return is_token(s) ? NULL : "not a valid header name";
}

#define H(m) MESH_CFG_FIELD(struct mesh_header_ops, m)

static const struct mesh_cfg_field header_ops_fields[] = {
    {.key = "set",
     .type = MESH_CFG_CUSTOM,
     H(set),
     .decode = decode_header_map,
     .free = free_header_map},
    {.key = "add",
     .type = MESH_CFG_CUSTOM,
     H(add),
     .decode = decode_header_map,
     .free = free_header_map},
    {.key = "remove",
     .type = MESH_CFG_STRINGS,
     H(remove),
     .max = 64,
     .expect = "a header name",
     .check = check_header_name},
    {0},
};

static const struct mesh_cfg_schema header_ops_schema = {
    .size = sizeof(struct mesh_header_ops),
    .fields = header_ops_fields,
};

/* ---- retries ---- */

static int decode_retry_on(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    static const char *const names[] = {"connect-failure",  "reset", "5xx", "gateway-error",
                                        "retriable-status", NULL};
    unsigned *on = field;
    struct mesh_retry_policy *p = container_of(on, struct mesh_retry_policy, on);
    *on = 0;
    p->on_set = true;
    if (!json_is_array(v)) {
        mesh_cfg_error(ctx, "expected an array of retry conditions");
        return -EINVAL;
    }
    int r = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        size_t old = mesh_cfg_path_push_index(ctx, i);
        int k = -1;
        for (int j = 0; json_is_string(e) && names[j]; j++) {
            if (strcmp(names[j], json_string_value(e)) == 0)
                k = j;
        }
        if (k < 0) {
            const char *hint =
                json_is_string(e) ? mesh_str_suggest(json_string_value(e), names) : NULL;
            mesh_cfg_error(ctx,
                           "expected one of \"connect-failure\", \"reset\", \"5xx\", "
                           "\"gateway-error\", \"retriable-status\"%s%s%s",
                           hint ? " (did you mean \"" : "", hint ? hint : "", hint ? "\"?)" : "");
            r = -EINVAL;
        } else {
            *on |= 1u << k;
        }
        mesh_cfg_path_pop(ctx, old);
    }
    return r;
}

static json_t *encode_retry_on(const void *field)
{
    return json_integer(*(const unsigned *)field);
}

static int decode_statuses(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_retry_policy *p = container_of((int **)field, struct mesh_retry_policy, statuses);
    if (!json_is_array(v) || json_array_size(v) > 32) {
        mesh_cfg_error(ctx, "expected an array of at most 32 statuses");
        return -EINVAL;
    }
    size_t n = json_array_size(v);
    p->statuses = mesh_calloc(n ? n : 1, sizeof(int));
    if (!p->statuses)
        return -ENOMEM;
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 100 || json_integer_value(e) > 599) {
            size_t old = mesh_cfg_path_push_index(ctx, i);
            mesh_cfg_error(ctx, "expected a status from 100 to 599");
            mesh_cfg_path_pop(ctx, old);
            r = -EINVAL;
            continue;
        }
        p->statuses[p->n_statuses++] = (int)json_integer_value(e);
    }
    return r;
}

static void free_statuses(void *field)
{
    struct mesh_retry_policy *p = container_of((int **)field, struct mesh_retry_policy, statuses);
    mesh_free(p->statuses);
    p->statuses = NULL;
    p->n_statuses = 0;
}

static void check_retry(struct mesh_cfg_ctx *ctx, void *obj)
{
    struct mesh_retry_policy *p = obj;
    if (p->backoff_max_ms < p->backoff_base_ms)
        mesh_cfg_error(ctx, "backoff_max must not be shorter than backoff_base");
    if ((p->on & MESH_RETRY_STATUSES) && !p->n_statuses)
        mesh_cfg_error(ctx, "\"retriable-status\" needs \"statuses\"");
}

#define R(m) MESH_CFG_FIELD(struct mesh_retry_policy, m)

static const struct mesh_cfg_field retry_fields[] = {
    {.key = "attempts", .type = MESH_CFG_INT, R(attempts), .def_int = 2, .min = 0, .max = 10},
    {.key = "retry_on",
     .type = MESH_CFG_CUSTOM,
     R(on),
     .decode = decode_retry_on,
     .encode = encode_retry_on},
    {.key = "statuses",
     .type = MESH_CFG_CUSTOM,
     R(statuses),
     .decode = decode_statuses,
     .free = free_statuses},
    {.key = "backoff_base",
     .type = MESH_CFG_DURATION,
     R(backoff_base_ms),
     .def = "25ms",
     .max = 60000},
    {.key = "backoff_max",
     .type = MESH_CFG_DURATION,
     R(backoff_max_ms),
     .def = "250ms",
     .max = 600000},
    {.key = "budget_percent",
     .type = MESH_CFG_INT,
     R(budget_percent),
     .def_int = 20,
     .min = 0,
     .max = 100},
    {.key = "min_retry_concurrency",
     .type = MESH_CFG_INT,
     R(min_retry_concurrency),
     .def_int = 32,
     .min = 0,
     .max = 1000000},
    {.key = "non_idempotent", .type = MESH_CFG_BOOL, R(non_idempotent)},
    {0},
};

static const struct mesh_cfg_schema retry_schema = {
    .size = sizeof(struct mesh_retry_policy),
    .fields = retry_fields,
    .check = check_retry,
};

/* ---- faults ---- */

struct fault_delay {
    uint64_t ms;
    int percent;
    char *header;
};

struct fault_abort {
    int status;
    int percent;
    char *header;
};

#define FD(m) MESH_CFG_FIELD(struct fault_delay, m)
#define FA(m) MESH_CFG_FIELD(struct fault_abort, m)

static const struct mesh_cfg_field delay_fields[] = {
    {.key = "duration", .type = MESH_CFG_DURATION, FD(ms), .def = "0", .max = 600000},
    {.key = "percent", .type = MESH_CFG_INT, FD(percent), .def_int = 100, .min = 0, .max = 100},
    {.key = "header",
     .type = MESH_CFG_STRING,
     FD(header),
     .expect = "a header name",
     .check = check_header_name},
    {0},
};

static const struct mesh_cfg_schema delay_schema = {sizeof(struct fault_delay), delay_fields, NULL};

static const struct mesh_cfg_field abort_fields[] = {
    {.key = "status", .type = MESH_CFG_INT, FA(status), .def_int = 503, .min = 200, .max = 599},
    {.key = "percent", .type = MESH_CFG_INT, FA(percent), .def_int = 100, .min = 0, .max = 100},
    {.key = "header",
     .type = MESH_CFG_STRING,
     FA(header),
     .expect = "a header name",
     .check = check_header_name},
    {0},
};

static const struct mesh_cfg_schema abort_schema = {sizeof(struct fault_abort), abort_fields, NULL};

static int decode_delay(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_fault_policy *f = container_of((bool *)field, struct mesh_fault_policy, has_delay);
    struct fault_delay d;
    if (mesh_cfg_defaults(&delay_schema, &d) < 0)
        return -ENOMEM;
    int r = mesh_cfg_decode(ctx, &delay_schema, v, &d);
    if (r == 0) {
        f->has_delay = true;
        f->delay_ms = d.ms;
        f->delay_percent = d.percent;
        f->delay_header = d.header;
        d.header = NULL;
    }
    mesh_cfg_free(&delay_schema, &d);
    return r;
}

static int decode_abort(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_fault_policy *f = container_of((bool *)field, struct mesh_fault_policy, has_abort);
    struct fault_abort a;
    if (mesh_cfg_defaults(&abort_schema, &a) < 0)
        return -ENOMEM;
    int r = mesh_cfg_decode(ctx, &abort_schema, v, &a);
    if (r == 0) {
        f->has_abort = true;
        f->abort_status = a.status;
        f->abort_percent = a.percent;
        f->abort_header = a.header;
        a.header = NULL;
    }
    mesh_cfg_free(&abort_schema, &a);
    return r;
}

static void free_delay(void *field)
{
    struct mesh_fault_policy *f = container_of((bool *)field, struct mesh_fault_policy, has_delay);
    mesh_free(f->delay_header);
    f->delay_header = NULL;
}

static void free_abort(void *field)
{
    struct mesh_fault_policy *f = container_of((bool *)field, struct mesh_fault_policy, has_abort);
    mesh_free(f->abort_header);
    f->abort_header = NULL;
}

#define F(m) MESH_CFG_FIELD(struct mesh_fault_policy, m)

static const struct mesh_cfg_field fault_fields[] = {
    {.key = "delay",
     .type = MESH_CFG_CUSTOM,
     F(has_delay),
     .decode = decode_delay,
     .free = free_delay},
    {.key = "abort",
     .type = MESH_CFG_CUSTOM,
     F(has_abort),
     .decode = decode_abort,
     .free = free_abort},
    {0},
};

static const struct mesh_cfg_schema fault_schema = {
    .size = sizeof(struct mesh_fault_policy),
    .fields = fault_fields,
};

/* ---- rate limits ---- */

struct rate_limit_cfg {
    int per_second;
    int burst;
};

#define RL(m) MESH_CFG_FIELD(struct rate_limit_cfg, m)

static const struct mesh_cfg_field rate_fields[] = {
    {.key = "requests_per_second",
     .type = MESH_CFG_INT,
     RL(per_second),
     .flags = MESH_CFG_REQUIRED,
     .min = 1,
     .max = 10000000},
    {.key = "burst", .type = MESH_CFG_INT, RL(burst), .min = 0, .max = 10000000},
    {0},
};

static const struct mesh_cfg_schema rate_cfg_schema = {sizeof(struct rate_limit_cfg), rate_fields,
                                                       NULL};

int mesh_rate_limit_decode(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_rate_limit_policy *p = field;
    struct rate_limit_cfg c;
    if (mesh_cfg_defaults(&rate_cfg_schema, &c) < 0)
        return -ENOMEM;
    int r = mesh_cfg_decode(ctx, &rate_cfg_schema, v, &c);
    if (r == 0) {
        p->enabled = true;
        p->per_second = c.per_second;
        /* No burst given: one second's worth. */
        p->burst = c.burst ? c.burst : c.per_second;
    }
    return r;
}

/* ---- rules ---- */

static const char *check_redirect_part(const char *s)
{
    return is_field_value(s) && !strpbrk(s, " \t") ? NULL : "no spaces or control characters";
}

struct redirect_cfg {
    char *scheme, *host, *path, *prefix;
    int status;
};

#define RD(m) MESH_CFG_FIELD(struct redirect_cfg, m)

static const char *check_scheme(const char *s)
{
    return strcmp(s, "http") == 0 || strcmp(s, "https") == 0 ? NULL : "http or https";
}

static const struct mesh_cfg_field redirect_fields[] = {
    {.key = "scheme",
     .type = MESH_CFG_STRING,
     RD(scheme),
     .expect = "http or https",
     .check = check_scheme},
    {.key = "host",
     .type = MESH_CFG_STRING,
     RD(host),
     .expect = "a host",
     .check = check_redirect_part},
    {.key = "path",
     .type = MESH_CFG_STRING,
     RD(path),
     .expect = "a path",
     .check = check_redirect_part},
    {.key = "prefix",
     .type = MESH_CFG_STRING,
     RD(prefix),
     .expect = "a path prefix",
     .check = check_redirect_part},
    {.key = "status", .type = MESH_CFG_INT, RD(status), .def_int = 302, .min = 301, .max = 308},
    {0},
};

static void check_redirect(struct mesh_cfg_ctx *ctx, void *obj)
{
    struct redirect_cfg *r = obj;
    if (r->status == 304 || r->status == 305 || r->status == 306)
        mesh_cfg_error(ctx, "status must be 301, 302, 303, 307 or 308");
    if (r->path && r->prefix)
        mesh_cfg_error(ctx, "use either \"path\" or \"prefix\", not both");
}

static const struct mesh_cfg_schema redirect_schema = {sizeof(struct redirect_cfg), redirect_fields,
                                                       check_redirect};

static int decode_redirect(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_rule *rule =
        container_of((bool *)field, struct mesh_route_rule, has_redirect);
    struct redirect_cfg c;
    if (mesh_cfg_defaults(&redirect_schema, &c) < 0)
        return -ENOMEM;
    int r = mesh_cfg_decode(ctx, &redirect_schema, v, &c);
    if (r == 0) {
        rule->has_redirect = true;
        rule->redirect_scheme = c.scheme;
        rule->redirect_host = c.host;
        rule->redirect_path = c.path;
        rule->redirect_prefix = c.prefix;
        rule->redirect_status = c.status;
        c.scheme = c.host = c.path = c.prefix = NULL;
    }
    mesh_cfg_free(&redirect_schema, &c);
    return r;
}

static void free_redirect(void *field)
{
    struct mesh_route_rule *rule =
        container_of((bool *)field, struct mesh_route_rule, has_redirect);
    mesh_free(rule->redirect_scheme);
    mesh_free(rule->redirect_host);
    mesh_free(rule->redirect_path);
    mesh_free(rule->redirect_prefix);
    rule->redirect_scheme = rule->redirect_host = rule->redirect_path = rule->redirect_prefix =
        NULL;
}

struct direct_cfg {
    int status;
    char *body;
    char *content_type;
};

#define DR(m) MESH_CFG_FIELD(struct direct_cfg, m)

static const struct mesh_cfg_field direct_fields[] = {
    {.key = "status", .type = MESH_CFG_INT, DR(status), .def_int = 200, .min = 200, .max = 599},
    {.key = "body", .type = MESH_CFG_STRING, DR(body), .def = ""},
    {.key = "content_type",
     .type = MESH_CFG_STRING,
     DR(content_type),
     .def = "text/plain",
     .expect = "a media type",
     .check = check_redirect_part},
    {0},
};

static const struct mesh_cfg_schema direct_schema = {sizeof(struct direct_cfg), direct_fields,
                                                     NULL};

static int decode_direct(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    struct mesh_route_rule *rule = container_of((bool *)field, struct mesh_route_rule, has_direct);
    struct direct_cfg c;
    if (mesh_cfg_defaults(&direct_schema, &c) < 0)
        return -ENOMEM;
    int r = mesh_cfg_decode(ctx, &direct_schema, v, &c);
    if (r == 0) {
        rule->has_direct = true;
        rule->direct_status = c.status;
        rule->direct_body = c.body;
        rule->direct_content_type = c.content_type;
        c.body = c.content_type = NULL;
    }
    mesh_cfg_free(&direct_schema, &c);
    return r;
}

static void free_direct(void *field)
{
    struct mesh_route_rule *rule = container_of((bool *)field, struct mesh_route_rule, has_direct);
    mesh_free(rule->direct_body);
    mesh_free(rule->direct_content_type);
    rule->direct_body = rule->direct_content_type = NULL;
}

static int decode_rewrite(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    char **prefix = field;
    json_t *p = json_is_object(v) ? json_object_get(v, "prefix") : NULL;
    if (!p || json_object_size(v) != 1 || !json_is_string(p) || json_string_value(p)[0] != '/' ||
        check_redirect_part(json_string_value(p))) {
        mesh_cfg_error(ctx, "expected {\"prefix\": \"/new\"}");
        return -EINVAL;
    }
    *prefix = mesh_strdup(json_string_value(p));
    return *prefix ? 0 : -ENOMEM;
}

static void free_rewrite(void *field)
{
    mesh_free(*(char **)field);
    *(char **)field = NULL;
}

/* A rule's matches and destinations as lists of their schemas, decoded by the engine. */
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
     .decode = decode_redirect,
     .free = free_redirect},
    {.key = "direct_response",
     .type = MESH_CFG_CUSTOM,
     RU(has_direct),
     .decode = decode_direct,
     .free = free_direct},
    {.key = "rewrite",
     .type = MESH_CFG_CUSTOM,
     RU(rewrite_prefix),
     .decode = decode_rewrite,
     .free = free_rewrite},
    {.key = "request_headers",
     .type = MESH_CFG_OBJECT,
     RU(request_headers),
     .schema = &header_ops_schema},
    {.key = "response_headers",
     .type = MESH_CFG_OBJECT,
     RU(response_headers),
     .schema = &header_ops_schema},
    {.key = "timeout", .type = MESH_CFG_DURATION, RU(timeout_ms), .def = "15s", .max = 86400000},
    {.key = "per_try_timeout",
     .type = MESH_CFG_DURATION,
     RU(per_try_timeout_ms),
     .def = "0",
     .max = 86400000},
    {.key = "retries", .type = MESH_CFG_OBJECT, RU(retries), .schema = &retry_schema},
    {.key = "fault", .type = MESH_CFG_OBJECT, RU(fault), .schema = &fault_schema},
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

static const struct mesh_cfg_field match_list_field = {
    .key = "match", .type = MESH_CFG_LIST, .schema = &match_schema, .max = 64};
static const struct mesh_cfg_field dest_list_field = {
    .key = "destinations", .type = MESH_CFG_LIST, .schema = &dest_schema, .max = 64};

/* Decodes a JSON array with a list field's schema into (items, n). */
static int decode_list_into(struct mesh_cfg_ctx *ctx, const struct mesh_cfg_field *lf, json_t *v,
                            void **items, size_t *n)
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

int mesh_route_matches_decode(struct mesh_cfg_ctx *ctx, json_t *v, struct mesh_route_match **ret,
                              size_t *ret_n)
{
    return decode_list_into(ctx, &match_list_field, v, (void **)ret, ret_n);
}

void mesh_route_matches_free(struct mesh_route_match *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mesh_cfg_free(&match_schema, &v[i]);
    mesh_free(v);
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
    int r = decode_list_into(ctx, &dest_list_field, v, (void **)&rule->dests, &rule->n_dests);
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
    return decode_list_into(ctx, &rules_field, v, (void **)&route->rules, &route->n_rules);
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
     .check = mesh_name_check_dns_label},
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
