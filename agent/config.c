#include "agent/config.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "agent/certs.h"
#include "agent/config_dns-int.h"
#include "agent/registries.h"
#include "common/alloc.h"
#include "common/names.h"
#include "common/path_normalize.h"
#include "common/resolver.h"
#include "common/spiffe.h"
#include "common/strutil.h"

#define F(member) MESH_CFG_FIELD(struct mesh_agent_config, member)

static const char *const log_levels[] = {"error", "warning", "notice", "info", "debug", NULL};
static const char *const log_formats[] = {"auto", "text", "json", "journal", NULL};

static const char *check_listen(const char *s)
{
    struct mesh_addr a;
    const char *why = NULL;
    return mesh_addr_parse(s, &a, &why) < 0 ? why : NULL;
}

static const char *check_tcp_listen(const char *s)
{
    const char *why = check_listen(s);
    if (!why && strncmp(s, "unix:", 5) == 0)
        return "a unix socket is not possible here";
    return why;
}

static const char *check_ip(const char *s)
{
    return !*s || mesh_is_ip_literal(s) ? NULL : "not an IPv4 or IPv6 address";
}

static const char *check_zone(const char *s)
{
    const char *why = NULL;
    return mesh_label_value_valid(s, &why) ? NULL : why;
}

static const struct mesh_cfg_field node_fields[] = {
    {.key = "name",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct mesh_agent_node_config, name),
     .flags = MESH_CFG_RESTART,
     .expect = "a node name (lowercase DNS subdomain)",
     .check = mesh_name_check_node},
    {.key = "zone",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct mesh_agent_node_config, zone),
     .def = "",
     .expect = "a zone name",
     .check = check_zone},
    {.key = "address",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct mesh_agent_node_config, address),
     .def = "",
     .expect = "the IP address other hosts reach this node at",
     .check = check_ip},
    {0},
};

static const struct mesh_cfg_schema node_schema = {
    .size = sizeof(struct mesh_agent_node_config),
    .fields = node_fields,
};

static const struct mesh_cfg_field log_fields[] = {
    {.key = "level",
     .type = MESH_CFG_ENUM,
     MESH_CFG_FIELD(struct mesh_agent_log_config, level),
     .choices = log_levels,
     .def = "info"},
    {.key = "format",
     .type = MESH_CFG_ENUM,
     MESH_CFG_FIELD(struct mesh_agent_log_config, format),
     .choices = log_formats,
     .def = "auto"},
    {0},
};

static const struct mesh_cfg_schema log_schema = {
    .size = sizeof(struct mesh_agent_log_config),
    .fields = log_fields,
};

static const struct mesh_cfg_field admin_fields[] = {
    {.key = "listen",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct mesh_agent_admin_config, listen),
     .def = "127.0.0.1:15000",
     .expect = "an address like \"127.0.0.1:15000\" or \"unix:/run/mesh-agent/admin.sock\"",
     .check = check_listen},
    {0},
};

static const struct mesh_cfg_schema admin_schema = {
    .size = sizeof(struct mesh_agent_admin_config),
    .fields = admin_fields,
};

static const struct mesh_cfg_field listeners_fields[] = {
    {.key = "outbound_http",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct mesh_agent_listeners_config, outbound_http),
     .def = "127.0.0.1:15001",
     .expect = "an address like \"127.0.0.1:15001\"",
     .check = check_tcp_listen},
    {.key = "inbound",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct mesh_agent_listeners_config, inbound),
     .def = "0.0.0.0:15008",
     .expect = "an address like \"0.0.0.0:15008\"",
     .check = check_tcp_listen},
    {0},
};

static const struct mesh_cfg_schema listeners_schema = {
    .size = sizeof(struct mesh_agent_listeners_config),
    .fields = listeners_fields,
};

