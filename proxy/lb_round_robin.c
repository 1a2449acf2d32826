#include "proxy/proxy-int.h"

/*
 * Smooth weighted round robin (as nginx does it): every pick adds each candidate's weight
 * to its current value, takes the largest, and takes the total off the winner. Weights
 * 5,1,1 give a a b a c a a, not a a a a a b c.
 */
int mesh_lb_round_robin(struct mesh_lb_state *lb, const uint32_t *tried, size_t n_tried)
{
    const struct snap_dest *d = lb->dest;
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < lb->n_cand; i++) {
        uint32_t ep = lb->cand[i];
        if (n_tried && mesh_lb_was_tried(ep, tried, n_tried))
            continue;
        lb->current[ep] += d->eps[ep].weight;
        total += d->eps[ep].weight;
        if (best < 0 || lb->current[ep] > lb->current[best])
            best = (int)ep;
    }
    if (best >= 0)
        lb->current[best] -= total;
    return best;
}
