/*
 * Atoms: shared, immutable, reference-counted strings for the values that repeat across
 * hundreds of thousands of endpoints (zones, node names). Each distinct value is stored
 * once; a copy of an endpoint takes a reference instead of a copy of the string.
 *
 * Any thread may use them: a reference is taken without a lock (the taker holds one
 * already), made from a string and dropped under one process-wide mutex.
 */
#ifndef MESH_ATOM_H
#define MESH_ATOM_H

#include <stddef.h>

/* The atom for `s` (a new reference), or NULL when out of memory; NULL `s` gives NULL. */
const char *mesh_atom(const char *s);
/* The atom for the first `len` bytes of `s`; NULL when out of memory. */
const char *mesh_atom_n(const char *s, size_t len);
/* Another reference to an atom (NULL passes through). */
const char *mesh_atom_ref(const char *a);
/* Drops a reference; the last one frees the atom (NULL is fine). */
void mesh_atom_unref(const char *a);
/* Distinct atoms alive (for tests and status). */
size_t mesh_atom_count(void);

#endif
