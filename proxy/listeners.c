#define MESH_LOG_MODULE "proxy"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/listeners-int.h"
#include "proxy/worker-int.h"

#define LISTEN_RETRY_MS 5000

struct lrec {
    char *key;
    struct mesh_addr addr;
    int kind;
    char *role; /* what it is for ("shop/web -> shop/api"): a moved listener keeps it */
    bool bound;
    bool wanted;      /* in the newest update */
    bool standing_in; /* bound at its old address for a wanted one that cannot bind */
    int *fds;         /* bound, not yet handed to the workers (one per worker) */
    int n_fds;
    char *error;
};

/*
 * A listening socket for one worker. SO_REUSEPORT lets every worker have its own, with the
 * kernel spreading connections; a plain bind first proves that no other process holds the
 * address (reuseport would otherwise share it with another agent of the same user).
 */
static int listen_socket(const struct mesh_addr *a, int backlog, bool probe, int *ret_fd)
{
    int one = 1;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (!probe && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (a->ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
        (!probe && listen(fd, backlog) < 0)) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (probe) {
        close(fd);
        return 0;
    }
    *ret_fd = fd;
    return 0;
}

int mesh_listeners_can_listen(const struct mesh_addr *a)
{
    return listen_socket(a, 0, true, NULL);
}

static void lrec_free(struct lrec *r)
{
    for (int i = 0; r->fds && i < r->n_fds; i++)
        close(r->fds[i]);
    mesh_free(r->fds);
    mesh_free(r->key);
    mesh_free(r->role);
    mesh_free(r->error);
    mesh_free(r);
}

void mesh_listeners_init(struct mesh_listeners *ls, int backlog)
{
    memset(ls, 0, sizeof(*ls));
    mesh_hmap_init(&ls->map);
    ls->backlog = backlog;
}

void mesh_listeners_set_workers(struct mesh_listeners *ls, struct mesh_worker *workers, int n)
{
    ls->workers = workers;
    ls->n_workers = n;
}

void mesh_listeners_done(struct mesh_listeners *ls)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&ls->map, &i, &he))
        lrec_free(he->value);
    mesh_hmap_done(&ls->map);
}

/* Binds rec's sockets, one per worker, kept in rec->fds until handed over. Returns 0 or
 * -errno (nothing is left open then). */
static int open_listener(struct mesh_listeners *ls, struct lrec *rec)
{
    if (ls->n_workers < 1)
        return -EAGAIN;
    int *fds = mesh_calloc((size_t)ls->n_workers, sizeof(int));
    if (!fds)
        return -ENOMEM;
    int r = listen_socket(&rec->addr, ls->backlog, true, NULL);
    int k = 0;
    for (; r == 0 && k < ls->n_workers; k++) {
        r = listen_socket(&rec->addr, ls->backlog, false, &fds[k]);
        if (r < 0)
            break;
    }
    if (r < 0) {
        for (int i = 0; i < k; i++)
            close(fds[i]);
        mesh_free(fds);
        return r;
    }
    rec->fds = fds;
    rec->n_fds = ls->n_workers;
    return 0;
}

/* Hands rec's sockets to the workers (after the snapshot that routes them). */
static void hand_listener(struct mesh_listeners *ls, struct lrec *rec)
{
    for (int i = 0; rec->fds && i < rec->n_fds; i++) {
        struct worker_cmd *cmd = mesh_calloc(1, sizeof(*cmd));
        char *key = mesh_strdup(rec->key);
        if (!cmd || !key || ls->workers[i].joined) {
            /* The worker never sees it: the socket must not leak. */
            close(rec->fds[i]);
            mesh_free(cmd);
            mesh_free(key);
            continue;
        }
        cmd->type = WORKER_ADD_LISTENER;
        cmd->key = key;
        cmd->fd = rec->fds[i];
        mesh_worker_post(&ls->workers[i], cmd);
    }
    mesh_free(rec->fds);
    rec->fds = NULL;
    rec->n_fds = 0;
}

/* Binds what is wanted and not bound yet; failures are kept. Returns how many bound. */
static size_t bind_wanted(struct mesh_listeners *ls)
{
    size_t i = 0, errors = 0, bound = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&ls->map, &i, &he)) {
        struct lrec *r = he->value;
        if (!r->wanted || r->bound)
            continue;
        int err = open_listener(ls, r);
        if (err == 0) {
            r->bound = true;
            bound++;
            if (r->error)
                mesh_log_notice("listening on %s (%s) now", r->key, r->role);
            mesh_free(r->error);
            r->error = NULL;
            continue;
        }
        errors++;
        if (!r->error)
            mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_LISTENER_FAILED,
                        MESH_LOG_FIELDS({"listener", r->key}),
                        "cannot listen on %s (%s): %s; retrying every %d s", r->key, r->role,
                        strerror(-err), LISTEN_RETRY_MS / 1000);
        mesh_free(r->error);
        r->error = mesh_strdup(strerror(-err));
    }
    ls->errors = errors;
    return bound;
}

/* Marks the listeners `wl` wants (making records for new ones). */
static void mark_wanted(struct mesh_listeners *ls, const struct want_listener *wl, size_t n)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&ls->map, &i, &he)) {
        struct lrec *rec = he->value;
        rec->wanted = rec->standing_in = false;
    }
    for (size_t k = 0; k < n; k++) {
        if (MESH_LISTENER_UNBOUND(wl[k].kind))
            continue; /* not a socket */
        struct lrec *rec = mesh_hmap_get(&ls->map, wl[k].key);
        if (!rec) {
            rec = mesh_calloc(1, sizeof(*rec));
            if (!rec || !(rec->key = mesh_strdup(wl[k].key)) ||
                !(rec->role = mesh_strdup(wl[k].description)) ||
                mesh_hmap_put(&ls->map, rec->key, rec) < 0) {
                if (rec)
                    lrec_free(rec);
                continue;
            }
            rec->addr = wl[k].addr;
        }
        if (strcmp(rec->role, wl[k].description) != 0) {
            char *role = mesh_strdup(wl[k].description);
            if (role) {
                mesh_free(rec->role);
                rec->role = role;
            }
        }
        rec->kind = wl[k].kind;
        rec->wanted = true;
    }
}

