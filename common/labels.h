/*
 * Key/value labels on services and endpoints, kept sorted by key so that two sets compare
 * with one pass and lookups are a binary search. Syntax follows Kubernetes labels:
 * keys are [prefix/]name, names and values at most 63 characters of [A-Za-z0-9-_.].
 */
#ifndef MESH_LABELS_H
#define MESH_LABELS_H

#include <stdbool.h>
#include <stddef.h>

struct mesh_label {
    char *key;
    char *value;
};

struct mesh_labels {
    struct mesh_label *v;
    size_t n;
};

/* Adds or replaces key=value (copied). Returns 0 or -ENOMEM. */
int mesh_labels_set(struct mesh_labels *l, const char *key, const char *value);
/* Returns the value for key, or NULL. */
const char *mesh_labels_get(const struct mesh_labels *l, const char *key);
int mesh_labels_copy(struct mesh_labels *dst, const struct mesh_labels *src);
bool mesh_labels_equal(const struct mesh_labels *a, const struct mesh_labels *b);
void mesh_labels_done(struct mesh_labels *l);
/* Syntax checks; on failure *ret_why (if given) says what is wrong. */
bool mesh_label_key_valid(const char *key, const char **ret_why);
bool mesh_label_value_valid(const char *value, const char **ret_why);

#endif
