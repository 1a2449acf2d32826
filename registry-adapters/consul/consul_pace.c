/*
 * What paces the blocking queries, by the rules of Consul's "Blocking Queries" page
 * (Implementation Details): the index of the next query, and a token bucket so that answers
 * which bring nothing new (an index that did not advance, an unchanged result under churn)
 * cannot drive the loop faster than a poll every few seconds. Pure functions of their
 * arguments, tested in tests/unit/consul.
 */
#include <errno.h>

#include "common/strutil.h"
#include "registry-adapters/consul/consul-int.h"

void mesh_consul__bucket_init(struct mesh_consul_bucket *b, uint64_t now_ms, unsigned burst,
                              uint64_t interval_ms)
{
    b->level_ms = (uint64_t)burst * interval_ms;
    b->at_ms = now_ms;
}

uint64_t mesh_consul__bucket_take(struct mesh_consul_bucket *b, uint64_t now_ms, unsigned burst,
                                  uint64_t interval_ms)
{
    uint64_t full = (uint64_t)burst * interval_ms;
    if (now_ms > b->at_ms) {
        uint64_t level = b->level_ms + (now_ms - b->at_ms);
        b->level_ms = level < b->level_ms || level > full ? full : level;
    }
    b->at_ms = now_ms > b->at_ms ? now_ms : b->at_ms;
    if (b->level_ms >= interval_ms) {
        b->level_ms -= interval_ms;
        return 0;
    }
    return interval_ms - b->level_ms;
}

int mesh_consul__next_index(const char *h, size_t len, uint64_t prev, uint64_t *ret,
                            bool *ret_reset)
{
    uint64_t idx;
    /* Consul always sends it on a blocking endpoint: without it the loop cannot block. */
    if (!h || mesh_parse_u64(h, len, &idx) < 0)
        return -EINVAL;
    bool reset = idx < prev;
    if (reset) /* "Reset the index if it goes backwards": start the loop over */
        idx = 0;
    /* "Sanity check index is greater than zero": 0 would not block, in a busy loop. */
    *ret = idx < 1 ? 1 : idx;
    *ret_reset = reset;
    return 0;
}
