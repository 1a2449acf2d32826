#define MESH_LOG_MODULE "catalog"

/*
 * The mesh's registry (controller/catalog.h): nodes' services under a lease, checked here,
 * and blocking queries parked until a change; the catalog and its answers are kept in
 * catalog_doc.c. Changes close together are answered together (WAKE_DELAY_MS), so a burst
 * of reports costs one answer per "since", not one per report.
 */
#include "controller/catalog.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/alloc.h"
#include "common/hmap.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/names.h"
#include "common/spiffe.h"
#include "common/strutil.h"
#include "controller/catalog-int.h"
#include "controller/tokens.h"

#define WAIT_DEFAULT_MS 30000
#define WAIT_MAX_MS 600000
#define WAKE_DELAY_MS 25
#define LABELS_MAX 64

static const char *const protocols[] = {"tcp", "http", "http2", "grpc", NULL};
static const char *const healths[] = {"healthy", "unhealthy", "draining", NULL};

static bool one_of(const char *s, const char *const *list)
{
    for (size_t i = 0; s && list[i]; i++) {
        if (strcmp(s, list[i]) == 0)
            return true;
    }
    return false;
}

static void entry_free(struct mesh_ctl_catalog_entry *e)
{
    if (!e)
        return;
    mesh_free(e->zone);
    json_decref(e->services);
    mesh_free(e);
}

/* ---- checking a report ---- */

/* "services[i]<what>" into err; false. */
MESH_PRINTF(4, 5) static bool fail(char *err, size_t n, size_t i, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(err, n, "services[%zu]%s", i, msg);
    return false;
}

static bool identity_allowed(const struct mesh_ctl_catalog *c, const char *node,
                             const json_t *patterns, const char *id)
{
    char nodes[300], ctl[300];
    snprintf(nodes, sizeof(nodes), "spiffe://%s/node/", c->o.trust_domain);
    snprintf(ctl, sizeof(ctl), "spiffe://%s/mesh-controller", c->o.trust_domain);
    (void)node;
    if (strncmp(id, nodes, strlen(nodes)) == 0 || strcmp(id, ctl) == 0)
        return false; /* never a node's or the controller's identity */
    size_t i;
    json_t *v;
    json_array_foreach(patterns, i, v)
    {
        if (json_is_string(v) && mesh_pattern_match(json_string_value(v), id))
            return true;
    }
    return false;
}

static bool check_labels(json_t *labels, char *err, size_t n, size_t i)
{
    if (!json_is_object(labels) || json_object_size(labels) > LABELS_MAX)
        return fail(err, n, i, ".labels: expected an object of at most 64 labels");
    const char *k, *why = NULL;
    json_t *v;
    json_object_foreach(labels, k, v)
    {
        if (!mesh_label_key_valid(k, &why))
            return fail(err, n, i, ".labels: a key is not a label name: %s", why);
        if (!json_is_string(v) || !mesh_label_value_valid(json_string_value(v), &why))
            return fail(err, n, i, ".labels: a value is not a label value: %s",
                        why ? why : "expected a string");
    }
    return true;
}

static bool check_service(const struct mesh_ctl_catalog *c, const char *node,
                          const json_t *patterns, json_t *s, size_t i, char *err, size_t n)
{
    static const char *const keys[] = {"namespace", "name",     "protocol", "port",
                                       "labels",    "identity", "health",   NULL};
    if (!json_is_object(s))
        return fail(err, n, i, ": expected an object");
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v)
    {
        if (!one_of(k, keys))
            return fail(err, n, i, ": unknown key '%.40s'", k);
    }
    const char *ns = json_string_value(json_object_get(s, "namespace"));
    const char *name = json_string_value(json_object_get(s, "name"));
    const char *proto = json_string_value(json_object_get(s, "protocol"));
    const char *id = json_string_value(json_object_get(s, "identity"));
    const char *health = json_string_value(json_object_get(s, "health"));
    json_t *port = json_object_get(s, "port"), *labels = json_object_get(s, "labels");
    const char *why = NULL;
    if (!ns || (why = mesh_name_check_dns_label(ns)))
        return fail(err, n, i, ".namespace: %s", why ? why : "expected a DNS label");
    if (!name || (why = mesh_name_check_dns_label(name)))
        return fail(err, n, i, ".name: %s", why ? why : "expected a DNS label");
    if (json_object_get(s, "protocol") && !one_of(proto, protocols))
        return fail(err, n, i, ".protocol: expected tcp, http, http2 or grpc");
    if (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535)
        return fail(err, n, i, ".port: expected a port, 1-65535");
    if (json_object_get(s, "health") && !one_of(health, healths))
        return fail(err, n, i, ".health: expected healthy, unhealthy or draining");
    if (labels && !check_labels(labels, err, n, i))
        return false;
    if (!id || !mesh_spiffe_id_valid(id, strlen(id), c->o.trust_domain, &why))
        return fail(err, n, i, ".identity: expected a SPIFFE ID of the trust domain");
    if (!identity_allowed(c, node, patterns, id))
        return fail(err, n, i,
                    ".identity: not among the identities this node's join token "
                    "allows ('%.200s')",
                    id);
    return true;
}

