#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/alloc.h"
#include "common/fs.h"
#include "common/names.h"
#include "common/yaml.h"
#include "registry-adapters/kubernetes/k8s-int.h"

#define C(member) MESH_CFG_FIELD(struct mesh_k8s_config, member)
#define KUBECONFIG_MAX (1024 * 1024)

static const struct mesh_cfg_field fields[] = {
    {.key = "kubeconfig",
     .type = MESH_CFG_STRING,
     C(kubeconfig),
     .flags = MESH_CFG_PATH,
     .def = ""},
    {.key = "context", .type = MESH_CFG_STRING, C(context), .def = ""},
    {.key = "service_account_dir",
     .type = MESH_CFG_STRING,
     C(service_account_dir),
     .flags = MESH_CFG_PATH | MESH_CFG_NONEMPTY,
     .def = "/var/run/secrets/kubernetes.io/serviceaccount"},
    {.key = "namespaces", .type = MESH_CFG_STRINGS, C(namespaces), .max = 100},
    {.key = "node_name", .type = MESH_CFG_STRING, C(node_name), .def = ""},
    {.key = "page_size",
     .type = MESH_CFG_INT,
     C(page_size),
     .def_int = 500,
     .min = 1,
     .max = 10000},
    {.key = "watch_timeout",
     .type = MESH_CFG_DURATION,
     C(watch_timeout_ms),
     .def = "5m",
     .min = 10000,
     .max = 3600000},
    {.key = "pods", .type = MESH_CFG_BOOL, C(pods), .def_int = 1},
    {0},
};

static void check_config(struct mesh_cfg_ctx *ctx, void *obj)
{
    const struct mesh_k8s_config *c = obj;
    for (size_t i = 0; i < c->namespaces.n; i++) {
        const char *why = mesh_name_check_dns_label(c->namespaces.v[i]);
        if (why) {
            size_t old = mesh_cfg_path_push_key(ctx, "namespaces");
            mesh_cfg_path_push_index(ctx, i);
            mesh_cfg_error(ctx, "expected a namespace (DNS label), got \"%s\": %s",
                           c->namespaces.v[i], why);
            mesh_cfg_path_pop(ctx, old);
        }
    }
}

const struct mesh_cfg_schema mesh_k8s__schema = {
    .size = sizeof(struct mesh_k8s_config),
    .fields = fields,
    .check = check_config,
};

static void add_error(struct mesh_cfg_errors *errors, const char *fmt, ...) MESH_PRINTF(2, 3);

static void add_error(struct mesh_cfg_errors *errors, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mesh_cfg_errors_add(errors, msg);
}

static int dup_into(char **dst, const char *src)
{
    if (!src)
        return 0;
    return (*dst = mesh_strdup(src)) ? 0 : -ENOMEM;
}

/* Base64 (kubeconfig *-data fields) to a NUL-terminated string. */
static char *b64_decode(const char *s)
{
    size_t n = strlen(s);
    unsigned char *out = mesh_malloc(n / 4 * 3 + 4);
    if (!out || n % 4) {
        mesh_free(out);
        return NULL;
    }
    int len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    if (len < 0) {
        mesh_free(out);
        return NULL;
    }
    for (size_t i = n; i > 0 && s[i - 1] == '='; i--)
        len--;
    out[len] = '\0';
    return (char *)out;
}

/* A file path in a kubeconfig is relative to the kubeconfig's directory. */
static char *relative_to(const char *kubeconfig, const char *path)
{
    if (path[0] == '/')
        return mesh_strdup(path);
    const char *slash = strrchr(kubeconfig, '/');
    size_t dl = slash ? (size_t)(slash - kubeconfig) : 1;
    size_t n = dl + strlen(path) + 2;
    char *p = mesh_malloc(n);
    if (p)
        snprintf(p, n, "%.*s/%s", (int)dl, slash ? kubeconfig : ".", path);
    return p;
}

static json_t *named(json_t *list, const char *name, const char *inner)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && strcmp(n, name) == 0)
            return json_object_get(e, inner);
    }
    return NULL;
}

