#define MESH_LOG_MODULE "store"

#include "controller/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/fs.h"
#include "common/log.h"

#define KINDS_MAX 8
#define OBJECT_MAX (1024 * 1024)

struct kind {
    char *name;
    struct mesh_hmap objects; /* name (owned, freed with the entry) -> json_t * */
};

struct mesh_store {
    char *dir;
    struct kind kinds[KINDS_MAX];
    size_t n_kinds;
    uint64_t version;
};

int mesh_store_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 128 || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static struct kind *find_kind(struct mesh_store *s, const char *kind)
{
    for (size_t i = 0; i < s->n_kinds; i++) {
        if (strcmp(s->kinds[i].name, kind) == 0)
            return &s->kinds[i];
    }
    return NULL;
}

/* An object in memory; its name is the map's key. */
struct stored {
    json_t *obj;
    char name[];
};

/* Puts into memory; takes a reference of obj. */
static int remember(struct kind *k, const char *name, json_t *obj)
{
    size_t len = strlen(name) + 1;
    struct stored *n = mesh_malloc(sizeof(*n) + len);
    if (!n)
        return -ENOMEM;
    memcpy(n->name, name, len);
    n->obj = json_incref(obj);
    struct stored *old = mesh_hmap_remove(&k->objects, name);
    int r = mesh_hmap_put(&k->objects, n->name, n);
    if (r < 0) {
        json_decref(n->obj);
        mesh_free(n);
        if (old && mesh_hmap_put(&k->objects, old->name, old) == 0)
            return r;
    }
    if (old) {
        json_decref(old->obj);
        mesh_free(old);
    }
    return r;
}

static void forget(struct kind *k, const char *name)
{
    struct stored *old = mesh_hmap_remove(&k->objects, name);
    if (old) {
        json_decref(old->obj);
        mesh_free(old);
    }
}

static int load_kind(struct mesh_store *s, struct kind *k)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", s->dir, k->name);
    int r = mesh_fs_mkdir_private(path, 0700);
    if (r < 0)
        return r;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0)
            continue; /* "." and "..", and temporary files a kill left behind */
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(n - 5), de->d_name);
        char file[4400];
        snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
        char *data = NULL;
        size_t len = 0;
        json_error_t err;
        json_t *obj = NULL;
        if (mesh_store_name_valid(name) && mesh_fs_read_file(file, OBJECT_MAX, &data, &len) == 0)
            obj = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
        mesh_free(data);
        if (!obj || !json_is_object(obj)) {
            mesh_log_error("%s: not a stored object; leaving it out", file);
            json_decref(obj);
            continue;
        }
        r = remember(k, name, obj);
        json_decref(obj);
        if (r < 0)
            break;
    }
    closedir(d);
    return r < 0 ? r : 0;
}

int mesh_store_open(const char *dir, const char *const *kinds, struct mesh_store **ret)
{
    struct mesh_store *s = mesh_calloc(1, sizeof(*s));
    if (!s || !(s->dir = mesh_strdup(dir))) {
        mesh_free(s);
        return -ENOMEM;
    }
    int r = 0;
    for (size_t i = 0; kinds[i] && i < KINDS_MAX && r == 0; i++) {
        struct kind *k = &s->kinds[s->n_kinds];
        mesh_hmap_init(&k->objects);
        if (!(k->name = mesh_strdup(kinds[i]))) {
            r = -ENOMEM;
            break;
        }
        s->n_kinds++;
        r = load_kind(s, k);
    }
    if (r < 0) {
        mesh_store_close(s);
        return r;
    }
    s->version = 1;
    *ret = s;
    return 0;
}

void mesh_store_close(struct mesh_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_kinds; i++) {
        struct kind *k = &s->kinds[i];
        size_t j = 0;
        const struct mesh_hmap_entry *e;
        while (mesh_hmap_next(&k->objects, &j, &e)) {
            struct stored *st = e->value;
            json_decref(st->obj);
            mesh_free(st);
        }
        mesh_hmap_done(&k->objects);
        mesh_free(k->name);
    }
    mesh_free(s->dir);
    mesh_free(s);
}

json_t *mesh_store_get(struct mesh_store *s, const char *kind, const char *name)
{
    struct kind *k = find_kind(s, kind);
    struct stored *st = k ? mesh_hmap_get(&k->objects, name) : NULL;
    return st ? st->obj : NULL;
}

json_t *mesh_store_entry_object(const struct mesh_hmap_entry *e)
{
    return ((const struct stored *)e->value)->obj;
}

int mesh_store_put(struct mesh_store *s, const char *kind, const char *name, json_t *obj)
{
    struct kind *k = find_kind(s, kind);
    if (!k || !mesh_store_name_valid(name))
        return -EINVAL;
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return -ENOMEM;
    char path[4400];
    snprintf(path, sizeof(path), "%s/%s/%s.json", s->dir, kind, name);
    int r = mesh_fs_write_atomic(path, text, strlen(text), 0600);
    mesh_free(text);
    if (r < 0)
        return r;
    r = remember(k, name, obj);
    if (r == 0)
        s->version++;
    return r;
}

int mesh_store_delete(struct mesh_store *s, const char *kind, const char *name)
{
    struct kind *k = find_kind(s, kind);
    if (!k || !mesh_hmap_get(&k->objects, name))
        return -ENOENT;
    char path[4400], dir[4200];
    snprintf(path, sizeof(path), "%s/%s/%s.json", s->dir, kind, name);
    snprintf(dir, sizeof(dir), "%s/%s", s->dir, kind);
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd); /* the unlink is durable before it is answered */
        close(fd);
    }
    forget(k, name);
    s->version++;
    return 0;
}

const struct mesh_hmap *mesh_store_list(struct mesh_store *s, const char *kind)
{
    struct kind *k = find_kind(s, kind);
    return k ? &k->objects : NULL;
}

uint64_t mesh_store_version(const struct mesh_store *s)
{
    return s->version;
}
