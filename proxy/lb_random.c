#include "proxy/proxy-int.h"

/* Weighted random: a point in [0, total weight) and the candidate whose range holds it. */
int mesh_lb_random(struct mesh_lb_state *lb, const uint32_t *tried, size_t n_tried, uint64_t *rng)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t r = mesh_rng_next(rng) % lb->total_weight;
        size_t lo = 0, hi = lb->n_cand - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (lb->cum[mid] > r)
                hi = mid;
            else
                lo = mid + 1;
        }
        uint32_t ep = lb->cand[lo];
        if (!n_tried || !mesh_lb_was_tried(ep, tried, n_tried))
            return (int)ep;
    }
    /* Most candidates were tried: take the first one left. */
    for (size_t i = 0; i < lb->n_cand; i++) {
        if (!mesh_lb_was_tried(lb->cand[i], tried, n_tried))
            return (int)lb->cand[i];
    }
    return -1;
}
