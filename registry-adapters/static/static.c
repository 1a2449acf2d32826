#define MESH_LOG_MODULE "static"

#include "registry-adapters/static/static.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/alloc.h"
#include "common/fs.h"
#include "common/hmap.h"
#include "common/log.h"
#include "common/prom.h"
#include "registry-adapters/static/service_file.h"

/* Changes arriving together (an editor's save, a config management run) make one scan. */
#define DEBOUNCE_MS 50
#define MAX_FILES 100000

#define C(member) MESH_CFG_FIELD(struct mesh_static_config, member)

static const struct mesh_cfg_field config_fields[] = {
    {.key = "directory",
     .type = MESH_CFG_STRING,
     C(directory),
     .flags = MESH_CFG_PATH | MESH_CFG_NONEMPTY,
     .def = "/etc/mesh-agent/services.d",
     .expect = "a directory path"},
    {.key = "poll_interval",
     .type = MESH_CFG_DURATION,
     C(poll_interval_ms),
     .def = "10s",
     .max = 3600000},
    {0},
};

static const struct mesh_cfg_schema config_schema = {
    .size = sizeof(struct mesh_static_config),
    .fields = config_fields,
};

struct file_key {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

/* What we know of one file, kept across scans. */
struct file_state {
    char *name;
    struct file_key key;
    struct mesh_service_file *good; /* last good content; NULL if never good */
    char *error;                    /* the current problem; NULL when good */
};

/* One file as a scan saw it. */
struct scanned {
    char *name;
    struct file_key key;
    bool changed;
    struct mesh_service_file *content;
    char *error;
};

struct scan {
    uv_work_t req;
    struct static_registry *reg;
    struct scanned *files;
    size_t n;
    size_t n_changed;
    bool parsed; /* the listing parsed the changed files itself */
    size_t jobs; /* parse jobs still running */
    int dir_error;
};

/* Parses part of a scan's changed files; several run at once on the thread pool. */
struct parse_job {
    uv_work_t req;
    struct scan *scan;
    size_t from, to;
};

/* Below this many changed files, one thread parses them all: a hop costs more. */
#define PARALLEL_MIN 64

enum { ST_INIT, ST_RUNNING, ST_STOPPING };

struct static_registry {
    struct mesh_registry base;
    const struct mesh_static_config *cfg;
    int state;
    uv_fs_event_t watch;
    bool watching;
    uv_timer_t debounce;
    uv_timer_t poll;
    int open_handles;
    struct scan *scan;
    bool rescan;
    struct mesh_hmap files;
    int dir_error;
    uint64_t scans;
    double last_scan; /* seconds since the epoch */
    size_t n_services;
    size_t n_local;
    mesh_registry_stopped_cb stopped_cb;
    void *stopped_data;
};

static void request_scan(struct static_registry *s);

static bool key_equal(const struct file_key *a, const struct file_key *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static bool wanted_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".json") == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Thread pool: reads and parses the changed files among files[from, to). */
static void parse_range(struct scan *sc, size_t from, size_t to)
{
    const char *dir = sc->reg->cfg->directory;
    for (size_t i = from; i < to; i++) {
        struct scanned *f = &sc->files[i];
        char path[4096];
        if (!f->changed)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, f->name);
        char *data = NULL;
        size_t len = 0;
        int r = mesh_fs_read_file(path, MESH_SERVICE_FILE_MAX, &data, &len);
        if (r < 0) {
            f->error = r == -EFBIG
                           ? mesh_asprintf("%s: larger than %d bytes", path, MESH_SERVICE_FILE_MAX)
                           : mesh_asprintf("%s: cannot read: %s", path, strerror(-r));
            continue;
        }
        struct mesh_cfg_errors errs = {0};
        if (mesh_service_file_parse(path, data, len, &errs, &f->content) < 0)
            f->error = errs.n ? mesh_cfg_errors_join(&errs) : mesh_strdup("out of memory");
        mesh_cfg_errors_done(&errs);
        mesh_free(data);
    }
}

static void parse_job_work(uv_work_t *req)
{
    struct parse_job *job = container_of(req, struct parse_job, req);
    parse_range(job->scan, job->from, job->to);
}

/*
 * Thread pool: lists and stats the directory; parses the changed files too when they are
 * few (else scan_done hands them to parallel parse jobs). Touches no loop state.
 */
