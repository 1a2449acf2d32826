/* The console's files, embedded at build time (cmake/embed.cmake, controller/console/). */
#ifndef MESH_CONTROLLER_CONSOLE_INT_H
#define MESH_CONTROLLER_CONSOLE_INT_H

#include <stddef.h>

struct mesh_embedded_file {
    const char *path; /* "/index.html": under /ui */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
    const char *etag; /* "\"<sha-256 prefix>\"" */
};

/* Ends with an entry whose path is NULL. */
extern const struct mesh_embedded_file mesh_console_files[];

#endif
