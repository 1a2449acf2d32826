#include "catalog/vip.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/hmap.h"
#include "common/names.h"

/* Fixed hash keys: a service's first-choice address must be the same in every run. */
#define VIP_K0 0x6d6573682d766970ull
#define VIP_K1 0x7669702d73746162ull
#define VIP_KEY_MAX 256

struct range {
    int family;
    uint8_t base[16];
    unsigned bits;         /* prefix length */
    uint64_t size;         /* usable indexes 1..size */
    struct mesh_hmap used; /* ip text -> entry */
    bool full;             /* no free address found since the last release */
};

struct entry {
    char *key;
    struct mesh_ipport ip[2]; /* [0] v4, [1] v6; family 0: none */
    char text[2][INET6_ADDRSTRLEN];
    uint64_t gone_since; /* 0: in the catalog */
};

struct mesh_vip_table {
    pthread_rwlock_t lock;
    struct range r[2];
    uint64_t keep_ms;
    struct mesh_hmap by_key; /* key -> entry */
    size_t unassigned[2];    /* after the last sync */
    uint64_t probes;
};

static int parse_range(const char *s, int family, struct range *ret, const char **why)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    unsigned max = family == AF_INET ? 32 : 128;
    *why = family == AF_INET ? "must be an IPv4 prefix like \"240.240.0.0/16\" (/8 to /30)"
                             : "must be an IPv6 prefix like \"2001:2::/48\" (/8 to /126)";
    if (!slash || (size_t)(slash - s) >= sizeof(ip))
        return -EINVAL;
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    char *end;
    unsigned long bits = strtoul(slash + 1, &end, 10);
    if (!slash[1] || *end || bits < 8 || bits > max - 2)
        return -EINVAL;
    memset(ret, 0, sizeof(*ret));
    if (inet_pton(family, ip, ret->base) != 1)
        return -EINVAL;
    /* Host bits must be zero: a typo in the prefix would otherwise go unnoticed. */
    unsigned nbytes = max / 8;
    for (unsigned i = 0; i < nbytes; i++) {
        unsigned first = i * 8;
        uint8_t mask = first >= bits       ? 0xff
                       : first + 8 <= bits ? 0
                                           : (uint8_t)(0xff >> (bits - first));
        if (ret->base[i] & mask) {
            *why = "has host bits set after the prefix length";
            return -EINVAL;
        }
    }
    ret->family = family;
    ret->bits = (unsigned)bits;
    unsigned host = max - (unsigned)bits;
    /* Index 0 is the network itself; the last (all ones) stays unused as a broadcast. */
    ret->size = host >= 32 ? 0xfffffffeull : (1ull << host) - 2;
    return 0;
}

const char *mesh_vip_check_range(const char *s, int family)
{
    struct range r;
    const char *why;
    return parse_range(s, family, &r, &why) < 0 ? why : NULL;
}

/* The address at index i (1..size) of r. */
static void range_addr(const struct range *r, uint64_t i, struct mesh_ipport *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->family = (uint8_t)r->family;
    unsigned n = r->family == AF_INET ? 4 : 16;
    memcpy(ret->ip, r->base, n);
    uint64_t carry = i;
    for (unsigned k = n; k-- > 0 && carry;) {
        uint64_t v = ret->ip[k] + (carry & 0xff);
        ret->ip[k] = (uint8_t)v;
        carry = (carry >> 8) + (v >> 8);
    }
}

static bool range_contains(const struct range *r, const struct mesh_ipport *ip)
{
    if (ip->family != r->family)
        return false;
    unsigned full = r->bits / 8, rest = r->bits % 8;
    if (memcmp(ip->ip, r->base, full) != 0)
        return false;
    if (rest && ((ip->ip[full] ^ r->base[full]) & (uint8_t)(0xff << (8 - rest))))
        return false;
    return true;
}

