#define MESH_LOG_MODULE "outlier"

#include "common/log.h"
#include "proxy/proxy-int.h"

/*
 * Passive outlier detection on connect failures and, for HTTP, on 5xx responses and gateway
 * errors (502, 503, 504), each counted in a row. After `consecutive_failures` in a row an
 * endpoint is ejected for base_ejection_time, doubled at each ejection in a row up to
 * max_ejection_time, unless that would eject more than max_ejection_percent of the
 * destination (one endpoint may always go). The main loop returns ejected endpoints when
 * their time is up (proxy.c). Any worker may eject; a compare-and-swap makes it once.
 */
/* Ejects ep unless it is out already or the destination's ejection cap forbids it. */
static void eject(struct mesh_proxy_shared *sh, const struct snap_dest *d,
                  const struct snap_endpoint *ep, uint64_t now, int count, const char *what)
{
    const struct mesh_outlier_policy *o = &d->policy->outlier;
    struct mesh_ep_state *st = ep->state;
    if (atomic_load_explicit(&st->ejected_until, memory_order_relaxed) != 0)
        return;
    int ejected = atomic_load_explicit(&st->dest->ejected, memory_order_relaxed);
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
    atomic_fetch_add_explicit(&st->dest->ejected, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->state->ejections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->health_epoch, 1, memory_order_release);
    char a[MESH_ADDR_STRLEN];
    mesh_log_warn("ejected %s from '%s' for %llu ms after %d %s in a row",
                  mesh_ipport_format(&ep->addr, a, sizeof(a)), d->key, (unsigned long long)t, count,
                  what);
}

void mesh_outlier_failure(struct mesh_proxy_shared *sh, const struct snap_dest *d,
                          const struct snap_endpoint *ep, uint64_t now)
{
    const struct mesh_outlier_policy *o = &d->policy->outlier;
    int fails =
        atomic_fetch_add_explicit(&ep->state->consecutive_failures, 1, memory_order_relaxed) + 1;
    if (o->enabled && fails >= o->consecutive_failures)
        eject(sh, d, ep, now, fails, "connect failures");
}

static void reset_counter(atomic_int *c)
{
    if (atomic_load_explicit(c, memory_order_relaxed))
        atomic_store_explicit(c, 0, memory_order_relaxed);
}

void mesh_outlier_http_status(struct mesh_proxy_shared *sh, const struct snap_dest *d,
                              const struct snap_endpoint *ep, uint64_t now, int status)
{
    const struct mesh_outlier_policy *o = &d->policy->outlier;
    struct mesh_ep_state *st = ep->state;
    if (status < 500) {
        reset_counter(&st->consecutive_5xx);
        reset_counter(&st->consecutive_gateway);
        return;
    }
    int n5 = atomic_fetch_add_explicit(&st->consecutive_5xx, 1, memory_order_relaxed) + 1;
    bool gateway = status == 502 || status == 503 || status == 504;
    int ngw = gateway
                  ? atomic_fetch_add_explicit(&st->consecutive_gateway, 1, memory_order_relaxed) + 1
                  : 0;
    if (!gateway)
        reset_counter(&st->consecutive_gateway);
    if (!o->enabled)
        return;
    if (o->consecutive_5xx && n5 >= o->consecutive_5xx)
        eject(sh, d, ep, now, n5, "5xx responses");
    else if (o->consecutive_gateway_errors && ngw >= o->consecutive_gateway_errors)
        eject(sh, d, ep, now, ngw, "gateway errors");
}

void mesh_outlier_success(const struct snap_endpoint *ep)
{
    if (atomic_load_explicit(&ep->state->consecutive_failures, memory_order_relaxed))
        atomic_store_explicit(&ep->state->consecutive_failures, 0, memory_order_relaxed);
}
