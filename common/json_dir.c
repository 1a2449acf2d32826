#define MESH_LOG_MODULE "files"

#include "common/json_dir.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/fs.h"
#include "common/hmap.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/strutil.h"

/* Changes arriving together (an editor's save, a config management run) make one scan. */
#define DEBOUNCE_MS 50
#define MAX_FILES 100000
/* Below this many changed files one thread parses them all: a hop costs more. */
#define PARALLEL_MIN 64

struct file_key {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

/* What is known of one file, kept across scans. */
struct file_state {
    char *name;
    struct file_key key;
    void *good;  /* last good object; NULL if never good */
    char *error; /* the current problem; NULL when good */
};

/* One file as a scan saw it. */
struct scanned {
    char *name;
    struct file_key key;
    bool changed;
    bool skip; /* not a regular file after all */
    void *obj;
    char *error;
};

struct scan {
    uv_work_t req;
    struct mesh_json_dir *dir;
    struct scanned *files;
    size_t n;
    size_t n_changed;
    bool parsed; /* the listing parsed the changed files itself */
    size_t jobs; /* parse jobs still running */
    int dir_error;
};

struct parse_job {
    uv_work_t req;
    struct scan *scan;
    size_t from, to;
};

enum { ST_INIT, ST_RUNNING, ST_STOPPING };

struct mesh_json_dir {
    uv_loop_t *loop;
    char *path;
    uint64_t poll_ms;
    const struct mesh_json_dir_ops *ops;
    void *data;
    int state;
    uv_fs_event_t watch;
    bool watching;
    uv_timer_t debounce;
    uv_timer_t poll;
    int open_handles;
    struct scan *scan;
    bool rescan;
    struct mesh_hmap files; /* name -> struct file_state */
    int dir_error;
    uint64_t scans;
    bool scanned;
    void (*done)(void *data);
    void *done_data;
};

static void request_scan(struct mesh_json_dir *d);

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

/* Thread pool: reads and parses the changed files among files[from, to). */
static void parse_range(struct scan *sc, size_t from, size_t to)
{
    const struct mesh_json_dir *d = sc->dir;
    for (size_t i = from; i < to; i++) {
        struct scanned *f = &sc->files[i];
        char path[4096];
        if (!f->changed)
            continue;
        snprintf(path, sizeof(path), "%s/%s", d->path, f->name);
        char *data = NULL;
        size_t len = 0;
        struct stat st;
        int r = mesh_fs_read_file_stat(path, MESH_JSON_DIR_FILE_MAX, &data, &len, &st);
        if (r == -EISDIR || r == -ENOENT) {
            f->skip = true; /* not a file, a dangling link, or gone since the listing */
            continue;
        }
        /* The key of what was read, so a later scan compares with this very version; an
         * unreadable file keeps its stat's key, so it is not read again until it changes. */
        if (r == 0 || stat(path, &st) == 0)
            f->key = (struct file_key){st.st_dev, st.st_ino, st.st_size, st.st_mtim};
        if (r < 0) {
            f->error = r == -EFBIG
                           ? mesh_asprintf("%s: larger than %d bytes", path, MESH_JSON_DIR_FILE_MAX)
                           : mesh_asprintf("%s: cannot read: %s", path, strerror(-r));
            continue;
        }
        struct mesh_cfg_errors errs = {0};
        if (d->ops->parse(path, data, len, &errs, &f->obj) < 0) {
            f->obj = NULL;
            f->error = errs.n ? mesh_cfg_errors_join(&errs) : mesh_strdup("out of memory");
        }
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
 * few (else scan_done hands them to parallel parse jobs). Reads d->files, which the loop
 * only changes once the scan is over.
 */
static void scan_work(uv_work_t *req)
{
    struct scan *sc = container_of(req, struct scan, req);
    const struct mesh_json_dir *d = sc->dir;
    char **names = NULL;
    size_t n = 0, cap = 0;

    DIR *dir = opendir(d->path);
    if (!dir) {
        sc->dir_error = -errno;
        return;
    }
    struct dirent *de;
    while ((de = readdir(dir)) && n < MAX_FILES) {
        if (!wanted_name(de->d_name))
            continue;
        if (mesh_grow((void **)&names, &cap, n + 1, sizeof(*names)) < 0 ||
            !(names[n] = mesh_strdup(de->d_name))) {
            sc->dir_error = -ENOMEM;
            break;
        }
        n++;
    }
    closedir(dir);
    if (sc->dir_error == 0 && n && !(sc->files = mesh_calloc(n, sizeof(*sc->files))))
        sc->dir_error = -ENOMEM;
    if (sc->dir_error < 0)
        goto out;
    if (n)
        qsort(names, n, sizeof(*names), mesh_str_ptr_cmp);

    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        const struct file_state *old = mesh_hmap_get(&d->files, names[i]);
        struct scanned *f = &sc->files[sc->n];
        if (old) {
            /* stat follows symlinks: a ConfigMap's ..data swap changes the target. */
            snprintf(path, sizeof(path), "%s/%s", d->path, names[i]);
            if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
                continue;
            f->key = (struct file_key){st.st_dev, st.st_ino, st.st_size, st.st_mtim};
            f->changed = !key_equal(&old->key, &f->key);
        } else {
            /* New: reading it stats it (a start reads every file: one system call less). */
            f->changed = true;
        }
        f->name = names[i];
        names[i] = NULL;
        sc->n++;
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

static void scan_free(struct mesh_json_dir *d, struct scan *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        mesh_free(sc->files[i].name);
        if (sc->files[i].obj)
            d->ops->free(sc->files[i].obj);
        mesh_free(sc->files[i].error);
    }
    mesh_free(sc->files);
    mesh_free(sc);
}

static void file_state_free(struct mesh_json_dir *d, struct file_state *f)
{
    mesh_free(f->name);
    if (f->good)
        d->ops->free(f->good);
    mesh_free(f->error);
    mesh_free(f);
}

static void problem(struct mesh_json_dir *d, const char *name, const char *msg, bool last_good)
{
    if (d->ops->problem)
        d->ops->problem(d->data, name, msg, last_good);
}

/* Takes in what a scan found; returns true when anything changed. */
static bool merge_scan(struct mesh_json_dir *d, struct scan *sc)
{
    bool changed = false;
    struct mesh_hmap present;
    mesh_hmap_init(&present);
    for (size_t i = 0; i < sc->n; i++) {
        struct scanned *f = &sc->files[i];
        if (f->skip)
            continue;
        struct file_state *st = mesh_hmap_get(&d->files, f->name);
        if (!st) {
            st = mesh_calloc(1, sizeof(*st));
            if (!st || mesh_hmap_put(&d->files, f->name, st) < 0) {
                mesh_free(st);
                problem(d, f->name, "out of memory tracking the file", false);
                continue;
            }
            st->name = f->name;
            f->name = NULL;
        }
        if (mesh_hmap_put(&present, st->name, st) < 0)
            continue;
        if (!f->changed)
            continue;
        st->key = f->key;
        changed = true;
        if (f->obj) {
            if (st->error)
                mesh_log_notice("%s/%s is valid again", d->path, st->name);
            else
                mesh_log_info("loaded %s/%s", d->path, st->name);
            if (st->good)
                d->ops->free(st->good);
            st->good = f->obj;
            f->obj = NULL;
            mesh_free(st->error);
            st->error = NULL;
            continue;
        }
        mesh_free(st->error);
        st->error = f->error;
        f->error = NULL;
        struct mesh_log_field fields[] = {{"file", st->name}, {NULL, NULL}};
        mesh_log_fields(MESH_LOG_WARNING, fields, "invalid file, %s:\n%s",
                        st->good ? "keeping its last good version" : "ignoring it", st->error);
        problem(d, st->name, st->error, st->good != NULL);
    }
    /* Files that are gone take their objects with them. */
    struct file_state **gone = NULL;
    size_t n_gone = 0, cap = 0, i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&d->files, &i, &he)) {
        if (!mesh_hmap_get(&present, he->key) &&
            mesh_grow((void **)&gone, &cap, n_gone + 1, sizeof(*gone)) == 0)
            gone[n_gone++] = he->value;
    }
    for (size_t k = 0; k < n_gone; k++) {
        mesh_log_info("%s/%s was removed", d->path, gone[k]->name);
        mesh_hmap_remove(&d->files, gone[k]->name);
        file_state_free(d, gone[k]);
        changed = true;
    }
    mesh_free(gone);
    mesh_hmap_done(&present);
    return changed;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct mesh_json_dir_file *)a)->name,
                  ((const struct mesh_json_dir_file *)b)->name);
}

