/*
 * Fuzzes the Consul answers the adapter reads: the first byte picks the decoder (catalog
 * services or health service), the rest is the answer body.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/names.h"
#include "registry-adapters/consul/consul_decode-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        struct mesh_consul_names n = {0};
        if (mesh_consul_decode_services(body, len, (data[0] & 2) ? "v2" : NULL, &n, err,
                                        sizeof(err)) == 0) {
            for (size_t i = 1; i < n.n; i++) {
                if (strcmp(n.v[i - 1], n.v[i]) >= 0)
                    abort(); /* sorted, unique */
            }
            mesh_consul_names_done(&n);
        }
        return 0;
    }
    struct mesh_consul_health_options o = {
        .include_warning = data[0] & 2,
        .zone_key = "zone",
        .namespace = "default",
        .trust_domain = "mesh.local",
        .service = "api",
    };
    struct mesh_consul_instances in = {0};
    if (mesh_consul_decode_health(body, len, &o, &in, err, sizeof(err)) == 0) {
        size_t next = 0;
        for (size_t g = 0; g < in.n_groups; g++) {
            const struct mesh_consul_group *gr = &in.groups[g];
            if (!mesh_name_is_dns_label(gr->namespace) || gr->first != next || gr->n == 0 ||
                (g && strcmp(in.groups[g - 1].namespace, gr->namespace) >= 0))
                abort(); /* valid namespaces, sorted, unique, covering v in order */
            next += gr->n;
            char want[160];
            snprintf(want, sizeof(want), "spiffe://mesh.local/ns/%s/sa/", gr->namespace);
            if (gr->identity && (strncmp(gr->identity, want, strlen(want)) != 0 ||
                                 strcmp(gr->identity + strlen(want), "api") == 0 ||
                                 !mesh_name_is_dns_label(gr->identity + strlen(want))))
                abort(); /* only an account of its own namespace, never the default spelled */
            for (size_t i = gr->first; i < gr->first + gr->n; i++) {
                if (in.v[i].weight < 1 || in.v[i].weight > MESH_WEIGHT_MAX)
                    abort();
                if (i > gr->first && mesh_endpoint_addr_cmp(&in.v[i - 1], &in.v[i]) >= 0)
                    abort(); /* one endpoint per address in a namespace */
                for (size_t k = 0; k < in.v[i].labels.n; k++) {
                    if (mesh_consul_meta_key_reserved(in.v[i].labels.v[k].key))
                        abort(); /* the mesh's own keys are never labels */
                }
            }
        }
        if (next != in.n)
            abort();
        mesh_consul_instances_done(&in);
    }
    return 0;
}
