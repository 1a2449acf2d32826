/*
 * mesh-agent: the per-host service mesh daemon. See mesh-agent(8) and docs/.
 */
#define MESH_LOG_MODULE "main"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

#include "agent/agent.h"
#include "agent/capture_cli.h"
#include "agent/config.h"
#include "agent/notify.h"
#include "agent/resources.h"
#include "common/alloc.h"
#include "common/log.h"
#include "mesh-version.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mesh-agent [OPTIONS]\n"
            "       mesh-agent validate [--config FILE] [-o text|json]\n"
            "       mesh-agent capture status|install|remove [--stopping] [--config FILE]\n"
            "                          [-o text|json]\n"
            "\n"
            "Runs the per-host service mesh agent.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE       agent config (default %s; the embedded\n"
            "                          defaults when that file does not exist)\n"
            "  -l, --log-level LEVEL   error, warning, notice, info or debug\n"
            "  -f, --log-format FMT    text, json or journal (default: journal when stderr\n"
            "                          is the journal, else text)\n"
            "  -o, --output FMT        validate and capture status: text (default) or json\n"
            "      --stopping          capture remove: only the parts that fail open\n"
            "                          (systemd's ExecStopPost)\n"
            "  -h, --help              show this help and exit\n"
            "  -V, --version           show the version and exit\n"
            "\n"
            "Signals: SIGHUP reloads the config and service files (validated first);\n"
            "SIGTERM or SIGINT drains and stops (a second one stops at once).\n"
            "\n"
            "Exit status: 0 success, 1 invalid config or runtime failure, 2 usage error.\n",
            MESH_AGENT_DEFAULT_CONFIG);
}

/* Checks a config and what its registries would read; prints every problem. */
static int validate(const char *path, bool json_out)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    const char *shown = path ? path : MESH_AGENT_DEFAULT_CONFIG;
    /* Adapters log what they read; only the error list matters here. */
    mesh_log_set_level(MESH_LOG_ERROR);
    int r = mesh_agent_config_load(shown, &errors, &cfg);
    if (r == 0) {
        for (size_t i = 0; i < cfg->registries.n; i++) {
            const struct mesh_registry_config *rc = &cfg->registries.v[i];
            if (rc->ops->validate)
                rc->ops->validate(rc, &cfg->env, &errors);
        }
        mesh_resources_validate(cfg->resources_dir, &errors);
        mesh_agent_config_check_files(cfg, &errors);
    }
    size_t n = mesh_cfg_error_count(&errors);
    if (json_out) {
        json_t *list = json_array();
        for (size_t i = 0; list && i < errors.n; i++)
            json_array_append_new(list, json_string(errors.v[i]));
        json_t *doc = json_pack("{s:s, s:b, s:o, s:I}", "config", shown, "valid", n == 0, "errors",
                                list ? list : json_array(), "error_count", (json_int_t)n);
        char *s = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
        if (s)
            printf("%s\n", s);
        mesh_free(s);
        json_decref(doc);
    } else if (n == 0) {
        printf("%s: valid\n", shown);
    } else {
        for (size_t i = 0; i < errors.n; i++)
            fprintf(stderr, "%s\n", errors.v[i]);
        if (errors.dropped)
            fprintf(stderr, "(%zu more errors not shown)\n", errors.dropped);
        fprintf(stderr, "%s: %zu error%s\n", shown, n, n == 1 ? "" : "s");
    }
    mesh_cfg_errors_done(&errors);
    mesh_agent_config_unref(cfg);
    return n == 0 && r == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    mesh_log_error("handle still open at exit: %s%s", uv_handle_type_name(h->type),
                   uv_is_closing(h) ? " (closing)" : "");
}

/*
 * A proxy holds two descriptors per connection: take the whole hard limit (systemd's
 * LimitNOFILE, or the shell's), as HAProxy does, instead of the 1024 soft default.
 */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            mesh_log_warn("cannot raise the open file limit to %llu", (unsigned long long)want);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        mesh_log_debug("open file limit: %llu", (unsigned long long)rl.rlim_cur);
}