/* Calls ops->changed with every file, sorted by name. */
static void report_changed(struct mesh_json_dir *d)
{
    struct mesh_json_dir_file *v = mesh_calloc(d->files.n ? d->files.n : 1, sizeof(*v));
    if (!v) {
        problem(d, NULL, "out of memory listing the files", true);
        return;
    }
    size_t n = 0, i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&d->files, &i, &he)) {
        const struct file_state *f = he->value;
        v[n++] = (struct mesh_json_dir_file){f->name, f->good, f->error};
    }
    qsort(v, n, sizeof(*v), cmp_file);
    d->ops->changed(d->data, v, n);
    mesh_free(v);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct mesh_json_dir *d = h->data;
    if (--d->open_handles > 0)
        return;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&d->files, &i, &he))
        file_state_free(d, he->value);
    mesh_hmap_done(&d->files);
    void (*done)(void *) = d->done;
    void *data = d->done_data;
    mesh_free(d->path);
    mesh_free(d);
    if (done)
        done(data);
}

static void close_handles(struct mesh_json_dir *d)
{
    uv_close((uv_handle_t *)&d->watch, on_handle_closed);
    uv_close((uv_handle_t *)&d->debounce, on_handle_closed);
    uv_close((uv_handle_t *)&d->poll, on_handle_closed);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status);

