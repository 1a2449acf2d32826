#define MESH_LOG_MODULE "outlier"

#include "common/log.h"
#include "proxy/proxy-int.h"

/*
 * Passive outlier detection on connect failures. After `consecutive_failures` in a row an
 * endpoint is ejected for base_ejection_time, doubled at each ejection in a row up to
 * max_ejection_time, unless that would eject more than max_ejection_percent of the
 * destination (one endpoint may always go). The main loop returns ejected endpoints when
 * their time is up (proxy.c). Any worker may eject; a compare-and-swap makes it once.
 */
void mesh_outlier_failure(struct mesh_proxy_shared *sh, const struct snap_dest *d,
                          const struct snap_endpoint *ep, uint64_t now)
{
    const struct mesh_outlier_policy *o = &d->policy.outlier;
    struct mesh_ep_state *st = ep->state;
    int fails = atomic_fetch_add_explicit(&st->consecutive_failures, 1, memory_order_relaxed) + 1;
    if (!o->enabled || fails < o->consecutive_failures)
        return;
    if (atomic_load_explicit(&st->ejected_until, memory_order_relaxed) != 0)
        return;
    int ejected = atomic_load_explicit(&d->state->ejected, memory_order_relaxed);
    if (ejected > 0 && (size_t)(ejected + 1) * 100 > (size_t)o->max_ejection_percent * d->n)
        return;
    int times = atomic_load_explicit(&st->ejections, memory_order_relaxed);
    uint64_t t = o->base_ejection_ms;
    for (int i = 0; i < times && t < o->max_ejection_ms; i++)
        t *= 2;
    if (t > o->max_ejection_ms)
        t = o->max_ejection_ms;
    long long expected = 0;
    if (!atomic_compare_exchange_strong(&st->ejected_until, &expected, (long long)(now + t)))
        return; /* another worker ejected it first */
    atomic_fetch_add_explicit(&st->ejections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->state->ejected, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->state->ejections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->health_epoch, 1, memory_order_release);
    char a[MESH_ADDR_STRLEN];
    mesh_log_warn("ejected %s from '%s' for %llu ms after %d connect failures in a row",
                  mesh_addr_format(&ep->addr, a, sizeof(a)), d->key, (unsigned long long)t, fails);
}

void mesh_outlier_success(const struct snap_endpoint *ep)
{
    if (atomic_load_explicit(&ep->state->consecutive_failures, memory_order_relaxed))
        atomic_store_explicit(&ep->state->consecutive_failures, 0, memory_order_relaxed);
}
