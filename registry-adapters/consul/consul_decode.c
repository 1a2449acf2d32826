#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/atom.h"
#include "common/hmap.h"
#include "common/names.h"
#include "common/spiffe.h"
#include "common/strutil.h"
#include "registry-adapters/consul/consul_decode-int.h"

#define MAX_SERVICES 100000

static int fail(char *err, size_t errlen, const char *what, const char *name)
{
    if (name)
        snprintf(err, errlen, "%s '%.64s'", what, name);
    else
        snprintf(err, errlen, "%s", what);
    return -EINVAL;
}

static bool has_tag(json_t *tags, const char *tag)
{
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        if (json_is_string(t) && strcmp(json_string_value(t), tag) == 0)
            return true;
    }
    return false;
}

int mesh_consul_decode_services(const char *data, size_t len, const char *tag,
                                struct mesh_consul_names *ret, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    struct mesh_consul_names out = {0};
    int r = 0;
    if (!root)
        return json_error_code(&je) == json_error_out_of_memory
                   ? -ENOMEM
                   : fail(err, errlen, "not JSON:", je.text);
    if (!json_is_object(root)) {
        r = fail(err, errlen, "expected an object of service names", NULL);
        goto out;
    }
    if (json_object_size(root) > MAX_SERVICES) {
        r = fail(err, errlen, "more than 100000 services", NULL);
        goto out;
    }
    out.v = mesh_calloc(json_object_size(root) + 1, sizeof(*out.v));
    if (!out.v) {
        r = -ENOMEM;
        goto out;
    }
    const char *name;
    json_t *tags;
    json_object_foreach(root, name, tags)
    {
        if (!json_is_array(tags) && !json_is_null(tags)) {
            r = fail(err, errlen, "expected a list of tags for", name);
            goto out;
        }
        if (tag && !has_tag(tags, tag))
            continue;
        if (!mesh_name_is_dns_label(name)) {
            if (!out.skipped++)
                snprintf(out.first_skipped, sizeof(out.first_skipped), "%s", name);
            continue;
        }
        if (!(out.v[out.n] = mesh_strdup(name))) {
            r = -ENOMEM;
            goto out;
        }
        out.n++;
    }
    qsort(out.v, out.n, sizeof(*out.v), mesh_str_ptr_cmp);
    *ret = out;
    out = (struct mesh_consul_names){0};
out:
    mesh_consul_names_done(&out);
    json_decref(root);
    return r;
}

void mesh_consul_names_done(struct mesh_consul_names *n)
{
    for (size_t i = 0; i < n->n; i++)
        mesh_free(n->v[i]);
    mesh_free(n->v);
    *n = (struct mesh_consul_names){0};
}

/* ---- health ---- */

enum check_state { PASSING, WARNING, CRITICAL };

/* The worst state of the checks; -1 when a check is malformed. */
static int worst_check(json_t *checks)
{
    int worst = PASSING;
    size_t i;
    json_t *c;
    if (!checks || json_is_null(checks))
        return PASSING;
    if (!json_is_array(checks))
        return -1;
    json_array_foreach(checks, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "Status"));
        if (!st)
            return -1;
        int s = strcmp(st, "passing") == 0   ? PASSING
                : strcmp(st, "warning") == 0 ? WARNING
                                             : CRITICAL; /* critical, maintenance, unknown */
        if (s > worst)
            worst = s;
    }
    return worst;
}

static const char *meta_str(json_t *obj, const char *key)
{
    json_t *meta = json_object_get(obj, "Meta");
    return json_is_object(meta) ? json_string_value(json_object_get(meta, key)) : NULL;
}

static long weight_of(json_t *svc, const char *which)
{
    json_t *w = json_object_get(json_object_get(svc, "Weights"), which);
    if (!w || json_is_null(w))
        return 1;
    return json_is_integer(w) ? (long)json_integer_value(w) : -1;
}

static enum mesh_protocol protocol_of(json_t *svc)
{
    const char *p = meta_str(svc, MESH_CONSUL_META_PROTOCOL);
    for (size_t i = 0; p && mesh_protocol_names[i]; i++) {
        if (strcmp(p, mesh_protocol_names[i]) == 0)
            return (enum mesh_protocol)i;
    }
    return MESH_PROTO_TCP;
}

