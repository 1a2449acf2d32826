#define MESH_LOG_MODULE "registry"

#include "catalog/registry.h"

#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"

void mesh_registry_init(struct mesh_registry *r, const struct mesh_registry_ops *ops,
                        uv_loop_t *loop, const struct mesh_registry_config *cfg,
                        const struct mesh_registry_env *env, const struct mesh_registry_sink *sink)
{
    r->ops = ops;
    r->loop = loop;
    r->cfg = cfg;
    r->env = env;
    r->sink = *sink;
}

void mesh_registry_problem(struct mesh_registry *r, char **problem, const char *msg)
{
    if (!*problem || strcmp(*problem, msg) != 0) {
        mesh_log_id(MESH_LOG_WARNING, MESH_MSGID_REGISTRY_DOWN,
                    MESH_LOG_FIELDS({"registry", r->cfg->name}), "registry '%s': %s", r->cfg->name,
                    msg);
        mesh_free(*problem);
        *problem = mesh_strdup(msg);
    }
    r->sink.error(r->sink.data, r, msg);
}

double mesh_registry_recovered(struct mesh_registry *r, char **problem, const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (*problem) {
        mesh_log_id(MESH_LOG_INFO, MESH_MSGID_REGISTRY_UP,
                    MESH_LOG_FIELDS({"registry", r->cfg->name}), "registry '%s': %s again",
                    r->cfg->name, what);
        mesh_free(*problem);
        *problem = NULL;
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void mesh_registry_refresh(struct mesh_registry *r)
{
    if (r->ops->refresh)
        r->ops->refresh(r);
}

void mesh_registry_local_services(struct mesh_registry *r,
                                  const struct mesh_local_service *const *v, size_t n)
{
    if (r->ops->local_services)
        r->ops->local_services(r, v, n);
}

void mesh_registry_status(struct mesh_registry *r, json_t *out)
{
    if (r->ops->status)
        r->ops->status(r, out);
}
