#include <errno.h>
#include <string.h>

#include "catalog/service.h"
#include "common/alloc.h"
#include "common/names.h"
#include "common/strutil.h"
#include "registry-adapters/static/service_file-int.h"

static const char *check_ip(const char *s)
{
    return mesh_is_ip_literal(s) ? NULL : "not an IPv4 or IPv6 address";
}

#define U(member) MESH_CFG_FIELD(struct mesh_upstream_config, member)

static const struct mesh_cfg_field upstream_fields[] = {
    {.key = "service",
     .type = MESH_CFG_STRING,
     U(service),
     .flags = MESH_CFG_REQUIRED,
     .expect = "a service name",
     .check = mesh_name_check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     U(namespace),
     .expect = "a namespace",
     .check = mesh_name_check_dns_label},
    {.key = "bind_port",
     .type = MESH_CFG_INT,
     U(bind_port),
     .flags = MESH_CFG_REQUIRED,
     .min = 1,
     .max = 65535},
    {.key = "bind_address",
     .type = MESH_CFG_STRING,
     U(bind_address),
     .def = "127.0.0.1",
     .expect = "an IPv4 or IPv6 address",
     .check = check_ip},
    {.key = "protocol",
     .type = MESH_CFG_ENUM,
     U(protocol),
     .choices = mesh_protocol_names,
     .def = "tcp"},
    {0},
};

static const struct mesh_cfg_schema upstream_schema = {
    .size = sizeof(struct mesh_upstream_config),
    .fields = upstream_fields,
};

static void check_service(struct mesh_cfg_ctx *ctx, void *obj)
{
    struct mesh_service_config *s = obj;
    if (s->port && s->endpoints.n)
        mesh_cfg_error(ctx, "a service has either 'port' (it runs on this host) or "
                            "'endpoints' (it runs elsewhere), not both");
    else if (!s->port && !s->endpoints.n)
        mesh_cfg_error(ctx, "a service needs 'port' (it runs on this host) or 'endpoints' (it "
                            "runs elsewhere)");
    else if (!s->port && s->upstreams.n)
        mesh_cfg_error(ctx, "'upstreams' belong to a service that runs on this host (with "
                            "'port')");
    else if (!s->port && s->inbound_port)
        mesh_cfg_error(ctx, "'inbound_port' belongs to a service that runs on this host (with "
                            "'port')");
    for (size_t i = 0; i < s->upstreams.n; i++) {
        const struct mesh_upstream_config *a =
            (struct mesh_upstream_config *)s->upstreams.items + i;
        for (size_t j = 0; j < i; j++) {
            const struct mesh_upstream_config *b =
                (struct mesh_upstream_config *)s->upstreams.items + j;
            if (a->bind_port == b->bind_port && strcmp(a->bind_address, b->bind_address) == 0) {
                size_t o1 = mesh_cfg_path_push_key(ctx, "upstreams");
                size_t o2 = mesh_cfg_path_push_index(ctx, i);
                mesh_cfg_error(ctx, "bind address %s port %d is already used by upstreams[%zu]",
                               a->bind_address, a->bind_port, j);
                mesh_cfg_path_pop(ctx, o2);
                mesh_cfg_path_pop(ctx, o1);
            }
        }
    }
}

#define S(member) MESH_CFG_FIELD(struct mesh_service_config, member)

