#define MESH_LOG_MODULE "capture"

/* `mesh-agent capture status|install|remove` (agent/capture_cli.h). */
#include "agent/capture_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/config.h"
#include "common/alloc.h"

#define EXIT_USAGE 2

/* The config, or NULL with its errors printed. */
static struct mesh_agent_config *load(const char *path)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    /* As the daemon: the embedded defaults when the default file does not exist. */
    if (!path && access(MESH_AGENT_DEFAULT_CONFIG, F_OK) == 0)
        path = MESH_AGENT_DEFAULT_CONFIG;
    const char *shown = path ? path : "the embedded defaults";
    if (mesh_agent_config_load(path, &errors, &cfg) < 0) {
        for (size_t i = 0; i < errors.n; i++)
            fprintf(stderr, "%s\n", errors.v[i]);
        fprintf(stderr, "mesh-agent capture: %s is not valid; nothing changed\n", shown);
        cfg = NULL;
    }
    mesh_cfg_errors_done(&errors);
    return cfg;
}

static int status(const struct mesh_agent_config *cfg, bool json_out)
{
    char err[1024];
    json_t *st = NULL;
    struct mesh_buf text;
    mesh_buf_init(&text, MESH_BUF_UNLIMITED);
    int r = mesh_capture_status(cfg->capture.table, &st, json_out ? NULL : &text, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "mesh-agent capture status: %s\n", err);
        mesh_buf_done(&text);
        return EXIT_FAILURE;
    }
    json_object_set_new(st, "enabled", json_boolean(cfg->capture.enabled));
    if (json_out) {
        char *s = json_dumps(st, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            printf("%s\n", s);
        mesh_free(s);
    } else if (json_is_true(json_object_get(st, "installed"))) {
        printf("capture: installed in table inet %s (capture.enabled is %s)\n%s",
               cfg->capture.table, cfg->capture.enabled ? "true" : "false", text.data);
    } else {
        printf("capture: nothing installed (table inet %s; capture.enabled is %s)\n",
               cfg->capture.table, cfg->capture.enabled ? "true" : "false");
    }
    json_decref(st);
    mesh_buf_done(&text);
    return EXIT_SUCCESS;
}

static int install(const struct mesh_agent_config *cfg)
{
    char err[1024];
    if (!cfg->capture.enabled) {
        fprintf(stderr,
                "mesh-agent capture install: capture.enabled is false in %s; "
                "nothing installed\n",
                cfg->path ? cfg->path : "the defaults");
        return EXIT_FAILURE;
    }
    struct mesh_agent_capture_scratch scratch;
    struct mesh_capture_spec spec;
    mesh_agent_capture_spec(cfg, mesh_agent_capture_cli_uid(), NULL, 0, &spec, &scratch);
    if (mesh_capture_install(&spec, err, sizeof(err)) < 0) {
        fprintf(stderr, "mesh-agent capture install: %s; nothing installed\n", err);
        return EXIT_FAILURE;
    }
    printf("capture: installed in table inet %s\n", cfg->capture.table);
    return EXIT_SUCCESS;
}

static int remove_rules(const struct mesh_agent_config *cfg, bool stopping)
{
    char err[1024];
    unsigned parts = stopping ? mesh_agent_capture_open_parts(&cfg->capture) : MESH_CAPTURE_ALL;
    if (parts && mesh_capture_remove(cfg->capture.table, parts, err, sizeof(err)) < 0) {
        fprintf(stderr, "mesh-agent capture remove: %s\n", err);
        return EXIT_FAILURE;
    }
    if (parts == MESH_CAPTURE_ALL)
        printf("capture: removed table inet %s\n", cfg->capture.table);
    else
        printf("capture: removed the parts that fail open from table inet %s; the %s rules "
               "stay (fail: closed)\n",
               cfg->capture.table, mesh_agent_capture_parts_name(MESH_CAPTURE_ALL & ~parts));
    return EXIT_SUCCESS;
}

int mesh_agent_capture_command(const char *path, const char *verb, bool stopping, bool json_out)
{
    bool known = !strcmp(verb, "status") || !strcmp(verb, "install") || !strcmp(verb, "remove");
    if (!known || (stopping && strcmp(verb, "remove") != 0)) {
        fprintf(stderr,
                "mesh-agent capture: %s (expected status, install, or remove "
                "[--stopping])\n",
                known ? "--stopping goes with remove only" : "unknown command");
        return EXIT_USAGE;
    }
    mesh_log_set_level(MESH_LOG_ERROR);
    struct mesh_agent_config *cfg = load(path);
    if (!cfg)
        return EXIT_FAILURE;
    int code = !strcmp(verb, "status")    ? status(cfg, json_out)
               : !strcmp(verb, "install") ? install(cfg)
                                          : remove_rules(cfg, stopping);
    mesh_agent_config_unref(cfg);
    return code;
}
