#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/labels.h"
#include "registry-adapters/consul/consul-int.h"

#define C(member) MESH_CFG_FIELD(struct mesh_consul_config, member)

static const char *const consistency_names[] = {"default", "stale", "consistent", NULL};
static const char *const check_names[] = {"ttl", "tcp", "http", NULL};

/* true/false that may also be left out (an environment variable then decides). */
static int decode_opt(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    if (!json_is_boolean(v)) {
        char got[64];
        mesh_cfg_describe(v, got, sizeof(got));
        mesh_cfg_error(ctx, "expected true or false, got %s", got);
        return -EINVAL;
    }
    *(int *)field = json_is_true(v) ? MESH_CONSUL_TRUE : MESH_CONSUL_FALSE;
    return 0;
}

static json_t *encode_opt(const void *field)
{
    int v = *(const int *)field;
    return v == MESH_CONSUL_UNSET ? json_null() : json_boolean(v == MESH_CONSUL_TRUE);
}

static const char *check_meta_key(const char *v)
{
    return mesh_label_key_valid(v, NULL) ? NULL : "a Consul metadata key ([A-Za-z0-9_-])";
}

static const struct mesh_cfg_field fields[] = {
    {.key = "address",
     .type = MESH_CFG_STRING,
     C(address),
     .def = "",
     .expect = "host:port, http(s)://host:port or unix:///path"},
    {.key = "token", .type = MESH_CFG_STRING, C(token), .flags = MESH_CFG_SECRET},
    {.key = "token_file", .type = MESH_CFG_STRING, C(token_file), .flags = MESH_CFG_PATH},
    {.key = "ca_file", .type = MESH_CFG_STRING, C(ca_file), .flags = MESH_CFG_PATH},
    {.key = "cert_file", .type = MESH_CFG_STRING, C(cert_file), .flags = MESH_CFG_PATH},
    {.key = "key_file", .type = MESH_CFG_STRING, C(key_file), .flags = MESH_CFG_PATH},
    {.key = "tls", .type = MESH_CFG_CUSTOM, C(tls), .decode = decode_opt, .encode = encode_opt},
    {.key = "tls_verify",
     .type = MESH_CFG_CUSTOM,
     C(tls_verify),
     .decode = decode_opt,
     .encode = encode_opt},
    {.key = "tls_server_name", .type = MESH_CFG_STRING, C(tls_server_name)},
    {.key = "datacenter", .type = MESH_CFG_STRING, C(datacenter)},
    {.key = "tag", .type = MESH_CFG_STRING, C(tag)},
    {.key = "consul_namespace", .type = MESH_CFG_STRING, C(consul_namespace)},
    {.key = "partition", .type = MESH_CFG_STRING, C(partition)},
    {.key = "include_warning", .type = MESH_CFG_BOOL, C(include_warning)},
    /* Consul caps a blocking query's wait at 10 minutes. */
    {.key = "wait", .type = MESH_CFG_DURATION, C(wait_ms), .def = "5m", .min = 1000, .max = 600000},
    {.key = "min_interval",
     .type = MESH_CFG_DURATION,
     C(min_interval_ms),
     .def = "250ms",
     .min = 10,
     .max = 60000},
    /* Consul's "Blocking Queries" page: a token bucket with a burst of 2, then a poll about
     * every 15 seconds, for answers that bring nothing new. */
    {.key = "unchanged_burst",
     .type = MESH_CFG_INT,
     C(unchanged_burst),
     .def_int = 2,
     .min = 1,
     .max = 100},
    {.key = "unchanged_interval",
     .type = MESH_CFG_DURATION,
     C(unchanged_interval_ms),
     .def = "15s",
     .min = 1000,
     .max = 600000},
    {.key = "consistency",
     .type = MESH_CFG_ENUM,
     C(consistency),
     .choices = consistency_names,
     .def = "default"},
    {.key = "max_watches",
     .type = MESH_CFG_INT,
     C(max_watches),
     .def_int = 128,
     .min = 1,
     .max = 10000},
    {.key = "rotation_wait",
     .type = MESH_CFG_DURATION,
     C(rotation_wait_ms),
     .def = "2s",
     .min = 1000,
     .max = 600000},
    {.key = "zone_meta_key",
     .type = MESH_CFG_STRING,
     C(zone_meta_key),
     .def = "zone",
     .check = check_meta_key},
    {.key = "register", .type = MESH_CFG_BOOL, C(register_services), .def_int = 1},
    {.key = "check", .type = MESH_CFG_ENUM, C(check), .choices = check_names, .def = "ttl"},
    {.key = "check_ttl",
     .type = MESH_CFG_DURATION,
     C(check_ttl_ms),
     .def = "30s",
     .min = 3000,
     .max = 3600000},
    {.key = "check_interval",
     .type = MESH_CFG_DURATION,
     C(check_interval_ms),
     .def = "10s",
     .min = 1000,
     .max = 3600000},
    {.key = "check_http_path", .type = MESH_CFG_STRING, C(check_http_path), .def = "/"},
    /* Consul's own minimum for DeregisterCriticalServiceAfter is one minute. */
    {.key = "deregister_after",
     .type = MESH_CFG_DURATION,
     C(deregister_after_ms),
     .def = "5m",
     .min = 60000,
     .max = 30ull * 86400000},
    {0},
};

