/*
 * String helpers: edit distance for did-you-mean hints, strict number and duration
 * parsing, and name validation shared by configs and registries.
 */
#ifndef MESH_STRUTIL_H
#define MESH_STRUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Edit distance (a swap of neighbours is one edit), capped: above cap returns cap + 1. */
size_t mesh_str_distance(const char *a, const char *b, size_t cap);

/*
 * The candidate closest to `word` if it is close enough to be a likely typo (distance at
 * most 2, and less than half the word) or `word` is its start (3 characters or more),
 * else NULL. `candidates` ends with NULL.
 */
const char *mesh_str_suggest(const char *word, const char *const *candidates);

/* Parses a decimal unsigned integer with no sign, space or suffix. Returns 0 or -EINVAL/-ERANGE. */
int mesh_parse_u64(const char *s, size_t len, uint64_t *ret);

/*
 * Parses a duration as operators of Go tools write it: "250ms", "10s", "1m30s", "2h";
 * units ms, s, m, h; "0" alone is zero. Returns 0 and milliseconds, or -EINVAL/-ERANGE.
 */
int mesh_parse_duration_ms(const char *s, uint64_t *ret_ms);
/* Formats milliseconds back in the shortest of those forms ("1m30s", "250ms"). */
void mesh_format_duration_ms(uint64_t ms, char *out, size_t n);

/* Printable ASCII with no space, at most `max` characters. */
bool mesh_is_token(const char *s, size_t max);
/* Compares two `char *` array elements by their strings: for qsort and bsearch. */
int mesh_str_ptr_cmp(const void *a, const void *b);

#endif