static const struct mesh_cfg_field service_fields[] = {
    {.key = "name",
     .type = MESH_CFG_STRING,
     S(name),
     .flags = MESH_CFG_REQUIRED,
     .expect = "a service name (DNS label)",
     .check = mesh_name_check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     S(namespace),
     .expect = "a namespace (DNS label)",
     .check = mesh_name_check_dns_label},
    {.key = "protocol",
     .type = MESH_CFG_ENUM,
     S(protocol),
     .choices = mesh_protocol_names,
     .def = "tcp"},
    {.key = "port", .type = MESH_CFG_INT, S(port), .min = 1, .max = 65535},
    {.key = "address",
     .type = MESH_CFG_STRING,
     S(address),
     .def = "127.0.0.1",
     .expect = "the IP address the workload listens on",
     .check = check_ip},
    {.key = "inbound_port", .type = MESH_CFG_INT, S(inbound_port), .min = 1, .max = 65535},
    {.key = "inbound_address",
     .type = MESH_CFG_STRING,
     S(inbound_address),
     .def = "0.0.0.0",
     .expect = "the IP address the agent accepts inbound connections on",
     .check = check_ip},
    {.key = "upstreams",
     .type = MESH_CFG_LIST,
     S(upstreams),
     .schema = &upstream_schema,
     .max = 1000},
    {.key = "endpoints",
     .type = MESH_CFG_LIST,
     S(endpoints),
     .schema = &mesh_endpoint_schema,
     .max = 10000},
    {.key = "labels", .type = MESH_CFG_LABELS, S(labels)},
    {.key = "service_account",
     .type = MESH_CFG_STRING,
     S(service_account),
     .expect = "a service account (DNS label)",
     .check = mesh_name_check_dns_label},
    {0},
};

static const struct mesh_cfg_schema service_schema = {
    .size = sizeof(struct mesh_service_config),
    .fields = service_fields,
    .check = check_service,
};

#define FF(member) MESH_CFG_FIELD(struct mesh_service_file, member)

static const struct mesh_cfg_field file_fields[] = {
    {.key = "service", .type = MESH_CFG_OBJECT, FF(service), .schema = &service_schema},
    {.key = "services",
     .type = MESH_CFG_LIST,
     FF(services),
     .schema = &service_schema,
     .max = MESH_SERVICE_FILE_SERVICES_MAX},
    {0},
};

static const struct mesh_cfg_schema file_schema = {
    .size = sizeof(struct mesh_service_file),
    .fields = file_fields,
};

void mesh_service_file_free(struct mesh_service_file *f)
{
    if (!f)
        return;
    mesh_cfg_free(&file_schema, f);
    mesh_free(f->all);
    mesh_free(f);
}

/* {"service": {...}} or {"services": [...]} into the file (data). */
static int file_step(struct mesh_cfg_ctx *ctx, json_t *json, void *data)
{
    struct mesh_service_file *f = data;
    /*
     * The "service" object is decoded only when present: its required keys must not be
     * reported for files that use "services".
     */
    static const struct mesh_cfg_schema list_only = {
        .size = sizeof(struct mesh_service_file),
        .fields = file_fields + 1,
    };
    json_t *one = json_is_object(json) ? json_object_get(json, "service") : NULL;
    json_t *many = json_is_object(json) ? json_object_get(json, "services") : NULL;
    if (json_is_object(json) && !one && !many) {
        mesh_cfg_error(ctx, "expected a \"service\" object or a \"services\" array");
    } else if (one && many) {
        mesh_cfg_error(ctx, "use either \"service\" or \"services\", not both");
    }
    if (one) {
        mesh_cfg_decode(ctx, &file_schema, json, f);
    } else {
        mesh_cfg_decode_multi(ctx, (const struct mesh_cfg_schema *const[]){&list_only},
                              (void *const[]){f}, 1, json);
        /* "service" is a known key even when absent: nothing else to report. */
    }
    f->has_one = one != NULL;
    return 0;
}

int mesh_service_file_parse(const char *name, const char *data, size_t len,
                            struct mesh_cfg_errors *errors, struct mesh_service_file **ret)
{
    struct mesh_service_file *f = mesh_calloc(1, sizeof(*f));
    if (!f || mesh_cfg_defaults(&file_schema, f) < 0) {
        mesh_free(f);
        return -ENOMEM;
    }
    int r = mesh_cfg_parse_doc(name, data, len, errors, file_step, f);
    size_t n = (f->has_one ? 1 : 0) + f->services.n;
    if (r == 0 && !(f->all = mesh_calloc(n ? n : 1, sizeof(*f->all))))
        r = -ENOMEM;
    if (r < 0) {
        mesh_service_file_free(f);
        return r;
    }
    if (f->has_one)
        f->all[f->n++] = &f->service;
    for (size_t i = 0; i < f->services.n; i++)
        f->all[f->n++] = (struct mesh_service_config *)f->services.items + i;
    *ret = f;
    return 0;
}
