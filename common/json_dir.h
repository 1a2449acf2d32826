/*
 * A watched directory of JSON files, each parsed into an object that stays in service
 * until a newer valid version replaces it. Used by the static registry (service files)
 * and the resource loader (policy files).
 *
 * Files are the directory's *.json entries (hidden files skipped, symlinks followed).
 * Changes are seen through inotify (debounced), a periodic re-scan, or mesh_json_dir_rescan.
 * Listing and parsing run on the thread pool, several workers at once when many files
 * changed; results are taken in on the loop. A file that becomes invalid keeps its last
 * good object, and the problem is reported; a deleted file's object goes away.
 *
 * States: INIT -> RUNNING -> STOPPING -> (closed, done callback). Loop thread only, except
 * ops->parse, which runs on the thread pool and must touch nothing shared.
 */
#ifndef MESH_JSON_DIR_H
#define MESH_JSON_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/cfg.h"

#define MESH_JSON_DIR_FILE_MAX (4 * 1024 * 1024)

struct mesh_json_dir;

/* A file as the owner sees it: its name, its last good object (or NULL), its problem. */
struct mesh_json_dir_file {
    const char *name;
    void *obj;
    const char *error;
};

struct mesh_json_dir_ops {
    /*
     * Thread pool: parses one file. Returns 0 with *ret set, or a negative errno with the
     * problems in `errors`. `path` is for messages.
     */
    int (*parse)(const char *path, const char *data, size_t len, struct mesh_cfg_errors *errors,
                 void **ret);
    void (*free)(void *obj);
    /*
     * Loop: the files changed (or this is the first successful scan): `files` lists every
     * file, sorted by name, with its current last good object.
     */
    void (*changed)(void *data, const struct mesh_json_dir_file *files, size_t n);
    /* Loop: a new problem with a file (name) or with the directory (name NULL). */
    void (*problem)(void *data, const char *name, const char *message, bool serving_last_good);
};

/* `dir` is copied; poll_ms 0 disables the periodic re-scan. Returns 0 or -ENOMEM. */
int mesh_json_dir_new(uv_loop_t *loop, const char *dir, uint64_t poll_ms,
                      const struct mesh_json_dir_ops *ops, void *data, struct mesh_json_dir **ret);
/* Starts watching and scans at once. */
void mesh_json_dir_start(struct mesh_json_dir *d);
/* Scans now (or right after the scan in progress). */
void mesh_json_dir_rescan(struct mesh_json_dir *d);
/* Stops; once every handle is closed and any scan finished, frees and calls done(data). */
void mesh_json_dir_close(struct mesh_json_dir *d, void (*done)(void *data), void *data);

/* Adds "directory", "watching", "files", "scans", "directory_error", "file_errors". */
void mesh_json_dir_status(const struct mesh_json_dir *d, json_t *out);
size_t mesh_json_dir_count(const struct mesh_json_dir *d, size_t *ret_invalid);
/* True once a scan read the directory (whatever the files held). */
bool mesh_json_dir_scanned(const struct mesh_json_dir *d);

/*
 * Without a loop (mesh-agent validate): reads and parses the directory now, calls
 * ops->changed once with the result and ops->problem for each problem, then frees it all.
 * Returns 0 or the negative errno of reading the directory.
 */
int mesh_json_dir_read_once(const char *dir, const struct mesh_json_dir_ops *ops, void *data);

#endif
