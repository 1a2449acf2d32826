#define MESH_LOG_MODULE "lkg"

#include "agent/lkg.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "catalog/endpoint_json.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/names.h"
#include "common/spiffe.h"

#define LKG_FORMAT 1
#define DEBOUNCE_MS 250
#define RETRY_MIN_MS 1000  /* after a failed write: 1 s, doubling ... */
#define RETRY_MAX_MS 30000 /* ... up to 30 s */

#define FLUSH_AT (64 * 1024) /* bytes encoded before they go to the file */

struct write_job {
    uv_work_t req;
    struct mesh_lkg *lkg;
    struct mesh_catalog_capture *cap;
    int result;
    uint64_t ns; /* what encoding and writing took, on the thread pool */
};

struct mesh_lkg {
    uv_loop_t *loop;
    char *path;
    uv_timer_t timer;
    const struct mesh_catalog *catalog;
    struct write_job *job; /* a write on the thread pool */
    bool dirty;            /* changed since the last write started */
    bool closing;
    uint64_t writes;
    uint64_t failures;
    unsigned failed_in_row; /* writes failed since the last that worked */
    uint64_t capture_ns;    /* what the last capture took, on the loop */
    uint64_t job_ns;        /* what the last write took, on the thread pool */
    void (*done)(void *data);
    void *done_data;
};

/*
 * The document: {"format": 1, "written_at": "...", "sources": {"<registry>": [services]}}.
 * Streamed from a capture of the catalog, without a JSON tree, in pieces of FLUSH_AT bytes
 * when written to a file: a catalog of 100,000 endpoints costs 64 KB to write, not 8 MB.
 */
struct encoder {
    struct mesh_buf *b;
    struct mesh_fs_atomic *file; /* NULL: all of it stays in b */
    size_t total;
};

/* Sends what is encoded to the file once FLUSH_AT bytes are (or at the end, `all`). */
static void flush(struct encoder *e, bool all)
{
    if (!e->file || (!all && e->b->len < FLUSH_AT))
        return;
    e->total += e->b->len;
    if (e->total > MESH_LKG_MAX)
        e->b->err = -EFBIG; /* what mesh_lkg_load would refuse to read */
    else if (!e->b->err)
        mesh_fs_atomic_write(e->file, e->b->data, e->b->len);
    e->b->len = 0;
}

static void encode_view(struct encoder *e, const struct mesh_catalog_capture_view *v)
{
    struct mesh_buf *b = e->b;
    mesh_buf_append_str(b, "{\"namespace\":");
    mesh_json_write_str(b, v->namespace);
    mesh_buf_append_str(b, ",\"name\":");
    mesh_json_write_str(b, v->name);
    if (v->identity) {
        /* What callers want from its endpoints: lost, they would want the default ID. */
        mesh_buf_append_str(b, ",\"identity\":");
        mesh_json_write_str(b, v->identity);
    }
    mesh_buf_appendf(b, ",\"protocol\":\"%s\",\"endpoints\":[", mesh_protocol_names[v->protocol]);
    for (size_t i = 0; i < v->n_endpoints; i++) {
        if (i)
            mesh_buf_append_str(b, ",");
        mesh_endpoint_write_json(b, &v->endpoints[i]);
        flush(e, false);
    }
    mesh_buf_append_str(b, "]}");
}

static void encode(const struct mesh_catalog_capture *cap, struct encoder *e)
{
    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    mesh_buf_appendf(e->b, "{\"format\":%d,\"written_at\":\"%s\",\"sources\":{", LKG_FORMAT, when);
    size_t v = 0;
    for (size_t s = 0; s < cap->n_sources; s++) {
        if (s)
            mesh_buf_append_str(e->b, ",");
        mesh_json_write_str(e->b, cap->sources[s]);
        mesh_buf_append_str(e->b, ":[");
        for (size_t first = v; v < cap->n_views && cap->views[v].source == s; v++) {
            if (v > first)
                mesh_buf_append_str(e->b, ",");
            encode_view(e, &cap->views[v]);
        }
        mesh_buf_append_str(e->b, "]");
    }
    mesh_buf_append_str(e->b, "}}\n");
}

void mesh_lkg_encode(const struct mesh_catalog *c, struct mesh_buf *b)
{
    struct mesh_catalog_capture *cap;
    if (mesh_catalog_capture(c, &cap) < 0) {
        b->err = -ENOMEM;
        return;
    }
    struct encoder e = {.b = b};
    encode(cap, &e);
    mesh_catalog_capture_free(cap);
}

