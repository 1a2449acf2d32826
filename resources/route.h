/*
 * Route resources: how HTTP requests for one service are matched and handled.
 *
 *   {"kind": "Route", "name": "api", "namespace": "shop",
 *    "spec": {"service": "api", "rules": [ {match, action, headers, resilience, fault}, ... ]}}
 *
 * Rules are tried in order; the first whose match holds decides. A request no rule matches
 * goes to the service itself. Each rule has exactly one action: weighted destinations
 * (services or label-selected subsets), a redirect, or a direct response. See
 * docs/resources.md. Parsing is pure; regular expressions are compiled then (POSIX ERE).
 */
#ifndef MESH_ROUTE_H
#define MESH_ROUTE_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/http_parse.h"
#include "common/labels.h"

enum mesh_match_kind { MESH_MATCH_EXACT, MESH_MATCH_PREFIX, MESH_MATCH_REGEX, MESH_MATCH_PRESENT };

struct mesh_string_match {
    int kind;
    char *value;
    bool ignore_case; /* ASCII case does not matter (exact, prefix, regex) */
    bool has_regex;
    regex_t re;
};

struct mesh_named_match {
    char *name; /* lower case for headers */
    struct mesh_string_match match;
};

struct mesh_route_match {
    bool has_host;
    struct mesh_string_match host; /* the Host without its port, lower case */
    bool has_path;
    struct mesh_string_match path;
    struct mesh_cfg_strings methods; /* any of them; none: any method */
    struct mesh_named_match *headers;
    size_t n_headers;
    struct mesh_named_match *query;
    size_t n_query;
};

struct mesh_route_destination {
    char *service;
    char *namespace; /* NULL: the route's */
    struct mesh_labels subset;
    int weight;
};

struct mesh_header_ops {
    struct mesh_labels set; /* replace */
    struct mesh_labels add; /* append */
    struct mesh_cfg_strings remove;
};

struct mesh_retry_policy {
    int attempts; /* retries after the first try; 0: none */
    unsigned on;  /* MESH_RETRY_*; when not given (on_set false): MESH_RETRY_DEFAULT */
    bool on_set;
    int *statuses;
    size_t n_statuses;
    uint64_t backoff_base_ms;
    uint64_t backoff_max_ms;
    int budget_percent;        /* retries in flight at most this share of active requests */
    int min_retry_concurrency; /* ... or this many, whichever is more */
    bool non_idempotent;
};

#define MESH_RETRY_CONNECT_FAILURE 0x1u
#define MESH_RETRY_RESET 0x2u
#define MESH_RETRY_5XX 0x4u
#define MESH_RETRY_GATEWAY_ERROR 0x8u /* 502, 503, 504 */
#define MESH_RETRY_STATUSES 0x10u     /* the listed statuses */
#define MESH_RETRY_DEFAULT (MESH_RETRY_CONNECT_FAILURE | MESH_RETRY_RESET)

struct mesh_fault_policy {
    bool has_delay;
    uint64_t delay_ms;
    double delay_percent;
    char *delay_header; /* when present, the header's value (ms) decides */
    bool has_abort;
    int abort_status;
    double abort_percent;
    char *abort_header; /* when present, the header's value (a status) decides */
};

struct mesh_rate_limit_policy {
    bool enabled;
    double per_second;
    double burst;
};

struct mesh_route_rule {
    char *name;                       /* names its metrics and counters; NULL: its position does */
    struct mesh_route_match *matches; /* any of them; none: every request */
    size_t n_matches;
    struct mesh_route_destination *dests;
    size_t n_dests;
    bool has_redirect;
    char *redirect_scheme, *redirect_host, *redirect_path, *redirect_prefix;
    int redirect_status;
    bool has_direct;
    int direct_status;
    char *direct_body;
    char *direct_content_type;
    char *rewrite_prefix; /* replaces the matched path prefix */
    struct mesh_header_ops request_headers;
    struct mesh_header_ops response_headers;
    uint64_t timeout_ms;
    uint64_t per_try_timeout_ms;
    struct mesh_retry_policy retries;
    struct mesh_fault_policy fault;
    struct mesh_rate_limit_policy rate_limit;
};

struct mesh_route {
    char *service; /* NULL: the resource name */
    struct mesh_route_rule *rules;
    size_t n_rules;
};

extern const struct mesh_cfg_schema mesh_route_schema;
/* Decodes {"requests_per_second": N, "burst": M} into a struct mesh_rate_limit_policy
 * (a MESH_CFG_CUSTOM decoder, shared with DestinationPolicy). */
int mesh_rate_limit_decode(struct mesh_cfg_ctx *ctx, json_t *v, void *field);

int mesh_route_defaults(struct mesh_route *r);
void mesh_route_done(struct mesh_route *r);
/* A rule with every default: what requests no rule matches get. */
int mesh_route_rule_defaults(struct mesh_route_rule *r);
void mesh_route_rule_done(struct mesh_route_rule *r);

/* Matching (workers). `path` is the request path without its query. */
bool mesh_string_match(const struct mesh_string_match *m, const char *s, size_t len);
/* Whether a match (path, methods, headers, query: all of those given) holds for r. */
bool mesh_route_match_holds(const struct mesh_route_match *m, const struct mesh_http_request *r);

#endif
