/* Fuzzes the last-known-good local services loader (a file in the state dir, which can
 * rot): whatever it accepts encodes and parses again to the same services. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/local_state.h"
#include "common/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_local_service *v = NULL;
    size_t n = 0;
    int r = mesh_local_state_parse("fuzz.json", (const char *)data, size, "files", &errors, &v, &n);
    if (r < 0 && (v || n))
        abort(); /* an invalid file restores nothing */
    if (r == 0 && n) {
        struct mesh_buf b;
        mesh_buf_init(&b, MESH_BUF_UNLIMITED);
        struct mesh_local_state_entry e = {"files", v, n};
        mesh_local_state_encode(&e, 1, &b);
        if (!b.err) {
            struct mesh_cfg_errors e2 = {0};
            struct mesh_local_service *w = NULL;
            size_t m = 0;
            if (mesh_local_state_parse("again", b.data, b.len, "files", &e2, &w, &m) < 0 || m != n)
                abort();
            for (size_t i = 0; i < n; i++) {
                if (strcmp(v[i].name, w[i].name) != 0 || v[i].n_upstreams != w[i].n_upstreams ||
                    !mesh_addr_equal(&v[i].addr, &w[i].addr))
                    abort();
            }
            mesh_local_state_free(w, m);
            mesh_cfg_errors_done(&e2);
        }
        mesh_buf_done(&b);
    }
    mesh_local_state_free(v, n);
    mesh_cfg_errors_done(&errors);
    return 0;
}