/* One instance while an answer is decoded. */
struct item {
    struct mesh_endpoint ep;
    const char *ns; /* borrowed: from the answer, or the options */
    size_t pos;     /* in the answer */
    enum mesh_protocol protocol;
    char *identity; /* owned; NULL: the default */
};

static bool same_identity(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static void item_done(struct item *it)
{
    mesh_endpoint_done(&it->ep);
    mesh_free(it->identity);
    it->identity = NULL;
}

/* Fills `it` from one entry; 1 when used, 0 when left out (counted), <0 on error. */
static int instance(json_t *e, const struct mesh_consul_health_options *o,
                    struct mesh_consul_instances *out, struct item *it, char *err, size_t errlen)
{
    struct mesh_endpoint *ep = &it->ep;
    json_t *node = json_object_get(e, "Node"), *svc = json_object_get(e, "Service");
    if (!json_is_object(node) || !json_is_object(svc))
        return fail(err, errlen, "an entry without a Node and a Service object", NULL);
    int state = worst_check(json_object_get(e, "Checks"));
    if (state < 0)
        return fail(err, errlen, "an entry with malformed Checks", NULL);
    long weight = weight_of(svc, state == WARNING ? "Warning" : "Passing");
    if (weight < 0)
        return fail(err, errlen, "an entry with malformed Weights", NULL);
    if (state == CRITICAL || (state == WARNING && !o->include_warning) || weight == 0) {
        out->unhealthy++;
        return 0;
    }
    json_t *meta = json_object_get(svc, "Meta");
    const char *ns = NULL;
    if (mesh_consul_meta_namespace(meta, &ns) < 0) {
        /* Never moved to the default namespace: that would be another service. */
        if (!out->bad_namespace++)
            snprintf(out->first_bad_namespace, sizeof(out->first_bad_namespace), "%s",
                     ns ? ns : "(not a string)");
        return 0;
    }
    it->ns = ns ? ns : (o->namespace ? o->namespace : "default");
    char id[MESH_SPIFFE_ID_MAX + 1];
    const char *bad = NULL;
    int idr = mesh_consul_meta_identity(meta, o->trust_domain, it->ns, o->service ? o->service : "",
                                        id, sizeof(id), &bad);
    if (idr < 0) {
        /* Neither the default ID nor another: the registry vouched for none. */
        if (!out->bad_identity++)
            snprintf(out->first_bad_identity, sizeof(out->first_bad_identity), "%s", bad);
        return 0;
    }
    it->protocol = protocol_of(svc);
    const char *addr = json_string_value(json_object_get(svc, "Address"));
    if (!addr || !addr[0])
        addr = json_string_value(json_object_get(node, "Address"));
    json_t *port = json_object_get(svc, "Port");
    json_int_t p = json_is_integer(port) ? json_integer_value(port) : 0;
    memset(ep, 0, sizeof(*ep));
    if (!addr || p < 1 || p > 65535) {
        out->skipped++;
        return 0;
    }
    if (mesh_ipport_from_ip(addr, (uint16_t)p, &ep->addr) < 0) {
        /* Consul allows names in Service.Address and Node.Address: the agent resolves them. */
        int h = mesh_endpoint_set_host(ep, addr);
        if (h == -ENOMEM)
            return h;
        if (h < 0) {
            out->skipped++;
            return 0;
        }
        ep->addr.port = (uint16_t)p;
    }
    ep->weight = (uint32_t)(weight > MESH_WEIGHT_MAX ? MESH_WEIGHT_MAX : weight);
    ep->health = MESH_EP_READY | MESH_EP_SERVING;
    const char *mp = meta_str(svc, MESH_CONSUL_META_PORT);
    uint64_t mport = 0;
    if (mp && mesh_parse_u64(mp, strlen(mp), &mport) == 0 && mport >= 1 && mport <= 65535)
        ep->mesh_port = (uint16_t)mport;
    const char *zone = o->zone_key ? meta_str(svc, o->zone_key) : NULL;
    if (!zone && o->zone_key)
        zone = meta_str(node, o->zone_key);
    const char *nname = json_string_value(json_object_get(node, "Node"));
    if ((zone && zone[0] && !(ep->zone = mesh_atom(zone))) ||
        (nname && !(ep->node = mesh_atom(nname))) ||
        mesh_consul_meta_labels(meta, &ep->labels) < 0 ||
        (idr > 0 && !(it->identity = mesh_strdup(id)))) {
        mesh_endpoint_done(ep);
        return -ENOMEM;
    }
    return 1;
}

/* By namespace, address, then node name, so that duplicates resolve the same way every time. */
static int cmp_item(const void *a, const void *b)
{
    const struct item *p = a, *q = b;
    int c = strcmp(p->ns, q->ns);
    if (c)
        return c;
    const struct mesh_endpoint *x = &p->ep, *y = &q->ep;
    c = mesh_endpoint_addr_cmp(x, y);
    if (c || !x->node || !y->node)
        return c ? c : (x->node != NULL) - (y->node != NULL);
    return strcmp(x->node, y->node);
}

/* Moves the sorted items into `out`: one endpoint per address:port in each namespace (the
 * instance on the node sorted first), one group per namespace. */
static int gather(struct item *items, size_t n, struct mesh_consul_instances *out)
{
    /* A namespace's protocol is that of its first instance in the answer, even one that
     * shares its address with another and is dropped below. */
    /* Its identity too: an instance claiming another is left out, before duplicates are. */
    size_t k = 0;
    for (size_t j = 0, end; j < n; j = end) {
        size_t best = j;
        for (end = j + 1; end < n && strcmp(items[end].ns, items[j].ns) == 0; end++) {
            if (items[end].pos < items[best].pos)
                best = end;
        }
        for (size_t i = j; i < end; i++) {
            items[i].protocol = items[best].protocol;
            if (i != best && !same_identity(items[i].identity, items[best].identity)) {
                if (!out->identity_conflicts++)
                    snprintf(out->first_conflict, sizeof(out->first_conflict), "%s",
                             items[i].identity ? items[i].identity : "(the default ID)");
                items[i].pos = SIZE_MAX; /* marked: left out below */
            }
        }
    }
    for (size_t j = 0; j < n; j++) {
        if (items[j].pos == SIZE_MAX ||
            (k && strcmp(items[k - 1].ns, items[j].ns) == 0 &&
             mesh_endpoint_addr_cmp(&items[k - 1].ep, &items[j].ep) == 0)) {
            out->skipped += items[j].pos != SIZE_MAX;
            item_done(&items[j]);
            continue;
        }
        items[k++] = items[j];
    }
    out->groups = mesh_calloc(k + 1, sizeof(*out->groups));
    if (!out->groups) {
        for (size_t j = 0; j < k; j++)
            item_done(&items[j]);
        return -ENOMEM;
    }
    for (size_t j = 0; j < k; j++) {
        struct mesh_consul_group *g = out->n_groups ? &out->groups[out->n_groups - 1] : NULL;
        if (!g || strcmp(g->namespace, items[j].ns) != 0) {
            g = &out->groups[out->n_groups];
            if (!(g->namespace = mesh_strdup(items[j].ns))) {
                for (size_t i = j; i < k; i++)
                    item_done(&items[i]);
                return -ENOMEM;
            }
            out->n_groups++;
            g->first = out->n;
            g->protocol = items[j].protocol;
            g->identity = items[j].identity; /* every item of the group names the same */
            items[j].identity = NULL;
        }
        g->n++;
        out->v[out->n++] = items[j].ep;
        mesh_free(items[j].identity);
    }
    out->protocol = out->n_groups ? out->groups[0].protocol : MESH_PROTO_TCP;
    return 0;
}

int mesh_consul_decode_health(const char *data, size_t len,
                              const struct mesh_consul_health_options *opts,
                              struct mesh_consul_instances *ret, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    struct mesh_consul_instances out = {0};
    struct item *items = NULL;
    size_t n_items = 0;
    int r = 0;
    if (!root)
        return json_error_code(&je) == json_error_out_of_memory
                   ? -ENOMEM
                   : fail(err, errlen, "not JSON:", je.text);
    if (!json_is_array(root)) {
        r = fail(err, errlen, "expected a list of service instances", NULL);
        goto out;
    }
    if (json_array_size(root) > MESH_ENDPOINTS_MAX) {
        r = fail(err, errlen, "more than 100000 instances", NULL);
        goto out;
    }
    out.v = mesh_calloc(json_array_size(root) + 1, sizeof(*out.v));
    items = mesh_calloc(json_array_size(root) + 1, sizeof(*items));
    if (!out.v || !items) {
        r = -ENOMEM;
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(root, i, e)
    {
        items[n_items].pos = i;
        r = instance(e, opts, &out, &items[n_items], err, errlen);
        if (r < 0)
            goto out;
        n_items += (size_t)r;
    }
    qsort(items, n_items, sizeof(*items), cmp_item);
    r = gather(items, n_items, &out);
    n_items = 0; /* gather took (or freed) every endpoint */
    if (r < 0)
        goto out;
    *ret = out;
    out = (struct mesh_consul_instances){0};
out:
    for (size_t j = 0; j < n_items; j++)
        item_done(&items[j]);
    mesh_free(items);
    mesh_consul_instances_done(&out);
    json_decref(root);
    return r;
}

void mesh_consul_instances_done(struct mesh_consul_instances *in)
{
    for (size_t i = 0; i < in->n; i++)
        mesh_endpoint_done(&in->v[i]);
    mesh_free(in->v);
    for (size_t i = 0; i < in->n_groups; i++) {
        mesh_free(in->groups[i].namespace);
        mesh_free(in->groups[i].identity);
    }
    mesh_free(in->groups);
    *in = (struct mesh_consul_instances){0};
}

/* ---- digests ---- */

/* One more piece into a chain of keyed SipHash: each piece is hashed with the chain so far as
 * its key, so pieces of different lengths cannot run into each other. */
static uint64_t mix(uint64_t h, uint64_t k1, const void *p, size_t len)
{
    return mesh_siphash13(p, len, h, k1);
}

static uint64_t mix_str(uint64_t h, uint64_t k1, const char *s)
{
    /* NULL hashes as no bytes, "" as its terminator: the two differ. */
    return s ? mix(h, k1, s, strlen(s) + 1) : mix(h, k1, "", 0);
}

uint64_t mesh_consul_names_digest(const struct mesh_consul_names *n, const uint64_t key[2])
{
    uint64_t h = mix(key[0], key[1], &n->n, sizeof(n->n));
    for (size_t i = 0; i < n->n; i++)
        h = mix_str(h, key[1], n->v[i]);
    return h;
}

uint64_t mesh_consul_instances_digest(const struct mesh_consul_instances *in, const uint64_t key[2])
{
    /* What was refused too: a new refusal is news to log and count. */
    uint64_t head[4] = {in->n, in->n_groups, in->bad_identity, in->identity_conflicts};
    uint64_t h = mix(key[0], key[1], head, sizeof(head));
    h = mix_str(h, key[1], in->first_bad_identity);
    h = mix_str(h, key[1], in->first_conflict);
    for (size_t i = 0; i < in->n_groups; i++) {
        const struct mesh_consul_group *g = &in->groups[i];
        uint64_t gh[3] = {g->first, g->n, (uint64_t)g->protocol};
        h = mix(h, key[1], gh, sizeof(gh));
        h = mix_str(h, key[1], g->namespace);
        h = mix_str(h, key[1], g->identity);
    }
    for (size_t i = 0; i < in->n; i++) {
        const struct mesh_endpoint *e = &in->v[i];
        unsigned char fixed[26];
        memcpy(fixed, e->addr.ip, 16);
        memcpy(fixed + 16, &e->addr.port, 2);
        fixed[18] = e->addr.family;
        memcpy(fixed + 19, &e->mesh_port, 2);
        fixed[21] = e->health;
        memcpy(fixed + 22, &e->weight, 4);
        h = mix(h, key[1], fixed, sizeof(fixed));
        h = mix_str(h, key[1], e->zone);
        h = mix_str(h, key[1], e->node);
        h = mix_str(h, key[1], e->host);
        h = mix(h, key[1], &e->labels.n, sizeof(e->labels.n));
        for (size_t j = 0; j < e->labels.n; j++) {
            h = mix_str(h, key[1], e->labels.v[j].key);
            h = mix_str(h, key[1], e->labels.v[j].value);
        }
    }
    return h;
}
