/* Fuzzes the YAML reader (kubeconfig files) into JSON values. */
#include <stdint.h>
#include <stdlib.h>

#include "common/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = NULL;
    char err[256];
    if (mesh_yaml_to_json((const char *)data, size, &j, err, sizeof(err)) == 0) {
        if (!j)
            abort();
        json_decref(j);
    }
    return 0;
}
