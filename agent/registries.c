#define MESH_LOG_MODULE "registry"

/*
 * The table of registry adapters: the one place that names them all (the composition
 * root). Adding a registry is one line here.
 */
#include "agent/registries.h"

#include <string.h>

#include "common/macros.h"
#include "registry-adapters/consul/consul.h"
#include "registry-adapters/kubernetes/k8s.h"
#include "registry-adapters/static/static.h"

/* Every adapter, one line each, in precedence order (the controller's is in agent/). */
static const struct mesh_registry_ops *const adapters[] = {
    &mesh_static_registry_ops,
    &mesh_k8s_registry_ops,
    &mesh_consul_registry_ops,
    &mesh_agent_controller_registry_ops,
};

const struct mesh_registry_ops *mesh_registries_find(const char *type)
{
    for (size_t i = 0; i < MESH_ARRAY_SIZE(adapters); i++) {
        if (strcmp(adapters[i]->type, type) == 0)
            return adapters[i];
    }
    return NULL;
}

const char *const *mesh_registries_types(void)
{
    static const char *types[MESH_ARRAY_SIZE(adapters) + 1];
    for (size_t i = 0; i < MESH_ARRAY_SIZE(adapters); i++)
        types[i] = adapters[i]->type;
    return types;
}

int mesh_registries_rank(const char *type)
{
    for (size_t i = 0; i < MESH_ARRAY_SIZE(adapters); i++) {
        if (strcmp(adapters[i]->type, type) == 0)
            return (int)i;
    }
    return (int)MESH_ARRAY_SIZE(adapters);
}

void mesh_registries_metrics(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b)
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