static void start_watch(struct mesh_json_dir *d)
{
    if (d->watching)
        return;
    int r = uv_fs_event_start(&d->watch, on_fs_event, d->path, 0);
    if (r == 0)
        d->watching = true;
    else
        mesh_log_debug("cannot watch '%s' yet: %s", d->path, uv_strerror(r));
}

/* On the loop, once every changed file of a scan is parsed: takes the results in. */
static void finish_scan(struct scan *sc, int status)
{
    struct mesh_json_dir *d = sc->dir;
    d->scan = NULL;
    if (d->state == ST_STOPPING || status < 0) {
        scan_free(d, sc);
        if (d->state == ST_STOPPING)
            close_handles(d);
        return;
    }
    d->scans++;
    if (sc->dir_error < 0) {
        /* Keep serving what we had: an unreadable directory is not "no files". */
        if (sc->dir_error != d->dir_error) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s: cannot read the directory: %s%s", d->path,
                     strerror(-sc->dir_error), d->files.n ? "; keeping what was read before" : "");
            mesh_log_warn("%s", msg);
            problem(d, NULL, msg, d->files.n > 0);
        }
        d->dir_error = sc->dir_error;
    } else {
        if (d->dir_error)
            mesh_log_notice("%s is readable again", d->path);
        d->dir_error = 0;
        start_watch(d);
        bool first = !d->scanned;
        d->scanned = true;
        if (merge_scan(d, sc) || first)
            report_changed(d);
    }
    scan_free(d, sc);
    if (d->rescan) {
        d->rescan = false;
        request_scan(d);
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
    struct mesh_json_dir *d = sc->dir;
    if (status < 0 || sc->dir_error < 0 || sc->parsed || d->state == ST_STOPPING) {
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
            if (uv_queue_work(d->loop, &job->req, parse_job_work, parse_done) == 0) {
                sc->jobs++;
                continue;
            }
            mesh_free(job);
        }
        parse_range(sc, from, to); /* could not hand it over: parse it here, once */
    }
    if (sc->jobs == 0)
        finish_scan(sc, 0);
}

static void request_scan(struct mesh_json_dir *d)
{
    if (d->state != ST_RUNNING)
        return;
    if (d->scan) {
        d->rescan = true;
        return;
    }
    struct scan *sc = mesh_calloc(1, sizeof(*sc));
    if (!sc) {
        problem(d, NULL, "out of memory starting a scan", true);
        return;
    }
    sc->dir = d;
    int r = uv_queue_work(d->loop, &sc->req, scan_work, scan_done);
    if (r < 0) {
        mesh_free(sc);
        mesh_log_error("cannot queue a scan of '%s': %s", d->path, uv_strerror(r));
        return;
    }
    d->scan = sc;
}