bool mesh_ctl_catalog_check(const struct mesh_ctl_catalog *c, const char *node,
                            const json_t *patterns, json_t *services, char *err, size_t err_size)
{
    if (!services)
        return true;
    if (!json_is_array(services) || json_array_size(services) > MESH_CTL_CATALOG_SERVICES_MAX) {
        snprintf(err, err_size, "services: expected an array of at most %d services",
                 MESH_CTL_CATALOG_SERVICES_MAX);
        return false;
    }
    for (size_t i = 0; i < json_array_size(services); i++) {
        json_t *s = json_array_get(services, i);
        if (!check_service(c, node, patterns, s, i, err, err_size))
            return false;
        /* One instance per namespace, name and port: the port tells instances apart. */
        for (size_t j = 0; j < i; j++) {
            const json_t *t = json_array_get(services, j);
            if (json_equal(json_object_get(s, "namespace"), json_object_get(t, "namespace")) &&
                json_equal(json_object_get(s, "name"), json_object_get(t, "name")) &&
                json_equal(json_object_get(s, "port"), json_object_get(t, "port"))) {
                snprintf(err, err_size, "services[%zu]: the same service and port as services[%zu]",
                         i, j);
                return false;
            }
        }
    }
    return true;
}

/* ---- changes and blocking queries ---- */

static void on_wake(uv_timer_t *t);

/* Notes a node's services in (or out of) the catalog; if that fails, the next answer
 * indexes every node again rather than miss a change. */
static void index_node(struct mesh_ctl_catalog *c, const struct mesh_ctl_catalog_entry *e, bool in)
{
    if (mesh_ctl__catalog_node_index(c, e, in) < 0)
        c->reindex = true;
}

static void changed(struct mesh_ctl_catalog *c)
{
    c->index++;
    c->changes++;
    if (!c->closing && !uv_is_active((uv_handle_t *)&c->wake_timer))
        uv_timer_start(&c->wake_timer, on_wake, WAKE_DELAY_MS, 0);
}

static void answer(struct mesh_ctl_catalog *c, struct mesh_http_exchange *ex, uint64_t since)
{
    const char *text = NULL;
    size_t len = 0;
    if (mesh_ctl__catalog_text(c, since, &text, &len) < 0) {
        mesh_http_respond_json(ex, 500, json_pack("{s:s}", "error", "out of memory"));
        return;
    }
    char index[32];
    snprintf(index, sizeof(index), "%llu", (unsigned long long)c->index);
    const struct mesh_http_field extra[] = {
        {"X-Mesh-Index", index}, {"Cache-Control", "no-store"}, {NULL, NULL}};
    mesh_http_respond(ex, 200, "application/json", extra, text, len);
}

static void on_waiter_closed(uv_handle_t *h)
{
    mesh_free(h->data);
}

static void waiter_done(struct mesh_ctl_catalog_waiter *w)
{
    struct mesh_ctl_catalog *c = w->c;
    if (w->prev)
        w->prev->next = w->next;
    else
        c->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->ex = NULL;
    c->parked--;
    uv_close((uv_handle_t *)&w->timer, on_waiter_closed);
}

static void on_wait_over(uv_timer_t *t)
{
    struct mesh_ctl_catalog_waiter *w = t->data;
    struct mesh_http_exchange *ex = w->ex;
    struct mesh_ctl_catalog *c = w->c;
    uint64_t w_index = w->index;
    waiter_done(w);
    answer(c, ex, w_index); /* no change: the same index */
}

static void on_client_gone(void *data)
{
    waiter_done(data);
}

/* Answers the parked queries whose index is no longer the current one. */
static void wake(struct mesh_ctl_catalog *c, bool all)
{
    struct mesh_ctl_catalog_waiter *w = c->waiters;
    while (w) {
        struct mesh_ctl_catalog_waiter *next = w->next;
        if (all || w->index != c->index) {
            struct mesh_http_exchange *ex = w->ex;
            uint64_t since = w->index;
            waiter_done(w);
            answer(c, ex, since);
        }
        w = next;
    }
}

static void on_wake(uv_timer_t *t)
{
    struct mesh_ctl_catalog *c = t->data;
    uint64_t now = uv_now(c->loop);
    if (now < c->warm_until) {
        uv_timer_start(&c->wake_timer, on_wake, c->warm_until - now, 0);
        return;
    }
    wake(c, false);
}

