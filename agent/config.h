/*
 * The agent's own configuration (agent.json): decoded and validated in full by a schema
 * table, then immutable and reference-counted. A reload builds a new one and swaps it in
 * only when it is valid. See docs/config.md for every key.
 */
#ifndef MESH_AGENT_CONFIG_H
#define MESH_AGENT_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "agent/config_capture.h"
#include "agent/config_tracing.h"
#include "catalog/registry.h"
#include "common/addr.h"
#include "common/cfg.h"
#include "common/log.h"

#define MESH_AGENT_DEFAULT_CONFIG "/etc/mesh-agent/agent.json"
#define MESH_AGENT_CONFIG_MAX (1024 * 1024)
#define MESH_AGENT_REGISTRIES_MAX 32

enum mesh_log_format_choice {
    MESH_LOG_CHOICE_AUTO,
    MESH_LOG_CHOICE_TEXT,
    MESH_LOG_CHOICE_JSON,
    MESH_LOG_CHOICE_JOURNAL,
};

struct mesh_registries {
    struct mesh_registry_config *v;
    size_t n;
};

struct mesh_agent_node_config {
    char *name;
    char *zone;
    char *address;
    bool name_from_hostname; /* not configured: the hostname stands in */
};

struct mesh_agent_log_config {
    int level; /* index into the level names; level = index + MESH_LOG_ERROR */
    int format;
};

struct mesh_agent_admin_config {
    char *listen;
};

struct mesh_agent_listeners_config {
    char *outbound_http;
    char *inbound;
};

struct mesh_agent_readiness_config {
    uint64_t registry_sync_timeout_ms;
};

struct mesh_agent_shutdown_config {
    uint64_t drain_timeout_ms;
};

/* How host names in endpoint addresses are resolved (docs/config.md, "dns"). */
struct mesh_agent_dns_config {
    struct mesh_cfg_strings servers; /* "ip[:port]"; none: /etc/resolv.conf */
    uint64_t timeout_ms;             /* per try */
};

/* The agent's DNS responder (docs/dns.md; agent/config_dns.c). */
struct mesh_agent_dns_responder_config {
    bool enabled;
    char *listen;
    struct mesh_cfg_strings domains; /* none: "cluster.local" */
    char *consul_domain;             /* "": no Consul-style names */
    char *consul_datacenter;
    char *consul_namespace;
    char *ipv4_range;
    char *ipv6_range;
    uint64_t keep_ms; /* how long a vanished service keeps its virtual IPs */
    struct mesh_cfg_strings upstreams;
    uint64_t upstream_timeout_ms;
    uint64_t ttl_ms;
    int max_tcp_connections;
    uint64_t tcp_idle_timeout_ms;
    int max_forwarded;
};

struct mesh_agent_http_config {
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    int max_header_bytes;
    int max_headers;
    int max_uri_length;
    bool normalize_path;
    bool merge_slashes;
    int escaped_slashes; /* enum mesh_path_slashes */
    int h2_max_concurrent_streams;
    int h2_max_header_list_size;
    int h2_max_resets;
    uint64_t h2_reset_window_ms;
};

struct mesh_agent_proxy_config {
    int workers;
    int max_connections;
    int buffer_size;
    char *access_log; /* "" none, "stdout", "stderr" or an absolute path */
    struct mesh_agent_http_config http;
};

struct mesh_agent_telemetry_config {
    int max_series; /* series of the istio_* metrics at most (docs/metrics.md) */
};

enum mesh_identity_mode {
    MESH_IDENTITY_NONE,       /* no mTLS: inbound listener off, endpoints called in plain */
    MESH_IDENTITY_STANDALONE, /* the agent signs its certificates with a local CA */
    MESH_IDENTITY_FILES,      /* certificates from an external PKI, re-read on change */
    MESH_IDENTITY_CONTROLLER, /* a mesh-controller signs them, after enrollment */
};