static const struct mesh_cfg_field readiness_fields[] = {
    {.key = "registry_sync_timeout",
     .type = MESH_CFG_DURATION,
     MESH_CFG_FIELD(struct mesh_agent_readiness_config, registry_sync_timeout_ms),
     .def = "10s",
     .max = 3600000},
    {0},
};

static const struct mesh_cfg_schema readiness_schema = {
    .size = sizeof(struct mesh_agent_readiness_config),
    .fields = readiness_fields,
};

static const struct mesh_cfg_field shutdown_fields[] = {
    {.key = "drain_timeout",
     .type = MESH_CFG_DURATION,
     MESH_CFG_FIELD(struct mesh_agent_shutdown_config, drain_timeout_ms),
     .def = "15s",
     .max = 3600000},
    {0},
};

static const struct mesh_cfg_schema shutdown_schema = {
    .size = sizeof(struct mesh_agent_shutdown_config),
    .fields = shutdown_fields,
};

/* Each server as c-ares' ares_set_servers_ports_csv reads it. */
static void check_dns(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_agent_dns_config *d = obj;
    size_t o1 = mesh_cfg_path_push_key(ctx, "servers");
    for (size_t i = 0; i < d->servers.n; i++) {
        const char *why = mesh_resolver_check_server(d->servers.v[i]);
        if (!why)
            continue;
        size_t o2 = mesh_cfg_path_push_index(ctx, i);
        mesh_cfg_error(ctx, "'%s' %s", d->servers.v[i], why);
        mesh_cfg_path_pop(ctx, o2);
    }
    mesh_cfg_path_pop(ctx, o1);
}

static const struct mesh_cfg_field dns_fields[] = {
    {.key = "servers",
     .type = MESH_CFG_STRINGS,
     MESH_CFG_FIELD(struct mesh_agent_dns_config, servers),
     .expect = "a list of name servers, \"ip\" or \"ip:port\""},
    {.key = "timeout",
     .type = MESH_CFG_DURATION,
     MESH_CFG_FIELD(struct mesh_agent_dns_config, timeout_ms),
     .def = "2s",
     .min = 100,
     .max = 30000},
    {0},
};

static const struct mesh_cfg_schema dns_schema = {
    .size = sizeof(struct mesh_agent_dns_config),
    .fields = dns_fields,
    .check = check_dns,
};

#define HT(m) MESH_CFG_FIELD(struct mesh_agent_http_config, m)

