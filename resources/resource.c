#include "resources/resource.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/names.h"

const char *const mesh_resource_kind_names[] = {"DestinationPolicy", "Route", "AuthorizationPolicy",
                                                NULL};

struct kind_ops {
    const struct mesh_cfg_schema *schema;
    int (*defaults)(void *spec);
    void (*done)(void *spec);
    const char *(*target)(const void *spec); /* the service it applies to; NULL: its name */
};

static int policy_defaults(void *spec)
{
    return mesh_dest_policy_defaults(spec);
}

static void policy_done(void *spec)
{
    mesh_dest_policy_done(spec);
}

static const char *policy_target(const void *spec)
{
    return ((const struct mesh_dest_policy *)spec)->service;
}

static int route_defaults(void *spec)
{
    return mesh_route_defaults(spec);
}

static void route_done(void *spec)
{
    mesh_route_done(spec);
}

static const char *route_target(const void *spec)
{
    return ((const struct mesh_route *)spec)->service;
}

static int authz_defaults(void *spec)
{
    return mesh_authz_defaults(spec);
}

static void authz_done(void *spec)
{
    mesh_authz_done(spec);
}

static const char *authz_target(const void *spec)
{
    return ((const struct mesh_authz *)spec)->service;
}

static const struct kind_ops kinds[] = {
    [MESH_RESOURCE_DESTINATION_POLICY] = {&mesh_dest_policy_schema, policy_defaults, policy_done,
                                          policy_target},
    [MESH_RESOURCE_ROUTE] = {&mesh_route_schema, route_defaults, route_done, route_target},
    [MESH_RESOURCE_AUTHORIZATION_POLICY] = {&mesh_authz_schema, authz_defaults, authz_done,
                                            authz_target},
};

/* The envelope; "spec" is decoded by the kind's schema once the kind is known. */
struct envelope {
    int kind;
    char *name;
    char *namespace;
    json_t *spec;
};

static int keep_json(struct mesh_cfg_ctx *ctx, json_t *v, void *field)
{
    if (!json_is_object(v)) {
        char got[64];
        mesh_cfg_describe(v, got, sizeof(got));
        mesh_cfg_error(ctx, "expected an object, got %s", got);
        return -EINVAL;
    }
    *(json_t **)field = json_incref(v);
    return 0;
}

static void drop_json(void *field)
{
    json_decref(*(json_t **)field);
}

#define E(m) MESH_CFG_FIELD(struct envelope, m)

static const struct mesh_cfg_field envelope_fields[] = {
    {.key = "kind",
     .type = MESH_CFG_ENUM,
     E(kind),
     .flags = MESH_CFG_REQUIRED,
     .choices = mesh_resource_kind_names},
    {.key = "name",
     .type = MESH_CFG_STRING,
     E(name),
     .flags = MESH_CFG_REQUIRED,
     .expect = "a resource name",
     .check = mesh_name_check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     E(namespace),
     .def = "default",
     .expect = "a namespace",
     .check = mesh_name_check_dns_label},
    {.key = "spec",
     .type = MESH_CFG_CUSTOM,
     E(spec),
     .flags = MESH_CFG_REQUIRED,
     .decode = keep_json,
     .free = drop_json},
    {0},
};

static const struct mesh_cfg_schema envelope_schema = {
    .size = sizeof(struct envelope),
    .fields = envelope_fields,
};

static void resource_done(struct mesh_resource *r)
{
    if (r->spec) {
        kinds[r->kind].done(r->spec);
        mesh_free(r->spec);
    }
    mesh_free(r->name);
    mesh_free(r->namespace);
}

