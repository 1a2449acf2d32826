#include <string.h>

#include "common/alloc.h"
#include "proxy/proxy-int.h"

uint64_t mesh_rng_next(uint64_t *state)
{
    /* xorshift64*: fast, per worker, good enough to spread load. */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

bool mesh_lb_was_tried(uint32_t ep, const uint32_t *tried, size_t n_tried)
{
    for (size_t i = 0; i < n_tried; i++) {
        if (tried[i] == ep)
            return true;
    }
    return false;
}

void mesh_lb_state_done(struct mesh_lb_state *lb)
{
    mesh_free(lb->cand);
    mesh_free(lb->is_cand);
    mesh_free(lb->current);
    mesh_free(lb->cum);
    memset(lb, 0, sizeof(*lb));
}

/* Ready in the catalog and not draining: may take traffic when nothing better is left. */
static bool ep_ready(const struct snap_endpoint *ep)
{
    return (ep->health & MESH_EP_READY) && !(ep->health & MESH_EP_TERMINATING);
}

/*
 * Recomputes the eligible endpoints. Zone-aware: when this node's zone is known and the
 * healthy share of its zone's endpoints is at least min_healthy_percent, only those; else
 * every eligible endpoint. Below healthy_panic_threshold (as Envoy), and whenever none is
 * eligible at all, every ready one: a health checker that wrongly fails most endpoints would
 * otherwise pile the load on the last few or black-hole the service (connects still fail
 * fast).
 */
static int rebuild(struct mesh_lb_state *lb, uint64_t epoch)
{
    const struct snap_dest *d = lb->dest;
    if (!lb->cand) {
        size_t n = d->n ? d->n : 1;
        lb->cand = mesh_calloc(n, sizeof(*lb->cand));
        lb->is_cand = mesh_calloc(n, sizeof(*lb->is_cand));
        lb->current = mesh_calloc(n, sizeof(*lb->current));
        lb->cum = mesh_calloc(n, sizeof(*lb->cum));
        if (!lb->cand || !lb->is_cand || !lb->current || !lb->cum) {
            mesh_lb_state_done(lb);
            return -1;
        }
    }
    size_t local_total = 0, local_ok = 0, ok = 0, ready = 0;
    for (size_t i = 0; i < d->n; i++) {
        bool e = mesh_ep_eligible(&d->eps[i]);
        ok += e;
        ready += ep_ready(&d->eps[i]);
        if (d->eps[i].local_zone) {
            local_total++;
            local_ok += e;
        }
    }
    bool local_only =
        d->zone_aware && local_total && local_ok &&
        local_ok * 100 >= (size_t)d->policy->zone_aware.min_healthy_percent * local_total;
    bool panic = ok == 0 || ok * 100 < (size_t)d->policy->healthy_panic_threshold * ready;
    lb->n_cand = 0;
    lb->total_weight = 0;
    for (size_t i = 0; i < d->n; i++) {
        const struct snap_endpoint *ep = &d->eps[i];
        bool take = panic ? ep_ready(ep) : mesh_ep_eligible(ep) && (!local_only || ep->local_zone);
        lb->is_cand[i] = take;
        if (!take)
            continue;
        lb->cand[lb->n_cand++] = (uint32_t)i;
        lb->total_weight += ep->weight;
        lb->cum[lb->n_cand - 1] = lb->total_weight;
    }
    lb->epoch = epoch;
    lb->valid = true;
    return 0;
}

/*
 * A retry's fallback once the balancer's candidates were all tried: an endpoint not tried
 * yet, at random, first among the eligible ones (another zone's), then among the ready ones
 * that are ejected or failing checks. Trying one of those beats going back to an endpoint
 * that has just failed: an ejection is a guess about the past, the failure is a fact now.
 */
static int fallback(const struct snap_dest *d, const uint32_t *tried, size_t n_tried, uint64_t *rng)
{
    if (!d->n)
        return -1;
    size_t start = (size_t)(mesh_rng_next(rng) % d->n);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < d->n; k++) {
            uint32_t i = (uint32_t)((start + k) % d->n);
            const struct snap_endpoint *ep = &d->eps[i];
            bool fits = pass == 0 ? mesh_ep_eligible(ep) : ep_ready(ep);
            if (fits && !mesh_lb_was_tried(i, tried, n_tried))
                return (int)i;
        }
    }
    return -1;
}

int mesh_lb_pick(struct mesh_lb_state *lb, struct mesh_proxy_shared *sh, uint64_t client_hash,
                 const uint32_t *tried, size_t n_tried, uint64_t *rng)
{
    uint64_t epoch = atomic_load_explicit(&sh->health_epoch, memory_order_acquire);
    if (!lb->valid || lb->epoch != epoch) {
        if (rebuild(lb, epoch) < 0)
            return -1;
    }
    int ep = -1;
    if (lb->n_cand) {
        switch (lb->dest->policy->lb) {
        case MESH_LB_LEAST_REQUEST:
            ep = mesh_lb_least_request(lb, tried, n_tried, rng);
            break;
        case MESH_LB_RANDOM:
            ep = mesh_lb_random(lb, tried, n_tried, rng);
            break;
        case MESH_LB_RING_HASH:
            ep = mesh_lb_ring_hash(lb, client_hash, tried, n_tried);
            break;
        default:
            ep = mesh_lb_round_robin(lb, tried, n_tried);
            break;
        }
    }
    if (ep < 0 && n_tried)
        ep = fallback(lb->dest, tried, n_tried, rng);
    return ep;
}
