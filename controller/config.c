#include "controller/config.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/spiffe.h"
#include "common/strutil.h"

#define F(m) MESH_CFG_FIELD(struct mesh_controller_config, m)

static const char *const log_levels[] = {"error", "warning", "notice", "info", "debug", NULL};
/* As the agent's log.format: "auto" is the journal when stderr is the journal, else text. */
static const char *const log_formats[] = {"auto", "text", "json", "journal", NULL};

static const char *check_listen(const char *s)
{
    struct mesh_addr a;
    const char *why = NULL;
    return mesh_addr_parse(s, &a, &why) == 0 ? NULL : why;
}

static const struct mesh_cfg_field fields[] = {
    {.key = "listen",
     .type = MESH_CFG_STRING,
     F(listen),
     .def = "0.0.0.0:15443",
     .expect = "an address like \"0.0.0.0:15443\"",
     .check = check_listen},
    {.key = "state_dir",
     .type = MESH_CFG_STRING,
     F(state_dir),
     .flags = MESH_CFG_PATH | MESH_CFG_NONEMPTY,
     .def = "/var/lib/mesh-controller",
     .expect = "a directory path"},
    {.key = "trust_domain",
     .type = MESH_CFG_STRING,
     F(trust_domain),
     .def = "mesh.local",
     .expect = "a SPIFFE trust domain like \"mesh.local\"",
     .check = mesh_spiffe_trust_domain_check},
    {.key = "ca_cert", .type = MESH_CFG_STRING, F(ca_cert), .flags = MESH_CFG_PATH, .def = ""},
    {.key = "ca_key", .type = MESH_CFG_STRING, F(ca_key), .flags = MESH_CFG_PATH, .def = ""},
    {.key = "cert_ttl",
     .type = MESH_CFG_DURATION,
     F(cert_ttl_ms),
     .def = "24h",
     .min = 10000,
     .max = 90ll * 86400000},
    {.key = "server_names",
     .type = MESH_CFG_STRINGS,
     F(server_names),
     .max = 64,
     .expect = "an IP address or DNS name"},
    {.key = "log_level", .type = MESH_CFG_ENUM, F(log_level), .choices = log_levels, .def = "info"},
    {.key = "log_format",
     .type = MESH_CFG_ENUM,
     F(log_format),
     .choices = log_formats,
     .def = "auto"},
    {.key = "max_connections",
     .type = MESH_CFG_INT,
     F(max_connections),
     .def_int = 4096,
     .min = 16,
     .max = 1000000},
    {.key = "max_connections_per_client",
     .type = MESH_CFG_INT,
     F(max_connections_per_client),
     .def_int = 128,
     .min = 1,
     .max = 1000000},
    {.key = "header_timeout",
     .type = MESH_CFG_DURATION,
     F(header_timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 600000},
    {.key = "idle_timeout",
     .type = MESH_CFG_DURATION,
     F(idle_timeout_ms),
     .def = "60s",
     .min = 100,
     .max = 86400000},
    {.key = "connection_timeout",
     .type = MESH_CFG_DURATION,
     F(connection_timeout_ms),
     .def = "15m",
     .min = 1000,
     .max = 86400000},
    {.key = "report_interval",
     .type = MESH_CFG_DURATION,
     F(report_interval_ms),
     .def = "5s",
     .min = 200,
     .max = 300000},
    {.key = "catalog_grace",
     .type = MESH_CFG_DURATION,
     F(catalog_grace_ms),
     .min = 1000,
     .max = 3600000},
    {.key = "catalog_expiry",
     .type = MESH_CFG_DURATION,
     F(catalog_expiry_ms),
     .min = 1000,
     .max = 30ll * 86400000},
    {0},
};

static void check(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_controller_config *c = obj;
    if (!c->ca_cert[0] != !c->ca_key[0])
        mesh_cfg_error(ctx, "ca_cert and ca_key go together (neither: a root is generated)");
    if (c->catalog_grace_ms && c->catalog_grace_ms <= c->report_interval_ms)
        mesh_cfg_error(ctx,
                       "catalog_grace must be longer than report_interval (default: 3 of them)");
    uint64_t grace = c->catalog_grace_ms ? c->catalog_grace_ms : 3 * c->report_interval_ms;
    if (c->catalog_expiry_ms && c->catalog_expiry_ms <= grace)
        mesh_cfg_error(ctx, "catalog_expiry must be longer than catalog_grace");
}

static const struct mesh_cfg_schema schema = {sizeof(struct mesh_controller_config), fields, check};

int mesh_controller_config_load(const char *path, struct mesh_cfg_errors *errors,
                                struct mesh_controller_config **ret)
{
    struct mesh_cfg_ctx ctx;
    char base[4096] = ".";
    mesh_cfg_ctx_init(&ctx, path ? path : "defaults", errors);
    if (path) {
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(base, sizeof(base), "%.*s", (int)(slash - path), path);
        if (!base[0])
            snprintf(base, sizeof(base), "/");
        ctx.base_dir = base;
    }
    json_t *json = NULL;
    if (path) {
        int r = mesh_cfg_load_file(&ctx, path, 1024 * 1024, &json);
        if (r < 0)
            return r == -ENOMEM ? r : -EINVAL;
    }
    struct mesh_controller_config *c = mesh_calloc(1, sizeof(*c));
    size_t before = mesh_cfg_error_count(errors);
    if (!c || mesh_cfg_defaults(&schema, c) < 0) {
        mesh_free(c);
        json_decref(json);
        return -ENOMEM;
    }
    if (json)
        mesh_cfg_decode(&ctx, &schema, json, c);
    json_decref(json);
    if (mesh_cfg_error_count(errors) != before) {
        mesh_controller_config_free(c);
        return -EINVAL;
    }
    mesh_addr_parse(c->listen, &c->listen_addr, NULL);
    if (!c->catalog_grace_ms)
        c->catalog_grace_ms = 3 * c->report_interval_ms;
    if (!c->catalog_expiry_ms)
        c->catalog_expiry_ms = c->catalog_grace_ms > 30000 ? 2 * c->catalog_grace_ms : 60000;
    *ret = c;
    return 0;
}

void mesh_controller_config_free(struct mesh_controller_config *c)
{
    if (!c)
        return;
    mesh_cfg_free(&schema, c);
    mesh_free(c);
}