static const struct mesh_cfg_field http_fields[] = {
    {.key = "request_header_timeout",
     .type = MESH_CFG_DURATION,
     HT(header_timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 600000},
    {.key = "idle_timeout",
     .type = MESH_CFG_DURATION,
     HT(idle_timeout_ms),
     .def = "60s",
     .min = 100,
     .max = 86400000},
    {.key = "max_header_bytes",
     .type = MESH_CFG_INT,
     HT(max_header_bytes),
     .def_int = 65536,
     .min = 1024,
     .max = 1048576},
    {.key = "max_headers",
     .type = MESH_CFG_INT,
     HT(max_headers),
     .def_int = 100,
     .min = 8,
     .max = 1000},
    {.key = "max_uri_length",
     .type = MESH_CFG_INT,
     HT(max_uri_length),
     .def_int = 8192,
     .min = 256,
     .max = 1048576},
    {.key = "http2_max_concurrent_streams",
     .type = MESH_CFG_INT,
     HT(h2_max_concurrent_streams),
     .def_int = 100,
     .min = 1,
     .max = 10000},
    {.key = "http2_max_header_list_size",
     .type = MESH_CFG_INT,
     HT(h2_max_header_list_size),
     .def_int = 65536,
     .min = 1024,
     .max = 1048576},
    {.key = "http2_max_resets",
     .type = MESH_CFG_INT,
     HT(h2_max_resets),
     .def_int = 100,
     .min = 1,
     .max = 100000},
    {.key = "http2_reset_window",
     .type = MESH_CFG_DURATION,
     HT(h2_reset_window_ms),
     .def = "1s",
     .min = 100,
     .max = 600000},
    {.key = "normalize_path", .type = MESH_CFG_BOOL, HT(normalize_path), .def_int = 1},
    {.key = "merge_slashes", .type = MESH_CFG_BOOL, HT(merge_slashes), .def_int = 1},
    {.key = "escaped_slashes",
     .type = MESH_CFG_ENUM,
     HT(escaped_slashes),
     .choices = mesh_path_slashes_names,
     .def = "reject"},
    {0},
};

static const struct mesh_cfg_schema http_schema = {
    .size = sizeof(struct mesh_agent_http_config),
    .fields = http_fields,
};

static const char *check_access_log(const char *s)
{
    if (!s[0] || strcmp(s, "stdout") == 0 || strcmp(s, "stderr") == 0 || s[0] == '/')
        return NULL;
    return "\"stdout\", \"stderr\", an absolute path, or \"\" for none";
}

static const struct mesh_cfg_field proxy_fields[] = {
    {.key = "workers",
     .type = MESH_CFG_INT,
     MESH_CFG_FIELD(struct mesh_agent_proxy_config, workers),
     .flags = MESH_CFG_RESTART,
     .def_int = 0,
     .min = 0,
     .max = 256,
     .expect = "a number of worker threads from 0 (one per CPU) to 256"},
    {.key = "max_connections",
     .type = MESH_CFG_INT,
     MESH_CFG_FIELD(struct mesh_agent_proxy_config, max_connections),
     .def_int = 100000,
     .min = 1,
     .max = 10000000},
    {.key = "buffer_size",
     .type = MESH_CFG_INT,
     MESH_CFG_FIELD(struct mesh_agent_proxy_config, buffer_size),
     .flags = MESH_CFG_RESTART,
     .def_int = 16384,
     .min = 1024,
     .max = 1048576,
     .expect = "a buffer size in bytes from 1024 to 1048576"},
    {.key = "access_log",
     .type = MESH_CFG_STRING,
     MESH_CFG_FIELD(struct mesh_agent_proxy_config, access_log),
     .def = "",
     .expect = "\"stdout\", \"stderr\", an absolute path, or \"\" for none",
     .check = check_access_log},
    {.key = "http",
     .type = MESH_CFG_OBJECT,
     MESH_CFG_FIELD(struct mesh_agent_proxy_config, http),
     .flags = MESH_CFG_RESTART,
     .schema = &http_schema},
    {0},
};

static const struct mesh_cfg_schema proxy_schema = {
    .size = sizeof(struct mesh_agent_proxy_config),
    .fields = proxy_fields,
};

static const struct mesh_cfg_field telemetry_fields[] = {
    {.key = "max_series",
     .type = MESH_CFG_INT,
     MESH_CFG_FIELD(struct mesh_agent_telemetry_config, max_series),
     .def_int = 10000,
     .min = 1,
     .max = 10000000,
     .expect = "a number of metric series from 1 to 10000000"},
    {0},
};

static const struct mesh_cfg_schema telemetry_schema = {
    .size = sizeof(struct mesh_agent_telemetry_config),
    .fields = telemetry_fields,
};

#define ID(m) MESH_CFG_FIELD(struct mesh_agent_identity_config, m)

const char *const mesh_identity_mode_names[] = {"none", "standalone", "files", "controller", NULL};

static const char *check_https_url(const char *s)
{
    return !s[0] || strncmp(s, "https://", 8) == 0 ? NULL : "an https:// URL";
}
static const char *const tls_versions[] = {"1.3", "1.2", NULL};

static const struct mesh_cfg_field identity_fields[] = {
    {.key = "mode",
     .type = MESH_CFG_ENUM,
     ID(mode),
     .choices = mesh_identity_mode_names,
     .def = "none"},
    {.key = "ca_cert",
     .type = MESH_CFG_STRING,
     ID(ca_cert),
     .flags = MESH_CFG_PATH,
     .def = "",
     .expect = "a PEM file path"},
    {.key = "ca_key",
     .type = MESH_CFG_STRING,
     ID(ca_key),
     .flags = MESH_CFG_PATH,
     .def = "",
     .expect = "a PEM file path"},
    {.key = "cert_dir",
     .type = MESH_CFG_STRING,
     ID(cert_dir),
     .flags = MESH_CFG_PATH,
     .def = "",
     .expect = "a directory path"},
    {.key = "trust_bundle",
     .type = MESH_CFG_STRING,
     ID(trust_bundle),
     .flags = MESH_CFG_PATH,
     .def = "",
     .expect = "a PEM file path"},
    {.key = "controller",
     .type = MESH_CFG_STRING,
     ID(controller),
     .def = "",
     .expect = "the controller's URL, like \"https://10.0.0.2:15443\"",
     .check = check_https_url},
    {.key = "controller_ca",
     .type = MESH_CFG_STRING,
     ID(controller_ca),
     .flags = MESH_CFG_PATH,
     .def = "",
     .expect = "a PEM file path"},
    {.key = "join_token_file",
     .type = MESH_CFG_STRING,
     ID(join_token_file),
     .flags = MESH_CFG_PATH,
     .def = "",
     .expect = "a file path"},
    {.key = "cert_ttl",
     .type = MESH_CFG_DURATION,
     ID(cert_ttl_ms),
     .def = "24h",
     .min = 10000,
     .max = 90ull * 86400000},
    {.key = "tls_min_version",
     .type = MESH_CFG_ENUM,
     ID(tls_min_version),
     .choices = tls_versions,
     .def = "1.3"},
    {0},
};

static void check_identity(struct mesh_cfg_ctx *ctx, void *obj)
{
    mesh_certs_mode_check_config(ctx, obj); /* what each mode needs is its own */
}

static const struct mesh_cfg_schema identity_schema = {
    .size = sizeof(struct mesh_agent_identity_config),
    .fields = identity_fields,
    .check = check_identity,
};

/* ---- registries: shared keys plus the adapter's own, chosen by "type" ---- */

#define R(member) MESH_CFG_FIELD(struct mesh_registry_config, member)

static const struct mesh_cfg_field registry_fields[] = {
    {.key = "type", .type = MESH_CFG_STRING, R(type), .flags = MESH_CFG_REQUIRED},
    {.key = "name",
     .type = MESH_CFG_STRING,
     R(name),
     .expect = "a registry name (DNS label)",
     .check = mesh_name_check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     R(namespace),
     .def = "default",
     .expect = "a namespace (DNS label)",
     .check = mesh_name_check_dns_label},
    {.key = "merge", .type = MESH_CFG_BOOL, R(merge), .def_int = 1},
    {0},
};

static const struct mesh_cfg_schema registry_schema = {
    .size = sizeof(struct mesh_registry_config),
    .fields = registry_fields,
};

static void registry_config_done(struct mesh_registry_config *rc)
{
    if (rc->ops && rc->adapter) {
        mesh_cfg_free(rc->ops->config_schema, rc->adapter);
        mesh_free(rc->adapter);
    }
    mesh_cfg_free(&registry_schema, rc);
}

static void free_registries(void *field)
{
    struct mesh_registries *regs = field;
    for (size_t i = 0; i < regs->n; i++)
        registry_config_done(&regs->v[i]);
    mesh_free(regs->v);
    regs->v = NULL;
    regs->n = 0;
}

static int decode_registry(struct mesh_cfg_ctx *ctx, json_t *json, struct mesh_registry_config *rc)
{
    if (mesh_cfg_defaults(&registry_schema, rc) < 0)
        return -ENOMEM;
    json_t *type = json_is_object(json) ? json_object_get(json, "type") : NULL;
    const char *const *types = mesh_registries_types();
    char known[256];
    size_t k = 0;
    for (size_t i = 0; types[i] && k < sizeof(known); i++)
        k += (size_t)snprintf(known + k, sizeof(known) - k, "%s\"%s\"", i ? ", " : "", types[i]);
    if (!json_is_object(json) || !type || !json_is_string(type)) {
        /* Without a type the other keys cannot be checked: report only what is missing. */
        return mesh_cfg_decode(ctx, &registry_schema, json, rc);
    }
    rc->ops = mesh_registries_find(json_string_value(type));
    if (!rc->ops) {
        const char *hint = mesh_str_suggest(json_string_value(type), types);
        size_t old = mesh_cfg_path_push_key(ctx, "type");
        if (hint)
            mesh_cfg_error(ctx, "unknown registry type \"%s\" (did you mean \"%s\"?)",
                           json_string_value(type), hint);
        else
            mesh_cfg_error(ctx, "unknown registry type \"%s\"; known types: %s",
                           json_string_value(type), known);
        mesh_cfg_path_pop(ctx, old);
        return -EINVAL;
    }
    rc->adapter = mesh_malloc(rc->ops->config_schema->size);
    if (!rc->adapter || mesh_cfg_defaults(rc->ops->config_schema, rc->adapter) < 0) {
        mesh_free(rc->adapter);
        rc->adapter = NULL;
        return -ENOMEM;
    }
    const struct mesh_cfg_schema *schemas[2] = {&registry_schema, rc->ops->config_schema};
    void *objs[2] = {rc, rc->adapter};
    int r = mesh_cfg_decode_multi(ctx, schemas, objs, 2, json);
    if (!rc->name) {
        rc->name = mesh_strdup(rc->type);
        if (!rc->name)
            return -ENOMEM;
    }
    return r;
}

static int decode_registries(struct mesh_cfg_ctx *ctx, json_t *json, void *field)
{
    struct mesh_registries *regs = field;
    if (!json_is_array(json)) {
        char got[64];
        mesh_cfg_describe(json, got, sizeof(got));
        mesh_cfg_error(ctx, "expected an array of registries, got %s", got);
        return -EINVAL;
    }
    size_t n = json_array_size(json);
    if (n > MESH_AGENT_REGISTRIES_MAX) {
        mesh_cfg_error(ctx, "expected at most %d registries, got %zu", MESH_AGENT_REGISTRIES_MAX,
                       n);
        return -EINVAL;
    }
    free_registries(regs);
    if (n == 0)
        return 0;
    regs->v = mesh_calloc(n, sizeof(*regs->v));
    if (!regs->v)
        return -ENOMEM;
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        regs->n = i + 1;
        size_t old = mesh_cfg_path_push_index(ctx, i);
        int k = decode_registry(ctx, json_array_get(json, i), &regs->v[i]);
        if (k == -ENOMEM)
            mesh_cfg_error(ctx, "out of memory");
        if (k < 0)
            r = -EINVAL;
        mesh_cfg_path_pop(ctx, old);
    }
    return r;
}

