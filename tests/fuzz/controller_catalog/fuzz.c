/* Fuzzes the controller's check of a report's services (a node's input) and the registry
 * that keeps what passes: whatever a node sends, the check answers, and what it accepts is
 * kept and dropped again without a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "controller/catalog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!doc)
        return 0;
    uv_loop_t loop;
    struct mesh_ctl_catalog *c = NULL;
    struct mesh_ctl_catalog_options o = {.trust_domain = "fuzz.mesh",
                                         .report_interval_ms = 5000,
                                         .grace_ms = 15000,
                                         .expiry_ms = 60000};
    json_t *patterns =
        json_pack("[s, s]", "spiffe://fuzz.mesh/ns/shop/*", "spiffe://fuzz.mesh/ns/*/svc/api");
    char err[600];
    if (uv_loop_init(&loop) != 0 || !patterns || mesh_ctl_catalog_new(&loop, &o, &c) < 0)
        abort();
    json_t *services = json_is_object(doc) ? json_object_get(doc, "services") : doc;
    err[0] = '\0';
    if (mesh_ctl_catalog_check(c, "node-1", patterns, services, err, sizeof(err))) {
        uint64_t before = mesh_ctl_catalog_index(c);
        if (mesh_ctl_catalog_report(c, "node-1", "10.0.0.1", 15008, "zone-a", services) < 0 ||
            mesh_ctl_catalog_index(c) == before)
            abort(); /* a new node's report is a change */
        /* The same report again is a renewal only. */
        before = mesh_ctl_catalog_index(c);
        if (mesh_ctl_catalog_report(c, "node-1", "10.0.0.1", 15008, "zone-a", services) < 0 ||
            mesh_ctl_catalog_index(c) != before)
            abort();
        mesh_ctl_catalog_leave(c, "node-1");
    } else if (!err[0]) {
        abort(); /* a refusal says why */
    }
    mesh_ctl_catalog_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        abort();
    json_decref(patterns);
    json_decref(doc);
    return 0;
}
