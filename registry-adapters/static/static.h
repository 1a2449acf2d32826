/*
 * The static registry: a directory of service files (see service_file-int.h), watched with
 * inotify through libuv and re-read within a moment of a change, plus a periodic re-scan
 * as a safety net. Files are read and parsed on the thread pool. A file that becomes
 * invalid is reported and its last good version kept; a deleted file's services go away.
 */
#ifndef MESH_STATIC_H
#define MESH_STATIC_H

#include <stdint.h>

#include "catalog/registry.h"

struct mesh_static_config {
    char *directory;
    uint64_t poll_interval_ms; /* 0: inotify only */
};

extern const struct mesh_registry_ops mesh_static_registry_ops;

#endif
