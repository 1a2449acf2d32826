#include "common/backoff.h"

#include <openssl/rand.h>

uint64_t mesh_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t cap_ms)
{
    uint64_t ms = base_ms;
    for (unsigned i = 0; i < failures && ms < cap_ms; i++)
        ms *= 2;
    if (ms > cap_ms)
        ms = cap_ms;
    unsigned r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    return ms / 2 + r % (ms / 2 + 1);
}
