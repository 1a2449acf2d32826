#define MESH_LOG_MODULE "agent"

#include "agent/local_state.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "agent/agent-int.h"
#include "common/addr.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/names.h"
#include "common/spiffe.h"

/* ---- encoding ---- */

static json_t *addr_json(const struct mesh_addr *a)
{
    char s[MESH_ADDR_STRLEN];
    return json_string(mesh_addr_port(a) ? mesh_addr_format(a, s, sizeof(s)) : "");
}

static json_t *local_json(const struct mesh_local_service *l)
{
    json_t *ups = json_array();
    for (size_t u = 0; ups && u < l->n_upstreams; u++) {
        const struct mesh_upstream *up = &l->upstreams[u];
        json_array_append_new(ups,
                              json_pack("{s:s, s:s, s:o, s:s}", "service", up->service, "namespace",
                                        up->namespace, "bind", addr_json(&up->bind), "protocol",
                                        mesh_protocol_names[up->protocol]));
    }
    /* Its labels too: they are on the endpoint this host publishes (a Consul registration's
     * Meta), which a Route's subsets pick. */
    json_t *labels = json_object();
    for (size_t i = 0; labels && i < l->labels.n; i++)
        json_object_set_new(labels, l->labels.v[i].key, json_string(l->labels.v[i].value));
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:s*, s:o, s:o}", "name", l->name, "namespace",
                     l->namespace, "protocol", mesh_protocol_names[l->protocol], "address",
                     addr_json(&l->addr), "inbound", addr_json(&l->inbound), "source",
                     l->source ? l->source : "", "identity", l->identity, "labels",
                     labels ? labels : json_object(), "upstreams", ups ? ups : json_array());
}

void mesh_local_state_encode(const struct mesh_local_state_entry *v, size_t n, struct mesh_buf *b)
{
    json_t *regs = json_array();
    for (size_t i = 0; regs && i < n; i++) {
        json_t *list = json_array();
        for (size_t k = 0; list && k < v[i].n; k++)
            json_array_append_new(list, local_json(&v[i].locals[k]));
        json_array_append_new(regs, json_pack("{s:s, s:o}", "registry", v[i].registry, "services",
                                              list ? list : json_array()));
    }
    json_t *doc = regs ? json_pack("{s:i, s:o}", "version", 1, "registries", regs) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (!text && !b->err)
        b->err = -ENOMEM;
    else if (text)
        mesh_buf_append_str(b, text);
    mesh_free(text);
    json_decref(doc);
}

/* ---- decoding ---- */

struct upstream_doc {
    char *service;
    char *namespace;
    char *bind;
    int protocol;
};

struct local_doc {
    char *name;
    char *namespace;
    int protocol;
    char *address;
    char *inbound;
    char *source;
    char *identity;
    struct mesh_labels labels;
    struct mesh_cfg_list upstreams; /* struct upstream_doc */
};

struct registry_doc {
    char *registry;
    struct mesh_cfg_list services; /* struct local_doc */
};

struct state_doc {
    int version;
    struct mesh_cfg_list registries; /* struct registry_doc */
};

static const char *check_addr(const char *s)
{
    struct mesh_addr a;
    const char *why = "not an address";
    if (!s[0])
        return NULL; /* none */
    if (mesh_addr_parse(s, &a, &why) < 0)
        return why;
    if (mesh_addr_is_unix(&a))
        return "not an IP address and port";
    /* What this file holds as "none" is "", never port 0 (addr_json). */
    return mesh_addr_port(&a) ? NULL : "port 0 (an address without one is \"\")";
}

static const char *check_identity(const char *s)
{
    const char *why = "not a SPIFFE ID";
    return mesh_spiffe_id_valid(s, strlen(s), NULL, &why) ? NULL : why;
}

#define U(m) MESH_CFG_FIELD(struct upstream_doc, m)
static const struct mesh_cfg_field upstream_fields[] = {
    {.key = "service",
     .type = MESH_CFG_STRING,
     U(service),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     U(namespace),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "bind",
     .type = MESH_CFG_STRING,
     U(bind),
     .flags = MESH_CFG_REQUIRED | MESH_CFG_NONEMPTY,
     .check = check_addr},
    {.key = "protocol",
     .type = MESH_CFG_ENUM,
     U(protocol),
     .choices = mesh_protocol_names,
     .def = "tcp"},
    {0},
};
static const struct mesh_cfg_schema upstream_schema = {.size = sizeof(struct upstream_doc),
                                                       .fields = upstream_fields};

