/*
 * File helpers: crash-safe writes and capped reads. These block: call them at start-up,
 * on reload, or from the thread pool, never from a hot path on the loop.
 */
#ifndef MESH_FS_H
#define MESH_FS_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/*
 * Replaces `path` with `data` so that a crash at any moment leaves either the old or the
 * new content: writes a temporary file in the same directory with `mode`, fsyncs it,
 * renames it over `path`, and fsyncs the directory. Returns 0 or a negative errno.
 */
int mesh_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* The same, written piece by piece: begin, write*, then commit or abort. */
struct mesh_fs_atomic {
    const char *path; /* borrowed */
    char *tmp;
    int fd;
    int err; /* the first error; sticky */
};
int mesh_fs_atomic_begin(struct mesh_fs_atomic *w, const char *path, mode_t mode);
/* Appends; an error is kept for commit (which then fails) and returned. */
int mesh_fs_atomic_write(struct mesh_fs_atomic *w, const void *data, size_t len);
/* Makes the file `path` (or, after an error, removes the temporary one). Returns 0 or -errno. */
int mesh_fs_atomic_commit(struct mesh_fs_atomic *w);

/*
 * Reads a whole file of at most `max` bytes into a NUL-terminated buffer owned by the
 * caller (mesh_free). Returns 0, -EFBIG when larger than max, or a negative errno.
 */
int mesh_fs_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len);
/* The same, also returning the file's stat (taken from the open file). */
int mesh_fs_read_file_stat(const char *path, size_t max, char **ret_data, size_t *ret_len,
                           struct stat *ret_st);

/*
 * Creates `path` and missing parents. The last component gets `mode`; an existing
 * directory whose mode grants more than `mode` is tightened to it. Returns 0 or -errno.
 */
int mesh_fs_mkdir_private(const char *path, mode_t mode);

#endif
