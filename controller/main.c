/*
 * mesh-controller: the mesh's CA and shared API. See mesh-controller(8) and
 * docs/controller.md.
 */
#define MESH_LOG_MODULE "controller"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <uv.h>

#include "common/alloc.h"
#include "common/fs.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/sd.h"
#include "controller/api.h"
#include "controller/ca.h"
#include "controller/config.h"
#include "controller/store.h"
#include "mesh-version.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mesh-controller [OPTIONS]\n"
            "\n"
            "Runs the mesh controller: the CA that issues agents' SPIFFE certificates, join\n"
            "tokens and enrollment, over an HTTPS API (default 0.0.0.0:15443).\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE       controller config (default %s; the embedded\n"
            "                          defaults when that file does not exist)\n"
            "  -l, --log-level LEVEL   error, warning, notice, info or debug\n"
            "  -f, --log-format FMT    text, json or journal (default: journal when stderr\n"
            "                          is the journal, else text)\n"
            "  -h, --help              show this help and exit\n"
            "  -V, --version           show the version and exit\n"
            "\n"
            "Signals: SIGTERM or SIGINT stops. Exit status: 0 success, 1 failure, 2 usage.\n",
            MESH_CONTROLLER_DEFAULT_CONFIG);
}

struct controller {
    uv_loop_t *loop;
    struct mesh_api *api;
    struct mesh_http_server *server;
    uv_signal_t sig_term, sig_int;
};

static void on_server_closed(void *data)
{
    struct controller *c = data;
    c->server = NULL;
    c->api->server = NULL;
    uv_close((uv_handle_t *)&c->sig_term, NULL);
    uv_close((uv_handle_t *)&c->sig_int, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct controller *c = h->data;
    mesh_log_info("stopping (signal %d)", signum);
    mesh_sd_notify("STOPPING=1");
    mesh_api_resources_close(c->api); /* parked queries answer now */
    mesh_ctl_catalog_free(c->api->catalog);
    c->api->catalog = NULL;
    if (c->server)
        mesh_http_server_close(c->server, 5000, on_server_closed, c);
}

/* The admin token in the state dir, made (0600) when missing. */
static int admin_token(const char *dir, char out[65])
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/admin.token", dir);
    char *data = NULL;
    size_t len = 0;
    int r = mesh_fs_read_file(path, 4096, &data, &len);
    if (r == 0) {
        while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
            len--;
        if (len != 64) {
            mesh_free(data);
            mesh_log_error("%s: expected 64 hex characters", path);
            return -EINVAL;
        }
        memcpy(out, data, 64);
        out[64] = '\0';
        mesh_free(data);
        return 0;
    }
    if (r != -ENOENT)
        return r;
    unsigned char b[32];
    static const char digits[] = "0123456789abcdef";
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -EIO;
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[64] = '\n';
    r = mesh_fs_write_atomic(path, out, 65, 0600);
    out[64] = '\0';
    if (r == 0)
        mesh_log_info("created the admin token in %s (meshctl reads it with --token-file)", path);
    return r;
}

/* The log format: the command line's (>= 0), else the config's, "auto" choosing the journal
 * when stderr is the journal, as the agent does. */
static enum mesh_log_format log_format(int arg, int config)
{
    if (arg >= 0)
        return (enum mesh_log_format)arg;
    if (config == 0)
        return mesh_log_stderr_is_journal() ? MESH_LOG_FORMAT_JOURNAL : MESH_LOG_FORMAT_TEXT;
    return (enum mesh_log_format)(config - 1);
}

