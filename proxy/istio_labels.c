/* The parts of Istio label sets, built once per snapshot or connection (docs/metrics.md). */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "proxy/istio-int.h"

void mesh_istio_append_value(struct mesh_buf *b, const char *value)
{
    if (!value || !value[0])
        value = "unknown";
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            mesh_buf_append(b, "\\", 1);
        if (*p == '\n')
            mesh_buf_append(b, "\\n", 2);
        else
            mesh_buf_append(b, p, 1);
    }
}

static void label(struct mesh_buf *b, const char *name, const char *value)
{
    mesh_buf_appendf(b, "%s%s=\"", b->len ? "," : "", name);
    mesh_istio_append_value(b, value);
    mesh_buf_append(b, "\"", 1);
}

static char *steal(struct mesh_buf *b)
{
    if (b->err) {
        mesh_buf_done(b);
        return NULL;
    }
    return mesh_buf_steal(b, NULL);
}

char *mesh_istio_source_part(const char *ns, const char *name, const char *principal)
{
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_ISTIO_LABELS_MAX);
    label(&b, "source_workload", name);
    label(&b, "source_workload_namespace", ns);
    label(&b, "source_principal", principal);
    return steal(&b);
}

char *mesh_istio_peer_part(const char *spiffe_id)
{
    /* spiffe://<trust domain>/ns/<namespace>/sa/<service account>: the account names the
     * workload (a service's account is its name unless its registry says otherwise). */
    char ns[128] = "", sa[128] = "";
    const char *p = spiffe_id ? strstr(spiffe_id, "://") : NULL;
    p = p ? strchr(p + 3, '/') : NULL;
    if (p && strncmp(p, "/ns/", 4) == 0) {
        const char *e = strchr(p + 4, '/');
        if (e && (size_t)(e - p - 4) < sizeof(ns) && strncmp(e, "/sa/", 4) == 0 &&
            strlen(e + 4) < sizeof(sa) && !strchr(e + 4, '/')) {
            memcpy(ns, p + 4, (size_t)(e - p - 4));
            ns[e - p - 4] = '\0';
            snprintf(sa, sizeof(sa), "%s", e + 4);
        }
    }
    return mesh_istio_source_part(ns, sa, spiffe_id);
}

char *mesh_istio_dest_part(const char *service, const char *subset_key, const char *principal)
{
    char ns[256] = "", name[256] = "", version[256] = "", host[520] = "";
    if (service && strncmp(service, "inbound:", 8) == 0)
        service += 8;
    const char *slash = service ? strchr(service, '/') : NULL;
    if (slash && (size_t)(slash - service) < sizeof(ns)) {
        memcpy(ns, service, (size_t)(slash - service));
        ns[slash - service] = '\0';
        snprintf(name, sizeof(name), "%s", slash + 1);
        name[strcspn(name, ":{")] = '\0';
        snprintf(host, sizeof(host), "%s.%s", name, ns);
    }
    /* A subset "{k=v,...}" that selects a version names it. */
    const char *v = subset_key ? strchr(subset_key, '{') : NULL;
    for (const char *p = v; p && *p && *p != '}'; p += strcspn(p, ",}")) {
        p++;
        if (strncmp(p, "version=", 8) == 0) {
            size_t n = strcspn(p + 8, ",}");
            snprintf(version, sizeof(version), "%.*s", (int)n, p + 8);
            break;
        }
    }
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_ISTIO_LABELS_MAX);
    label(&b, "destination_workload", name);
    label(&b, "destination_workload_namespace", ns);
    label(&b, "destination_principal", principal);
    label(&b, "destination_version", version);
    label(&b, "destination_service", host);
    label(&b, "destination_service_name", name);
    label(&b, "destination_service_namespace", ns);
    return steal(&b);
}
