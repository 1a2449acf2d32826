#include "proxy/proxy-int.h"

/*
 * Consistent hashing on the client address: the first ring point at or after the client's
 * hash names the endpoint; an ineligible or tried one passes to the next point. A client
 * keeps its endpoint while that endpoint lives, and endpoints coming or going move only
 * their own share of clients.
 */
int mesh_lb_ring_hash(struct mesh_lb_state *lb, uint64_t client_hash, const uint32_t *tried,
                      size_t n_tried)
{
    const struct snap_dest *d = lb->dest;
    if (!d->n_ring)
        return -1;
    size_t lo = 0, hi = d->n_ring;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (d->ring[mid].hash < client_hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < d->n_ring; k++) {
        uint32_t ep = d->ring[(lo + k) % d->n_ring].ep;
        if (lb->is_cand[ep] && (!n_tried || !mesh_lb_was_tried(ep, tried, n_tried)))
            return (int)ep;
    }
    return -1;
}
