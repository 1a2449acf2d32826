/*
 * mesh-controller's configuration (controller.json): decoded and validated in full by a
 * schema table, like the agent's. See docs/controller.md for every key.
 */
#ifndef MESH_CONTROLLER_CONFIG_H
#define MESH_CONTROLLER_CONFIG_H

#include <stdint.h>

#include "common/addr.h"
#include "common/cfg.h"

#define MESH_CONTROLLER_DEFAULT_CONFIG "/etc/mesh-controller/controller.json"

struct mesh_controller_config {
    char *listen;
    char *state_dir;
    char *trust_domain;
    char *ca_cert; /* "" : generate a root in the state dir on first start */
    char *ca_key;
    uint64_t cert_ttl_ms;
    struct mesh_cfg_strings server_names; /* IPs and DNS names in the HTTPS certificate */
    int log_level;
    int log_format; /* 0 auto, 1 text, 2 json, 3 journal (enum mesh_log_format + 1) */
    /* The API's connections (see common/http_server.h). */
    int max_connections;
    int max_connections_per_client;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t connection_timeout_ms;
    /* The mesh's registry (controller/catalog.h): how often agents report, and how long a
     * silent node's services stay healthy (default 3 reports), then stay at all (default
     * 60 s, or twice the grace when that is longer). */
    uint64_t report_interval_ms;
    uint64_t catalog_grace_ms;
    uint64_t catalog_expiry_ms;
    /* Derived. */
    struct mesh_addr listen_addr;
};

/* Loads and validates (path NULL: the embedded defaults); every error goes to errors. */
int mesh_controller_config_load(const char *path, struct mesh_cfg_errors *errors,
                                struct mesh_controller_config **ret);
void mesh_controller_config_free(struct mesh_controller_config *c);

#endif
