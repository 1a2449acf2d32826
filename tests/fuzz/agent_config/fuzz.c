/* Fuzzes agent.json decoding and its round trip through the effective-config encoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "common/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_agent_config *cfg = NULL;
    if (mesh_agent_config_parse("fuzz.json", (const char *)data, size, &errors, &cfg) == 0) {
        /* What /v1/config shows must read back as the same config. */
        json_t *enc = mesh_agent_config_to_json(cfg);
        char *s = enc ? json_dumps(enc, 0) : NULL;
        struct mesh_agent_config *again = NULL;
        struct mesh_cfg_errors e2 = {0};
        if (s && mesh_agent_config_parse("again", s, strlen(s), &e2, &again) != 0)
            abort();
        mesh_agent_config_unref(again);
        mesh_cfg_errors_done(&e2);
        mesh_free(s);
        json_decref(enc);
        mesh_agent_config_unref(cfg);
    }
    mesh_cfg_errors_done(&errors);
    return 0;
}
