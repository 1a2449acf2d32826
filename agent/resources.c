#define MESH_LOG_MODULE "resources"

#include "agent/resources.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/json_dir.h"
#include "common/log.h"

struct named_file {
    char *name;
    struct mesh_resource_file *f; /* a reference */
};

struct mesh_resources {
    uv_loop_t *loop;
    mesh_resources_changed_cb cb;
    void *data;
    struct mesh_json_dir *dir;
    struct mesh_json_dir *old_dir; /* closing once the new one has scanned */
    struct mesh_resource_view view;
    /* What the view is made of: the controller's resources first (they win a conflict),
     * then the directory's files in name order. */
    char *extra_name;
    struct mesh_resource_file *extra;
    struct named_file *files;
    size_t n_files;
    bool scanned;
    uint64_t errors;
    char *last_error;
    void (*done)(void *data);
    void *done_data;
    int closing;
};

static int parse_file(const char *path, const char *data, size_t len,
                      struct mesh_cfg_errors *errors, void **ret)
{
    struct mesh_resource_file *f = NULL;
    int r = mesh_resource_file_parse(path, data, len, errors, &f);
    *ret = f;
    return r;
}

static void free_file(void *obj)
{
    mesh_resource_file_unref(obj);
}

static void record(struct mesh_resources *r, const char *message)
{
    r->errors++;
    mesh_free(r->last_error);
    r->last_error = mesh_strdup(message);
}

static void on_conflict(void *data, const char *file, const char *message)
{
    struct mesh_log_field fields[] = {{"file", file}, {NULL, NULL}};
    mesh_log_fields(MESH_LOG_WARNING, fields, "%s", message);
    record(data, message);
}

static void on_old_closed(void *data)
{
    (void)data;
}

static void free_files(struct named_file *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mesh_free(v[i].name);
        mesh_resource_file_unref(v[i].f);
    }
    mesh_free(v);
}

/* A new view from the extra file and the directory's. Returns 0 or -ENOMEM (kept). */
static int rebuild(struct mesh_resources *r)
{
    struct mesh_resource_view next;
    mesh_resource_view_init(&next);
    int err = r->extra ? mesh_resource_view_add(&next, r->extra_name, r->extra, on_conflict, r) : 0;
    for (size_t i = 0; err == 0 && i < r->n_files; i++)
        err = mesh_resource_view_add(&next, r->files[i].name, r->files[i].f, on_conflict, r);
    if (err < 0) {
        mesh_resource_view_done(&next);
        record(r, "out of memory indexing resources; keeping the previous ones");
        mesh_log_error("out of memory indexing resources; keeping the previous ones");
        return err;
    }
    mesh_resource_view_done(&r->view);
    r->view = next;
    return 0;
}

int mesh_resources_set_extra(struct mesh_resources *r, const char *name,
                             struct mesh_resource_file *f)
{
    char *copy = f ? mesh_strdup(name) : NULL;
    if (f && !copy)
        return -ENOMEM;
    mesh_free(r->extra_name);
    mesh_resource_file_unref(r->extra);
    r->extra_name = copy;
    r->extra = f ? mesh_resource_file_ref(f) : NULL;
    int err = rebuild(r);
    if (err == 0 && r->scanned) {
        mesh_log_info("%zu resources in effect", r->view.count);
        r->cb(r->data);
    }
    return err;
}

static void on_changed(void *data, const struct mesh_json_dir_file *files, size_t n)
{
    struct mesh_resources *r = data;
    struct named_file *v = mesh_calloc(n ? n : 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; v && i < n; i++) {
        if (!files[i].obj)
            continue;
        if (!(v[k].name = mesh_strdup(files[i].name))) {
            free_files(v, k);
            v = NULL;
            break;
        }
        v[k++].f = mesh_resource_file_ref(files[i].obj);
    }
    if (!v) {
        record(r, "out of memory indexing resources; keeping the previous ones");
        return;
    }
    struct named_file *old = r->files;
    size_t n_old = r->n_files;
    r->files = v;
    r->n_files = k;
    if (rebuild(r) < 0) {
        r->files = old;
        r->n_files = n_old;
        free_files(v, k);
        return;
    }
    free_files(old, n_old);
    r->scanned = true;
    if (r->old_dir) {
        mesh_json_dir_close(r->old_dir, on_old_closed, NULL);
        r->old_dir = NULL;
    }
    mesh_log_info("%zu resources in effect", r->view.count);
    r->cb(r->data);
}

static void on_problem(void *data, const char *name, const char *message, bool last_good)
{
    struct mesh_resources *r = data;
    (void)last_good;
    record(r, message);
    /* No directory at the first look means no resources, not a wait: everything defaults. */
    if (!name && !r->scanned) {
        r->scanned = true;
        r->cb(r->data);
    }
}

