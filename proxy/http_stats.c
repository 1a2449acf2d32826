/* HTTP counters and token buckets of destinations and route rules (any thread). */
#include <math.h>

#include "proxy/proxy-int.h"

const unsigned mesh_http_bucket_ms[MESH_HTTP_BUCKETS] = {1,   2,   5,    10,   25,   50,   100,
                                                         250, 500, 1000, 2500, 5000, 10000};

void mesh_http_stats_record(struct mesh_http_stats *st, int status, uint64_t duration_us)
{
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    atomic_fetch_add_explicit(&st->requests[cls], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < MESH_HTTP_BUCKETS && duration_us > (uint64_t)mesh_http_bucket_ms[b] * 1000)
        b++;
    atomic_fetch_add_explicit(&st->duration[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->duration_us_sum, duration_us, memory_order_relaxed);
}

bool mesh_bucket_take(struct mesh_http_stats *st, const struct mesh_rate_limit_policy *p,
                      uint64_t now, unsigned *retry_after_s)
{
    while (atomic_flag_test_and_set_explicit(&st->bucket_lock, memory_order_acquire))
        ;
    if (st->bucket_ms == 0) {
        st->tokens = p->burst;
        st->bucket_ms = now;
    } else if (now > st->bucket_ms) {
        st->tokens += (double)(now - st->bucket_ms) * p->per_second / 1000.0;
        if (st->tokens > p->burst)
            st->tokens = p->burst;
        st->bucket_ms = now;
    }
    bool ok = st->tokens >= 1.0;
    if (ok)
        st->tokens -= 1.0;
    double wait_s = ok ? 0 : (1.0 - st->tokens) / p->per_second;
    atomic_flag_clear_explicit(&st->bucket_lock, memory_order_release);
    if (retry_after_s)
        *retry_after_s = (unsigned)ceil(wait_s);
    return ok;
}
