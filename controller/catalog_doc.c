#define MESH_LOG_MODULE "catalog"

/*
 * The registry's catalog (controller/catalog-int.h), kept up to date service by service: a
 * node's change marks the services it reports, or reported, and only those are built again,
 * from the nodes that report them (in the order of their names, so a service built twice
 * from the same reports is the same object). Answers are built once per index and "since",
 * and shared by every agent that asks the same.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "controller/catalog-int.h"

#define REMOVED_MAX 100000 /* removals remembered; past it, older agents get everything */

/* "ns/name" of a reported service into key[200]. */
static void service_key(const json_t *s, char key[200])
{
    snprintf(key, 200, "%s/%s", json_string_value(json_object_get(s, "namespace")),
             json_string_value(json_object_get(s, "name")));
}

int mesh_ctl__catalog_node_index(struct mesh_ctl_catalog *c, const struct mesh_ctl_catalog_entry *e,
                                 bool in)
{
    size_t i;
    json_t *s;
    json_array_foreach(e->services, i, s)
    {
        char key[200];
        service_key(s, key);
        if (json_object_set_new(c->dirty, key, json_true()) < 0)
            return -ENOMEM;
        json_t *set = json_object_get(c->by_service, key);
        if (in && !set) {
            set = json_object();
            if (!set || json_object_set_new(c->by_service, key, set) < 0)
                return -ENOMEM;
        }
        if (in && json_object_set_new(set, e->node, json_true()) < 0)
            return -ENOMEM;
        if (!in && set) {
            json_object_del(set, e->node);
            if (json_object_size(set) == 0)
                json_object_del(c->by_service, key);
        }
    }
    return 0;
}

static json_t *endpoint(const struct mesh_ctl_catalog_entry *e, const json_t *s)
{
    json_t *ep = json_pack("{s:s, s:O, s:s}", "address", e->address, "port",
                           json_object_get(s, "port"), "node", e->node);
    const char *health = json_string_value(json_object_get(s, "health"));
    json_t *labels = json_object_get(s, "labels");
    if (!ep)
        return NULL;
    int r = 0;
    if (e->inbound_port > 0)
        r |= json_object_set_new(ep, "mesh_port", json_integer(e->inbound_port));
    if (e->zone)
        r |= json_object_set_new(ep, "zone", json_string(e->zone));
    if (e->lapsed)
        health = "unhealthy";
    if (health && strcmp(health, "healthy") != 0)
        r |= json_object_set_new(ep, "health", json_string(health));
    if (json_object_size(labels))
        r |= json_object_set(ep, "labels", labels);
    if (r < 0) {
        json_decref(ep);
        return NULL;
    }
    return ep;
}

/* Adds the endpoints and identity of node e's instances of service `key` to svc, created on
 * the first. Returns 0 or -ENOMEM. */