static void scan_work(uv_work_t *req)
{
    struct scan *sc = container_of(req, struct scan, req);
    const struct static_registry *s = sc->reg;
    const char *dir = s->cfg->directory;
    char **names = NULL;
    size_t n = 0, cap = 0;

    DIR *d = opendir(dir);
    if (!d) {
        sc->dir_error = -errno;
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) && n < MAX_FILES) {
        if (!wanted_name(de->d_name))
            continue;
        if (mesh_grow((void **)&names, &cap, n + 1, sizeof(*names)) < 0 ||
            !(names[n] = mesh_strdup(de->d_name))) {
            sc->dir_error = -ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (sc->dir_error == 0 && n)
        sc->files = mesh_calloc(n, sizeof(*sc->files));
    if (n && !sc->files && sc->dir_error == 0)
        sc->dir_error = -ENOMEM;
    if (sc->dir_error < 0)
        goto out;
    if (n)
        qsort(names, n, sizeof(*names), cmp_names);

    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        /* stat follows symlinks: a ConfigMap's ..data swap changes the target. */
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        struct scanned *f = &sc->files[sc->n++];
        f->name = names[i];
        names[i] = NULL;
        f->key = (struct file_key){st.st_dev, st.st_ino, st.st_size, st.st_mtim};
        const struct file_state *old = mesh_hmap_get(&s->files, f->name);
        f->changed = !old || !key_equal(&old->key, &f->key);
        sc->n_changed += f->changed;
    }
    if (sc->n_changed <= PARALLEL_MIN) {
        parse_range(sc, 0, sc->n);
        sc->parsed = true;
    }
out:
    for (size_t i = 0; i < n; i++)
        mesh_free(names[i]);
    mesh_free(names);
}

static void scan_free(struct scan *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        mesh_free(sc->files[i].name);
        mesh_service_file_free(sc->files[i].content);
        mesh_free(sc->files[i].error);
    }
    mesh_free(sc->files);
    mesh_free(sc);
}

static void file_state_free(struct file_state *f)
{
    mesh_free(f->name);
    mesh_service_file_free(f->good);
    mesh_free(f->error);
    mesh_free(f);
}

static void report(struct static_registry *s, const char *msg)
{
    s->base.sink.error(s->base.sink.data, &s->base, msg);
}

/* Where a local service is reached from other hosts: the node address when configured. */
static int local_endpoint(const struct static_registry *s, const struct mesh_service_config *svc,
                          struct mesh_endpoint *ep)
{
    const struct mesh_registry_env *env = s->base.env;
    const char *ip = env->node_address[0] ? env->node_address : svc->address;
    memset(ep, 0, sizeof(*ep));
    if (mesh_addr_from_ip(ip, (uint16_t)svc->port, &ep->addr) < 0)
        return -EINVAL;
    ep->weight = 1;
    ep->health = MESH_EP_READY | MESH_EP_SERVING;
    if ((env->zone[0] && !(ep->zone = mesh_strdup(env->zone))) ||
        !(ep->node = mesh_strdup(env->node_name)) ||
        mesh_labels_copy(&ep->labels, &svc->labels) < 0) {
        mesh_endpoint_done(ep);
        return -ENOMEM;
    }
    return 0;
}

/* The endpoints a service definition gives (owned; free with endpoints_free). */
static int build_endpoints(const struct static_registry *s, const struct mesh_service_config *svc,
                           struct mesh_endpoint **ret, size_t *ret_n)
{
    size_t n = svc->port ? 1 : svc->endpoints.n, k = 0;
    struct mesh_endpoint *eps = mesh_calloc(n, sizeof(*eps));
    int r = eps ? 0 : -ENOMEM;
    if (r == 0 && svc->port) {
        r = local_endpoint(s, svc, &eps[0]);
        k = r == 0;
    }
    for (; r == 0 && !svc->port && k < n; k++) {
        const struct mesh_endpoint_config *ec =
            (const struct mesh_endpoint_config *)svc->endpoints.items + k;
        r = mesh_endpoint_from_config(ec, &eps[k]);
        if (r < 0)
            break;
    }
    if (r < 0) {
        for (size_t i = 0; i < k; i++)
            mesh_endpoint_done(&eps[i]);
        mesh_free(eps);
        return r;
    }
    *ret = eps;
    *ret_n = n;
    return 0;
}