static json_t *encode_registries(const void *field)
{
    const struct mesh_registries *regs = field;
    json_t *a = json_array();
    for (size_t i = 0; a && i < regs->n; i++) {
        const struct mesh_registry_config *rc = &regs->v[i];
        json_t *o = mesh_cfg_encode(&registry_schema, rc);
        json_t *ad = rc->ops ? mesh_cfg_encode(rc->ops->config_schema, rc->adapter) : NULL;
        if (!o || (rc->ops && !ad) || (ad && json_object_update(o, ad) < 0) ||
            json_array_append_new(a, o) < 0) {
            json_decref(o);
            json_decref(ad);
            json_decref(a);
            return NULL;
        }
        json_decref(ad);
    }
    return a;
}

bool mesh_registry_config_equal(const struct mesh_registry_config *a,
                                const struct mesh_registry_config *b)
{
    json_t *ja = mesh_cfg_encode(&registry_schema, a);
    json_t *jb = mesh_cfg_encode(&registry_schema, b);
    json_t *aa = a->ops ? mesh_cfg_encode(a->ops->config_schema, a->adapter) : NULL;
    json_t *ab = b->ops ? mesh_cfg_encode(b->ops->config_schema, b->adapter) : NULL;
    bool eq = a->ops == b->ops && ja && jb && json_equal(ja, jb) &&
              ((!aa && !ab) || (aa && ab && json_equal(aa, ab)));
    json_decref(ja);
    json_decref(jb);
    json_decref(aa);
    json_decref(ab);
    return eq;
}