static int add_instances(json_t **svc, const struct mesh_ctl_catalog_entry *e, const char *key)
{
    size_t i;
    json_t *s;
    json_array_foreach(e->services, i, s)
    {
        char k[200];
        service_key(s, k);
        if (strcmp(k, key) != 0)
            continue;
        if (!*svc) {
            const char *proto = json_string_value(json_object_get(s, "protocol"));
            *svc = json_pack("{s:O, s:O, s:s, s:[], s:[]}", "namespace",
                             json_object_get(s, "namespace"), "name", json_object_get(s, "name"),
                             "protocol", proto ? proto : "tcp", "endpoints", "identities");
            if (!*svc)
                return -ENOMEM;
        }
        json_t *ep = endpoint(e, s), *ids = json_object_get(*svc, "identities");
        if (!ep || json_array_append_new(json_object_get(*svc, "endpoints"), ep) < 0)
            return -ENOMEM;
        json_t *id = json_object_get(s, "identity");
        bool known = false;
        size_t j;
        json_t *v;
        json_array_foreach(ids, j, v) known |= json_equal(v, id);
        if (!known && json_array_append(ids, id) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Service `key` as its nodes report it now (*ret NULL: none does). Returns 0 or -ENOMEM. */
static int build_service(struct mesh_ctl_catalog *c, const char *key, json_t **ret)
{
    json_t *set = json_object_get(c->by_service, key), *svc = NULL;
    size_t n = json_object_size(set), k = 0;
    const char **names = n ? mesh_calloc(n, sizeof(*names)) : NULL;
    const char *node;
    json_t *v;
    int r = n && !names ? -ENOMEM : 0;
    json_object_foreach(set, node, v)
    {
        if (names)
            names[k++] = node;
    }
    if (names)
        qsort(names, n, sizeof(*names), by_name);
    for (k = 0; r == 0 && k < n; k++) {
        const struct mesh_ctl_catalog_entry *e = mesh_hmap_get(&c->nodes, names[k]);
        if (e)
            r = add_instances(&svc, e, key);
    }
    mesh_free(names);
    if (r < 0) {
        json_decref(svc);
        return r;
    }
    *ret = svc;
    return 0;
}

/* Notes every node's services again, and marks every service (after a failure to note
 * one change). Returns 0 or -ENOMEM. */
static int reindex(struct mesh_ctl_catalog *c)
{
    const char *key;
    json_t *v;
    json_object_clear(c->by_service);
    json_object_foreach(c->current, key, v)
    {
        if (json_object_set_new(c->dirty, key, json_true()) < 0)
            return -ENOMEM;
    }
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&c->nodes, &i, &he)) {
        if (mesh_ctl__catalog_node_index(c, he->value, true) < 0)
            return -ENOMEM;
    }
    c->reindex = false;
    return 0;
}

/* Builds the services marked since the last answer again and notes which changed. Returns
 * 0 or -ENOMEM (then the marks stay, for the next try). */
static int settle(struct mesh_ctl_catalog *c)
{
    if (c->built_index == c->index && !c->reindex)
        return 0;
    const char *key;
    json_t *mark, *tmp;
    if (c->reindex && reindex(c) < 0)
        return -ENOMEM;
    json_object_foreach_safe(c->dirty, tmp, key, mark)
    {
        json_t *svc = NULL;
        int r = build_service(c, key, &svc);
        if (r < 0)
            return r;
        json_t *was = json_object_get(c->current, key);
        if (svc && !json_equal(svc, was)) {
            if (json_object_set_new(c->modified, key, json_integer((json_int_t)c->index)) < 0 ||
                json_object_set_new(c->current, key, svc) < 0)
                return -ENOMEM;
            json_object_del(c->removed, key);
        } else if (!svc && was) {
            if (json_object_set_new(c->removed, key, json_integer((json_int_t)c->index)) < 0)
                return -ENOMEM;
            json_object_del(c->modified, key);
            json_object_del(c->current, key);
        } else {
            json_decref(svc);
        }
        json_object_del(c->dirty, key);
    }
    if (json_object_size(c->removed) > REMOVED_MAX) {
        json_object_clear(c->removed);
        c->floor = c->index; /* older agents get the whole catalog */
    }
    c->built_index = c->index;
    return 0;
}

static char *build_text(struct mesh_ctl_catalog *c, uint64_t since, bool full)
{
    json_t *list = json_array(), *gone = json_array();
    const char *key;
    json_t *v;
    int r = list && gone ? 0 : -ENOMEM;
    json_object_foreach(c->current, key, v)
    {
        uint64_t at = (uint64_t)json_integer_value(json_object_get(c->modified, key));
        if (r == 0 && (full || at > since) && json_array_append(list, v) < 0)
            r = -ENOMEM;
    }
    json_object_foreach(c->removed, key, v)
    {
        if (r == 0 && !full && (uint64_t)json_integer_value(v) > since &&
            json_array_append_new(gone, json_string(key)) < 0)
            r = -ENOMEM;
    }
    json_t *doc = r == 0 ? json_pack("{s:I, s:b, s:O, s:O}", "index", (json_int_t)c->index, "full",
                                     full, "services", list, "removed", gone)
                         : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    json_decref(list);
    json_decref(gone);
    return text;
}

static void texts_clear(struct mesh_ctl_catalog *c)
{
    for (size_t i = 0; i < MESH_CTL_CATALOG_TEXTS; i++) {
        mesh_free(c->texts[i].text);
        c->texts[i].text = NULL;
    }
    c->texts_next = 0;
}

int mesh_ctl__catalog_text(struct mesh_ctl_catalog *c, uint64_t since, const char **ret_text,
                           size_t *ret_len)
{
    int r = settle(c);
    if (r < 0)
        return r;
    bool full = since < c->floor || since > c->index;
    if (full)
        since = 0;
    if (c->texts_index != c->index) {
        texts_clear(c);
        c->texts_index = c->index;
    }
    struct mesh_ctl_catalog_text *t = NULL;
    for (size_t i = 0; i < MESH_CTL_CATALOG_TEXTS && !t; i++) {
        if (c->texts[i].text && c->texts[i].since == since)
            t = &c->texts[i];
    }
    if (!t) {
        char *text = build_text(c, since, full);
        if (!text)
            return -ENOMEM;
        t = &c->texts[c->texts_next];
        c->texts_next = (c->texts_next + 1) % MESH_CTL_CATALOG_TEXTS;
        mesh_free(t->text);
        t->text = text;
        t->len = strlen(text);
        t->since = since;
    }
    *ret_text = t->text;
    *ret_len = t->len;
    return 0;
}

int mesh_ctl__catalog_doc_init(struct mesh_ctl_catalog *c)
{
    c->current = json_object();
    c->modified = json_object();
    c->removed = json_object();
    c->by_service = json_object();
    c->dirty = json_object();
    if (!c->current || !c->modified || !c->removed || !c->by_service || !c->dirty) {
        mesh_ctl__catalog_doc_done(c);
        return -ENOMEM;
    }
    return 0;
}

void mesh_ctl__catalog_doc_done(struct mesh_ctl_catalog *c)
{
    json_decref(c->current);
    json_decref(c->modified);
    json_decref(c->removed);
    json_decref(c->by_service);
    json_decref(c->dirty);
    c->current = c->modified = c->removed = c->by_service = c->dirty = NULL;
    texts_clear(c);
}