/* Encodes and writes `cap` to `path` (temp file, fsync, rename): blocking. */
static int write_capture(const char *path, const struct mesh_catalog_capture *cap)
{
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_LKG_MAX);
    struct mesh_fs_atomic file;
    if (mesh_fs_atomic_begin(&file, path, 0600) == 0) {
        struct encoder e = {.b = &b, .file = &file};
        encode(cap, &e);
        flush(&e, true);
        if (b.err)
            file.err = b.err; /* commit then fails and removes the temporary file */
    }
    mesh_buf_done(&b);
    return mesh_fs_atomic_commit(&file);
}

int mesh_lkg_new(uv_loop_t *loop, const char *path, struct mesh_lkg **ret)
{
    struct mesh_lkg *l = mesh_calloc(1, sizeof(*l));
    if (!l || !(l->path = mesh_strdup(path))) {
        mesh_free(l);
        return -ENOMEM;
    }
    l->loop = loop;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    *ret = l;
    return 0;
}

static void write_work(uv_work_t *req)
{
    struct write_job *j = container_of(req, struct write_job, req);
    uint64_t t0 = uv_hrtime();
    j->result = write_capture(j->lkg->path, j->cap);
    j->ns = uv_hrtime() - t0;
}

static void maybe_closed(struct mesh_lkg *l);

/*
 * The wait before a write: at least DEBOUNCE_MS, ten times what the capture took on the
 * loop, and twenty times what the last write took: a large catalog under steady change
 * spends at most a tenth of the loop and a twentieth of a thread-pool thread on this file
 * (100,000 endpoints: a write every 2 s or so), whatever the rate of change. After a failed
 * write, the next is tried after a backoff (1 s doubling to 30 s) even with no new change:
 * a disk that frees up gets the file without waiting for the catalog to move.
 */
static uint64_t delay_of(const struct mesh_lkg *l)
{
    if (l->failed_in_row) {
        unsigned shift = MESH_MIN(l->failed_in_row - 1, 5u);
        return MESH_MIN((uint64_t)RETRY_MIN_MS << shift, (uint64_t)RETRY_MAX_MS);
    }
    uint64_t ms = MESH_MAX(10 * l->capture_ns, 20 * l->job_ns) / 1000000;
    return ms > DEBOUNCE_MS ? ms : DEBOUNCE_MS;
}

static void on_timer(uv_timer_t *t);

/* Counts a failed write and schedules the retry. */
static void write_failed(struct mesh_lkg *l, int err)
{
    l->failures++;
    l->failed_in_row++;
    l->dirty = true; /* what was captured did not land: the next write must happen */
    uint64_t retry = delay_of(l);
    mesh_log_warn("cannot write the last-known-good catalog '%s': %s; retrying in %" PRIu64 " ms",
                  l->path, strerror(-err), retry);
    if (!l->closing)
        uv_timer_start(&l->timer, on_timer, retry, 0);
}

static void write_done(uv_work_t *req, int status)
{
    struct write_job *j = container_of(req, struct write_job, req);
    struct mesh_lkg *l = j->lkg;
    int r = status < 0 ? status : j->result;
    l->job_ns = j->ns;
    mesh_catalog_capture_free(j->cap);
    mesh_free(j);
    l->job = NULL;
    if (r < 0) {
        write_failed(l, r);
    } else {
        if (l->failed_in_row)
            mesh_log_info("wrote the last-known-good catalog '%s' again", l->path);
        l->failed_in_row = 0;
        l->writes++;
    }
    if (l->closing) {
        maybe_closed(l);
        return;
    }
    if (l->dirty && !uv_is_active((uv_handle_t *)&l->timer))
        uv_timer_start(&l->timer, on_timer, delay_of(l), 0);
}

static void start_write(struct mesh_lkg *l)
{
    if (l->job || !l->catalog || l->closing)
        return;
    struct write_job *j = mesh_calloc(1, sizeof(*j));
    uint64_t t0 = uv_hrtime();
    if (!j || mesh_catalog_capture(l->catalog, &j->cap) < 0) {
        mesh_free(j);
        write_failed(l, -ENOMEM);
        return;
    }
    l->capture_ns = uv_hrtime() - t0;
    j->lkg = l;
    l->dirty = false;
    int r = uv_queue_work(l->loop, &j->req, write_work, write_done);
    if (r < 0) {
        mesh_catalog_capture_free(j->cap);
        mesh_free(j);
        write_failed(l, r);
        return;
    }
    l->job = j;
}