void mesh_ctl_catalog_wake(struct mesh_ctl_catalog *c)
{
    if (c)
        wake(c, true);
}

static void query(const char *q, size_t len, uint64_t *index, uint64_t *wait_ms)
{
    *index = 0;
    *wait_ms = WAIT_DEFAULT_MS;
    char buf[256];
    snprintf(buf, sizeof(buf), "%.*s", (int)(len < 255 ? len : 255), q ? q : "");
    char *save = NULL;
    for (char *p = strtok_r(buf, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
        if (strncmp(p, "index=", 6) == 0)
            *index = strtoull(p + 6, NULL, 10);
        else if (strncmp(p, "wait=", 5) == 0 && mesh_parse_duration_ms(p + 5, wait_ms) < 0)
            *wait_ms = WAIT_DEFAULT_MS;
    }
    if (*wait_ms > WAIT_MAX_MS)
        *wait_ms = WAIT_MAX_MS;
}

void mesh_ctl_catalog_get(struct mesh_ctl_catalog *c, struct mesh_http_exchange *ex, const char *q,
                          size_t q_len)
{
    uint64_t index, wait_ms, now = uv_now(c->loop);
    query(q, q_len, &index, &wait_ms);
    /* Right after a start, an agent that knew a catalog waits for the nodes' reports. */
    bool warming = now < c->warm_until && index != 0;
    if (c->closing || wait_ms == 0 || (index != c->index && !warming)) {
        answer(c, ex, index);
        return;
    }
    struct mesh_ctl_catalog_waiter *w = mesh_calloc(1, sizeof(*w));
    if (!w) {
        mesh_http_respond_json(ex, 500, json_pack("{s:s}", "error", "out of memory"));
        return;
    }
    w->c = c;
    w->ex = ex;
    w->index = index;
    uv_timer_init(c->loop, &w->timer);
    w->timer.data = w;
    w->next = c->waiters;
    if (c->waiters)
        c->waiters->prev = w;
    c->waiters = w;
    c->parked++;
    uv_timer_start(&w->timer, on_wait_over, wait_ms, 0);
    if (warming && !uv_is_active((uv_handle_t *)&c->wake_timer))
        uv_timer_start(&c->wake_timer, on_wake, c->warm_until - now, 0);
    mesh_http_exchange_on_abort(ex, on_client_gone, w);
}

/* ---- reports and leases ---- */

int mesh_ctl_catalog_report(struct mesh_ctl_catalog *c, const char *node, const char *address,
                            int inbound_port, const char *zone, const json_t *services)
{
    struct mesh_ctl_catalog_entry *e = mesh_hmap_get(&c->nodes, node);
    json_t *copy = services ? json_deep_copy(services) : json_array();
    if (!copy)
        return -ENOMEM;
    if (zone && !zone[0])
        zone = NULL;
    if (!e) {
        size_t n = strlen(node) + 1;
        e = mesh_calloc(1, sizeof(*e) + n);
        if (!e || (memcpy(e->node, node, n), mesh_hmap_put(&c->nodes, e->node, e) < 0)) {
            mesh_free(e);
            json_decref(copy);
            return -ENOMEM;
        }
    } else if (!e->lapsed && json_equal(e->services, copy) && strcmp(e->address, address) == 0 &&
               e->inbound_port == inbound_port && !e->zone == !zone &&
               (!zone || strcmp(e->zone, zone) == 0)) {
        json_decref(copy); /* the same as before: a renewal of the lease only */
        e->seen_ms = uv_now(c->loop);
        return 0;
    }
    char *z = zone ? mesh_strdup(zone) : NULL;
    if (zone && !z) {
        json_decref(copy);
        return -ENOMEM;
    }
    if (e->lapsed)
        mesh_log_notice("node %s reports again: its endpoints are healthy", node);
    if (e->services)
        index_node(c, e, false);
    mesh_free(e->zone);
    e->zone = z;
    json_decref(e->services);
    e->services = copy;
    snprintf(e->address, sizeof(e->address), "%s", address);
    e->inbound_port = inbound_port;
    e->seen_ms = uv_now(c->loop);
    e->lapsed = false;
    index_node(c, e, true);
    changed(c);
    return 0;
}

void mesh_ctl_catalog_leave(struct mesh_ctl_catalog *c, const char *node)
{
    struct mesh_ctl_catalog_entry *e = mesh_hmap_remove(&c->nodes, node);
    if (!e)
        return;
    if (json_array_size(e->services))
        mesh_log_info("node %s left: its %zu services are removed", node,
                      json_array_size(e->services));
    index_node(c, e, false);
    entry_free(e);
    changed(c);
}

static void on_lease_timer(uv_timer_t *t)
{
    struct mesh_ctl_catalog *c = t->data;
    uint64_t now = uv_now(c->loop);
    /* A loop that stalled (an overloaded host) has reports waiting in its sockets: nodes are
     * not its fault. Their leases are judged again once a report interval went by. */
    if (c->last_tick && now - c->last_tick > 2 * c->tick_ms + 1000) {
        mesh_log_warn("the event loop stalled for %llu ms: leases are judged again in %llu ms",
                      (unsigned long long)(now - c->last_tick),
                      (unsigned long long)c->o.report_interval_ms);
        c->judge_after = now + c->o.report_interval_ms;
    }
    c->last_tick = now;
    if (now < c->judge_after)
        return;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    char gone[64][256];
    size_t n_gone = 0;
    while (mesh_hmap_next(&c->nodes, &i, &he)) {
        struct mesh_ctl_catalog_entry *e = he->value;
        uint64_t age = now - e->seen_ms;
        if (age > c->o.expiry_ms && n_gone < 64) {
            snprintf(gone[n_gone++], sizeof(gone[0]), "%s", e->node);
        } else if (age > c->o.grace_ms && !e->lapsed) {
            e->lapsed = true;
            if (json_array_size(e->services)) {
                mesh_log_warn("node %s: no report for %llu ms, its %zu endpoints are unhealthy",
                              e->node, (unsigned long long)age, json_array_size(e->services));
                index_node(c, e, true);
                changed(c);
            }
        }
    }
    for (size_t k = 0; k < n_gone; k++) {
        struct mesh_ctl_catalog_entry *e = mesh_hmap_remove(&c->nodes, gone[k]);
        if (json_array_size(e->services)) {
            mesh_log_notice("node %s: no report for %llu s, its services are removed", gone[k],
                            (unsigned long long)(c->o.expiry_ms / 1000));
            index_node(c, e, false);
            changed(c);
        }
        entry_free(e);
    }
}

uint64_t mesh_ctl_catalog_index(const struct mesh_ctl_catalog *c)
{
    return c->index;
}

uint64_t mesh_ctl_catalog_report_interval(const struct mesh_ctl_catalog *c)
{
    return c->o.report_interval_ms;
}

void mesh_ctl_catalog_stats(const struct mesh_ctl_catalog *c, uint64_t *ret_endpoints,
                            uint64_t *ret_lapsed, uint64_t *ret_parked, uint64_t *ret_changes)
{
    uint64_t eps = 0, lapsed = 0;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&c->nodes, &i, &he)) {
        const struct mesh_ctl_catalog_entry *e = he->value;
        eps += json_array_size(e->services);
        lapsed += e->lapsed;
    }
    *ret_endpoints = eps;
    *ret_lapsed = lapsed;
    *ret_parked = c->parked;
    *ret_changes = c->changes;
}