/* The index of ip in r (0 when it is the network or beyond the usable indexes). */
static uint64_t range_index(const struct range *r, const struct mesh_ipport *ip)
{
    /* Indexes live in the low 32 bits; in IPv6 the bytes above them equal the base's. */
    unsigned lo = r->family == AF_INET ? 0 : 12;
    if (lo && memcmp(ip->ip, r->base, lo) != 0)
        return 0;
    uint32_t a = 0, b = 0;
    for (unsigned k = lo; k < lo + 4; k++) {
        a = a << 8 | ip->ip[k];
        b = b << 8 | r->base[k];
    }
    uint64_t idx = (uint64_t)(a - b);
    return idx >= 1 && idx <= r->size ? idx : 0;
}

int mesh_vip_table_new(const struct mesh_vip_options *o, struct mesh_vip_table **ret)
{
    struct mesh_vip_table *t = mesh_calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    const char *why;
    const char *v4 = o && o->v4_range && o->v4_range[0] ? o->v4_range : MESH_VIP_DEFAULT_V4;
    const char *v6 = o && o->v6_range && o->v6_range[0] ? o->v6_range : MESH_VIP_DEFAULT_V6;
    if (parse_range(v4, AF_INET, &t->r[0], &why) < 0 ||
        parse_range(v6, AF_INET6, &t->r[1], &why) < 0) {
        mesh_free(t);
        return -EINVAL;
    }
    if (pthread_rwlock_init(&t->lock, NULL) != 0) {
        mesh_free(t);
        return -ENOMEM;
    }
    t->keep_ms = o ? o->keep_ms : 0;
    mesh_hmap_init(&t->by_key);
    mesh_hmap_init(&t->r[0].used);
    mesh_hmap_init(&t->r[1].used);
    *ret = t;
    return 0;
}

static void entry_free(struct entry *e)
{
    if (!e)
        return;
    mesh_free(e->key);
    mesh_free(e);
}

static void clear(struct mesh_vip_table *t)
{
    const struct mesh_hmap_entry *he;
    for (size_t i = 0; mesh_hmap_next(&t->by_key, &i, &he);)
        entry_free(he->value);
    mesh_hmap_done(&t->by_key);
    mesh_hmap_done(&t->r[0].used);
    mesh_hmap_done(&t->r[1].used);
    mesh_hmap_init(&t->by_key);
    mesh_hmap_init(&t->r[0].used);
    mesh_hmap_init(&t->r[1].used);
    t->r[0].full = t->r[1].full = false;
}

void mesh_vip_table_free(struct mesh_vip_table *t)
{
    if (!t)
        return;
    clear(t);
    mesh_hmap_done(&t->by_key);
    mesh_hmap_done(&t->r[0].used);
    mesh_hmap_done(&t->r[1].used);
    pthread_rwlock_destroy(&t->lock);
    mesh_free(t);
}

/* Gives e an address of family f (0 v4, 1 v6) if it has none. Returns 0, -ENOSPC, -ENOMEM. */
static int assign(struct mesh_vip_table *t, struct entry *e, int f)
{
    struct range *r = &t->r[f];
    if (e->ip[f].family)
        return 0;
    /* Full: refused at once, until a release frees an address (the loop must not stall on
     * probing a full range for every service at every sync). */
    if (r->full || r->used.n >= r->size) {
        r->full = true;
        return -ENOSPC;
    }
    uint64_t h = mesh_siphash13(e->key, strlen(e->key), VIP_K0 + (uint64_t)f, VIP_K1);
    uint64_t first = 1 + h % r->size;
    /* A range fuller than this is mostly probing; give up rather than stall the loop. */
    uint64_t tries = r->size < 65536 ? r->size : 65536;
    for (uint64_t k = 0; k < tries; k++) {
        uint64_t idx = 1 + (first - 1 + k) % r->size;
        t->probes++;
        struct mesh_ipport ip;
        char text[INET6_ADDRSTRLEN];
        range_addr(r, idx, &ip);
        inet_ntop(r->family, ip.ip, text, sizeof(text));
        if (mesh_hmap_get(&r->used, text))
            continue;
        memcpy(e->text[f], text, sizeof(text));
        if (mesh_hmap_put(&r->used, e->text[f], e) < 0)
            return -ENOMEM;
        e->ip[f] = ip;
        return 0;
    }
    r->full = true;
    return -ENOSPC;
}

