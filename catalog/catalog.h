/*
 * The catalog: every service the registries report, merged by (namespace, name).
 *
 * Each registry ("source") gives the full endpoint set of a service; the catalog keeps
 * each source's view apart and publishes a merged, immutable, reference-counted
 * `struct mesh_service` per service. The merge rules (docs/catalog.md):
 *
 *  1. Endpoints of the same (namespace, name) from several sources are united. Each has
 *     the label "mesh/registry" naming the source it came from (mesh_service_ep_label: it
 *     is not stored, so that a service from one source shares that source's endpoints).
 *  2. The same address:port from several sources is one endpoint, tagged with every source
 *     that reports it (mesh_service_ep_from); its weight, zone, node, health and labels come
 *     from the source of highest precedence: type static, then kubernetes, then consul;
 *     among sources of one type, the one listed first. Sources that disagree on its labels,
 *     or that report the same IP at other ports (the higher source's ports stand), are a
 *     conflict: a WARNING naming both, and a count (mesh_catalog_conflicts).
 *  3. When any source reporting a service has merge=false, nothing is united for that
 *     service: the endpoint set of the highest-precedence source reporting it is used alone.
 *  4. The protocol is the one the highest-precedence source gives.
 *  5. A full sync (sync_begin .. sync_end) removes what the source did not report in it,
 *     and nothing before it ends, so a restart or relist never empties a live service.
 *  6. The merged catalog depends on what each source says, not on the order it came in.
 *  7. A source may report a service with no endpoints (it exists, nothing serves it).
 *
 * Main loop only, except the published services, which any thread may ref and read.
 */
#ifndef MESH_CATALOG_H
#define MESH_CATALOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/service.h"
#include "catalog/view.h"

struct mesh_catalog_source {
    const char *name;
    const char *type;
    bool merge;
    int rank; /* precedence of its type when sources disagree (lower wins); ties by order */
};

struct mesh_catalog_source_stats {
    size_t services;
    size_t endpoints;
    bool synced; /* a full sync has completed */
};

struct mesh_catalog;

typedef void (*mesh_catalog_change_cb)(void *data);

int mesh_catalog_new(struct mesh_catalog **ret);
void mesh_catalog_free(struct mesh_catalog *c);
/* `cb` runs (on the loop, synchronously) after every change that alters a merged service. */
void mesh_catalog_set_change_cb(struct mesh_catalog *c, mesh_catalog_change_cb cb, void *data);

/*
 * Sets the sources in precedence order within each type (the config order). Data of
 * sources no longer listed is removed. Returns 0 or -ENOMEM.
 */
int mesh_catalog_set_sources(struct mesh_catalog *c, const struct mesh_catalog_source *src,
                             size_t n);

/*
 * Replaces what `source` says about one service (copied); no endpoints removes it, unless
 * u->exists (the service stays, with none).
 * Returns 1 when a merged service changed, 0 when nothing did, -ENOENT for an unknown
 * source, -EINVAL for invalid input (bad names, no address, weight out of range, too many
 * endpoints), -ENOMEM.
 */
int mesh_catalog_update(struct mesh_catalog *c, const char *source,
                        const struct mesh_service_update *u);

void mesh_catalog_sync_begin(struct mesh_catalog *c, const char *source);
/* Ends a full sync: removes what the source did not report since sync_begin. */
void mesh_catalog_sync_end(struct mesh_catalog *c, const char *source);

int mesh_catalog_source_stats(const struct mesh_catalog *c, const char *source,
                              struct mesh_catalog_source_stats *ret);

/* The source names in precedence order; the array is borrowed until the next set_sources. */
size_t mesh_catalog_source_names(const struct mesh_catalog *c, const char *const **ret);
/* What every source says, held: a consistent copy that any thread may read while the
 * catalog goes on changing (the endpoints are shared, not copied). */
struct mesh_catalog_capture {
    char **sources; /* in precedence order */
    size_t n_sources;
    struct mesh_catalog_capture_view {
        size_t source; /* index in sources */
        char *key;     /* "ns/name", with the two parts beside it */
        char *namespace, *name;
        enum mesh_protocol protocol;
        char *identity; /* the source's (owned), or NULL */
        struct mesh_catalog_eps *eps;
        const struct mesh_endpoint *endpoints;
        size_t n_endpoints;
    } * views; /* by source (in order), then key */
    size_t n_views;
};
int mesh_catalog_capture(const struct mesh_catalog *c, struct mesh_catalog_capture **ret);
void mesh_catalog_capture_free(struct mesh_catalog_capture *cap);

/* What sources may disagree on about one endpoint. */
enum mesh_catalog_conflict {
    MESH_CATALOG_CONFLICT_PORT,
    MESH_CATALOG_CONFLICT_LABELS,
    MESH_CATALOG_CONFLICT_KINDS
};
extern const char *const mesh_catalog_conflict_names[MESH_CATALOG_CONFLICT_KINDS];
/* Conflicts of a kind: seen since start (each new one), and services in conflict now. */
void mesh_catalog_conflicts(const struct mesh_catalog *c, enum mesh_catalog_conflict kind,
                            uint64_t *ret_total, size_t *ret_now);

/* Appends the catalog's metric families (services, conflicts) in the text format. */
struct mesh_buf;
void mesh_catalog_metrics(const struct mesh_catalog *c, struct mesh_buf *b);

#endif