struct mesh_resource_file *mesh_resource_file_ref(struct mesh_resource_file *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void mesh_resource_file_unref(struct mesh_resource_file *f)
{
    if (!f || atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < f->n; i++)
        resource_done(&f->v[i]);
    mesh_free(f->v);
    mesh_free(f);
}

/* Decodes one resource at the current path into r. Returns 0 or -EINVAL/-ENOMEM. */
static int decode_resource(struct mesh_cfg_ctx *ctx, json_t *json, struct mesh_resource *r)
{
    struct envelope env;
    int ret = -ENOMEM;
    if (mesh_cfg_defaults(&envelope_schema, &env) < 0)
        return -ENOMEM;
    if (mesh_cfg_decode(ctx, &envelope_schema, json, &env) < 0) {
        ret = -EINVAL;
        goto out;
    }
    const struct kind_ops *k = &kinds[env.kind];
    r->kind = env.kind;
    r->spec = mesh_malloc(k->schema->size);
    if (!r->spec || k->defaults(r->spec) < 0) {
        mesh_free(r->spec);
        r->spec = NULL;
        goto out;
    }
    size_t old = mesh_cfg_path_push_key(ctx, "spec");
    ret = mesh_cfg_decode(ctx, k->schema, env.spec, r->spec);
    mesh_cfg_path_pop(ctx, old);
    r->name = env.name;
    r->namespace = env.namespace;
    env.name = env.namespace = NULL;
out:
    mesh_cfg_free(&envelope_schema, &env);
    return ret;
}

/* One resource, or {"resources": [...]}, into the file (data). */
static int file_step(struct mesh_cfg_ctx *ctx, json_t *json, void *data)
{
    struct mesh_resource_file *f = data;
    int r = 0;
    json_t *list = json_is_object(json) ? json_object_get(json, "resources") : NULL;
    if (list && json_object_size(json) != 1) {
        mesh_cfg_error(ctx, "a file holds one resource or {\"resources\": [...]}, not both");
    } else if (list) {
        size_t old = mesh_cfg_path_push_key(ctx, "resources");
        size_t n = json_is_array(list) ? json_array_size(list) : 0;
        if (!json_is_array(list)) {
            mesh_cfg_error(ctx, "expected an array of resources");
        } else if (n > MESH_RESOURCES_PER_FILE_MAX) {
            mesh_cfg_error(ctx, "expected at most %d resources, got %zu",
                           MESH_RESOURCES_PER_FILE_MAX, n);
        } else if (n && !(f->v = mesh_calloc(n, sizeof(*f->v)))) {
            r = -ENOMEM;
        } else {
            for (size_t i = 0; i < n; i++) {
                size_t o2 = mesh_cfg_path_push_index(ctx, i);
                f->n = i + 1;
                if (decode_resource(ctx, json_array_get(list, i), &f->v[i]) == -ENOMEM)
                    r = -ENOMEM;
                mesh_cfg_path_pop(ctx, o2);
            }
        }
        mesh_cfg_path_pop(ctx, old);
    } else if (!(f->v = mesh_calloc(1, sizeof(*f->v)))) {
        r = -ENOMEM;
    } else {
        f->n = 1;
        if (decode_resource(ctx, json, &f->v[0]) == -ENOMEM)
            r = -ENOMEM;
    }
    return r;
}

int mesh_resource_file_parse(const char *name, const char *data, size_t len,
                             struct mesh_cfg_errors *errors, struct mesh_resource_file **ret)
{
    struct mesh_resource_file *f = mesh_calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    atomic_init(&f->refs, 1);
    int r = mesh_cfg_parse_doc(name, data, len, errors, file_step, f);
    if (r < 0) {
        mesh_resource_file_unref(f);
        return r;
    }
    *ret = f;
    return 0;
}

int mesh_resource_view_init(struct mesh_resource_view *v)
{
    memset(v, 0, sizeof(*v));
    for (int k = 0; k < MESH_RESOURCE_KINDS; k++)
        mesh_hmap_init(&v->by_service[k]);
    mesh_claims_init(&v->names);
    return 0;
}

static void free_values(struct mesh_hmap *m)
{
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(m, &i, &he))
        mesh_free(he->value);
    mesh_hmap_done(m);
}