static void release(struct mesh_vip_table *t, struct entry *e)
{
    for (int f = 0; f < 2; f++) {
        if (e->ip[f].family) {
            mesh_hmap_remove(&t->r[f].used, e->text[f]);
            t->r[f].full = false;
        }
    }
    mesh_hmap_remove(&t->by_key, e->key);
    entry_free(e);
}

int mesh_vip_sync(struct mesh_vip_table *t, const char *const *keys, size_t n, uint64_t now_ms)
{
    int changed = 0, err = 0;
    struct mesh_hmap seen;
    mesh_hmap_init(&seen);
    pthread_rwlock_wrlock(&t->lock);
    size_t unassigned[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        if (mesh_hmap_put(&seen, keys[i], (void *)(uintptr_t)1) < 0) {
            err = -ENOMEM;
            goto out;
        }
        struct entry *e = mesh_hmap_get(&t->by_key, keys[i]);
        if (!e) {
            e = mesh_calloc(1, sizeof(*e));
            if (!e || !(e->key = mesh_strdup(keys[i])) ||
                mesh_hmap_put(&t->by_key, e->key, e) < 0) {
                entry_free(e);
                err = -ENOMEM;
                goto out;
            }
            changed = 1;
        }
        if (e->gone_since) {
            e->gone_since = 0;
            changed = 1;
        }
        for (int f = 0; f < 2; f++) {
            bool had = e->ip[f].family != 0;
            int r = assign(t, e, f);
            if (r == -ENOMEM) {
                err = r;
                goto out;
            }
            changed |= !had && e->ip[f].family;
            unassigned[f] += !e->ip[f].family;
        }
    }
    /* Vanished services: mark, and free those gone for longer than keep_ms. */
    struct entry **drop = NULL;
    size_t n_drop = 0, cap_drop = 0;
    const struct mesh_hmap_entry *he;
    for (size_t i = 0; mesh_hmap_next(&t->by_key, &i, &he);) {
        struct entry *e = he->value;
        if (mesh_hmap_get(&seen, e->key))
            continue;
        if (!e->gone_since) {
            e->gone_since = now_ms ? now_ms : 1;
            changed = 1;
        }
        if (now_ms >= e->gone_since && now_ms - e->gone_since >= t->keep_ms) {
            if (mesh_grow((void **)&drop, &cap_drop, n_drop + 1, sizeof(*drop)) < 0) {
                err = -ENOMEM;
                break;
            }
            drop[n_drop++] = e;
        }
    }
    for (size_t i = 0; i < n_drop; i++)
        release(t, drop[i]);
    changed |= n_drop > 0;
    mesh_free(drop);
    t->unassigned[0] = unassigned[0];
    t->unassigned[1] = unassigned[1];
out:
    pthread_rwlock_unlock(&t->lock);
    mesh_hmap_done(&seen);
    return err ? err : changed;
}

int mesh_vip_lookup_service(struct mesh_vip_table *t, const char *key, struct mesh_vip_pair *ret)
{
    int r = -ENOENT;
    pthread_rwlock_rdlock(&t->lock);
    struct entry *e = mesh_hmap_get(&t->by_key, key);
    if (e) {
        ret->v4 = e->ip[0];
        ret->v6 = e->ip[1];
        r = 0;
    }
    pthread_rwlock_unlock(&t->lock);
    return r;
}

int mesh_vip_lookup_addr(struct mesh_vip_table *t, const struct mesh_ipport *ip, char *ret_key,
                         size_t n)
{
    if (ip->family != AF_INET && ip->family != AF_INET6)
        return -ENOENT;
    char text[INET6_ADDRSTRLEN];
    inet_ntop(ip->family, ip->ip, text, sizeof(text));
    int r = -ENOENT;
    pthread_rwlock_rdlock(&t->lock);
    struct entry *e = mesh_hmap_get(&t->r[ip->family == AF_INET ? 0 : 1].used, text);
    if (e) {
        size_t len = strlen(e->key);
        r = len < n ? 0 : -ENOSPC;
        if (r == 0)
            memcpy(ret_key, e->key, len + 1);
    }
    pthread_rwlock_unlock(&t->lock);
    return r;
}

