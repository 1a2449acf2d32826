/*
 * Service files of the static registry: one JSON file holds {"service": {...}} or
 * {"services": [{...}, ...]}, in the shape Consul's service definitions use. A service
 * is local (it runs on this host: "port", optional "address" and "upstreams") or remote
 * (it runs elsewhere: "endpoints"). See docs/services.md.
 *
 * Parsing is pure (no I/O, no loop), so it runs on the thread pool and under a fuzzer.
 */
#ifndef MESH_STATIC_SERVICE_FILE_H
#define MESH_STATIC_SERVICE_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "catalog/endpoint_json.h"
#include "common/cfg.h"

#define MESH_SERVICE_FILE_MAX (4 * 1024 * 1024)
#define MESH_SERVICE_FILE_SERVICES_MAX 1000

struct mesh_upstream_config {
    char *service;
    char *namespace; /* NULL: the service's own */
    int bind_port;
    char *bind_address;
    int protocol;
};

struct mesh_service_config {
    char *name;
    char *namespace;  /* NULL: the registry's */
    int protocol;     /* enum mesh_protocol */
    int port;         /* 0: not local */
    char *address;    /* where the local workload listens */
    int inbound_port; /* 0: none; else the agent accepts there for it */
    char *inbound_address;
    struct mesh_cfg_list upstreams; /* struct mesh_upstream_config */
    struct mesh_cfg_list endpoints; /* struct mesh_endpoint_config */
    struct mesh_labels labels;      /* added to the local endpoint */
    char *service_account;          /* NULL: the name (docs/services.md) */
};

struct mesh_service_file {
    struct mesh_service_config service; /* "service" */
    struct mesh_cfg_list services;      /* "services" */
    /* Both forms, flattened: pointers into the two fields above. */
    struct mesh_service_config **all;
    size_t n;
    bool has_one; /* the file used "service" */
};

/*
 * Parses one file's content; `name` appears in messages. Returns 0 and a file the caller
 * frees with mesh_service_file_free(), or -EINVAL/-ENOMEM with every problem in `errors`.
 */
int mesh_service_file_parse(const char *name, const char *data, size_t len,
                            struct mesh_cfg_errors *errors, struct mesh_service_file **ret);
void mesh_service_file_free(struct mesh_service_file *f);

#endif
