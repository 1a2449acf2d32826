#include <string.h>
#include <strings.h>

#include "proxy/http_try-int.h"

void mesh_http_try_begin(struct http_req *q, const struct snap_endpoint *e, uint64_t now)
{
    mesh_http_try_end(q);
    q->try_ep = e->state;
    q->try_start = now;
    atomic_fetch_add_explicit(&e->state->active, 1, memory_order_relaxed);
}

void mesh_http_try_end(struct http_req *q)
{
    if (!q->try_ep)
        return;
    atomic_fetch_sub_explicit(&q->try_ep->active, 1, memory_order_relaxed);
    q->try_ep = NULL;
}

uint64_t mesh_http_try_deadline(const struct http_req *q, bool *ret_soft)
{
    uint64_t ms = q->rr->per_try_timeout_ms;
    *ret_soft = ms == 0;
    if (!ms)
        ms = q->dest->policy->per_try_timeout_ms;
    return ms ? q->try_start + ms : 0;
}

bool mesh_http_retry_budget_allows(const struct http_req *q, const struct mesh_http_stats *st)
{
    const struct mesh_retry_policy *p = &q->rr->retries;
    long long active = atomic_load_explicit(&st->active, memory_order_relaxed);
    long long retrying = atomic_load_explicit(&st->retrying, memory_order_relaxed);
    long long cap = active * p->budget_percent / 100;
    if (cap < p->min_retry_concurrency)
        cap = p->min_retry_concurrency;
    return retrying < cap;
}

enum mesh_http_marked mesh_http_take_mark(struct mesh_http_response *res, bool from_agent)
{
    static const char name[] = MESH_HTTP_FAILURE_HEADER;
    enum mesh_http_marked mark = MESH_HTTP_MARK_NONE;
    size_t kept = 0;
    for (size_t i = 0; i < res->num_headers; i++) {
        const struct mesh_http_header *h = &res->headers[i];
        if (h->name_len != sizeof(name) - 1 || strncasecmp(h->name, name, h->name_len) != 0) {
            res->headers[kept++] = *h;
            continue;
        }
        if (!from_agent || res->status < 500)
            continue;
        if (h->value_len == 15 && strncasecmp(h->value, "connect-failure", 15) == 0)
            mark = MESH_HTTP_MARK_CONNECT;
        else if (h->value_len == 5 && strncasecmp(h->value, "reset", 5) == 0 &&
                 mark == MESH_HTTP_MARK_NONE)
            mark = MESH_HTTP_MARK_RESET;
    }
    res->num_headers = kept;
    return mark;
}

const char *mesh_http_mark_for(unsigned flags)
{
    /* A reset on any try: the workload may have processed it. */
    if (flags & RF_UPSTREAM_RESET)
        return MESH_HTTP_FAILURE_HEADER ": reset\r\n";
    if (flags & (RF_CONNECT_FAILURE | RF_NO_HEALTHY))
        return MESH_HTTP_FAILURE_HEADER ": connect-failure\r\n";
    return NULL;
}
