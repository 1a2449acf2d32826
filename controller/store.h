/*
 * The controller's embedded storage: JSON objects by kind and name, one file each under
 * <state_dir>/<kind>/<name>.json, written atomically (a temporary file, fsync, rename,
 * fsync of the directory), so a SIGKILL at any moment leaves every object either as it
 * was or as it became, never half-written. Everything is read at start and kept in
 * memory; a write goes to disk before it is visible. Every change bumps a version.
 */
#ifndef MESH_CONTROLLER_STORE_H
#define MESH_CONTROLLER_STORE_H

#include <stdint.h>

#include <jansson.h>

#include "common/hmap.h"

struct mesh_store;

/* Opens (creating) the store in dir and loads every kind listed. A file that does not
 * parse is reported in the log and left out. Returns 0 or a negative errno. */
int mesh_store_open(const char *dir, const char *const *kinds, struct mesh_store **ret);
void mesh_store_close(struct mesh_store *s);

/* The object (borrowed), or NULL. */
json_t *mesh_store_get(struct mesh_store *s, const char *kind, const char *name);
/* Writes the object (taking a reference of its own). Returns 0 or a negative errno: then
 * nothing changed. */
int mesh_store_put(struct mesh_store *s, const char *kind, const char *name, json_t *obj);
int mesh_store_delete(struct mesh_store *s, const char *kind, const char *name);
/* The objects of a kind, for iteration with mesh_hmap_next (key: the name); the object of
 * an entry is mesh_store_entry_object(entry). */
const struct mesh_hmap *mesh_store_list(struct mesh_store *s, const char *kind);
json_t *mesh_store_entry_object(const struct mesh_hmap_entry *e);
uint64_t mesh_store_version(const struct mesh_store *s);

/* Whether name may name an object: 1 to 128 of [a-z0-9._-], not starting with '.'. */
int mesh_store_name_valid(const char *name);

#endif