const struct mesh_cfg_schema mesh_consul__schema = {
    .size = sizeof(struct mesh_consul_config),
    .fields = fields,
};

static const char *pick(const char *cfg, mesh_consul_getenv_fn env, const char *var,
                        const char **ret_source)
{
    if (cfg && cfg[0]) {
        *ret_source = NULL;
        return cfg;
    }
    const char *v = env(var);
    *ret_source = var;
    return v && v[0] ? v : NULL;
}

/* A boolean variable as Go's strconv.ParseBool reads it (Consul's CLI does). */
static int env_bool(mesh_consul_getenv_fn env, const char *var, struct mesh_cfg_errors *errors)
{
    const char *v = env(var);
    if (!v || !v[0])
        return MESH_CONSUL_UNSET;
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (strcmp(v, yes[i]) == 0)
            return MESH_CONSUL_TRUE;
        if (strcmp(v, no[i]) == 0)
            return MESH_CONSUL_FALSE;
    }
    char msg[256];
    snprintf(msg, sizeof(msg), "environment: %s: expected true or false, got \"%.64s\"", var, v);
    mesh_cfg_errors_add(errors, msg);
    return -1;
}

static int dup_opt(char **dst, const char *src)
{
    if (!src)
        return 0;
    return (*dst = mesh_strdup(src)) ? 0 : -ENOMEM;
}

/* A host name as a certificate names it: dot-separated labels of [A-Za-z0-9-]. */
static bool host_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || (ch == '-' && label > 0)) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && s[len - 1] != '-';
}

/*
 * The TLS server name, from the config or CONSUL_TLS_SERVER_NAME; as Consul's CLI reads it, a
 * port after the name is dropped. Returns 0 (leaving *ret NULL when none is set), -EINVAL
 * after adding the problem to `errors`, or -ENOMEM.
 */
static int resolve_server_name(const struct mesh_consul_config *cfg, mesh_consul_getenv_fn env,
                               char **ret, struct mesh_cfg_errors *errors)
{
    const char *src, *v = pick(cfg->tls_server_name, env, "CONSUL_TLS_SERVER_NAME", &src);
    if (!v)
        return 0;
    size_t len = strlen(v);
    const char *colon = strrchr(v, ':');
    if (colon && !strchr(colon, ']'))
        len = (size_t)(colon - v);
    if (!host_name_valid(v, len)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s: consul TLS server name \"%.128s\": expected a host name",
                 src ? src : "tls_server_name", v);
        mesh_cfg_errors_add(errors, msg);
        return -EINVAL;
    }
    *ret = mesh_strndup(v, len);
    return *ret ? 0 : -ENOMEM;
}