/* Whether a wanted listener (of this update) already claims `key`. */
static bool claimed(const struct want_listener *wl, size_t n, const char *key)
{
    for (size_t k = 0; k < n; k++) {
        if (!MESH_LISTENER_UNBOUND(wl[k].kind) && strcmp(wl[k].key, key) == 0)
            return true;
    }
    return false;
}

/* Points each wanted listener that cannot bind at the bound one it replaces, if any. */
static void stand_in(struct mesh_listeners *ls, struct want_listener *wl, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        struct lrec *rec =
            MESH_LISTENER_UNBOUND(wl[k].kind) ? NULL : mesh_hmap_get(&ls->map, wl[k].key);
        if (!rec || rec->bound)
            continue;
        size_t i = 0;
        const struct mesh_hmap_entry *he;
        while (mesh_hmap_next(&ls->map, &i, &he)) {
            struct lrec *old = he->value;
            if (old->wanted || !old->bound || old->kind != rec->kind ||
                strcmp(old->role, rec->role) != 0 || claimed(wl, n, old->key))
                continue;
            old->wanted = old->standing_in = true;
            mesh_log_id(MESH_LOG_ERROR, MESH_MSGID_LISTENER_FAILED,
                        MESH_LOG_FIELDS({"listener", rec->key}),
                        "%s cannot move to %s: %s; it keeps serving on %s until it can", rec->role,
                        rec->key, rec->error ? rec->error : "not bound", old->key);
            snprintf(wl[k].key, sizeof(wl[k].key), "%s", old->key);
            wl[k].addr = old->addr;
            break;
        }
    }
}

void mesh_listeners_prepare(struct mesh_listeners *ls, struct want_listener *wl, size_t n)
{
    mark_wanted(ls, wl, n);
    bind_wanted(ls);
    stand_in(ls, wl, n);
}

/* Queues REMOVE_LISTENER for `key` on every worker still running. */
static void remove_everywhere(struct mesh_listeners *ls, const char *key)
{
    for (int i = 0; i < ls->n_workers; i++) {
        if (ls->workers[i].joined)
            continue;
        struct worker_cmd *cmd = mesh_calloc(1, sizeof(*cmd));
        if (!cmd || !(cmd->key = mesh_strdup(key))) {
            mesh_free(cmd);
            mesh_log_error("out of memory telling worker %d to close %s", i, key);
            continue;
        }
        cmd->type = WORKER_REMOVE_LISTENER;
        mesh_worker_post(&ls->workers[i], cmd);
    }
}

void mesh_listeners_commit(struct mesh_listeners *ls)
{
    struct lrec **gone = NULL;
    size_t n_gone = 0, cap = 0, i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&ls->map, &i, &he)) {
        struct lrec *rec = he->value;
        if (rec->wanted)
            hand_listener(ls, rec);
        else if (mesh_grow((void **)&gone, &cap, n_gone + 1, sizeof(*gone)) == 0)
            gone[n_gone++] = rec;
    }
    for (size_t k = 0; k < n_gone; k++) {
        if (gone[k]->bound && !gone[k]->fds)
            remove_everywhere(ls, gone[k]->key);
        mesh_hmap_remove(&ls->map, gone[k]->key);
        lrec_free(gone[k]);
    }
    mesh_free(gone);
}

size_t mesh_listeners_retry(struct mesh_listeners *ls, const struct mesh_proxy_snapshot *snap,
                            uint64_t now)
{
    if (!ls->errors || now - ls->last_retry < LISTEN_RETRY_MS)
        return 0;
    ls->last_retry = now;
    size_t bound = bind_wanted(ls);
    /* Sockets the snapshot routes go to the workers now; one that takes over from a stand-in
     * waits for the next update. */
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (bound && mesh_hmap_next(&ls->map, &i, &he)) {
        struct lrec *rec = he->value;
        if (rec->fds && snap && mesh_snapshot_listener(snap, rec->key))
            hand_listener(ls, rec);
    }
    return bound;
}

bool mesh_listeners_pending(const struct mesh_listeners *ls)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&ls->map, &i, &he)) {
        if (((const struct lrec *)he->value)->fds)
            return true;
    }
    return false;
}

bool mesh_listeners_state(const struct mesh_listeners *ls, const char *key, const char **ret_error)
{
    const struct lrec *rec = mesh_hmap_get(&ls->map, key);
    *ret_error = rec ? rec->error : NULL;
    return rec && rec->bound;
}

void mesh_listeners_status(const struct mesh_listeners *ls, const struct mesh_proxy_snapshot *snap,
                           json_t *list)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&ls->map, &i, &he)) {
        const struct lrec *rec = he->value;
        if (!rec->wanted || rec->bound || (snap && mesh_snapshot_listener(snap, rec->key)))
            continue;
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:s, s:s?}", "address", rec->key, "description",
                                        rec->role, "state", "failed", "error", rec->error));
    }
}

bool mesh_listeners_problem(const struct mesh_listeners *ls, char *out, size_t n)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&ls->map, &i, &he)) {
        const struct lrec *rec = he->value;
        if (rec->wanted && !rec->bound) {
            snprintf(out, n, "cannot listen on %s (%s): %s", rec->key, rec->role,
                     rec->error ? rec->error : "not bound yet");
            return true;
        }
    }
    return false;
}
