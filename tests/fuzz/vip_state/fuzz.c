/* Fuzzes the virtual IP table's loader (vips.json in the state dir, which can rot). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/vip.h"
#include "common/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mesh_vip_table *new_table(void)
{
    /* Small ranges, so that fuzzed addresses land inside them and collide. */
    struct mesh_vip_options o = {
        .v4_range = "240.240.0.0/28", .v6_range = "2001:2::/124", .keep_ms = 1000};
    struct mesh_vip_table *t;
    if (mesh_vip_table_new(&o, &t) < 0)
        abort();
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mesh_vip_table *t = new_table();
    struct mesh_cfg_errors errors = {0};
    int r = mesh_vip_load(t, "fuzz.json", (const char *)data, size, &errors);
    if (r < 0 && mesh_vip_count(t) != 0)
        abort(); /* an unreadable file loads nothing */
    if (r > 0) {
        /* What was loaded encodes and loads again to the same table. */
        struct mesh_buf b;
        mesh_buf_init(&b, MESH_BUF_UNLIMITED);
        mesh_vip_encode(t, &b);
        if (!b.err) {
            struct mesh_vip_table *t2 = new_table();
            struct mesh_cfg_errors e2 = {0};
            if (mesh_vip_load(t2, "again", b.data, b.len, &e2) != (int)mesh_vip_count(t) ||
                e2.n != 0)
                abort();
            mesh_cfg_errors_done(&e2);
            mesh_vip_table_free(t2);
        }
        mesh_buf_done(&b);
    }
    /* Whatever was loaded, a sync over it keeps the table consistent. */
    const char *keys[] = {"shop/api", "shop/web", "default/db"};
    if (mesh_vip_sync(t, keys, 3, 5) < 0)
        abort();
    mesh_cfg_errors_done(&errors);
    mesh_vip_table_free(t);
    return 0;
}
