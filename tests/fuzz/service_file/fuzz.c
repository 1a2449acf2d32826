/* Fuzzes the static registry's service-file parser (files operators and tools write). */
#include <stdint.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "registry-adapters/static/service_file-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_service_file *f = NULL;
    int r = mesh_service_file_parse("fuzz.json", (const char *)data, size, &errors, &f);
    if ((r == 0) != (errors.n == 0 && errors.dropped == 0))
        abort(); /* success exactly when no error was reported */
    if (r == 0) {
        for (size_t i = 0; i < f->n; i++) {
            const struct mesh_service_config *s = f->all[i];
            for (size_t e = 0; e < s->endpoints.n; e++) {
                struct mesh_endpoint ep;
                if (mesh_endpoint_from_config(
                        (const struct mesh_endpoint_config *)s->endpoints.items + e, &ep) < 0)
                    abort(); /* validated input always converts */
                mesh_endpoint_done(&ep);
            }
        }
    }
    char *joined = mesh_cfg_errors_join(&errors);
    mesh_free(joined);
    mesh_cfg_errors_done(&errors);
    mesh_service_file_free(f);
    return 0;
}