/* ---- the root ---- */

static void check_root(struct mesh_cfg_ctx *ctx, void *obj)
{
    struct mesh_agent_config *c = obj;
    for (size_t i = 0; i < c->registries.n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->registries.v[i].name, c->registries.v[j].name) == 0) {
                size_t o1 = mesh_cfg_path_push_key(ctx, "registries");
                size_t o2 = mesh_cfg_path_push_index(ctx, i);
                size_t o3 = mesh_cfg_path_push_key(ctx, "name");
                mesh_cfg_error(ctx, "registry name '%s' is already used by registries[%zu]",
                               c->registries.v[i].name, j);
                mesh_cfg_path_pop(ctx, o3);
                mesh_cfg_path_pop(ctx, o2);
                mesh_cfg_path_pop(ctx, o1);
            }
        }
    }
    struct {
        const char *key;
        const char *value;
    } addrs[] = {
        {"admin.listen", c->admin.listen},
        {"listeners.outbound_http", c->listeners.outbound_http},
        {"listeners.inbound", c->listeners.inbound},
    };
    const char *keys[MESH_ARRAY_SIZE(addrs) + 1], *values[MESH_ARRAY_SIZE(addrs) + 1];
    size_t n = 0;
    for (size_t i = 0; i < MESH_ARRAY_SIZE(addrs); i++, n++) {
        keys[n] = addrs[i].key;
        values[n] = addrs[i].value;
    }
    if (c->dns_responder.enabled) {
        keys[n] = "dns_responder.listen";
        values[n++] = c->dns_responder.listen;
    }
    mesh_agent__capture_check_ports(ctx, &c->capture, keys, values, n);
    mesh_agent__capture_dns_port(ctx, &c->capture, c->dns_responder.enabled,
                                 c->dns_responder.listen);
    for (size_t i = 0; i < MESH_ARRAY_SIZE(addrs); i++) {
        for (size_t j = 0; j < i; j++) {
            struct mesh_addr a, b;
            if (mesh_addr_parse(addrs[i].value, &a, NULL) == 0 &&
                mesh_addr_parse(addrs[j].value, &b, NULL) == 0 && mesh_addr_equal(&a, &b) &&
                mesh_addr_port(&a) != 0)
                mesh_cfg_error(ctx, "%s and %s are both '%s'", addrs[j].key, addrs[i].key,
                               addrs[i].value);
        }
    }
}