int mesh_ctl_catalog_new(uv_loop_t *loop, const struct mesh_ctl_catalog_options *o,
                         struct mesh_ctl_catalog **ret)
{
    struct mesh_ctl_catalog *c = mesh_calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->o = *o;
    mesh_hmap_init(&c->nodes);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    /* Never back across restarts: agents compare indexes for equality only, but an index
     * that comes back to a value they hold would hide a change. */
    c->index = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    c->floor = c->index;
    if (mesh_ctl__catalog_doc_init(c) < 0) {
        mesh_free(c);
        return -ENOMEM;
    }
    c->warm_until = uv_now(loop) + o->report_interval_ms + o->report_interval_ms / 2;
    uv_timer_init(loop, &c->lease_timer);
    uv_timer_init(loop, &c->wake_timer);
    c->lease_timer.data = c->wake_timer.data = c;
    uint64_t tick = o->grace_ms / 4 ? o->grace_ms / 4 : 1;
    c->tick_ms = tick > 1000 ? 1000 : tick;
    uv_timer_start(&c->lease_timer, on_lease_timer, c->tick_ms, c->tick_ms);
    c->open_handles = 2;
    *ret = c;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct mesh_ctl_catalog *c = h->data;
    if (--c->open_handles)
        return;
    size_t i = 0;
    const struct mesh_hmap_entry *he;
    while (mesh_hmap_next(&c->nodes, &i, &he))
        entry_free(he->value);
    mesh_hmap_done(&c->nodes);
    mesh_ctl__catalog_doc_done(c);
    mesh_free(c);
}

void mesh_ctl_catalog_free(struct mesh_ctl_catalog *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    wake(c, true);
    uv_close((uv_handle_t *)&c->lease_timer, on_closed);
    uv_close((uv_handle_t *)&c->wake_timer, on_closed);
}