/* unix:///path: an absolute path that fits a socket address. */
static int resolve_unix(const char *addr, const char *src, struct mesh_consul_conn *c,
                        struct mesh_cfg_errors *errors)
{
    const char *path = addr + strlen("unix://");
    char msg[512];
    if (path[0] != '/') {
        snprintf(msg, sizeof(msg),
                 "%s: consul address \"%.128s\": expected an absolute path after unix://",
                 src ? src : "config", addr);
        mesh_cfg_errors_add(errors, msg);
        return -EINVAL;
    }
    if (strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        snprintf(msg, sizeof(msg),
                 "%s: consul address \"%.128s...\": a socket path has at most %zu bytes",
                 src ? src : "config", addr, sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        mesh_cfg_errors_add(errors, msg);
        return -EINVAL;
    }
    /* The URL's host only names the server (and is what TLS over the socket verifies). */
    c->unix_socket = mesh_strdup(path);
    c->base_url = mesh_strdup(c->https ? "https://localhost" : "http://localhost");
    c->where = mesh_strdup(addr);
    return c->unix_socket && c->base_url && c->where ? 0 : -ENOMEM;
}

/* host:port, http://host:port or https://host:port into c->base_url and c->where. */
static int resolve_hostport(const char *addr, const char *src, int tls, struct mesh_consul_conn *c,
                            struct mesh_cfg_errors *errors)
{
    const char *hostport = addr;
    char msg[512];
    int r = 0;
    if (strncmp(addr, "https://", 8) == 0) {
        c->https = true;
        hostport = addr + 8;
    } else if (strncmp(addr, "http://", 7) == 0) {
        c->https = tls == MESH_CONSUL_TRUE;
        hostport = addr + 7;
    } else if (strstr(addr, "://")) {
        snprintf(msg, sizeof(msg),
                 "%s: consul address \"%.128s\": only http://, https:// and unix:// are "
                 "supported",
                 src ? src : "config", addr);
        mesh_cfg_errors_add(errors, msg);
        r = -EINVAL;
    } else {
        c->https = tls == MESH_CONSUL_TRUE;
    }
    size_t hl = strcspn(hostport, "/");
    if (hostport[hl] && strcmp(hostport + hl, "/") != 0) {
        snprintf(msg, sizeof(msg), "%s: consul address \"%.128s\": expected no path",
                 src ? src : "config", addr);
        mesh_cfg_errors_add(errors, msg);
        r = -EINVAL;
    }
    if (hl == 0 || strpbrk(hostport, " \t?#@")) {
        snprintf(msg, sizeof(msg), "%s: consul address \"%.128s\": expected host:port",
                 src ? src : "config", addr);
        mesh_cfg_errors_add(errors, msg);
        r = -EINVAL;
    }
    if (r < 0)
        return r;
    /* A bare host gets Consul's port. */
    const char *colon = memchr(hostport, ':', hl), *bracket = memchr(hostport, ']', hl);
    bool has_port = colon && (!bracket || memchr(bracket, ':', hl - (size_t)(bracket - hostport)));
    size_t n = hl + 32;
    c->base_url = mesh_malloc(n);
    if (!c->base_url)
        return -ENOMEM;
    snprintf(c->base_url, n, "%s://%.*s%s", c->https ? "https" : "http", (int)hl, hostport,
             has_port ? "" : ":8500");
    c->where = mesh_strdup(c->base_url);
    return c->where ? 0 : -ENOMEM;
}

int mesh_consul__resolve(const struct mesh_consul_config *cfg, mesh_consul_getenv_fn env,
                         struct mesh_consul_conn *ret, struct mesh_cfg_errors *errors)
{
    struct mesh_consul_conn c = {0};
    const char *src, *addr = pick(cfg->address, env, "CONSUL_HTTP_ADDR", &src);
    char msg[512];
    int r = 0;
    if (!addr)
        addr = "127.0.0.1:8500";
    int tls = cfg->tls ? cfg->tls : env_bool(env, "CONSUL_HTTP_SSL", errors);
    int verify =
        cfg->tls_verify ? cfg->tls_verify : env_bool(env, "CONSUL_HTTP_SSL_VERIFY", errors);
    if (tls < 0 || verify < 0)
        r = -EINVAL;
    int ra;
    if (strncmp(addr, "unix://", 7) == 0) {
        c.https = tls == MESH_CONSUL_TRUE;
        ra = resolve_unix(addr, src, &c, errors);
    } else {
        ra = resolve_hostport(addr, src, tls, &c, errors);
    }
    if (r == 0)
        r = ra;
    if (r < 0) {
        mesh_consul__conn_done(&c);
        return r;
    }