static void endpoints_free(struct mesh_endpoint *eps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mesh_endpoint_done(&eps[i]);
    mesh_free(eps);
}

static int local_service(const struct mesh_service_config *svc, const char *ns, const char *file,
                         struct mesh_local_service *out)
{
    memset(out, 0, sizeof(*out));
    out->protocol = (enum mesh_protocol)svc->protocol;
    mesh_addr_from_ip(svc->address, (uint16_t)svc->port, &out->addr);
    if (!(out->name = mesh_strdup(svc->name)) || !(out->namespace = mesh_strdup(ns)) ||
        !(out->source = mesh_strdup(file)))
        goto oom;
    if (svc->upstreams.n &&
        !(out->upstreams = mesh_calloc(svc->upstreams.n, sizeof(*out->upstreams))))
        goto oom;
    for (size_t i = 0; i < svc->upstreams.n; i++) {
        const struct mesh_upstream_config *u =
            (const struct mesh_upstream_config *)svc->upstreams.items + i;
        struct mesh_upstream *o = &out->upstreams[out->n_upstreams++];
        o->protocol = (enum mesh_protocol)u->protocol;
        mesh_addr_from_ip(u->bind_address, (uint16_t)u->bind_port, &o->bind);
        if (!(o->service = mesh_strdup(u->service)) ||
            !(o->namespace = mesh_strdup(u->namespace ? u->namespace : ns)))
            goto oom;
    }
    return 0;
oom:
    mesh_local_service_done(out);
    return -ENOMEM;
}

/* Drops upstream i of a local service. */
static void drop_upstream(struct mesh_local_service *ls, size_t i)
{
    mesh_free(ls->upstreams[i].service);
    mesh_free(ls->upstreams[i].namespace);
    memmove(&ls->upstreams[i], &ls->upstreams[i + 1],
            (ls->n_upstreams - i - 1) * sizeof(*ls->upstreams));
    ls->n_upstreams--;
}

/* A name (service key, bind address) taken by the first file that used it. */
struct claim {
    const char *file;
    char key[];
};

/* Claims `key` for `file`: returns NULL when it was free, else the file that holds it. */
static const char *claim(struct mesh_hmap *m, const char *key, const char *file, int *err)
{
    const struct claim *old = mesh_hmap_get(m, key);
    if (old)
        return old->file;
    size_t len = strlen(key) + 1;
    struct claim *c = mesh_malloc(sizeof(*c) + len);
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    memcpy(c->key, key, len);
    c->file = file;
    if (mesh_hmap_put(m, c->key, c) < 0) {
        mesh_free(c);
        *err = -ENOMEM;
    }
    return NULL;
}

static void claims_done(struct mesh_hmap *m)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(m, &i, &he))
        mesh_free(he->value);
    mesh_hmap_done(m);
}

struct file_ref {
    const char *name;
    const struct mesh_service_file *content;
};

static int cmp_file_ref(const void *a, const void *b)
{
    return strcmp(((const struct file_ref *)a)->name, ((const struct file_ref *)b)->name);
}

static void report_conflict(struct static_registry *s, const char *file, const char *what,
                            const char *owner)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s/%s: %s is already defined in '%s'; ignoring it here",
             s->cfg->directory, file, what, owner);
    mesh_log_warn("%s", msg);
    report(s, msg);
}

/* Claims the upstreams' bind addresses; drops those another file bound first. */
static int claim_binds(struct static_registry *s, struct mesh_hmap *binds, const char *file,
                       struct mesh_local_service *ls)
{
    int err = 0;
    for (size_t b = 0; b < ls->n_upstreams && err == 0;) {
        char addr[MESH_ADDR_STRLEN], what[MESH_ADDR_STRLEN + 32];
        mesh_addr_format(&ls->upstreams[b].bind, addr, sizeof(addr));
        const char *owner = claim(binds, addr, file, &err);
        if (!owner) {
            b++;
            continue;
        }
        snprintf(what, sizeof(what), "upstream bind address %s", addr);
        report_conflict(s, file, what, owner);
        drop_upstream(ls, b);
    }
    return err;
}