static const struct mesh_json_dir_ops dir_ops = {
    .parse = parse_file,
    .free = free_file,
    .changed = on_changed,
    .problem = on_problem,
};

int mesh_resources_new(uv_loop_t *loop, mesh_resources_changed_cb cb, void *data,
                       struct mesh_resources **ret)
{
    struct mesh_resources *r = mesh_calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->loop = loop;
    r->cb = cb;
    r->data = data;
    mesh_resource_view_init(&r->view);
    *ret = r;
    return 0;
}

int mesh_resources_watch(struct mesh_resources *r, const char *dir, uint64_t poll_ms)
{
    struct mesh_json_dir *d;
    int err = mesh_json_dir_new(r->loop, dir, poll_ms, &dir_ops, r, &d);
    if (err < 0)
        return err;
    /* The current view stays until the new directory's first scan replaces it. */
    if (r->old_dir)
        mesh_json_dir_close(r->old_dir, on_old_closed, NULL);
    r->old_dir = r->dir;
    r->dir = d;
    mesh_json_dir_start(d);
    return 0;
}

void mesh_resources_rescan(struct mesh_resources *r)
{
    if (r->dir)
        mesh_json_dir_rescan(r->dir);
}

const struct mesh_resource_view *mesh_resources_view(const struct mesh_resources *r)
{
    return &r->view;
}

bool mesh_resources_scanned(const struct mesh_resources *r)
{
    return r->scanned;
}

void mesh_resources_status(const struct mesh_resources *r, json_t *out)
{
    if (r->dir)
        mesh_json_dir_status(r->dir, out);
    json_object_set_new(out, "resources", json_integer((json_int_t)r->view.count));
    json_object_set_new(out, "errors", json_integer((json_int_t)r->errors));
    json_object_set_new(out, "last_error",
                        r->last_error ? json_string(r->last_error) : json_null());
}

static void on_dir_closed(void *data)
{
    struct mesh_resources *r = data;
    if (--r->closing > 0)
        return;
    void (*done)(void *) = r->done;
    void *done_data = r->done_data;
    mesh_resource_view_done(&r->view);
    free_files(r->files, r->n_files);
    mesh_resource_file_unref(r->extra);
    mesh_free(r->extra_name);
    mesh_free(r->last_error);
    mesh_free(r);
    if (done)
        done(done_data);
}

void mesh_resources_close(struct mesh_resources *r, void (*done)(void *data), void *data)
{
    r->done = done;
    r->done_data = data;
    r->closing = 1; /* held until both directories are asked to close */
    if (r->dir) {
        r->closing++;
        mesh_json_dir_close(r->dir, on_dir_closed, r);
    }
    if (r->old_dir) {
        r->closing++;
        mesh_json_dir_close(r->old_dir, on_dir_closed, r);
    }
    r->dir = r->old_dir = NULL;
    on_dir_closed(r);
}

struct validate_ctx {
    struct mesh_cfg_errors *errors;
};

static void validate_conflict(void *data, const char *file, const char *message)
{
    (void)file;
    mesh_cfg_errors_add(((struct validate_ctx *)data)->errors, message);
}

static void validate_changed(void *data, const struct mesh_json_dir_file *files, size_t n)
{
    struct mesh_resource_view v;
    mesh_resource_view_init(&v);
    for (size_t i = 0; i < n; i++) {
        if (files[i].obj)
            mesh_resource_view_add(&v, files[i].name, files[i].obj, validate_conflict, data);
    }
    mesh_resource_view_done(&v);
}

static void validate_problem(void *data, const char *name, const char *message, bool last_good)
{
    (void)name;
    (void)last_good;
    struct mesh_cfg_errors *errors = ((struct validate_ctx *)data)->errors;
    char *copy = mesh_strdup(message), *save = NULL;
    for (char *l = copy ? strtok_r(copy, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
        mesh_cfg_errors_add(errors, l);
    mesh_free(copy);
}

void mesh_resources_validate(const char *dir, struct mesh_cfg_errors *errors)
{
    static const struct mesh_json_dir_ops ops = {
        .parse = parse_file,
        .free = free_file,
        .changed = validate_changed,
        .problem = validate_problem,
    };
    struct validate_ctx ctx = {errors};
    int r = mesh_json_dir_read_once(dir, &ops, &ctx);
    if (r < 0 && r != -ENOENT) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s: cannot read the resource directory: %s", dir, strerror(-r));
        mesh_cfg_errors_add(errors, msg);
    }
}
