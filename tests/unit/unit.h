/*
 * Shared helpers of the cmocka unit tests: every test checks that it leaves no allocation
 * behind (through the project's allocation wrappers, which jansson and libuv use too).
 */
#ifndef MESH_TEST_UNIT_H
#define MESH_TEST_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"

static long unit_live_at_start;

static inline int unit_setup(void **state)
{
    (void)state;
    mesh_alloc_fail_after(-1);
    unit_live_at_start = mesh_alloc_live();
    return 0;
}

static inline int unit_teardown(void **state)
{
    (void)state;
    mesh_alloc_fail_after(-1);
    long leaked = mesh_alloc_live() - unit_live_at_start;
    if (leaked != 0)
        fail_msg("%ld allocation(s) leaked", leaked);
    return 0;
}

#define UNIT_TEST(fn) cmocka_unit_test_setup_teardown(fn, unit_setup, unit_teardown)

/* Asserts that `haystack` contains `needle`, printing both when it does not. */
#define assert_contains(haystack, needle)                                                          \
    do {                                                                                           \
        const char *h_ = (haystack), *n_ = (needle);                                               \
        if (!h_ || !strstr(h_, n_))                                                                \
            fail_msg("expected to find '%s' in '%s'", n_, h_ ? h_ : "(null)");                     \
    } while (0)

#endif
