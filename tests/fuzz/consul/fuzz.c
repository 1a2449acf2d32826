/*
 * Fuzzes the Consul answers the adapter reads: the first byte picks the decoder (catalog
 * services or health service), the rest is the answer body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    struct mesh_consul_health_options o = {.include_warning = data[0] & 2, .zone_key = "zone"};
    struct mesh_consul_instances in = {0};
    if (mesh_consul_decode_health(body, len, &o, &in, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < in.n; i++) {
            if (in.v[i].weight < 1 || in.v[i].weight > MESH_WEIGHT_MAX)
                abort();
            if (i && mesh_endpoint_addr_cmp(&in.v[i - 1], &in.v[i]) >= 0)
                abort(); /* one endpoint per address */
        }
        mesh_consul_instances_done(&in);
    }
    return 0;
}
