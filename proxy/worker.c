#define MESH_LOG_MODULE "worker"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proxy/http_proxy-int.h"
#include "proxy/worker-int.h"

struct wlistener {
    struct wlistener *next;
    struct mesh_worker *w;
    uv_tcp_t tcp;
    char *key;
    bool closing;
};

static void on_listener_closed(uv_handle_t *h)
{
    struct wlistener *l = h->data;
    mesh_free(l->key);
    mesh_free(l);
}

static void close_listener(struct mesh_worker *w, const char *key)
{
    for (struct wlistener **pl = &w->listeners; *pl; pl = &(*pl)->next) {
        struct wlistener *l = *pl;
        if (strcmp(l->key, key) == 0) {
            *pl = l->next;
            uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
            return;
        }
    }
}

static void close_all_listeners(struct mesh_worker *w)
{
    while (w->listeners) {
        struct wlistener *l = w->listeners;
        w->listeners = l->next;
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    }
}

static void on_accept(uv_stream_t *server, int status)
{
    struct wlistener *l = server->data;
    if (status < 0) {
        mesh_log_warn("accept on %s failed: %s", l->key, uv_strerror(status));
        return;
    }
    struct mesh_worker *w = l->w;
    struct mesh_io *io = mesh_io_new(&w->iol, &w->loop);
    if (!io)
        return; /* out of memory: it waits in the backlog */
    if (uv_accept(server, mesh_io_stream(io)) < 0) {
        mesh_io_close(io, NULL);
        return;
    }
    const struct snap_listener *sl = w->snap ? mesh_snapshot_listener(w->snap, l->key) : NULL;
    if (sl && sl->kind == MESH_LISTENER_MTLS)
        mesh_mtls_accept(w, io);
    else if (sl && (sl->kind == MESH_LISTENER_CAPTURE_OUT || sl->kind == MESH_LISTENER_CAPTURE_IN))
        mesh_capture_accept(w, io, sl);
    else if (sl && sl->http && w->http)
        mesh_http_adopt(w, io, sl, NULL);
    else
        mesh_tcp_adopt(w, io, l->key);
}

static void add_listener(struct mesh_worker *w, const char *key, int fd)
{
    struct wlistener *l = mesh_calloc(1, sizeof(*l));
    if (!l || !(l->key = mesh_strdup(key))) {
        mesh_free(l);
        close(fd);
        mesh_log_error("worker %d: out of memory adopting the listener on %s", w->index, key);
        return;
    }
    l->w = w;
    uv_tcp_init(&w->loop, &l->tcp);
    l->tcp.data = l;
    int r = uv_tcp_open(&l->tcp, fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&l->tcp, w->backlog, on_accept);
    if (r < 0) {
        mesh_log_error("worker %d: cannot listen on %s: %s", w->index, key, uv_strerror(r));
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        return;
    }
    l->next = w->listeners;
    w->listeners = l;
}

static void free_lb(struct mesh_worker *w)
{
    for (size_t i = 0; w->lb && w->snap && i < w->snap->n_dests; i++) {
        if (w->lb[i]) {
            mesh_lb_state_done(w->lb[i]);
            mesh_free(w->lb[i]);
        }
    }
    mesh_free(w->lb);
    w->lb = NULL;
}

struct mesh_lb_state *mesh_worker_lb(struct mesh_worker *w, const struct mesh_proxy_snapshot *snap,
                                     const struct snap_dest *d)
{
    if (snap != w->snap || !w->lb)
        return NULL;
    struct mesh_lb_state **lb = &w->lb[d->index];
    if (!*lb && (*lb = mesh_calloc(1, sizeof(**lb))))
        (*lb)->dest = d;
    return *lb;
}

static void set_snapshot(struct mesh_worker *w, struct mesh_proxy_snapshot *snap)
{
    struct mesh_proxy_snapshot *old = w->snap;
    free_lb(w);
    w->snap = snap;
    w->lb = mesh_calloc(snap->n_dests ? snap->n_dests : 1, sizeof(*w->lb));
    if (!w->lb)
        mesh_log_error("worker %d: out of memory taking a snapshot", w->index);
    mesh_tcp_snapshot_changed(w);
    mesh_snapshot_unref(old);
    /* The main loop waits for every worker to run a snapshot before it calls it in effect
     * (readiness). */
    atomic_store(&w->snap_version, snap->version);
    uv_async_send(w->shared->applied);
}

