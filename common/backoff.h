/*
 * Capped exponential backoff with jitter, for anything that retries a remote service.
 */
#ifndef MESH_BACKOFF_H
#define MESH_BACKOFF_H

#include <stdint.h>

/*
 * How long to wait after `failures` failed attempts in a row: `base_ms` doubling up to
 * `cap_ms`, with "equal jitter" (half of it fixed, half random) so that a fleet does not
 * retry in step. Never less than base_ms / 2.
 */
uint64_t mesh_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t cap_ms);

#endif
