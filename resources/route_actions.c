/*
 * What a Route rule does besides choosing destinations: header operations, retries, faults,
 * rate limits, redirects, direct responses and prefix rewrites (their schemas).
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/strutil.h"
#include "resources/route-int.h"

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
        if (!mesh_route__is_token(key)) {
            mesh_cfg_error(ctx, "'%s' is not a valid header name", key);
            r = -EINVAL;
        } else if (!json_is_string(val) || !mesh_route__is_field_value(json_string_value(val))) {
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
    return mesh_route__is_token(s) ? NULL : "not a valid header name";
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

const struct mesh_cfg_schema mesh_route__header_ops_schema = {
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

const struct mesh_cfg_schema mesh_route__retry_schema = {
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

const struct mesh_cfg_schema mesh_route__fault_schema = {
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
    return mesh_route__is_field_value(s) && !strpbrk(s, " \t") ? NULL
                                                               : "no spaces or control characters";
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

int mesh_route__decode_redirect(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
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

void mesh_route__free_redirect(void *field)
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

int mesh_route__decode_direct(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
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

void mesh_route__free_direct(void *field)
{
    struct mesh_route_rule *rule = container_of((bool *)field, struct mesh_route_rule, has_direct);
    mesh_free(rule->direct_body);
    mesh_free(rule->direct_content_type);
    rule->direct_body = rule->direct_content_type = NULL;
}

int mesh_route__decode_rewrite(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
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

void mesh_route__free_rewrite(void *field)
{
    mesh_free(*(char **)field);
    *(char **)field = NULL;
}

/* A rule's matches and destinations as lists of their schemas, decoded by the engine. */