static const struct mesh_cfg_field root_fields[] = {
    {.key = "node", .type = MESH_CFG_OBJECT, F(node), .schema = &node_schema},
    {.key = "trust_domain",
     .type = MESH_CFG_STRING,
     F(trust_domain),
     .def = "mesh.local",
     .expect = "a SPIFFE trust domain like \"mesh.local\"",
     .check = mesh_spiffe_trust_domain_check},
    {.key = "state_dir",
     .type = MESH_CFG_STRING,
     F(state_dir),
     .flags = MESH_CFG_PATH | MESH_CFG_NONEMPTY | MESH_CFG_RESTART,
     .def = "/var/lib/mesh-agent",
     .expect = "a directory path"},
    {.key = "log", .type = MESH_CFG_OBJECT, F(log), .schema = &log_schema},
    {.key = "admin", .type = MESH_CFG_OBJECT, F(admin), .schema = &admin_schema},
    {.key = "listeners", .type = MESH_CFG_OBJECT, F(listeners), .schema = &listeners_schema},
    {.key = "registries",
     .type = MESH_CFG_CUSTOM,
     F(registries),
     .decode = decode_registries,
     .free = free_registries,
     .encode = encode_registries},
    {.key = "readiness", .type = MESH_CFG_OBJECT, F(readiness), .schema = &readiness_schema},
    {.key = "shutdown", .type = MESH_CFG_OBJECT, F(shutdown), .schema = &shutdown_schema},
    {.key = "proxy", .type = MESH_CFG_OBJECT, F(proxy), .schema = &proxy_schema},
    {.key = "telemetry", .type = MESH_CFG_OBJECT, F(telemetry), .schema = &telemetry_schema},
    {.key = "tracing", .type = MESH_CFG_OBJECT, F(tracing), .schema = &mesh_agent__tracing_schema},
    {.key = "identity", .type = MESH_CFG_OBJECT, F(identity), .schema = &identity_schema},
    {.key = "dns",
     .type = MESH_CFG_OBJECT,
     F(dns),
     .flags = MESH_CFG_RESTART,
     .schema = &dns_schema},
    {.key = "dns_responder",
     .type = MESH_CFG_OBJECT,
     F(dns_responder),
     .flags = MESH_CFG_RESTART,
     .schema = &mesh_agent__dns_responder_schema},
    {.key = "capture", .type = MESH_CFG_OBJECT, F(capture), .schema = &mesh_agent__capture_schema},
    {.key = "resources_dir",
     .type = MESH_CFG_STRING,
     F(resources_dir),
     .flags = MESH_CFG_PATH | MESH_CFG_NONEMPTY,
     .def = "/etc/mesh-agent/resources.d",
     .expect = "a directory path"},
    {0},
};

