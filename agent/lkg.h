/*
 * The last-known-good catalog: what every registry last said, written to the state dir
 * (catalog.json, mode 0600) after changes, and read at start so that the agent serves
 * its last view even when every registry is unreachable. Writes are debounced; the loop
 * captures the catalog (sharing its endpoints, not copying them), the thread pool encodes
 * and writes it piece by piece (temp file, fsync, rename).
 */
#ifndef MESH_LKG_H
#define MESH_LKG_H

#include <uv.h>

#include "catalog/catalog.h"
#include "common/buf.h"
#include "common/cfg.h"

#define MESH_LKG_FILE "catalog.json"
#define MESH_LKG_MAX (256 * 1024 * 1024)

struct mesh_lkg;

/* `path` is copied. Returns 0 or -ENOMEM. */
int mesh_lkg_new(uv_loop_t *loop, const char *path, struct mesh_lkg **ret);
/* Schedules a write of `c` (which must outlive the lkg) after a short quiet period. */
void mesh_lkg_schedule(struct mesh_lkg *l, const struct mesh_catalog *c);
/* Writes now, blocking (at shutdown). Returns 0 or a negative errno. */
int mesh_lkg_flush(struct mesh_lkg *l);
/* Waits for a write in progress, closes the timer, frees; done(data) runs on the loop. */
void mesh_lkg_close(struct mesh_lkg *l, void (*done)(void *data), void *data);
/* Writes done and failed, for metrics. */
void mesh_lkg_stats(const struct mesh_lkg *l, uint64_t *ret_writes, uint64_t *ret_failures);

/*
 * Loads `path` into `c` for the sources `c` knows; other sources' data is skipped. A file
 * that does not exist loads nothing and returns 0. An invalid file loads nothing, adds its
 * problems to `errors` and returns -EINVAL. Returns the number of services loaded.
 */
int mesh_lkg_load(const char *path, struct mesh_catalog *c, struct mesh_cfg_errors *errors);
/* The same from a buffer; `name` appears in messages. */
int mesh_lkg_load_buffer(const char *name, const char *data, size_t len, struct mesh_catalog *c,
                         struct mesh_cfg_errors *errors);

/* Appends the JSON document mesh_lkg_load reads, built from `c`; errors sticky in b->err. */
void mesh_lkg_encode(const struct mesh_catalog *c, struct mesh_buf *b);

#endif