#define L(m) MESH_CFG_FIELD(struct local_doc, m)
static const struct mesh_cfg_field local_fields[] = {
    {.key = "name",
     .type = MESH_CFG_STRING,
     L(name),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "namespace",
     .type = MESH_CFG_STRING,
     L(namespace),
     .flags = MESH_CFG_REQUIRED,
     .check = mesh_name_check_dns_label},
    {.key = "protocol",
     .type = MESH_CFG_ENUM,
     L(protocol),
     .choices = mesh_protocol_names,
     .def = "tcp"},
    {.key = "address",
     .type = MESH_CFG_STRING,
     L(address),
     .flags = MESH_CFG_REQUIRED | MESH_CFG_NONEMPTY,
     .check = check_addr},
    {.key = "inbound", .type = MESH_CFG_STRING, L(inbound), .def = "", .check = check_addr},
    {.key = "source", .type = MESH_CFG_STRING, L(source), .def = ""},
    {.key = "identity", .type = MESH_CFG_STRING, L(identity), .check = check_identity},
    {.key = "labels", .type = MESH_CFG_LABELS, L(labels)},
    {.key = "upstreams",
     .type = MESH_CFG_LIST,
     L(upstreams),
     .schema = &upstream_schema,
     .max = 4096},
    {0},
};
static const struct mesh_cfg_schema local_schema = {.size = sizeof(struct local_doc),
                                                    .fields = local_fields};

#define R(m) MESH_CFG_FIELD(struct registry_doc, m)
static const struct mesh_cfg_field registry_fields[] = {
    {.key = "registry",
     .type = MESH_CFG_STRING,
     R(registry),
     .flags = MESH_CFG_REQUIRED | MESH_CFG_NONEMPTY},
    {.key = "services",
     .type = MESH_CFG_LIST,
     R(services),
     .schema = &local_schema,
     .flags = MESH_CFG_REQUIRED,
     .max = 65536},
    {0},
};
static const struct mesh_cfg_schema registry_schema = {.size = sizeof(struct registry_doc),
                                                       .fields = registry_fields};

#define D(m) MESH_CFG_FIELD(struct state_doc, m)
static const struct mesh_cfg_field doc_fields[] = {
    {.key = "version",
     .type = MESH_CFG_INT,
     D(version),
     .flags = MESH_CFG_REQUIRED,
     .min = 1,
     .max = 1},
    {.key = "registries",
     .type = MESH_CFG_LIST,
     D(registries),
     .schema = &registry_schema,
     .flags = MESH_CFG_REQUIRED,
     .max = 64},
    {0},
};
static const struct mesh_cfg_schema doc_schema = {.size = sizeof(struct state_doc),
                                                  .fields = doc_fields};

void mesh_local_state_free(struct mesh_local_service *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mesh_local_service_done(&v[i]);
    mesh_free(v);
}

/* Converts a decoded (valid) service. Returns 0 or -ENOMEM. */
static int convert(const struct local_doc *d, struct mesh_local_service *out)
{
    const char *why;
    memset(out, 0, sizeof(*out));
    out->protocol = (enum mesh_protocol)d->protocol;
    mesh_addr_parse(d->address, &out->addr, &why);
    if (d->inbound[0])
        mesh_addr_parse(d->inbound, &out->inbound, &why);
    if (!(out->name = mesh_strdup(d->name)) || !(out->namespace = mesh_strdup(d->namespace)) ||
        !(out->source = mesh_strdup(d->source)) ||
        (d->identity && !(out->identity = mesh_strdup(d->identity))) ||
        mesh_labels_copy(&out->labels, &d->labels) < 0)
        goto oom;
    if (d->upstreams.n && !(out->upstreams = mesh_calloc(d->upstreams.n, sizeof(*out->upstreams))))
        goto oom;
    for (size_t i = 0; i < d->upstreams.n; i++) {
        const struct upstream_doc *u = (const struct upstream_doc *)d->upstreams.items + i;
        struct mesh_upstream *o = &out->upstreams[out->n_upstreams++];
        o->protocol = (enum mesh_protocol)u->protocol;
        mesh_addr_parse(u->bind, &o->bind, &why);
        if (!(o->service = mesh_strdup(u->service)) || !(o->namespace = mesh_strdup(u->namespace)))
            goto oom;
    }
    return 0;
oom:
    mesh_local_service_done(out);
    return -ENOMEM;
}

