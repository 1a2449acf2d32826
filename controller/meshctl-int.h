/*
 * meshctl's commands kept in files of their own (meshctl.c has the option parsing and the
 * rest). Only the meshctl binary links these.
 */
#ifndef MESH_MESHCTL_INT_H
#define MESH_MESHCTL_INT_H

#include <stdbool.h>
#include <stddef.h>

#define MESH_CTL_EXIT_FAIL 1
#define MESH_CTL_EXIT_USAGE 2

/* How meshctl reaches the controller: its URL, the CA to trust it with, the admin token,
 * and whether to print JSON (-o json). */
struct mesh_ctl_conn {
    const char *server;
    const char *ca;
    const char *token;
    int json;
};

/*
 * meshctl vm bootstrap [OPTIONS]: argv[0] is "bootstrap". Makes a join token for one node,
 * fetches the controller's trust bundle and writes what the VM needs (agent.json,
 * join.token, controller-ca.crt, services.d/) into a directory or a gzip'd tarball.
 * Returns the exit status (0, MESH_CTL_EXIT_FAIL, MESH_CTL_EXIT_USAGE); errors are said on
 * stderr. curl_global_init() must have run.
 */
int mesh_ctl__vm_bootstrap(const struct mesh_ctl_conn *conn, int argc, char **argv);

/*
 * One HTTPS call to the controller at c->server + path, with the admin token, trusting
 * c->ca; `body` (may be NULL) is sent as JSON. Returns the answer's body ("" when empty;
 * the caller frees) and sets *status, or NULL with why in err (the controller could not be
 * reached, or the answer was over 64 MiB).
 */
char *mesh_ctl__fetch(const struct mesh_ctl_conn *c, const char *method, const char *path,
                      const char *body, long *status, char *err, size_t err_size);

/* A member of an archive: data NULL for a directory. */
struct mesh_ctl_member {
    const char *name;  /* relative, without "..", under 100 bytes; a directory ends in '/' */
    unsigned mode;     /* permission bits */
    const char *owner; /* user and group name; NULL: root */
    const char *data;
    size_t len;
};

/*
 * Writes members n as a gzip'd ustar archive to path, mode 0600, through a temporary file
 * beside it. An existing path is replaced only when force. Returns 0 or a negative errno
 * (-EEXIST: path exists).
 */
int mesh_ctl__tar_write(const char *path, bool force, const struct mesh_ctl_member *m, size_t n);

/* Gives the complete file tmp its final name path: refused with -EEXIST when path exists,
 * unless force. Returns 0 or a negative errno; tmp is left in place on failure. */
int mesh_ctl__publish(const char *tmp, const char *path, bool force);

#endif