/* Hands the current good content of every file to the sink, as one full sync. */
static void apply(struct static_registry *s)
{
    const struct mesh_registry_sink *sink = &s->base.sink;
    const char *default_ns = s->base.cfg->namespace;
    struct file_ref *refs = mesh_calloc(s->files.n ? s->files.n : 1, sizeof(*refs));
    struct mesh_local_service *locals = NULL;
    size_t n_refs = 0, n_locals = 0, locals_cap = 0;
    struct mesh_hmap services, binds;
    int err = refs ? 0 : -ENOMEM;
    mesh_hmap_init(&services);
    mesh_hmap_init(&binds);

    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (refs && mesh_hmap_next(&s->files, &i, &he)) {
        const struct file_state *f = he->value;
        if (f->good)
            refs[n_refs++] = (struct file_ref){f->name, f->good};
    }
    qsort(refs, n_refs, sizeof(*refs), cmp_file_ref);

    sink->sync_begin(sink->data, &s->base);
    s->n_services = 0;
    for (size_t k = 0; k < n_refs && err == 0; k++) {
        const char *file = refs[k].name;
        for (size_t j = 0; j < refs[k].content->n && err == 0; j++) {
            const struct mesh_service_config *svc = refs[k].content->all[j];
            const char *ns = svc->namespace ? svc->namespace : default_ns;
            char key[160], what[200];
            snprintf(key, sizeof(key), "%s/%s", ns, svc->name);
            const char *owner = claim(&services, key, file, &err);
            if (owner) {
                snprintf(what, sizeof(what), "service '%s'", key);
                report_conflict(s, file, what, owner);
                continue;
            }
            struct mesh_endpoint *eps = NULL;
            size_t n_eps = 0;
            err = build_endpoints(s, svc, &eps, &n_eps);
            if (err < 0)
                break;
            struct mesh_service_update u = {
                .namespace = ns,
                .name = svc->name,
                .protocol = (enum mesh_protocol)svc->protocol,
                .endpoints = eps,
                .n_endpoints = n_eps,
            };
            sink->set_service(sink->data, &s->base, &u);
            s->n_services++;
            endpoints_free(eps, n_eps);
            if (!svc->port)
                continue;
            err = mesh_grow((void **)&locals, &locals_cap, n_locals + 1, sizeof(*locals));
            if (err == 0)
                err = local_service(svc, ns, file, &locals[n_locals]);
            if (err == 0)
                err = claim_binds(s, &binds, file, &locals[n_locals++]);
        }
    }
    if (err < 0) {
        /* Without sync_end nothing is removed: the catalog keeps its previous view. */
        report(s, "out of memory applying service files");
    } else {
        s->n_local = n_locals;
        sink->set_local(sink->data, &s->base, locals, n_locals);
        sink->sync_end(sink->data, &s->base);
    }
    for (size_t k = 0; k < n_locals; k++)
        mesh_local_service_done(&locals[k]);
    mesh_free(locals);
    claims_done(&services);
    claims_done(&binds);
    mesh_free(refs);
}

static void on_debounce(uv_timer_t *t)
{
    request_scan(container_of(t, struct static_registry, debounce));
}

static void on_poll(uv_timer_t *t)
{
    request_scan(container_of(t, struct static_registry, poll));
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct static_registry *s = container_of(h, struct static_registry, watch);
    (void)filename;
    (void)events;
    if (status < 0)
        mesh_log_warn("watching '%s' failed: %s", s->cfg->directory, uv_strerror(status));
    if (!uv_is_active((uv_handle_t *)&s->debounce))
        uv_timer_start(&s->debounce, on_debounce, DEBOUNCE_MS, 0);
}

static void start_watch(struct static_registry *s)
{
    if (s->watching)
        return;
    int r = uv_fs_event_start(&s->watch, on_fs_event, s->cfg->directory, 0);
    if (r == 0)
        s->watching = true;
    else
        mesh_log_debug("cannot watch '%s' yet: %s", s->cfg->directory, uv_strerror(r));
}

static void on_handle_closed(uv_handle_t *h)
{
    struct static_registry *s = h->data;
    if (--s->open_handles > 0)
        return;
    if (s->stopped_cb)
        s->stopped_cb(&s->base, s->stopped_data);
}

