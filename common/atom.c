#include "common/atom.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hmap.h"

struct atom {
    atomic_size_t refs;
    char s[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct mesh_hmap table; /* the string -> struct atom; its key is the atom's s */
static bool table_ready;

static struct atom *atom_of(const char *a)
{
    return (struct atom *)(uintptr_t)(a - offsetof(struct atom, s));
}

const char *mesh_atom_n(const char *s, size_t len)
{
    char small[256];
    char *key = len < sizeof(small) ? small : mesh_malloc(len + 1);
    if (!key)
        return NULL;
    memcpy(key, s, len);
    key[len] = '\0';
    const char *ret = NULL;
    pthread_mutex_lock(&lock);
    if (!table_ready) {
        mesh_hmap_init(&table);
        table_ready = true;
    }
    struct atom *a = mesh_hmap_get(&table, key);
    if (a) {
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
        ret = a->s;
    } else if ((a = mesh_malloc(sizeof(*a) + len + 1))) {
        atomic_init(&a->refs, 1);
        memcpy(a->s, key, len + 1);
        if (mesh_hmap_put(&table, a->s, a) == 0)
            ret = a->s;
        else
            mesh_free(a);
    }
    pthread_mutex_unlock(&lock);
    if (key != small)
        mesh_free(key);
    return ret;
}

const char *mesh_atom(const char *s)
{
    return s ? mesh_atom_n(s, strlen(s)) : NULL;
}

const char *mesh_atom_ref(const char *a)
{
    if (a)
        atomic_fetch_add_explicit(&atom_of(a)->refs, 1, memory_order_relaxed);
    return a;
}

void mesh_atom_unref(const char *s)
{
    if (!s)
        return;
    struct atom *a = atom_of(s);
    /* Under the lock: a lookup must never find an atom whose count reached zero. */
    pthread_mutex_lock(&lock);
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1) {
        mesh_hmap_remove(&table, a->s);
        mesh_free(a);
        if (table.n == 0) {
            mesh_hmap_done(&table); /* nothing left: leak checkers see a clean exit */
            table_ready = false;
        }
    }
    pthread_mutex_unlock(&lock);
}

size_t mesh_atom_count(void)
{
    pthread_mutex_lock(&lock);
    size_t n = table.n;
    pthread_mutex_unlock(&lock);
    return n;
}