/* NULL-terminated names, indexed by enum mesh_identity_mode. */
extern const char *const mesh_identity_mode_names[];

struct mesh_agent_identity_config {
    int mode;              /* enum mesh_identity_mode */
    char *ca_cert;         /* standalone: the CA certificate (and the trust bundle) */
    char *ca_key;          /* standalone: its private key */
    char *cert_dir;        /* files: node.crt/node.key and <namespace>/<service>.crt/.key */
    char *trust_bundle;    /* files: PEM CA certificates */
    char *controller;      /* controller: its URL */
    char *controller_ca;   /* controller: the CA to trust it with at first contact */
    char *join_token_file; /* controller: the join token, read once to enroll */
    uint64_t cert_ttl_ms;
    int tls_min_version; /* 0: TLS 1.3, 1: TLS 1.2 */
};

struct mesh_agent_config {
    atomic_int refs;
    char *path; /* NULL: the embedded defaults */
    struct mesh_agent_node_config node;
    char *trust_domain;
    char *state_dir;
    struct mesh_agent_log_config log;
    struct mesh_agent_admin_config admin;
    struct mesh_agent_listeners_config listeners;
    struct mesh_registries registries;
    struct mesh_agent_readiness_config readiness;
    struct mesh_agent_shutdown_config shutdown;
    struct mesh_agent_proxy_config proxy;
    struct mesh_agent_telemetry_config telemetry;
    struct mesh_agent_tracing_config tracing; /* agent/config_tracing.h */
    struct mesh_agent_identity_config identity;
    struct mesh_agent_dns_config dns;
    struct mesh_agent_dns_responder_config dns_responder;
    struct mesh_agent_capture_config capture; /* agent/config_capture.c */
    char *resources_dir;
    /* Derived after decoding. */
    struct mesh_addr admin_addr;
    struct mesh_addr outbound_http_addr;
    struct mesh_addr inbound_addr;
    struct mesh_registry_env env; /* points into node */
};

/*
 * Loads and validates a config. `path` NULL means the embedded defaults. On failure
 * returns -EINVAL (or -ENOMEM) and every problem is in `errors`.
 */
int mesh_agent_config_load(const char *path, struct mesh_cfg_errors *errors,
                           struct mesh_agent_config **ret);
/* Decodes from a buffer; `name` is used in messages. Same contract as _load. */
int mesh_agent_config_parse(const char *name, const char *data, size_t len,
                            struct mesh_cfg_errors *errors, struct mesh_agent_config **ret);

struct mesh_agent_config *mesh_agent_config_ref(struct mesh_agent_config *c);
void mesh_agent_config_unref(struct mesh_agent_config *c);

/* The effective config as JSON, defaults filled in and secrets redacted. */
json_t *mesh_agent_config_to_json(const struct mesh_agent_config *c);
/*
 * The keys only a restart applies (MESH_CFG_RESTART in the schema) that b sets otherwise
 * than a: appended to ret as "state_dir, node.name". Returns how many, or -ENOMEM.
 */
int mesh_agent_config_restart_changes(const struct mesh_agent_config *a,
                                      const struct mesh_agent_config *b, struct mesh_buf *ret);
/* Every key only a restart applies, appended to ret the same way. */
int mesh_agent_config_restart_keys(struct mesh_buf *ret);
/* The log level the config asks for. */
enum mesh_log_level mesh_agent_config_log_level(const struct mesh_agent_config *c);
/*
 * For `mesh-agent validate`: checks the files the identity section names (the CA and its
 * key, the trust bundle and certificate directory, the controller's CA and the join token
 * while the node has no certificate yet) and appends one error per problem, citing the
 * config file and key (agent/config_files.c).
 */
void mesh_agent_config_check_files(const struct mesh_agent_config *cfg,
                                   struct mesh_cfg_errors *errors);
/* True when two registry entries would create the same adapter. */
bool mesh_registry_config_equal(const struct mesh_registry_config *a,
                                const struct mesh_registry_config *b);

#endif