static void on_debounce(uv_timer_t *t)
{
    request_scan(t->data);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct mesh_json_dir *d = h->data;
    (void)filename;
    (void)events;
    if (status < 0)
        mesh_log_warn("watching '%s' failed: %s", d->path, uv_strerror(status));
    if (!uv_is_active((uv_handle_t *)&d->debounce))
        uv_timer_start(&d->debounce, on_debounce, DEBOUNCE_MS, 0);
}

int mesh_json_dir_new(uv_loop_t *loop, const char *dir, uint64_t poll_ms,
                      const struct mesh_json_dir_ops *ops, void *data, struct mesh_json_dir **ret)
{
    struct mesh_json_dir *d = mesh_calloc(1, sizeof(*d));
    if (!d || !(d->path = mesh_strdup(dir))) {
        mesh_free(d);
        return -ENOMEM;
    }
    d->loop = loop;
    d->poll_ms = poll_ms;
    d->ops = ops;
    d->data = data;
    mesh_hmap_init(&d->files);
    uv_fs_event_init(loop, &d->watch);
    uv_timer_init(loop, &d->debounce);
    uv_timer_init(loop, &d->poll);
    d->watch.data = d->debounce.data = d->poll.data = d;
    d->open_handles = 3;
    *ret = d;
    return 0;
}

void mesh_json_dir_start(struct mesh_json_dir *d)
{
    d->state = ST_RUNNING;
    start_watch(d);
    if (d->poll_ms)
        uv_timer_start(&d->poll, on_debounce, d->poll_ms, d->poll_ms);
    request_scan(d);
}

void mesh_json_dir_rescan(struct mesh_json_dir *d)
{
    request_scan(d);
}

void mesh_json_dir_close(struct mesh_json_dir *d, void (*done)(void *data), void *data)
{
    d->done = done;
    d->done_data = data;
    d->state = ST_STOPPING;
    /* A scan on the thread pool cannot be taken back: its completion closes the handles. */
    if (!d->scan)
        close_handles(d);
}

void mesh_json_dir_status(const struct mesh_json_dir *d, json_t *out)
{
    json_t *errors = json_array();
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (errors && mesh_hmap_next(&d->files, &i, &he)) {
        const struct file_state *f = he->value;
        if (f->error)
            json_array_append_new(errors,
                                  json_pack("{s:s, s:s, s:b}", "file", f->name, "error", f->error,
                                            "serving_last_good", f->good != NULL));
    }
    json_object_set_new(out, "directory", json_string(d->path));
    json_object_set_new(out, "watching", json_boolean(d->watching));
    json_object_set_new(out, "files", json_integer((json_int_t)d->files.n));
    json_object_set_new(out, "scans", json_integer((json_int_t)d->scans));
    if (d->dir_error)
        json_object_set_new(out, "directory_error", json_string(strerror(-d->dir_error)));
    json_object_set_new(out, "file_errors", errors ? errors : json_array());
}

size_t mesh_json_dir_count(const struct mesh_json_dir *d, size_t *ret_invalid)
{
    size_t bad = 0, i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&d->files, &i, &he))
        bad += ((const struct file_state *)he->value)->error != NULL;
    if (ret_invalid)
        *ret_invalid = bad;
    return d->files.n;
}

bool mesh_json_dir_scanned(const struct mesh_json_dir *d)
{
    return d->scanned;
}

int mesh_json_dir_read_once(const char *dir, const struct mesh_json_dir_ops *ops, void *data)
{
    struct mesh_json_dir tmp = {.path = (char *)(uintptr_t)dir, .ops = ops, .data = data};
    struct scan *sc = mesh_calloc(1, sizeof(*sc));
    if (!sc)
        return -ENOMEM;
    mesh_hmap_init(&tmp.files);
    sc->dir = &tmp;
    scan_work(&sc->req);
    int r = sc->dir_error;
    if (r == 0) {
        if (!sc->parsed)
            parse_range(sc, 0, sc->n);
        merge_scan(&tmp, sc);
        report_changed(&tmp);
    }
    scan_free(&tmp, sc);
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&tmp.files, &i, &he))
        file_state_free(&tmp, he->value);
    mesh_hmap_done(&tmp.files);
    return r;
}
