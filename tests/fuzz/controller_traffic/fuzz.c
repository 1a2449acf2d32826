/* Fuzzes the controller's check of a report's traffic (a node's input) and the service graph
 * built from what passes: whatever a node sends, the check answers with a reason or keeps
 * it; the graph's rates are finite and non-negative, an error ratio is within [0, 1], and
 * nothing leaks. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "controller/traffic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_numbers(json_t *list)
{
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
    {
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v)
        {
            if (json_is_real(v) && (!isfinite(json_real_value(v)) || json_real_value(v) < 0))
                abort();
        }
        json_t *ratio = json_object_get(o, "error_ratio");
        if (ratio && json_real_value(ratio) > 1.0 + 1e-9)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!doc)
        return 0;
    json_t *traffic = json_is_object(doc) ? json_object_get(doc, "traffic") : doc;
    json_t *services =
        json_pack("[{s:s, s:s, s:s}, {s:s, s:s, s:s}]", "namespace", "shop", "name", "api",
                  "health", "healthy", "namespace", "shop", "name", "web", "health", "draining");
    struct mesh_ctl_traffic t;
    struct mesh_ctl_edge *edges = NULL;
    size_t n = 0;
    char why[300] = "";
    mesh_ctl_traffic_init(&t);
    if (mesh_ctl_traffic_check(traffic, &edges, &n, why, sizeof(why))) {
        size_t own = mesh_ctl_traffic_own(edges, n, services);
        if (own > n)
            abort();
        n = own;
        /* A first report with nothing, then this one a second later: rates are its counts. */
        if (mesh_ctl_traffic_note(&t, "node-1", NULL, 0, services, 1000) < 0 ||
            mesh_ctl_traffic_note(&t, "node-1", edges, n, services, 2000) < 0)
            abort();
        json_t *g = mesh_ctl_graph(&t, 2000, 3000, 60000);
        if (!g || json_array_size(json_object_get(g, "edges")) > n)
            abort();
        check_numbers(json_object_get(g, "edges"));
        check_numbers(json_object_get(g, "nodes"));
        json_decref(g);
        mesh_ctl_traffic_forget(&t, "node-1");
    } else if (!why[0] || edges || n) {
        abort(); /* a refusal says why and hands nothing out */
    }
    mesh_ctl_traffic_done(&t);
    json_decref(services);
    json_decref(doc);
    return 0;
}