static void close_handles(struct static_registry *s)
{
    uv_close((uv_handle_t *)&s->watch, on_handle_closed);
    uv_close((uv_handle_t *)&s->debounce, on_handle_closed);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

/* Takes in what a scan found; returns true when anything changed. */
static bool merge_scan(struct static_registry *s, struct scan *sc)
{
    bool changed = false;
    struct mesh_hmap present;
    mesh_hmap_init(&present);
    for (size_t i = 0; i < sc->n; i++) {
        struct scanned *f = &sc->files[i];
        struct file_state *st = mesh_hmap_get(&s->files, f->name);
        if (!st) {
            st = mesh_calloc(1, sizeof(*st));
            if (!st || mesh_hmap_put(&s->files, f->name, st) < 0) {
                mesh_free(st);
                report(s, "out of memory tracking service files");
                continue;
            }
            st->name = f->name;
            f->name = NULL;
        }
        if (mesh_hmap_put(&present, st->name, st) < 0) {
            report(s, "out of memory tracking service files");
            continue;
        }
        if (!f->changed)
            continue;
        st->key = f->key;
        changed = true;
        if (f->content) {
            if (st->error)
                mesh_log_notice("%s/%s is valid again", s->cfg->directory, st->name);
            mesh_log_info("loaded %s/%s: %zu service(s)", s->cfg->directory, st->name,
                          f->content->n);
            mesh_service_file_free(st->good);
            st->good = f->content;
            f->content = NULL;
            mesh_free(st->error);
            st->error = NULL;
            continue;
        }
        mesh_free(st->error);
        st->error = f->error;
        f->error = NULL;
        struct mesh_log_field fields[] = {{"file", st->name}, {NULL, NULL}};
        mesh_log_fields(MESH_LOG_WARNING, fields, "invalid service file, %s:\n%s",
                        st->good ? "keeping its last good version" : "ignoring it", st->error);
        report(s, st->error);
    }
    /* Files that are gone take their services with them. */
    struct file_state **gone = NULL;
    size_t n_gone = 0, cap = 0;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&s->files, &i, &he)) {
        if (!mesh_hmap_get(&present, he->key) &&
            mesh_grow((void **)&gone, &cap, n_gone + 1, sizeof(*gone)) == 0)
            gone[n_gone++] = he->value;
    }
    for (size_t k = 0; k < n_gone; k++) {
        mesh_log_info("%s/%s was removed", s->cfg->directory, gone[k]->name);
        mesh_hmap_remove(&s->files, gone[k]->name);
        file_state_free(gone[k]);
        changed = true;
    }
    mesh_free(gone);
    mesh_hmap_done(&present);
    return changed;
}

/* On the loop, once every changed file of a scan is parsed: takes the results in. */
static void finish_scan(struct scan *sc, int status)
{
    struct static_registry *s = sc->reg;
    s->scan = NULL;
    if (s->state == ST_STOPPING || status < 0) {
        scan_free(sc);
        if (s->state == ST_STOPPING)
            close_handles(s);
        return;
    }
    s->scans++;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s->last_scan = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    if (sc->dir_error < 0) {
        /* Keep serving what we had: a missing directory is not "no services". */
        if (sc->dir_error != s->dir_error) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s: cannot read the service directory: %s%s",
                     s->cfg->directory, strerror(-sc->dir_error),
                     s->files.n ? "; keeping the services read before" : "");
            mesh_log_warn("%s", msg);
            report(s, msg);
        }
        /*
         * No sync ends here: that would remove what the last-known-good catalog holds.
         * Readiness waits for the sync timeout instead, as for any registry that is down.
         */
        s->dir_error = sc->dir_error;
    } else {
        if (s->dir_error)
            mesh_log_notice("%s is readable again", s->cfg->directory);
        s->dir_error = 0;
        start_watch(s);
        if (merge_scan(s, sc) || s->scans == 1)
            apply(s);
    }
    scan_free(sc);
    if (s->rescan) {
        s->rescan = false;
        request_scan(s);
    }
}

static void parse_done(uv_work_t *req, int status)
{
    struct parse_job *job = container_of(req, struct parse_job, req);
    struct scan *sc = job->scan;
    mesh_free(job);
    if (--sc->jobs == 0)
        finish_scan(sc, status);
}

