/*
 * A secret kept in a file that is rotated under us (a Kubernetes projected token, a Consul
 * token file): mounted secrets change by an atomic swap of a "..data" symlink, so the file
 * is re-opened by path and noticed by its identity (inode, size, mtime), re-read at least
 * every `max_age_ms`, and at once after the server refused it.
 */
#ifndef MESH_TOKEN_FILE_H
#define MESH_TOKEN_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct mesh_token_file {
    const char *path; /* borrowed */
    uint64_t max_age_ms;
    char *value; /* one line, trimmed; NULL before the first good read */
    struct stat st;
    uint64_t read_ms;
    bool refused; /* the server refused it: read again at the next use */
};

void mesh_token_file_init(struct mesh_token_file *t, const char *path, uint64_t max_age_ms);
void mesh_token_file_done(struct mesh_token_file *t);
/*
 * Reads the file again when it changed, is due, or was refused. Returns 1 when the value
 * changed, 0 when not, or -errno (the previous value stays; `err` says why).
 */
int mesh_token_file_refresh(struct mesh_token_file *t, uint64_t now_ms, char *err, size_t errlen);

#endif
