#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/names.h"
#include "common/spiffe.h"
#include "registry-adapters/consul/consul_meta-int.h"

const char *mesh_consul_meta_key_check(const char *key)
{
    size_t n = strlen(key);
    if (n == 0)
        return "Consul refuses an empty Meta key";
    for (size_t i = 0; i < n; i++) {
        char ch = key[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return "Consul's Meta keys allow only letters, digits, '-' and '_'";
    }
    if (n > MESH_CONSUL_META_KEY_MAX)
        return "Consul's Meta keys are at most 128 characters";
    if (strncmp(key, "consul-", 7) == 0)
        return "Consul reserves Meta keys starting with 'consul-'";
    return NULL;
}

bool mesh_consul_meta_key_reserved(const char *key)
{
    return strncmp(key, "mesh-", 5) == 0 || strcmp(key, "protocol") == 0;
}

int mesh_consul_meta_add_labels(json_t *meta, const struct mesh_labels *labels,
                                mesh_consul_meta_skip_cb skip, void *data)
{
    int left_out = 0;
    for (size_t i = 0; i < labels->n; i++) {
        const struct mesh_label *l = &labels->v[i];
        const char *why = mesh_consul_meta_key_check(l->key);
        if (!why && mesh_consul_meta_key_reserved(l->key))
            why = "the mesh reserves 'protocol' and keys starting with 'mesh-' in Consul's Meta";
        else if (!why && strlen(l->value) > MESH_CONSUL_META_VALUE_MAX)
            why = "Consul's Meta values are at most 512 characters";
        else if (!why && json_object_size(meta) >= MESH_CONSUL_META_MAX_PAIRS)
            why = "Consul takes at most 64 Meta pairs";
        if (why) {
            if (skip)
                skip(data, l->key, why);
            left_out++;
            continue;
        }
        if (json_object_set_new(meta, l->key, json_string(l->value)) < 0)
            return -ENOMEM;
    }
    return left_out;
}

int mesh_consul_meta_labels(json_t *meta, struct mesh_labels *l)
{
    json_t *v;
    const char *k;
    if (!json_is_object(meta))
        return 0;
    json_object_foreach(meta, k, v)
    {
        const char *s = json_string_value(v);
        if (!s || mesh_consul_meta_key_reserved(k) || !mesh_label_key_valid(k, NULL) ||
            !mesh_label_value_valid(s, NULL))
            continue;
        if (mesh_labels_set(l, k, s) < 0)
            return -ENOMEM;
    }
    return 0;
}

int mesh_consul_meta_namespace(json_t *meta, const char **ret)
{
    json_t *v = json_is_object(meta) ? json_object_get(meta, MESH_CONSUL_META_NAMESPACE) : NULL;
    *ret = json_string_value(v);
    if (!v)
        return 0;
    return *ret && mesh_name_is_dns_label(*ret) ? 0 : -EINVAL;
}

int mesh_consul_meta_identity(json_t *meta, const char *trust_domain, const char *ns,
                              const char *service, char *out, size_t size, const char **ret_bad)
{
    json_t *v = json_is_object(meta) ? json_object_get(meta, MESH_CONSUL_META_IDENTITY) : NULL;
    const char *id = json_string_value(v), *why;
    char want[MESH_SPIFFE_ID_MAX + 1];
    out[0] = '\0';
    if (!v)
        return 0;
    *ret_bad = id ? id : "(not a string)";
    if (!id || !trust_domain || size <= MESH_SPIFFE_ID_MAX ||
        !mesh_spiffe_id_valid(id, strlen(id), trust_domain, &why))
        return -EINVAL;
    mesh_spiffe_canonical(id, out, size);
    /* The path: exactly /ns/<ns>/sa/<account>, the instance's own namespace. */
    mesh_spiffe_service_id(want, sizeof(want), trust_domain, ns, "");
    size_t head = strlen(want);
    if (strncmp(out, want, head) != 0 || !mesh_name_is_dns_label(out + head)) {
        out[0] = '\0';
        return -EINVAL;
    }
    if (strcmp(out + head, service) == 0) {
        out[0] = '\0';
        return 0;
    }
    return 1;
}
