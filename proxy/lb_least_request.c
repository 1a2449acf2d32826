#include "proxy/proxy-int.h"

/* A candidate at random, skipping tried ones and `not`; -1 when none is left. */
static int random_untried(struct mesh_lb_state *lb, const uint32_t *tried, size_t n_tried, int not,
                          uint64_t *rng)
{
    size_t start = (size_t)(mesh_rng_next(rng) % lb->n_cand);
    for (size_t k = 0; k < lb->n_cand; k++) {
        uint32_t ep = lb->cand[(start + k) % lb->n_cand];
        if ((int)ep != not &&(!n_tried || !mesh_lb_was_tried(ep, tried, n_tried)))
            return (int)ep;
    }
    return -1;
}

/*
 * Least request by the power of two choices: two different candidates at random, the one
 * with fewer requests in flight (HTTP tries, or open TCP connections, from every worker)
 * wins. Near the choice of the best endpoint at the cost of two reads, and no herd on one
 * endpoint. Two different ones: with two endpoints, one that stopped answering (its
 * requests pile up) then loses every comparison until it has fewer than the other.
 */
int mesh_lb_least_request(struct mesh_lb_state *lb, const uint32_t *tried, size_t n_tried,
                          uint64_t *rng)
{
    int a = random_untried(lb, tried, n_tried, -1, rng);
    if (a < 0 || lb->n_cand == 1)
        return a;
    int b = random_untried(lb, tried, n_tried, a, rng);
    if (b < 0)
        return a;
    int active_a = atomic_load_explicit(&lb->dest->eps[a].state->active, memory_order_relaxed);
    int active_b = atomic_load_explicit(&lb->dest->eps[b].state->active, memory_order_relaxed);
    return active_b < active_a ? b : a;
}