static const struct mesh_cfg_schema root_schema = {
    .size = sizeof(struct mesh_agent_config),
    .fields = root_fields,
    .check = check_root,
};

/* The registry every agent has unless told otherwise: service files in services.d. */
static const char default_registries[] = "[{\"type\": \"static\", \"name\": \"files\", "
                                         "\"directory\": \"/etc/mesh-agent/services.d\"}]";

static int fill_dynamic_defaults(struct mesh_cfg_ctx *ctx, struct mesh_agent_config *c,
                                 json_t *json)
{
    json_t *node = json ? json_object_get(json, "node") : NULL;
    bool name_given = node && json_is_object(node) && json_object_get(node, "name");
    bool registries_given = json && json_is_object(json) && json_object_get(json, "registries");
    if (!c->node.name && !name_given) {
        char host[256] = "";
        if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
            strcpy(host, "localhost");
        for (char *p = host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        /* A hostname that is not a valid node name must be configured explicitly. */
        const char *why = mesh_name_check_node(host);
        size_t old = mesh_cfg_path_push_key(ctx, "node");
        size_t old2 = mesh_cfg_path_push_key(ctx, "name");
        if (why)
            mesh_cfg_error(ctx, "not set, and the hostname '%s' cannot be used: %s", host, why);
        mesh_cfg_path_pop(ctx, old2);
        mesh_cfg_path_pop(ctx, old);
        c->node.name = mesh_strdup(host);
        if (!c->node.name)
            return -ENOMEM;
        c->node.name_from_hostname = true;
    }
    if (!registries_given) {
        json_t *def = json_loads(default_registries, 0, NULL);
        if (!def)
            return -ENOMEM;
        size_t old = mesh_cfg_path_push_key(ctx, "registries");
        int r = decode_registries(ctx, def, &c->registries);
        mesh_cfg_path_pop(ctx, old);
        json_decref(def);
        if (r < 0)
            return r;
    }
    mesh_addr_parse(c->admin.listen, &c->admin_addr, NULL);
    mesh_addr_parse(c->listeners.outbound_http, &c->outbound_http_addr, NULL);
    mesh_addr_parse(c->listeners.inbound, &c->inbound_addr, NULL);
    c->env = (struct mesh_registry_env){
        .node_name = c->node.name,
        .node_name_guessed = c->node.name_from_hostname,
        .zone = c->node.zone,
        .node_address = c->node.address,
        .trust_domain = c->trust_domain,
        .mesh_port = c->identity.mode == MESH_IDENTITY_NONE ? 0 : mesh_addr_port(&c->inbound_addr),
    };
    return 0;
}

static int build(const char *path, const char *name, json_t *json, struct mesh_cfg_errors *errors,
                 struct mesh_agent_config **ret)
{
    struct mesh_cfg_ctx ctx;
    char base[4096];
    mesh_cfg_ctx_init(&ctx, name, errors);
    /* Relative paths in a file are taken from its directory, as an operator reads them. */
    if (path) {
        const char *slash = strrchr(path, '/');
        if (!slash)
            snprintf(base, sizeof(base), ".");
        else
            snprintf(base, sizeof(base), "%.*s", (int)(slash - path), path);
        if (!base[0])
            snprintf(base, sizeof(base), "/");
        ctx.base_dir = base;
    }
    size_t before = mesh_cfg_error_count(errors);
    struct mesh_agent_config *c = mesh_malloc(sizeof(*c));
    if (!c || mesh_cfg_defaults(&root_schema, c) < 0) {
        mesh_free(c);
        return -ENOMEM;
    }
    atomic_init(&c->refs, 1);
    int r = 0;
    if (json)
        mesh_cfg_decode(&ctx, &root_schema, json, c);
    if (fill_dynamic_defaults(&ctx, c, json) < 0)
        r = -ENOMEM;
    if (path && !(c->path = mesh_strdup(path)))
        r = -ENOMEM;
    if (r == 0 && mesh_cfg_error_count(errors) != before)
        r = -EINVAL;
    if (r < 0) {
        mesh_agent_config_unref(c);
        return r;
    }
    *ret = c;
    return 0;
}

int mesh_agent_config_parse(const char *name, const char *data, size_t len,
                            struct mesh_cfg_errors *errors, struct mesh_agent_config **ret)
{
    struct mesh_cfg_ctx ctx;
    mesh_cfg_ctx_init(&ctx, name, errors);
    json_t *json = NULL;
    int r = mesh_cfg_load_buffer(&ctx, data, len, &json);
    if (r < 0)
        return r;
    r = build(NULL, name, json, errors, ret);
    json_decref(json);
    return r;
}

int mesh_agent_config_load(const char *path, struct mesh_cfg_errors *errors,
                           struct mesh_agent_config **ret)
{
    if (!path)
        return build(NULL, NULL, NULL, errors, ret);
    struct mesh_cfg_ctx ctx;
    mesh_cfg_ctx_init(&ctx, path, errors);
    json_t *json = NULL;
    int r = mesh_cfg_load_file(&ctx, path, MESH_AGENT_CONFIG_MAX, &json);
    if (r < 0)
        return r == -ENOMEM ? r : -EINVAL;
    r = build(path, path, json, errors, ret);
    json_decref(json);
    return r;
}

struct mesh_agent_config *mesh_agent_config_ref(struct mesh_agent_config *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void mesh_agent_config_unref(struct mesh_agent_config *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    mesh_cfg_free(&root_schema, c);
    mesh_free(c->path);
    mesh_free(c);
}

json_t *mesh_agent_config_to_json(const struct mesh_agent_config *c)
{
    return mesh_cfg_encode(&root_schema, c);
}

enum mesh_log_level mesh_agent_config_log_level(const struct mesh_agent_config *c)
{
    return (enum mesh_log_level)(c->log.level + MESH_LOG_ERROR);
}

int mesh_agent_config_restart_changes(const struct mesh_agent_config *a,
                                      const struct mesh_agent_config *b, struct mesh_buf *ret)
{
    return mesh_cfg_restart_changes(&root_schema, a, b, ret);
}

int mesh_agent_config_restart_keys(struct mesh_buf *ret)
{
    return mesh_cfg_restart_keys(&root_schema, ret);
}