static void scan_done(uv_work_t *req, int status)
{
    struct scan *sc = container_of(req, struct scan, req);
    struct static_registry *s = sc->reg;
    if (status < 0 || sc->dir_error < 0 || sc->parsed || s->state == ST_STOPPING) {
        finish_scan(sc, status);
        return;
    }
    /* Many changed files (a start): parse them on several threads at once. */
    size_t k = MESH_MAX(MESH_MIN((size_t)uv_available_parallelism(), (size_t)4), (size_t)1);
    size_t per = (sc->n + k - 1) / k;
    for (size_t from = 0; from < sc->n; from += per) {
        size_t to = MESH_MIN(sc->n, from + per);
        struct parse_job *job = mesh_calloc(1, sizeof(*job));
        if (job) {
            *job = (struct parse_job){.scan = sc, .from = from, .to = to};
            if (uv_queue_work(s->base.loop, &job->req, parse_job_work, parse_done) == 0) {
                sc->jobs++;
                continue;
            }
            mesh_free(job);
        }
        /* The part could not be handed over: parse it here, once. */
        parse_range(sc, from, to);
    }
    if (sc->jobs == 0)
        finish_scan(sc, 0);
}

static void request_scan(struct static_registry *s)
{
    if (s->state != ST_RUNNING)
        return;
    if (s->scan) {
        s->rescan = true;
        return;
    }
    struct scan *sc = mesh_calloc(1, sizeof(*sc));
    if (!sc) {
        report(s, "out of memory starting a scan");
        return;
    }
    sc->reg = s;
    int r = uv_queue_work(s->base.loop, &sc->req, scan_work, scan_done);
    if (r < 0) {
        mesh_free(sc);
        mesh_log_error("cannot queue a scan of '%s': %s", s->cfg->directory, uv_strerror(r));
        return;
    }
    s->scan = sc;
}

static int static_create(uv_loop_t *loop, const struct mesh_registry_config *cfg,
                         const struct mesh_registry_env *env, const struct mesh_registry_sink *sink,
                         struct mesh_registry **ret)
{
    struct static_registry *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    mesh_registry_init(&s->base, &mesh_static_registry_ops, loop, cfg, env, sink);
    s->cfg = cfg->adapter;
    mesh_hmap_init(&s->files);
    uv_fs_event_init(loop, &s->watch);
    uv_timer_init(loop, &s->debounce);
    uv_timer_init(loop, &s->poll);
    s->watch.data = s->debounce.data = s->poll.data = s;
    s->open_handles = 3;
    *ret = &s->base;
    return 0;
}

static int static_start(struct mesh_registry *r)
{
    struct static_registry *s = (struct static_registry *)r;
    s->state = ST_RUNNING;
    start_watch(s);
    if (s->cfg->poll_interval_ms)
        uv_timer_start(&s->poll, on_poll, s->cfg->poll_interval_ms, s->cfg->poll_interval_ms);
    request_scan(s);
    return 0;
}

static void static_refresh(struct mesh_registry *r)
{
    request_scan((struct static_registry *)r);
}

static void static_stop(struct mesh_registry *r, mesh_registry_stopped_cb done, void *data)
{
    struct static_registry *s = (struct static_registry *)r;
    s->stopped_cb = done;
    s->stopped_data = data;
    s->state = ST_STOPPING;
    /* A scan on the thread pool cannot be taken back: its completion closes the handles. */
    if (!s->scan)
        close_handles(s);
}

static void static_destroy(struct mesh_registry *r)
{
    struct static_registry *s = (struct static_registry *)r;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&s->files, &i, &he))
        file_state_free(he->value);
    mesh_hmap_done(&s->files);
    mesh_free(s);
}

static void static_status(struct mesh_registry *r, json_t *out)
{
    struct static_registry *s = (struct static_registry *)r;
    json_t *errors = json_array();
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (errors && mesh_hmap_next(&s->files, &i, &he)) {
        const struct file_state *f = he->value;
        if (f->error)
            json_array_append_new(errors,
                                  json_pack("{s:s, s:s, s:b}", "file", f->name, "error", f->error,
                                            "serving_last_good", f->good != NULL));
    }
    json_object_set_new(out, "directory", json_string(s->cfg->directory));
    json_object_set_new(out, "watching", json_boolean(s->watching));
    json_object_set_new(out, "files", json_integer((json_int_t)s->files.n));
    json_object_set_new(out, "services", json_integer((json_int_t)s->n_services));
    json_object_set_new(out, "local_services", json_integer((json_int_t)s->n_local));
    json_object_set_new(out, "scans", json_integer((json_int_t)s->scans));
    if (s->dir_error)
        json_object_set_new(out, "directory_error", json_string(strerror(-s->dir_error)));
    json_object_set_new(out, "file_errors", errors ? errors : json_array());
}