int mesh_local_state_parse(const char *name, const char *data, size_t len, const char *registry,
                           struct mesh_cfg_errors *errors, struct mesh_local_service **ret,
                           size_t *ret_n)
{
    struct mesh_cfg_ctx ctx;
    struct state_doc doc;
    struct mesh_local_service *v = NULL;
    size_t n = 0;
    json_t *json = NULL;
    mesh_cfg_ctx_init(&ctx, name, errors);
    int r = mesh_cfg_defaults(&doc_schema, &doc);
    if (r < 0)
        return r;
    if ((r = mesh_cfg_load_buffer(&ctx, data, len, &json)) < 0 ||
        (r = mesh_cfg_decode(&ctx, &doc_schema, json, &doc)) < 0)
        goto out;
    for (size_t i = 0; i < doc.registries.n; i++) {
        const struct registry_doc *reg = (const struct registry_doc *)doc.registries.items + i;
        if (strcmp(reg->registry, registry) != 0)
            continue;
        mesh_local_state_free(v, n); /* the last entry for a registry is the one */
        v = NULL;
        n = 0;
        if (reg->services.n && !(v = mesh_calloc(reg->services.n, sizeof(*v)))) {
            r = -ENOMEM;
            goto out;
        }
        for (; n < reg->services.n; n++) {
            if ((r = convert((const struct local_doc *)reg->services.items + n, &v[n])) < 0)
                goto out;
        }
    }
    *ret = v;
    *ret_n = n;
    v = NULL;
    n = 0;
out:
    mesh_local_state_free(v, n);
    mesh_cfg_free(&doc_schema, &doc);
    json_decref(json);
    return r;
}

/* ---- the agent's side ---- */

static void state_path(const struct mesh_agent *a, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", a->cfg->state_dir, MESH_LOCAL_STATE_FILE);
}

void mesh_agent__save_locals(struct mesh_agent *a)
{
    struct mesh_local_state_entry v[MESH_AGENT_REGISTRIES_MAX];
    size_t n = 0;
    for (size_t i = 0; i < a->n_slots && n < MESH_AGENT_REGISTRIES_MAX; i++) {
        if (!a->slots[i] || a->slots[i]->stopping)
            continue;
        v[n++] = (struct mesh_local_state_entry){a->slots[i]->rc->name, a->slots[i]->locals,
                                                 a->slots[i]->n_locals};
    }
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_LOCAL_STATE_MAX);
    mesh_local_state_encode(v, n, &b);
    if (b.err || (a->locals_saved && strcmp(a->locals_saved, b.data) == 0)) {
        mesh_buf_done(&b);
        return; /* unchanged (or out of memory: the next change tries again) */
    }
    char path[4200];
    state_path(a, path, sizeof(path));
    /* Small, and written when this host's services change: on the loop, as the other
     * state files are. */
    int r = mesh_fs_write_atomic(path, b.data, b.len, 0600);
    if (r < 0) {
        mesh_log_warn("cannot keep this host's services in '%s': %s", path, strerror(-r));
        mesh_buf_done(&b);
        return;
    }
    mesh_free(a->locals_saved);
    a->locals_saved = mesh_buf_steal(&b, NULL);
}

void mesh_agent__restore_locals(struct mesh_agent *a)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    state_path(a, path, sizeof(path));
    int r = mesh_fs_read_file(path, MESH_LOCAL_STATE_MAX, &text, &len);
    if (r == -ENOENT)
        return;
    if (r < 0) {
        mesh_log_warn("cannot read '%s': %s; no local services restored", path, strerror(-r));
        return;
    }
    for (size_t i = 0; i < a->n_slots; i++) {
        struct slot *s = a->slots[i];
        struct mesh_cfg_errors errors = {0};
        struct mesh_local_service *v = NULL;
        size_t n = 0;
        r = mesh_local_state_parse(path, text, len, s->rc->name, &errors, &v, &n);
        if (r < 0) {
            for (size_t k = 0; k < errors.n; k++)
                mesh_log_warn("%s", errors.v[k]);
            mesh_log_warn("ignoring the last-known-good local services '%s'", path);
            mesh_cfg_errors_done(&errors);
            break;
        }
        mesh_cfg_errors_done(&errors);
        if (!n)
            continue;
        mesh_local_state_free(s->locals, s->n_locals);
        s->locals = v;
        s->n_locals = n;
        mesh_log_info("registry '%s': %zu local services from the last-known-good state until "
                      "it syncs",
                      s->rc->name, n);
    }
    mesh_free(text);
}