static int run(const char *config_path, int log_level, int format)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_controller_config *cfg = NULL;
    const char *path = config_path;
    if (!path && access(MESH_CONTROLLER_DEFAULT_CONFIG, F_OK) == 0)
        path = MESH_CONTROLLER_DEFAULT_CONFIG;
    if (mesh_controller_config_load(path, &errors, &cfg) < 0) {
        for (size_t i = 0; i < errors.n; i++)
            fprintf(stderr, "%s\n", errors.v[i]);
        fprintf(stderr, "mesh-controller: invalid config; not starting\n");
        mesh_cfg_errors_done(&errors);
        return 1;
    }
    mesh_log_set_level(log_level ? (enum mesh_log_level)log_level
                                 : (enum mesh_log_level)(MESH_LOG_ERROR + cfg->log_level));
    mesh_log_set_format(log_format(format, cfg->log_format));
    struct mesh_store *store = NULL;
    struct mesh_ca ca = {0};
    struct mesh_api api = {0};
    struct controller c = {.loop = uv_default_loop()};
    int r = mesh_fs_mkdir_private(cfg->state_dir, 0700);
    static const char *const kinds[] = {"tokens", "agents", "certs", "resources", "state", NULL};
    if (r < 0)
        mesh_log_error("cannot create the state directory '%s': %s", cfg->state_dir, strerror(-r));
    else if ((r = mesh_store_open(cfg->state_dir, kinds, &store)) < 0)
        mesh_log_error("cannot open the store in '%s': %s", cfg->state_dir, strerror(-r));
    else if ((r = mesh_ca_open(cfg, &ca)) == 0 &&
             (r = admin_token(cfg->state_dir, api.admin_token)) == 0) {
        api.store = store;
        api.ca = &ca;
        api.loop = c.loop;
        mesh_api_init(&api);
        mesh_api_resources_init(&api);
        struct mesh_ctl_catalog_options co = {.trust_domain = cfg->trust_domain,
                                              .report_interval_ms = cfg->report_interval_ms,
                                              .grace_ms = cfg->catalog_grace_ms,
                                              .expiry_ms = cfg->catalog_expiry_ms};
        r = mesh_ctl_catalog_new(c.loop, &co, &api.catalog);
    }
    if (r == 0) {
        struct mesh_http_server_options opts;
        mesh_http_server_options_default(&opts);
        opts.max_connections = (size_t)cfg->max_connections;
        opts.max_connections_per_client = (size_t)cfg->max_connections_per_client;
        opts.header_timeout_ms = cfg->header_timeout_ms;
        opts.idle_timeout_ms = cfg->idle_timeout_ms;
        opts.total_timeout_ms = cfg->connection_timeout_ms;
        opts.tls = ca.tls;
        opts.on_answered = mesh_api_answered;
        r = mesh_http_server_new(c.loop, &opts, mesh_api_handle, &api, &c.server);
        api.server = c.server;
        if (r == 0 && (r = mesh_http_server_listen(c.server, &cfg->listen_addr)) < 0) {
            mesh_log_error("cannot listen on %s: %s", cfg->listen, uv_strerror(r));
            mesh_http_server_close(c.server, 0, NULL, NULL);
            c.server = api.server = NULL;
        }
    }
    if (r == 0) {
        c.api = &api;
        uv_signal_init(c.loop, &c.sig_term);
        uv_signal_init(c.loop, &c.sig_int);
        c.sig_term.data = c.sig_int.data = &c;
        uv_signal_start(&c.sig_term, on_signal, SIGTERM);
        uv_signal_start(&c.sig_int, on_signal, SIGINT);
        mesh_log_info("mesh-controller %s listening on %s (HTTPS), trust domain %s", MESH_VERSION,
                      cfg->listen, cfg->trust_domain);
        mesh_sd_notify("READY=1\nSTATUS=serving");
        uv_run(c.loop, UV_RUN_DEFAULT);
    }
    mesh_ctl_catalog_free(api.catalog); /* a failed start (a stop freed it already) */
    api.catalog = NULL;
    uv_run(c.loop, UV_RUN_DEFAULT); /* what a failed start left closing */
    uv_loop_close(c.loop);
    if (api.loop)
        mesh_api_done(&api);
    mesh_store_close(store);
    mesh_ca_close(&ca);
    mesh_controller_config_free(cfg);
    OPENSSL_cleanse(api.admin_token, sizeof(api.admin_token));
    return r == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"config", required_argument, NULL, 'c'},     {"log-level", required_argument, NULL, 'l'},
        {"log-format", required_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},          {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int level = 0, format = -1, ch;
    mesh_alloc_install();
    signal(SIGPIPE, SIG_IGN);
    mesh_log_setup("mesh-controller", MESH_LOG_INFO,
                   mesh_log_stderr_is_journal() ? MESH_LOG_FORMAT_JOURNAL : MESH_LOG_FORMAT_TEXT);
    while ((ch = getopt_long(argc, argv, "c:l:f:hV", long_opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'l': {
            enum mesh_log_level l;
            if (mesh_log_level_parse(optarg, &l) < 0) {
                fprintf(stderr, "mesh-controller: invalid --log-level '%s'\n", optarg);
                return EXIT_USAGE;
            }
            level = (int)l;
            break;
        }
        case 'f': {
            enum mesh_log_format f;
            if (mesh_log_format_parse(optarg, &f) < 0) {
                fprintf(stderr,
                        "mesh-controller: invalid --log-format '%s' (expected text, json or "
                        "journal)\n",
                        optarg);
                return EXIT_USAGE;
            }
            format = (int)f;
            mesh_log_set_format(f); /* from here on, config errors included */
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("mesh-controller %s (%s)\n", MESH_VERSION, MESH_GIT_COMMIT);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mesh-controller: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    return run(config, level, format);
}