static int from_kubeconfig(const struct mesh_k8s_config *cfg, const char *path,
                           struct mesh_k8s_conn *c, struct mesh_cfg_errors *errors)
{
    char *data = NULL, err[256];
    size_t len = 0;
    json_t *root = NULL;
    int r = mesh_fs_read_file(path, KUBECONFIG_MAX, &data, &len);
    if (r < 0) {
        add_error(errors, "%s: cannot read the kubeconfig: %s", path, strerror(-r));
        return -EINVAL;
    }
    r = mesh_yaml_to_json(data, len, &root, err, sizeof(err));
    mesh_free(data);
    if (r < 0) {
        add_error(errors, "%s: %s", path, r == -ENOMEM ? "out of memory" : err);
        return r == -ENOMEM ? r : -EINVAL;
    }
    const char *ctx_name = cfg->context && cfg->context[0]
                               ? cfg->context
                               : json_string_value(json_object_get(root, "current-context"));
    json_t *ctx = ctx_name ? named(json_object_get(root, "contexts"), ctx_name, "context") : NULL;
    const char *cluster_name = json_string_value(json_object_get(ctx, "cluster"));
    const char *user_name = json_string_value(json_object_get(ctx, "user"));
    json_t *cluster =
        cluster_name ? named(json_object_get(root, "clusters"), cluster_name, "cluster") : NULL;
    json_t *user = user_name ? named(json_object_get(root, "users"), user_name, "user") : NULL;
    const char *server = json_string_value(json_object_get(cluster, "server"));
    r = -EINVAL;
    if (!ctx_name) {
        add_error(errors, "%s: no context: set \"context\" or the file's current-context", path);
    } else if (!ctx) {
        add_error(errors, "%s: context '%s' is not in the file", path, ctx_name);
    } else if (!cluster || !server || strncmp(server, "https://", 8) != 0) {
        add_error(errors, "%s: the context's cluster has no https:// server ('%s')", path,
                  cluster_name ? cluster_name : "?");
    } else if (json_object_get(user, "exec") || json_object_get(user, "auth-provider")) {
        add_error(errors,
                  "%s: user '%s': exec and auth-provider credentials are not supported; use a "
                  "token, a token file or a client certificate",
                  path, user_name);
    } else {
        r = 0;
    }
    if (r == 0) {
        const char *s;
        size_t sl = strlen(server);
        while (sl > 8 && server[sl - 1] == '/')
            sl--;
        if (!(c->server = mesh_malloc(sl + 1)))
            r = -ENOMEM;
        else
            snprintf(c->server, sl + 1, "%.*s", (int)sl, server);
        c->insecure =
            (s = json_string_value(json_object_get(cluster, "insecure-skip-tls-verify"))) &&
            strcmp(s, "true") == 0;
        struct {
            json_t *obj;
            const char *data_key, *file_key;
            char **pem, **file;
        } pairs[] = {
            {cluster, "certificate-authority-data", "certificate-authority", &c->ca_pem,
             &c->ca_file},
            {user, "client-certificate-data", "client-certificate", &c->cert_pem, &c->cert_file},
            {user, "client-key-data", "client-key", &c->key_pem, &c->key_file},
        };
        for (size_t i = 0; r == 0 && i < MESH_ARRAY_SIZE(pairs); i++) {
            const char *d = json_string_value(json_object_get(pairs[i].obj, pairs[i].data_key));
            const char *f = json_string_value(json_object_get(pairs[i].obj, pairs[i].file_key));
            if (d && !(*pairs[i].pem = b64_decode(d))) {
                add_error(errors, "%s: %s is not base64", path, pairs[i].data_key);
                r = -EINVAL;
            } else if (!d && f && !(*pairs[i].file = relative_to(path, f))) {
                r = -ENOMEM;
            }
        }
        const char *tok = json_string_value(json_object_get(user, "token"));
        const char *tokfile = json_string_value(json_object_get(user, "tokenFile"));
        if (r == 0 && tokfile && !(c->token_file = relative_to(path, tokfile)))
            r = -ENOMEM;
        else if (r == 0 && !tokfile)
            r = dup_into(&c->token, tok);
        if (r == 0 && !c->cert_pem != !c->key_pem) {
            add_error(errors, "%s: user '%s': a client certificate needs its key", path, user_name);
            r = -EINVAL;
        }
        char src[512];
        snprintf(src, sizeof(src), "kubeconfig %s, context %s", path, ctx_name);
        if (r == 0)
            r = dup_into(&c->source, src);
    }
    json_decref(root);
    return r;
}