bool mesh_vip_in_range(const struct mesh_vip_table *t, const struct mesh_ipport *ip)
{
    return range_contains(&t->r[0], ip) || range_contains(&t->r[1], ip);
}

size_t mesh_vip_count(struct mesh_vip_table *t)
{
    pthread_rwlock_rdlock(&t->lock);
    size_t n = t->by_key.n;
    pthread_rwlock_unlock(&t->lock);
    return n;
}

void mesh_vip_get_stats(struct mesh_vip_table *t, struct mesh_vip_stats *ret)
{
    pthread_rwlock_rdlock(&t->lock);
    ret->unassigned[0] = t->unassigned[0];
    ret->unassigned[1] = t->unassigned[1];
    ret->probes = t->probes;
    pthread_rwlock_unlock(&t->lock);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp((*(struct entry *const *)a)->key, (*(struct entry *const *)b)->key);
}

void mesh_vip_encode(struct mesh_vip_table *t, struct mesh_buf *b)
{
    pthread_rwlock_rdlock(&t->lock);
    struct entry **v = mesh_calloc(t->by_key.n ? t->by_key.n : 1, sizeof(*v));
    size_t n = 0;
    if (!v) {
        b->err = b->err ? b->err : -ENOMEM;
        goto out;
    }
    const struct mesh_hmap_entry *he;
    for (size_t i = 0; mesh_hmap_next(&t->by_key, &i, &he);)
        v[n++] = he->value;
    qsort(v, n, sizeof(*v), cmp_entry);
    mesh_buf_append_str(b, "{\"version\": 1, \"services\": [");
    for (size_t i = 0; i < n; i++) {
        mesh_buf_appendf(b, "%s\n  {\"service\": ", i ? "," : "");
        mesh_buf_append_json_str(b, v[i]->key, strlen(v[i]->key));
        for (int f = 0; f < 2; f++) {
            if (v[i]->ip[f].family)
                mesh_buf_appendf(b, ", \"%s\": \"%s\"", f ? "ipv6" : "ipv4", v[i]->text[f]);
        }
        if (v[i]->gone_since)
            mesh_buf_appendf(b, ", \"gone_since_ms\": %llu", (unsigned long long)v[i]->gone_since);
        mesh_buf_append_str(b, "}");
    }
    mesh_buf_append_str(b, "\n]}\n");
out:
    mesh_free(v);
    pthread_rwlock_unlock(&t->lock);
}

static bool key_valid(const char *key)
{
    const char *slash = strchr(key, '/');
    if (!slash || strlen(key) >= VIP_KEY_MAX)
        return false;
    char ns[VIP_KEY_MAX];
    memcpy(ns, key, (size_t)(slash - key));
    ns[slash - key] = '\0';
    return mesh_name_is_dns_label(ns) && mesh_name_is_dns_label(slash + 1);
}