static void static_metrics(struct mesh_registry *const *regs, size_t n, struct mesh_buf *b)
{
    mesh_prom_family(b, "mesh_static_files", "gauge",
                     "Service files in the static registry's directory.");
    for (size_t k = 0; k < n; k++) {
        const struct static_registry *s = (const struct static_registry *)regs[k];
        struct mesh_prom_label l[] = {{"registry", regs[k]->cfg->name}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_static_files", l, (double)s->files.n);
    }
    mesh_prom_family(b, "mesh_static_invalid_files", "gauge",
                     "Service files that are invalid now (their last good version is served).");
    for (size_t k = 0; k < n; k++) {
        const struct static_registry *s = (const struct static_registry *)regs[k];
        size_t bad = 0, i = 0;
        const struct mesh_hmap_entry *he;
        while (mesh_hmap_next(&s->files, &i, &he))
            bad += ((const struct file_state *)he->value)->error != NULL;
        struct mesh_prom_label l[] = {{"registry", regs[k]->cfg->name}, {NULL, NULL}};
        mesh_prom_sample(b, "mesh_static_invalid_files", l, (double)bad);
    }
}

static void ignore_service(void *data, struct mesh_registry *r, const struct mesh_service_update *u)
{
    (void)data, (void)r, (void)u;
}

static void ignore_local(void *data, struct mesh_registry *r, const struct mesh_local_service *v,
                         size_t n)
{
    (void)data, (void)r, (void)v, (void)n;
}

static void ignore_sync(void *data, struct mesh_registry *r)
{
    (void)data, (void)r;
}

static void collect_error(void *data, struct mesh_registry *r, const char *message)
{
    struct mesh_cfg_errors *errors = data;
    (void)r;
    /* Joined file errors become one error per line again. */
    char *copy = mesh_strdup(message);
    if (!copy) {
        errors->dropped++;
        return;
    }
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        mesh_cfg_errors_add(errors, line);
    mesh_free(copy);
}

/* Reads the directory as a start would, synchronously, and reports what is wrong. */
static void static_validate(const struct mesh_registry_config *cfg,
                            const struct mesh_registry_env *env, struct mesh_cfg_errors *errors)
{
    struct mesh_registry_sink sink = {
        .data = errors,
        .set_service = ignore_service,
        .set_local = ignore_local,
        .sync_begin = ignore_sync,
        .sync_end = ignore_sync,
        .error = collect_error,
    };
    struct static_registry tmp = {0};
    struct scan *sc = mesh_calloc(1, sizeof(*sc));
    if (!sc) {
        collect_error(errors, NULL, "out of memory");
        return;
    }
    mesh_registry_init(&tmp.base, &mesh_static_registry_ops, NULL, cfg, env, &sink);
    tmp.cfg = cfg->adapter;
    mesh_hmap_init(&tmp.files);
    sc->reg = &tmp;
    scan_work(&sc->req);
    if (!sc->parsed && sc->dir_error == 0)
        parse_range(sc, 0, sc->n);
    if (sc->dir_error < 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s: cannot read the service directory: %s", tmp.cfg->directory,
                 strerror(-sc->dir_error));
        collect_error(errors, NULL, msg);
    } else {
        merge_scan(&tmp, sc);
        apply(&tmp);
    }
    scan_free(sc);
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&tmp.files, &i, &he))
        file_state_free(he->value);
    mesh_hmap_done(&tmp.files);
}

const struct mesh_registry_ops mesh_static_registry_ops = {
    .validate = static_validate,
    .type = "static",
    .config_schema = &config_schema,
    .create = static_create,
    .start = static_start,
    .refresh = static_refresh,
    .stop = static_stop,
    .destroy = static_destroy,
    .status = static_status,
    .metrics = static_metrics,
};