static void on_timer(uv_timer_t *t)
{
    start_write(t->data);
}

void mesh_lkg_schedule(struct mesh_lkg *l, const struct mesh_catalog *c)
{
    l->catalog = c;
    l->dirty = true;
    /* A write already due stays due: steady change must not postpone it forever. */
    if (l->closing || l->job || uv_is_active((uv_handle_t *)&l->timer))
        return;
    uv_timer_start(&l->timer, on_timer, delay_of(l), 0);
}

int mesh_lkg_flush(struct mesh_lkg *l)
{
    if (!l->catalog)
        return 0;
    struct mesh_catalog_capture *cap;
    int r = mesh_catalog_capture(l->catalog, &cap);
    if (r == 0) {
        r = write_capture(l->path, cap);
        mesh_catalog_capture_free(cap);
    }
    if (r == 0) {
        l->dirty = false;
        l->failed_in_row = 0;
        l->writes++;
    } else {
        l->failures++;
    }
    return r;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct mesh_lkg *l = h->data;
    l->timer.data = NULL;
    maybe_closed(l);
}

static void maybe_closed(struct mesh_lkg *l)
{
    if (l->job || l->timer.data)
        return;
    void (*done)(void *) = l->done;
    void *data = l->done_data;
    mesh_free(l->path);
    mesh_free(l);
    if (done)
        done(data);
}

void mesh_lkg_close(struct mesh_lkg *l, void (*done)(void *data), void *data)
{
    l->closing = true;
    l->done = done;
    l->done_data = data;
    uv_close((uv_handle_t *)&l->timer, on_timer_closed);
}

void mesh_lkg_stats(const struct mesh_lkg *l, uint64_t *ret_writes, uint64_t *ret_failures)
{
    *ret_writes = l->writes;
    *ret_failures = l->failures;
}

/* ---- loading ---- */

struct lkg_service {
    char *namespace;
    char *name;
    int protocol;
    char *identity;
    struct mesh_cfg_list endpoints;
};

static const char *check_identity(const char *s)
{
    const char *why = "not a SPIFFE ID";
    return mesh_spiffe_id_valid(s, strlen(s), NULL, &why) ? NULL : why;
}

#define L(member) MESH_CFG_FIELD(struct lkg_service, member)

static const struct mesh_cfg_field service_fields[] = {
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     L(namespace),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "name",
     .type = MESH_CFG_STRING,
     L(name),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "protocol",
     .type = MESH_CFG_ENUM,
     L(protocol),
     .choices = mesh_protocol_names,
     .def = "tcp"},
    {.key = "identity", .type = MESH_CFG_STRING, L(identity), .check = check_identity},
    {.key = "endpoints",
     .type = MESH_CFG_LIST,
     L(endpoints),
     .schema = &mesh_endpoint_schema,
     .max = MESH_ENDPOINTS_MAX},
    {0},
};

static const struct mesh_cfg_schema service_schema = {
    .size = sizeof(struct lkg_service),
    .fields = service_fields,
};

struct lkg_root {
    int format;
    char *written_at;
    json_t *sources;
};

static int decode_sources(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    if (!json_is_object(v)) {
        mesh_cfg_error(ctx, "expected an object");
        return -EINVAL;
    }
    *(json_t **)field = json_incref(v);
    return 0;
}

static void free_sources(void *field)
{
    json_decref(*(json_t **)field);
}

#define R(member) MESH_CFG_FIELD(struct lkg_root, member)

static const struct mesh_cfg_field root_fields[] = {
    {.key = "format",
     .type = MESH_CFG_INT,
     R(format),
     .flags = MESH_CFG_REQUIRED,
     .min = 1,
     .max = 1},
    {.key = "written_at", .type = MESH_CFG_STRING, R(written_at)},
    {.key = "sources",
     .type = MESH_CFG_CUSTOM,
     R(sources),
     .flags = MESH_CFG_REQUIRED,
     .decode = decode_sources,
     .free = free_sources},
    {0},
};

static const struct mesh_cfg_schema root_schema = {
    .size = sizeof(struct lkg_root),
    .fields = root_fields,
};

struct loaded {
    const char *source;
    struct lkg_service svc;
};

