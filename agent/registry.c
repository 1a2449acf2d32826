#define MESH_LOG_MODULE "registry"

#include "agent/registry.h"

#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/macros.h"
#include "registry-adapters/consul/consul.h"
#include "registry-adapters/kubernetes/k8s.h"
#include "registry-adapters/static/static.h"

/* Every adapter, one line each, in precedence order. */
static const struct mesh_registry_ops *const adapters[] = {
    &mesh_static_registry_ops,
    &mesh_k8s_registry_ops,
    &mesh_consul_registry_ops,
};

static const char *const precedence[] = {"static", "kubernetes", "consul"};

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

const struct mesh_registry_ops *mesh_registry_find(const char *type)
{
    for (size_t i = 0; i < MESH_ARRAY_SIZE(adapters); i++) {
        if (strcmp(adapters[i]->type, type) == 0)
            return adapters[i];
    }
    return NULL;
}

const char *const *mesh_registry_types(void)
{
    static const char *types[MESH_ARRAY_SIZE(adapters) + 1];
    for (size_t i = 0; i < MESH_ARRAY_SIZE(adapters); i++)
        types[i] = adapters[i]->type;
    return types;
}

int mesh_registry_type_rank(const char *type)
{
    for (size_t i = 0; i < MESH_ARRAY_SIZE(precedence); i++) {
        if (strcmp(precedence[i], type) == 0)
            return (int)i;
    }
    return (int)MESH_ARRAY_SIZE(precedence);
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

void mesh_registry_metrics(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b)
{
    struct mesh_registry *same[64];
    for (size_t a = 0; a < MESH_ARRAY_SIZE(adapters); a++) {
        if (!adapters[a]->metrics)
            continue;
        size_t k = 0;
        for (size_t i = 0; i < n && k < MESH_ARRAY_SIZE(same); i++) {
            if (regs[i]->ops == adapters[a])
                same[k++] = regs[i];
        }
        if (k)
            adapters[a]->metrics(same, k, b);
    }
}
