#include <stdio.h>

#include "catalog/catalog.h"
#include "common/prom.h"

/* The catalog's own metric families: its size, and what the registries disagree on. */
void mesh_catalog_metrics(const struct mesh_catalog *c, struct mesh_buf *b)
{
    mesh_prom_family(b, "mesh_catalog_services", "gauge", "Services in the merged catalog.");
    mesh_prom_sample(b, "mesh_catalog_services", NULL, (double)mesh_catalog_count(c));
    mesh_prom_family(b, "mesh_catalog_conflicts_total", "counter",
                     "Times registries started to disagree on an endpoint of a service (its port, "
                     "or its labels), by kind.");
    for (int k = 0; k < MESH_CATALOG_CONFLICT_KINDS; k++) {
        uint64_t total;
        size_t now;
        mesh_catalog_conflicts(c, (enum mesh_catalog_conflict)k, &total, &now);
        struct mesh_prom_label l[] = {{"kind", mesh_catalog_conflict_names[k]}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_catalog_conflicts_total", l, (double)total);
    }
    mesh_prom_family(b, "mesh_catalog_conflicts", "gauge",
                     "Services whose registries disagree on an endpoint now, by kind.");
    for (int k = 0; k < MESH_CATALOG_CONFLICT_KINDS; k++) {
        uint64_t total;
        size_t now;
        mesh_catalog_conflicts(c, (enum mesh_catalog_conflict)k, &total, &now);
        struct mesh_prom_label l[] = {{"kind", mesh_catalog_conflict_names[k]}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_catalog_conflicts", l, (double)now);
    }
}