void mesh_resource_view_done(struct mesh_resource_view *v)
{
    for (size_t i = 0; i < v->n_files; i++)
        mesh_resource_file_unref(v->files[i]);
    mesh_free(v->files);
    mesh_claims_done(&v->names);
    for (int k = 0; k < MESH_RESOURCE_KINDS; k++)
        free_values(&v->by_service[k]);
}

/* Index entries: the key beside a pointer to the spec. */
struct index_entry {
    const void *spec;
    const char *name; /* the resource's */
    const char *file;
    char key[];
};

int mesh_resource_view_add(struct mesh_resource_view *v, const char *file,
                           struct mesh_resource_file *f, mesh_resource_conflict_cb cb, void *data)
{
    int err = 0;
    struct mesh_resource_file **files = mesh_realloc(v->files, (v->n_files + 1) * sizeof(*files));
    if (!files)
        return -ENOMEM;
    v->files = files;
    v->files[v->n_files++] = mesh_resource_file_ref(f);
    for (size_t i = 0; i < f->n && err == 0; i++) {
        const struct mesh_resource *r = &f->v[i];
        char key[256], msg[512];
        snprintf(key, sizeof(key), "%s/%s/%s", mesh_resource_kind_names[r->kind], r->namespace,
                 r->name);
        const char *owner = mesh_claims_take(&v->names, key, file, &err);
        if (owner) {
            snprintf(msg, sizeof(msg), "%s: %s is already defined in '%s'; ignoring it here", file,
                     key, owner);
            cb(data, file, msg);
            continue;
        }
        v->count++;
        const char *target = kinds[r->kind].target(r->spec);
        snprintf(key, sizeof(key), "%s/%s", r->namespace, target ? target : r->name);
        struct mesh_hmap *index = &v->by_service[r->kind];
        const struct index_entry *old = mesh_hmap_get(index, key);
        if (old) {
            snprintf(msg, sizeof(msg),
                     "%s: %s '%s' targets service '%s', which already has one from '%s'; "
                     "ignoring it",
                     file, mesh_resource_kind_names[r->kind], r->name, key, old->file);
            cb(data, file, msg);
            continue;
        }
        size_t len = strlen(key) + 1;
        struct index_entry *e = mesh_malloc(sizeof(*e) + len);
        if (!e) {
            err = -ENOMEM;
            break;
        }
        e->spec = r->spec;
        e->name = r->name;
        e->file = file;
        memcpy(e->key, key, len);
        if (mesh_hmap_put(index, e->key, e) < 0) {
            mesh_free(e);
            err = -ENOMEM;
            break;
        }
    }
    return err;
}

static const void *lookup(const struct mesh_resource_view *v, int kind, const char *ns,
                          const char *service)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", ns, service);
    const struct index_entry *e = mesh_hmap_get(&v->by_service[kind], key);
    return e ? e->spec : NULL;
}

const char *mesh_resource_view_route_name(const struct mesh_resource_view *v, const char *ns,
                                          const char *service)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", ns, service);
    const struct index_entry *e = mesh_hmap_get(&v->by_service[MESH_RESOURCE_ROUTE], key);
    return e ? e->name : NULL;
}

const struct mesh_dest_policy *mesh_resource_view_policy(const struct mesh_resource_view *v,
                                                         const char *ns, const char *service)
{
    return lookup(v, MESH_RESOURCE_DESTINATION_POLICY, ns, service);
}

const struct mesh_authz *mesh_resource_view_authz(const struct mesh_resource_view *v,
                                                  const char *ns, const char *service)
{
    return lookup(v, MESH_RESOURCE_AUTHORIZATION_POLICY, ns, service);
}

const struct mesh_route *mesh_resource_view_route(const struct mesh_resource_view *v,
                                                  const char *ns, const char *service)
{
    return lookup(v, MESH_RESOURCE_ROUTE, ns, service);
}