int mesh_lkg_load(const char *path, struct mesh_catalog *c, struct mesh_cfg_errors *errors)
{
    char *data = NULL;
    size_t len = 0;
    int r = mesh_fs_read_file(path, MESH_LKG_MAX, &data, &len);
    if (r == -ENOENT)
        return 0;
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s: cannot read: %s", path, strerror(-r));
        mesh_cfg_errors_add(errors, msg);
        return r;
    }
    r = mesh_lkg_load_buffer(path, data, len, c, errors);
    mesh_free(data);
    return r;
}

/* What a last-known-good file holds, decoded: every service of every known source. */
struct lkg_load {
    struct mesh_catalog *catalog;
    struct lkg_root root;
    struct loaded *v;
    size_t n, cap;
};

static int load_step(struct mesh_cfg_ctx *ctx, json_t *json, void *data)
{
    struct lkg_load *l = data;
    if (mesh_cfg_decode(ctx, &root_schema, json, &l->root) < 0)
        return -EINVAL;
    const char *source;
    json_t *list;
    json_object_foreach(l->root.sources, source, list)
    {
        struct mesh_catalog_source_stats st;
        if (mesh_catalog_source_stats(l->catalog, source, &st) < 0)
            continue; /* a registry that is no longer configured */
        size_t o1 = mesh_cfg_path_push_key(ctx, "sources");
        size_t o2 = mesh_cfg_path_push_key(ctx, source);
        if (!json_is_array(list))
            mesh_cfg_error(ctx, "expected an array of services");
        for (size_t i = 0; json_is_array(list) && i < json_array_size(list); i++) {
            if (mesh_grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v)) < 0 ||
                mesh_cfg_defaults(&service_schema, &l->v[l->n].svc) < 0)
                return -ENOMEM;
            l->v[l->n].source = source; /* a key of root.sources, held by the root */
            size_t o3 = mesh_cfg_path_push_index(ctx, i);
            mesh_cfg_decode(ctx, &service_schema, json_array_get(list, i), &l->v[l->n++].svc);
            mesh_cfg_path_pop(ctx, o3);
        }
        mesh_cfg_path_pop(ctx, o2);
        mesh_cfg_path_pop(ctx, o1);
    }
    return 0;
}

/* Applies one decoded service to the catalog: 1 when applied, 0 when not, -ENOMEM. */
static int apply(struct mesh_catalog *c, const struct loaded *ld)
{
    const struct lkg_service *s = &ld->svc;
    struct mesh_endpoint *eps = mesh_calloc(s->endpoints.n ? s->endpoints.n : 1, sizeof(*eps));
    size_t k = 0, i = 0;
    if (!eps)
        return -ENOMEM;
    for (; i < s->endpoints.n; i++) {
        const struct mesh_endpoint_config *ec =
            (const struct mesh_endpoint_config *)s->endpoints.items + i;
        if (mesh_endpoint_from_config(ec, &eps[k]) < 0)
            break;
        /* The agent writes resolved addresses; a bare host name here has none to offer. */
        if (mesh_endpoint_unresolved(&eps[k]))
            mesh_endpoint_done(&eps[k]);
        else
            k++;
    }
    struct mesh_service_update u = {
        .namespace = s->namespace,
        .name = s->name,
        .protocol = (enum mesh_protocol)s->protocol,
        .endpoints = eps,
        .n_endpoints = k,
        .exists = true, /* what the file lists existed, with or without endpoints */
        .identity = s->identity,
    };
    int r = i == s->endpoints.n && mesh_catalog_update(c, ld->source, &u) >= 0;
    for (size_t e = 0; e < k; e++)
        mesh_endpoint_done(&eps[e]);
    mesh_free(eps);
    return r;
}

/* Decodes every service of every known source first; applies only if all are valid. */
int mesh_lkg_load_buffer(const char *name, const char *data, size_t len, struct mesh_catalog *c,
                         struct mesh_cfg_errors *errors)
{
    struct lkg_load l = {.catalog = c};
    if (mesh_cfg_defaults(&root_schema, &l.root) < 0)
        return -ENOMEM;
    int r = mesh_cfg_parse_doc(name, data, len, errors, load_step, &l);
    for (size_t i = 0; r >= 0 && i < l.n; i++) {
        int a = apply(c, &l.v[i]);
        r = a < 0 ? a : r + a;
    }
    for (size_t i = 0; i < l.n; i++)
        mesh_cfg_free(&service_schema, &l.v[i].svc);
    mesh_free(l.v);
    mesh_cfg_free(&root_schema, &l.root);
    return r;
}