/* Decodes one entry into e; adds errors at the current path. */
static void load_entry(struct mesh_vip_table *t, struct mesh_cfg_ctx *ctx, json_t *item,
                       struct entry *e)
{
    json_t *key = json_object_get(item, "service");
    if (!json_is_string(key) || !key_valid(json_string_value(key))) {
        mesh_cfg_error(ctx, "\"service\" must be \"namespace/name\" of two DNS labels");
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(item, k, v)
    {
        if (strcmp(k, "service") && strcmp(k, "ipv4") && strcmp(k, "ipv6") &&
            strcmp(k, "gone_since_ms"))
            mesh_cfg_error(ctx, "unknown key '%s'", k);
    }
    e->key = mesh_strdup(json_string_value(key));
    for (int f = 0; f < 2; f++) {
        json_t *a = json_object_get(item, f ? "ipv6" : "ipv4");
        if (!a)
            continue;
        struct mesh_ipport ip;
        if (!json_is_string(a) || mesh_ipport_from_ip(json_string_value(a), 0, &ip) < 0 ||
            !range_contains(&t->r[f], &ip) || !range_index(&t->r[f], &ip)) {
            mesh_cfg_error(ctx, "\"%s\" must be an address of the configured %s range",
                           f ? "ipv6" : "ipv4", f ? "IPv6" : "IPv4");
            continue;
        }
        e->ip[f] = ip;
        inet_ntop(t->r[f].family, ip.ip, e->text[f], sizeof(e->text[f]));
    }
    json_t *g = json_object_get(item, "gone_since_ms");
    if (g && (!json_is_integer(g) || json_integer_value(g) <= 0))
        mesh_cfg_error(ctx, "\"gone_since_ms\" must be a positive integer");
    else if (g)
        e->gone_since = (uint64_t)json_integer_value(g);
}

int mesh_vip_load(struct mesh_vip_table *t, const char *name, const char *data, size_t len,
                  struct mesh_cfg_errors *errors)
{
    struct mesh_cfg_ctx ctx;
    mesh_cfg_ctx_init(&ctx, name, errors);
    json_t *doc = NULL;
    int r = mesh_cfg_load_buffer(&ctx, data, len, &doc);
    if (r < 0) {
        pthread_rwlock_wrlock(&t->lock);
        clear(t);
        pthread_rwlock_unlock(&t->lock);
        return r == -ENOMEM ? r : -EINVAL;
    }
    json_t *services = json_object_get(doc, "services");
    json_t *version = json_object_get(doc, "version");
    r = 0;
    if (!json_is_object(doc) || !json_is_integer(version) || json_integer_value(version) != 1 ||
        !json_is_array(services) || json_object_size(doc) != 2) {
        mesh_cfg_error(&ctx, "expected {\"version\": 1, \"services\": [...]}");
        r = -EINVAL;
    } else if (json_array_size(services) > MESH_VIP_SERVICES_MAX) {
        mesh_cfg_error(&ctx, "more than %d services", MESH_VIP_SERVICES_MAX);
        r = -EINVAL;
    }
    /* One critical section: other threads see the old table or the new one, never none. */
    pthread_rwlock_wrlock(&t->lock);
    clear(t);
    size_t o1 = mesh_cfg_path_push_key(&ctx, "services");
    for (size_t i = 0; r == 0 && i < json_array_size(services); i++) {
        size_t before = mesh_cfg_error_count(errors);
        size_t o2 = mesh_cfg_path_push_index(&ctx, i);
        json_t *item = json_array_get(services, i);
        struct entry *e = mesh_calloc(1, sizeof(*e));
        if (!e) {
            r = -ENOMEM;
            mesh_cfg_path_pop(&ctx, o2);
            break;
        }
        if (!json_is_object(item))
            mesh_cfg_error(&ctx, "expected an object");
        else
            load_entry(t, &ctx, item, e);
        /* A bad entry is dropped alone (its service gets a new address); the others keep
         * theirs. Of two entries that collide, the first stays. */
        bool bad = mesh_cfg_error_count(errors) != before || !e->key;
        if (!bad && mesh_hmap_get(&t->by_key, e->key)) {
            mesh_cfg_error(&ctx, "service '%s' is listed twice", e->key);
            bad = true;
        }
        for (int f = 0; f < 2 && !bad; f++) {
            if (e->ip[f].family && mesh_hmap_get(&t->r[f].used, e->text[f])) {
                mesh_cfg_error(&ctx, "address %s is given to two services", e->text[f]);
                bad = true;
            }
        }
        mesh_cfg_path_pop(&ctx, o2);
        if (bad) {
            entry_free(e);
            continue;
        }
        if (mesh_hmap_put(&t->by_key, e->key, e) < 0) {
            entry_free(e);
            r = -ENOMEM;
            break;
        }
        for (int f = 0; f < 2; f++) {
            if (e->ip[f].family && mesh_hmap_put(&t->r[f].used, e->text[f], e) < 0)
                r = -ENOMEM;
        }
    }
    mesh_cfg_path_pop(&ctx, o1);
    if (r < 0)
        clear(t);
    size_t n = t->by_key.n;
    pthread_rwlock_unlock(&t->lock);
    json_decref(doc);
    return r < 0 ? r : (int)n;
}