void mesh_worker_maybe_exit(struct mesh_worker *w)
{
    if (w->stopping && w->n_conns == 0 && !uv_is_closing((uv_handle_t *)&w->wake)) {
        mesh_http_worker_close(w); /* idle upstream connections would keep the loop going */
        mesh_io_loop_close(&w->iol);
        uv_close((uv_handle_t *)&w->wake, NULL);
    }
}

static void on_wake(uv_async_t *a)
{
    struct mesh_worker *w = a->data;
    uv_mutex_lock(&w->lock);
    struct worker_cmd *cmd = w->head;
    w->head = w->tail = NULL;
    uv_mutex_unlock(&w->lock);
    while (cmd) {
        struct worker_cmd *next = cmd->next;
        switch (cmd->type) {
        case WORKER_ADD_LISTENER:
            if (w->stopping)
                close(cmd->fd);
            else
                add_listener(w, cmd->key, cmd->fd);
            break;
        case WORKER_REMOVE_LISTENER:
            close_listener(w, cmd->key);
            break;
        case WORKER_SNAPSHOT:
            set_snapshot(w, cmd->snap);
            cmd->snap = NULL;
            break;
        case WORKER_STOP:
            w->stopping = true;
            close_all_listeners(w);
            if (w->http)
                mesh_http_stop(w);
            break;
        case WORKER_ABORT:
            mesh_mtls_close_all(w);
            mesh_tcp_close_all(w);
            if (w->http)
                mesh_http_close_all(w);
            break;
        }
        mesh_snapshot_unref(cmd->snap);
        mesh_free(cmd->key);
        mesh_free(cmd);
        cmd = next;
    }
    mesh_worker_maybe_exit(w);
}

int mesh_worker_init(struct mesh_worker *w, int index, struct mesh_proxy_shared *shared,
                     uv_async_t *exited, int backlog)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->shared = shared;
    w->exited = exited;
    w->backlog = backlog;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)index << 56) ^
             0x9E3779B97F4A7C15ULL;
    int r = uv_loop_init(&w->loop);
    if (r < 0)
        return r;
    r = uv_mutex_init(&w->lock);
    if (r < 0) {
        uv_loop_close(&w->loop);
        return r;
    }
    uv_async_init(&w->loop, &w->wake, on_wake);
    mesh_io_loop_init(&w->iol, &w->loop);
    mesh_tls_sessions_init(&w->tls_sessions);
    w->wake.data = w;
    /* A few buffers per worker cover keep-alive traffic without touching malloc. */
    mesh_bufpool_init(&w->pool, shared->buffer_size, 256);
    if (mesh_http_worker_init(w) < 0)
        mesh_log_error("worker %d: out of memory: HTTP listeners will proxy as TCP", index);
    return 0;
}

static void thread_main(void *arg)
{
    struct mesh_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    atomic_store(&w->finished, true);
    uv_async_send(w->exited);
}

int mesh_worker_run(struct mesh_worker *w)
{
    return uv_thread_create(&w->thread, thread_main, w);
}

void mesh_worker_post(struct mesh_worker *w, struct worker_cmd *cmd)
{
    cmd->next = NULL;
    uv_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = cmd;
    else
        w->head = cmd;
    w->tail = cmd;
    uv_mutex_unlock(&w->lock);
}

void mesh_worker_wake(struct mesh_worker *w)
{
    uv_async_send(&w->wake);
}

void mesh_worker_done(struct mesh_worker *w)
{
    /* Commands that arrived after the loop ended. */
    struct worker_cmd *cmd = w->head;
    while (cmd) {
        struct worker_cmd *next = cmd->next;
        if (cmd->type == WORKER_ADD_LISTENER)
            close(cmd->fd);
        mesh_snapshot_unref(cmd->snap);
        mesh_free(cmd->key);
        mesh_free(cmd);
        cmd = next;
    }
    free_lb(w);
    mesh_snapshot_unref(w->snap);
    mesh_http_worker_done(w);
    mesh_bufpool_done(&w->pool);
    mesh_tls_sessions_done(&w->tls_sessions);
    uv_loop_close(&w->loop);
    uv_mutex_destroy(&w->lock);
}