static int in_cluster(const struct mesh_k8s_config *cfg, const char *host, const char *port,
                      struct mesh_k8s_conn *c)
{
    size_t n = strlen(host) + strlen(port) + 16;
    if (!(c->server = mesh_malloc(n)))
        return -ENOMEM;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(c->server, n, "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", port);
    n = strlen(cfg->service_account_dir) + 16;
    if (!(c->token_file = mesh_malloc(n)) || !(c->ca_file = mesh_malloc(n)))
        return -ENOMEM;
    snprintf(c->token_file, n, "%s/token", cfg->service_account_dir);
    snprintf(c->ca_file, n, "%s/ca.crt", cfg->service_account_dir);
    return dup_into(&c->source, "in-cluster service account");
}

int mesh_k8s__resolve(const struct mesh_k8s_config *cfg, mesh_k8s_getenv_fn env,
                      const char *node_default, bool default_guessed, struct mesh_k8s_conn *ret,
                      struct mesh_cfg_errors *errors)
{
    struct mesh_k8s_conn c = {0};
    const char *host = env("KUBERNETES_SERVICE_HOST"), *port = env("KUBERNETES_SERVICE_PORT");
    const char *kc = env("KUBECONFIG");
    int r;
    if (cfg->kubeconfig && cfg->kubeconfig[0]) {
        r = from_kubeconfig(cfg, cfg->kubeconfig, &c, errors);
    } else if (host && host[0]) {
        r = in_cluster(cfg, host, port && port[0] ? port : "443", &c);
    } else if (kc && kc[0]) {
        char first[4096];
        snprintf(first, sizeof(first), "%.*s", (int)strcspn(kc, ":"), kc);
        r = from_kubeconfig(cfg, first, &c, errors);
    } else {
        mesh_cfg_errors_add(errors, "kubernetes: no API server: not in a cluster "
                                    "(KUBERNETES_SERVICE_HOST unset), no \"kubeconfig\" and no "
                                    "KUBECONFIG");
        r = -EINVAL;
    }
    const char *node = cfg->node_name && cfg->node_name[0] ? cfg->node_name : env("NODE_NAME");
    bool cluster = !(cfg->kubeconfig && cfg->kubeconfig[0]) && host && host[0];
    if ((!node || !node[0]) && !(cluster && default_guessed))
        node = node_default;
    if (r == 0 && (!node || !node[0])) {
        mesh_cfg_errors_add(errors, "kubernetes: in-cluster mode needs this node's name: set "
                                    "NODE_NAME (the downward API's spec.nodeName), the "
                                    "registry's \"node_name\" or the agent's node.name (the "
                                    "pod's hostname is not the node's name)");
        r = -EINVAL;
    }
    if (r == 0)
        r = dup_into(&c.node_name, node);
    const char *files[] = {c.token_file, c.ca_file, c.cert_file, c.key_file};
    for (size_t i = 0; r == 0 && i < MESH_ARRAY_SIZE(files); i++) {
        if (files[i] && access(files[i], R_OK) < 0) {
            char msg[600];
            snprintf(msg, sizeof(msg), "kubernetes: cannot read '%.400s': %s (%s)", files[i],
                     strerror(errno), c.source ? c.source : "");
            mesh_cfg_errors_add(errors, msg);
            r = -EINVAL;
        }
    }
    if (r < 0) {
        mesh_k8s__conn_done(&c);
        return r;
    }
    *ret = c;
    return 0;
}

void mesh_k8s__conn_done(struct mesh_k8s_conn *c)
{
    if (c->key_pem)
        OPENSSL_cleanse(c->key_pem, strlen(c->key_pem));
    mesh_free(c->server);
    mesh_free(c->ca_file);
    mesh_free(c->ca_pem);
    mesh_free(c->token);
    mesh_free(c->token_file);
    mesh_free(c->cert_file);
    mesh_free(c->key_file);
    mesh_free(c->cert_pem);
    mesh_free(c->key_pem);
    mesh_free(c->source);
    mesh_free(c->node_name);
    *c = (struct mesh_k8s_conn){0};
}
