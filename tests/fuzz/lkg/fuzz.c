/* Fuzzes the last-known-good catalog loader (a file in the state dir, which can rot). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lkg.h"
#include "common/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct mesh_catalog_source sources[] = {{"files", "static", true, 0},
                                                     {"k8s", "kubernetes", true, 1}};

static struct mesh_catalog *new_catalog(void)
{
    struct mesh_catalog *c;
    if (mesh_catalog_new(&c) < 0 || mesh_catalog_set_sources(c, sources, 2) < 0)
        abort();
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mesh_catalog *c = new_catalog();
    struct mesh_cfg_errors errors = {0};
    int r = mesh_lkg_load_buffer("fuzz.json", (const char *)data, size, c, &errors);
    if (r < 0 && mesh_catalog_count(c) != 0)
        abort(); /* an invalid file loads nothing */
    if (r > 0) {
        /* What was loaded encodes and loads again to the same catalog. */
        struct mesh_buf b;
        mesh_buf_init(&b, MESH_BUF_UNLIMITED);
        mesh_lkg_encode(c, &b);
        if (!b.err) {
            struct mesh_catalog *c2 = new_catalog();
            struct mesh_cfg_errors e2 = {0};
            if (mesh_lkg_load_buffer("again", b.data, b.len, c2, &e2) < 0 ||
                mesh_catalog_count(c2) != mesh_catalog_count(c))
                abort();
            mesh_cfg_errors_done(&e2);
            mesh_catalog_free(c2);
        }
        mesh_buf_done(&b);
    }
    mesh_cfg_errors_done(&errors);
    mesh_catalog_free(c);
    return 0;
}
