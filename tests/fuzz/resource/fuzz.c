/* Fuzzes policy resource files (written by operators, later sent by the controller). */
#include <stdint.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "resources/resource.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void ignore(void *data, const char *file, const char *message)
{
    (void)data, (void)file, (void)message;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mesh_cfg_errors errors = {0};
    struct mesh_resource_file *f = NULL;
    int r = mesh_resource_file_parse("fuzz.json", (const char *)data, size, &errors, &f);
    if ((r == 0) != (errors.n == 0 && errors.dropped == 0))
        abort();
    if (r == 0) {
        struct mesh_resource_view v;
        mesh_resource_view_init(&v);
        if (mesh_resource_view_add(&v, "fuzz.json", f, ignore, NULL) == 0) {
            for (size_t i = 0; i < f->n; i++) {
                if (f->v[i].kind != MESH_RESOURCE_DESTINATION_POLICY)
                    continue;
                const struct mesh_dest_policy *p = f->v[i].spec;
                if (p->health_check.enabled &&
                    p->health_check.timeout_ms >= p->health_check.interval_ms)
                    abort(); /* the schema's cross-field check held */
            }
        }
        mesh_resource_view_done(&v);
    }
    mesh_cfg_errors_done(&errors);
    mesh_resource_file_unref(f);
    return 0;
}