static int run(const struct mesh_agent_options *opts)
{
    uv_loop_t loop;
    struct mesh_agent *agent = NULL;
    raise_fd_limit();
    int r = uv_loop_init(&loop);
    if (r < 0) {
        mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_START_FAILED, NULL,
                    "cannot create the event loop: %s", uv_strerror(r));
        mesh_notify_failed(-r, "cannot start: cannot create the event loop");
        return EXIT_FAILURE;
    }
    r = mesh_agent_new(&loop, opts, &agent);
    if (r < 0) {
        uv_loop_close(&loop);
        return EXIT_FAILURE;
    }
    int code = EXIT_SUCCESS;
    if (mesh_agent_start(agent) < 0) {
        code = EXIT_FAILURE;
        mesh_agent_stop(agent);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    mesh_agent_close_signals(agent);
    uv_run(&loop, UV_RUN_DEFAULT);
    /*
     * Everything is stopped: a late signal must not turn a clean exit into a kill. (Only
     * now: closing libuv's last signal watcher puts back the default action.)
     */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    mesh_agent_free(agent);
    if (uv_loop_close(&loop) == UV_EBUSY) {
        uv_walk(&loop, walk_cb, NULL);
        code = EXIT_FAILURE;
    }
    if (code == EXIT_SUCCESS)
        mesh_log_info("stopped");
    return code;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"log-format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"stopping", no_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    struct mesh_agent_options opts = {.log_level = -1, .log_format = -1};
    bool json_out = false, stopping = false;
    int c;

    mesh_alloc_install();
    signal(SIGPIPE, SIG_IGN);
    mesh_log_setup("mesh-agent", MESH_LOG_INFO,
                   mesh_log_stderr_is_journal() ? MESH_LOG_FORMAT_JOURNAL : MESH_LOG_FORMAT_TEXT);

    while ((c = getopt_long(argc, argv, "c:l:f:o:hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            opts.config_path = optarg;
            break;
        case 'l': {
            enum mesh_log_level level;
            if (mesh_log_level_parse(optarg, &level) < 0) {
                fprintf(stderr,
                        "mesh-agent: invalid --log-level '%s' (expected error, warning, "
                        "notice, info or debug)\n",
                        optarg);
                return EXIT_USAGE;
            }
            opts.log_level = (int)level;
            break;
        }
        case 'f': {
            enum mesh_log_format format;
            if (mesh_log_format_parse(optarg, &format) < 0) {
                fprintf(stderr,
                        "mesh-agent: invalid --log-format '%s' (expected text, json or journal)\n",
                        optarg);
                return EXIT_USAGE;
            }
            opts.log_format = (int)format;
            break;
        }
        case 'o':
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
                fprintf(stderr, "mesh-agent: invalid --output '%s' (expected text or json)\n",
                        optarg);
                return EXIT_USAGE;
            }
            json_out = strcmp(optarg, "json") == 0;
            break;
        case 'S':
            stopping = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("mesh-agent %s (commit %s)\n", MESH_VERSION, MESH_GIT_COMMIT);
            return EXIT_SUCCESS;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        if (strcmp(argv[optind], "validate") == 0 && optind + 1 == argc && !stopping)
            return validate(opts.config_path, json_out);
        if (strcmp(argv[optind], "capture") == 0 && optind + 2 == argc)
            return mesh_agent_capture_command(opts.config_path, argv[optind + 1], stopping,
                                              json_out);
        fprintf(stderr, "mesh-agent: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (stopping) {
        fprintf(stderr, "mesh-agent: --stopping goes with 'capture remove' only\n");
        return EXIT_USAGE;
    }
    if (opts.log_level >= 0 || opts.log_format >= 0)
        mesh_log_setup(
            "mesh-agent", opts.log_level >= 0 ? (enum mesh_log_level)opts.log_level : MESH_LOG_INFO,
            opts.log_format >= 0 ? (enum mesh_log_format)opts.log_format : mesh_log_get_format());
    return run(&opts);
}