    /* The token: the config first, a file winning over a value; then the environment. */
    if (cfg->token_file && cfg->token_file[0]) {
        r = dup_opt(&c.token_file, cfg->token_file);
        c.token_source = "token_file";
    } else if (cfg->token && cfg->token[0]) {
        r = dup_opt(&c.token, cfg->token);
        c.token_source = "token";
    } else if (env("CONSUL_HTTP_TOKEN_FILE") && env("CONSUL_HTTP_TOKEN_FILE")[0]) {
        r = dup_opt(&c.token_file, env("CONSUL_HTTP_TOKEN_FILE"));
        c.token_source = "CONSUL_HTTP_TOKEN_FILE";
    } else if (env("CONSUL_HTTP_TOKEN") && env("CONSUL_HTTP_TOKEN")[0]) {
        r = dup_opt(&c.token, env("CONSUL_HTTP_TOKEN"));
        c.token_source = "CONSUL_HTTP_TOKEN";
    } else {
        c.token_source = "none";
    }
    if (r == 0)
        r = dup_opt(&c.ca_file, pick(cfg->ca_file, env, "CONSUL_CACERT", &src));
    if (r == 0)
        r = dup_opt(&c.cert_file, pick(cfg->cert_file, env, "CONSUL_CLIENT_CERT", &src));
    if (r == 0)
        r = dup_opt(&c.key_file, pick(cfg->key_file, env, "CONSUL_CLIENT_KEY", &src));
    if (r == 0)
        r = resolve_server_name(cfg, env, &c.server_name, errors);
    c.insecure = verify == MESH_CONSUL_FALSE;
    if (r == 0 && c.token && strpbrk(c.token, "\r\n")) {
        mesh_cfg_errors_add(errors, "consul token: must be one line");
        r = -EINVAL;
    }
    if (r == 0 && !c.cert_file != !c.key_file) {
        mesh_cfg_errors_add(errors, "consul TLS: a client certificate needs its key (cert_file "
                                    "and key_file, or CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY)");
        r = -EINVAL;
    }
    const char *files[] = {c.token_file, c.ca_file, c.cert_file, c.key_file};
    for (size_t i = 0; r == 0 && i < MESH_ARRAY_SIZE(files); i++) {
        if (files[i] && access(files[i], R_OK) < 0) {
            snprintf(msg, sizeof(msg), "consul: cannot read '%.256s': %s", files[i],
                     strerror(errno));
            mesh_cfg_errors_add(errors, msg);
            r = -EINVAL;
        }
    }
    if (r < 0) {
        mesh_consul__conn_done(&c);
        return r;
    }
    *ret = c;
    return 0;
}

void mesh_consul__conn_done(struct mesh_consul_conn *c)
{
    mesh_free(c->base_url);
    mesh_free(c->where);
    mesh_free(c->unix_socket);
    mesh_free(c->server_name);
    mesh_free(c->token);
    mesh_free(c->token_file);
    mesh_free(c->ca_file);
    mesh_free(c->cert_file);
    mesh_free(c->key_file);
    *c = (struct mesh_consul_conn){0};
}
