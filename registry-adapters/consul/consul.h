/*
 * The Consul registry adapter: services and their healthy instances from a Consul agent's
 * HTTP API (blocking queries), and this host's services registered into it.
 * See docs/consul.md.
 */
#ifndef MESH_CONSUL_H
#define MESH_CONSUL_H

#include <stdbool.h>
#include <stdint.h>

#include "catalog/registry.h"

/* A tri-state boolean for settings an environment variable may also give. */
enum mesh_consul_opt { MESH_CONSUL_UNSET, MESH_CONSUL_FALSE, MESH_CONSUL_TRUE };

enum mesh_consul_consistency { MESH_CONSUL_DEFAULT, MESH_CONSUL_STALE, MESH_CONSUL_CONSISTENT };
enum mesh_consul_check { MESH_CONSUL_CHECK_TTL, MESH_CONSUL_CHECK_TCP, MESH_CONSUL_CHECK_HTTP };

/* The "consul" keys of a registries[] entry (docs/config.md). */
struct mesh_consul_config {
    char *address; /* "" : CONSUL_HTTP_ADDR, then 127.0.0.1:8500; or unix:///path */
    char *token;
    char *token_file;
    char *ca_file;
    char *cert_file;
    char *key_file;
    int tls;               /* enum mesh_consul_opt */
    int tls_verify;        /* enum mesh_consul_opt */
    char *tls_server_name; /* "" : CONSUL_TLS_SERVER_NAME; the name Consul's certificate carries */
    char *datacenter;
    char *tag;
    char *consul_namespace; /* Enterprise */
    char *partition;        /* Enterprise */
    bool include_warning;
    uint64_t wait_ms;
    uint64_t min_interval_ms;
    int unchanged_burst;            /* the token bucket for answers that bring nothing new */
    uint64_t unchanged_interval_ms; /* ... refilled with one token per interval */
    int consistency;                /* enum mesh_consul_consistency */
    int max_watches;
    uint64_t rotation_wait_ms;
    char *zone_meta_key;
    bool register_services;
    int check; /* enum mesh_consul_check */
    uint64_t check_ttl_ms;
    uint64_t check_interval_ms;
    char *check_http_path;
    uint64_t deregister_after_ms;
};

extern const struct mesh_registry_ops mesh_consul_registry_ops;

#endif
