/* The catalog's merge rules (docs/catalog.md), one test each. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "catalog/catalog.h"
#include "common/atom.h"
#include "tests/unit/unit.h"

static struct mesh_endpoint ep(const char *ip, int port, unsigned weight, const char *zone)
{
    struct mesh_endpoint e = {0};
    assert_int_equal(mesh_ipport_from_ip(ip, (uint16_t)port, &e.addr), 0);
    e.weight = weight;
    e.health = MESH_EP_READY | MESH_EP_SERVING;
    e.zone = mesh_atom(zone); /* the caller's: mesh_endpoint_done */
    return e;
}

static int update(struct mesh_catalog *c, const char *src, const char *name,
                  const struct mesh_endpoint *eps, size_t n)
{
    struct mesh_service_update u = {"default", name, MESH_PROTO_TCP, eps, n, false, NULL};
    return mesh_catalog_update(c, src, &u);
}

static struct mesh_catalog *new_catalog(bool consul_merges)
{
    struct mesh_catalog *c;
    assert_int_equal(mesh_catalog_new(&c), 0);
    /* Listed in an order unlike the precedence, to show precedence comes from the rank
     * (the agent gives each source its type's, mesh_registries_rank). */
    struct mesh_catalog_source src[] = {
        {"consul", "consul", consul_merges, 2},
        {"k8s", "kubernetes", true, 1},
        {"files", "static", true, 0},
        {"files2", "static", true, 0},
    };
    assert_int_equal(mesh_catalog_set_sources(c, src, 4), 0);
    return c;
}

static const struct mesh_endpoint *find_ep(const struct mesh_service *s, const char *ip, int port)
{
    struct mesh_endpoint key = ep(ip, port, 1, NULL);
    for (size_t i = 0; i < s->n_endpoints; i++) {
        if (mesh_endpoint_addr_cmp(&s->endpoints[i], &key) == 0)
            return &s->endpoints[i];
    }
    return NULL;
}

/* Rule 1: endpoints from several sources are united, each labelled with its source. */
static void test_union_with_registry_label(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint vm = ep("10.0.0.1", 80, 1, NULL), pod = ep("10.1.0.1", 80, 1, NULL);
    assert_int_equal(update(c, "files", "api", &vm, 1), 1);
    assert_int_equal(update(c, "k8s", "api", &pod, 1), 1);
    const struct mesh_service *s = mesh_catalog_get(c, "default", "api");
    assert_non_null(s);
    assert_int_equal(s->n_endpoints, 2);
    assert_true(s->merged);
    assert_string_equal(mesh_service_ep_label(s, find_ep(s, "10.0.0.1", 80), "mesh/registry"),
                        "files");
    assert_string_equal(mesh_service_ep_label(s, find_ep(s, "10.1.0.1", 80), "mesh/registry"),
                        "k8s");
    assert_int_equal(s->n_sources, 2);
    assert_string_equal(s->sources[0], "files"); /* static before kubernetes */
    mesh_catalog_free(c);
}

/* Rule 2: one address from two sources is one endpoint with the higher precedence's data. */
static void test_same_address_precedence(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint from_consul = ep("10.0.0.1", 80, 7, "consul-zone");
    struct mesh_endpoint from_k8s = ep("10.0.0.1", 80, 3, "k8s-zone");
    struct mesh_endpoint from_files = ep("10.0.0.1", 80, 5, "files-zone");
    update(c, "consul", "api", &from_consul, 1);
    update(c, "k8s", "api", &from_k8s, 1);
    const struct mesh_service *s = mesh_catalog_get(c, "default", "api");
    assert_int_equal(s->n_endpoints, 1);
    assert_string_equal(s->endpoints[0].zone, "k8s-zone"); /* kubernetes beats consul */
    assert_int_equal(s->endpoints[0].weight, 3);
    update(c, "files", "api", &from_files, 1);
    s = mesh_catalog_get(c, "default", "api");
    assert_int_equal(s->n_endpoints, 1);
    assert_string_equal(s->endpoints[0].zone, "files-zone"); /* static beats both */
    assert_string_equal(mesh_service_ep_label(s, &s->endpoints[0], "mesh/registry"), "files");
    mesh_catalog_free(c);
    mesh_endpoint_done(&from_consul);
    mesh_endpoint_done(&from_k8s);
    mesh_endpoint_done(&from_files);
}

/* Rule 2, ties: among sources of one type the one listed first wins. */
static void test_same_type_first_listed_wins(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint a = ep("10.0.0.1", 80, 1, "first"), b = ep("10.0.0.1", 80, 1, "second");
    update(c, "files2", "api", &b, 1);
    update(c, "files", "api", &a, 1);
    assert_string_equal(mesh_catalog_get(c, "default", "api")->endpoints[0].zone, "first");
    mesh_catalog_free(c);
    mesh_endpoint_done(&a);
    mesh_endpoint_done(&b);
}

/* Rule 3: a non-merging source stops the union for the services it reports. */
static void test_no_merge(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(false);
    struct mesh_endpoint vm = ep("10.0.0.1", 80, 1, NULL), con = ep("10.2.0.1", 80, 1, NULL);
    update(c, "consul", "api", &con, 1);
    const struct mesh_service *s = mesh_catalog_get(c, "default", "api");
    assert_int_equal(s->n_endpoints, 1);
    update(c, "files", "api", &vm, 1);
    s = mesh_catalog_get(c, "default", "api");
    assert_false(s->merged);
    assert_int_equal(s->n_endpoints, 1); /* files has precedence: its set alone */
    assert_non_null(find_ep(s, "10.0.0.1", 80));
    /* A service only the merging sources report is still united. */
    update(c, "files", "web", &vm, 1);
    update(c, "k8s", "web", &con, 1);
    assert_int_equal(mesh_catalog_get(c, "default", "web")->n_endpoints, 2);
    mesh_catalog_free(c);
}

/* Rule 4: the protocol of the highest-precedence source. */
static void test_protocol_precedence(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL), f = ep("10.0.0.2", 80, 1, NULL);
    struct mesh_service_update u1 = {"default", "api", MESH_PROTO_GRPC, &e, 1, false, NULL};
    struct mesh_service_update u2 = {"default", "api", MESH_PROTO_HTTP, &f, 1, false, NULL};
    mesh_catalog_update(c, "consul", &u1);
    mesh_catalog_update(c, "k8s", &u2);
    assert_int_equal(mesh_catalog_get(c, "default", "api")->protocol, MESH_PROTO_HTTP);
    mesh_catalog_free(c);
}

/* Rule 5: a full sync removes only what was not reported, and only when it ends. */
static void test_sync_sweeps_at_end(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL);
    update(c, "consul", "a", &e, 1);
    update(c, "consul", "b", &e, 1);
    update(c, "k8s", "b", &e, 1);
    mesh_catalog_sync_begin(c, "consul");
    assert_non_null(mesh_catalog_get(c, "default", "a")); /* nothing removed yet */
    update(c, "consul", "a", &e, 1);                      /* unchanged, still reported */
    uint64_t v = mesh_catalog_version(c);
    mesh_catalog_sync_end(c, "consul");
    assert_true(mesh_catalog_version(c) > v);
    assert_non_null(mesh_catalog_get(c, "default", "a"));
    const struct mesh_service *b = mesh_catalog_get(c, "default", "b");
    assert_non_null(b); /* k8s still reports it */
    assert_int_equal(b->n_sources, 1);
    assert_string_equal(b->sources[0], "k8s");
    struct mesh_catalog_source_stats st;
    assert_int_equal(mesh_catalog_source_stats(c, "consul", &st), 0);
    assert_true(st.synced);
    assert_int_equal(st.services, 1);
    mesh_catalog_free(c);
}

static void test_unchanged_update_is_no_change(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e[2] = {ep("10.0.0.2", 80, 1, NULL), ep("10.0.0.1", 80, 1, NULL)};
    struct mesh_endpoint swapped[2] = {e[1], e[0]};
    assert_int_equal(update(c, "files", "a", e, 2), 1);
    uint64_t v = mesh_catalog_version(c);
    assert_int_equal(update(c, "files", "a", swapped, 2), 0); /* order does not matter */
    assert_int_equal(mesh_catalog_version(c), v);
    assert_int_equal(update(c, "files", "a", e, 1), 1);
    assert_int_equal(update(c, "files", "a", NULL, 0), 1); /* removal */
    assert_null(mesh_catalog_get(c, "default", "a"));
    assert_int_equal(update(c, "files", "a", NULL, 0), 0);
    assert_int_equal(mesh_catalog_count(c), 0);
    mesh_catalog_free(c);
}

/* A service one source reports uses that source's endpoints, not a copy of them; they
 * outlive the view while the service is held. */
static void test_lone_source_shares_endpoints(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL);
    assert_int_equal(update(c, "k8s", "a", &e, 1), 1);
    struct mesh_service *s = mesh_service_ref(mesh_catalog_get(c, "default", "a"));
    struct mesh_catalog_capture *cap;
    assert_int_equal(mesh_catalog_capture(c, &cap), 0);
    assert_int_equal(cap->n_views, 1);
    assert_string_equal(cap->sources[cap->views[0].source], "k8s");
    assert_ptr_equal(cap->views[0].endpoints, s->endpoints);
    assert_string_equal(mesh_service_ep_label(s, &s->endpoints[0], "mesh/registry"), "k8s");
    assert_int_equal(update(c, "k8s", "a", NULL, 0), 1); /* the view goes */
    assert_int_equal(s->n_endpoints, 1);
    assert_int_equal(s->endpoints[0].addr.port, 80);
    assert_int_equal(cap->views[0].n_endpoints, 1); /* the capture holds them too */
    assert_int_equal(cap->views[0].endpoints[0].addr.port, 80);
    mesh_catalog_capture_free(cap);
    mesh_service_unref(s);
    mesh_catalog_free(c);
}

static void test_invalid_updates_refused(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL);
    assert_int_equal(update(c, "nope", "a", &e, 1), -ENOENT);
    assert_int_equal(update(c, "files", "Bad_Name", &e, 1), -EINVAL);
    struct mesh_endpoint heavy = ep("10.0.0.1", 80, MESH_WEIGHT_MAX + 1, NULL);
    assert_int_equal(update(c, "files", "a", &heavy, 1), -EINVAL);
    struct mesh_endpoint none = {0};
    none.weight = 1;
    assert_int_equal(update(c, "files", "a", &none, 1), -EINVAL);
    assert_int_equal(mesh_catalog_count(c), 0);
    mesh_catalog_free(c);
}

static void test_duplicate_within_one_source_keeps_first(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e[3] = {ep("10.0.0.1", 80, 4, "first"), ep("10.0.0.9", 80, 1, NULL),
                                 ep("10.0.0.1", 80, 9, "second")};
    update(c, "files", "a", e, 3);
    const struct mesh_service *s = mesh_catalog_get(c, "default", "a");
    assert_int_equal(s->n_endpoints, 2);
    assert_string_equal(find_ep(s, "10.0.0.1", 80)->zone, "first");
    mesh_catalog_free(c);
    for (size_t i = 0; i < 3; i++)
        mesh_endpoint_done(&e[i]);
}

static void test_removing_a_source_drops_its_data(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL), f = ep("10.0.0.2", 80, 1, NULL);
    update(c, "consul", "a", &e, 1);
    update(c, "files", "a", &f, 1);
    update(c, "consul", "only-consul", &e, 1);
    struct mesh_catalog_source src[] = {{"files", "static", true, 0}};
    assert_int_equal(mesh_catalog_set_sources(c, src, 1), 0);
    assert_null(mesh_catalog_get(c, "default", "only-consul"));
    assert_int_equal(mesh_catalog_get(c, "default", "a")->n_endpoints, 1);
    mesh_catalog_free(c);
}

static void test_published_service_outlives_change(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL), f = ep("10.0.0.2", 80, 1, NULL);
    update(c, "files", "a", &e, 1);
    struct mesh_service *held = mesh_service_ref(mesh_catalog_get(c, "default", "a"));
    update(c, "files", "a", &f, 1);
    update(c, "files", "a", NULL, 0);
    /* The snapshot a connection holds is untouched by later changes. */
    assert_int_equal(held->n_endpoints, 1);
    assert_non_null(find_ep(held, "10.0.0.1", 80));
    assert_string_equal(held->key, "default/a");
    mesh_service_unref(held);
    mesh_catalog_free(c);
}

static void test_many_services_listed_sorted(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL);
    char name[32];
    for (int i = 999; i >= 0; i--) {
        snprintf(name, sizeof(name), "svc-%04d", i);
        assert_int_equal(update(c, "files", name, &e, 1), 1);
    }
    struct mesh_service **list;
    size_t n;
    assert_int_equal(mesh_catalog_list(c, &list, &n), 0);
    assert_int_equal(n, 1000);
    assert_string_equal(list[0]->name, "svc-0000");
    assert_string_equal(list[999]->name, "svc-0999");
    mesh_free(list);
    mesh_catalog_free(c);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    struct mesh_endpoint e[2] = {ep("10.0.0.1", 80, 1, "z"), ep("10.0.0.2", 80, 1, NULL)};
    for (long n = 0; n < 200; n++) {
        struct mesh_catalog *c = new_catalog(true);
        mesh_alloc_fail_after(n);
        int r1 = update(c, "files", "a", e, 2);
        int r2 = update(c, "k8s", "a", e + 1, 1);
        mesh_catalog_sync_begin(c, "files");
        mesh_catalog_sync_end(c, "files");
        mesh_alloc_fail_after(-1);
        assert_true(r1 == 1 || r1 == -ENOMEM);
        assert_true(r2 == 1 || r2 == -ENOMEM);
        mesh_catalog_free(c);
    }
    mesh_endpoint_done(&e[0]);
}

/* Rule 2: an endpoint two sources report is tagged with both, its details from the first. */
static void test_endpoint_of_two_sources_is_tagged_with_both(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint both_k = ep("10.0.0.1", 80, 1, NULL), both_c = ep("10.0.0.1", 80, 5, NULL);
    struct mesh_endpoint only_c = ep("10.0.0.9", 80, 1, NULL);
    struct mesh_endpoint cv[] = {both_c, only_c};
    assert_int_equal(update(c, "k8s", "api", &both_k, 1), 1);
    assert_int_equal(update(c, "consul", "api", cv, 2), 1);
    const struct mesh_service *s = mesh_catalog_get(c, "default", "api");
    const struct mesh_endpoint *b = find_ep(s, "10.0.0.1", 80), *o = find_ep(s, "10.0.0.9", 80);
    assert_true(mesh_service_ep_from(s, b, "k8s"));
    assert_true(mesh_service_ep_from(s, b, "consul"));
    assert_false(mesh_service_ep_from(s, b, "files"));
    assert_string_equal(mesh_service_ep_label(s, b, MESH_CATALOG_REGISTRY_LABEL), "k8s");
    assert_int_equal(b->weight, 1);
    assert_true(mesh_service_ep_from(s, o, "consul"));
    assert_false(mesh_service_ep_from(s, o, "k8s"));
    mesh_catalog_free(c);
}

/* Rule 2: sources that disagree on an endpoint's port or labels are a counted conflict; the
 * higher source's view stands, and the count of services in conflict falls when it ends. */
static void test_disagreeing_sources_are_a_conflict(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    uint64_t total;
    size_t now;
    struct mesh_endpoint k = ep("10.0.0.1", 8080, 1, NULL), cp = ep("10.0.0.1", 9090, 1, NULL);
    assert_int_equal(update(c, "k8s", "api", &k, 1), 1);
    assert_int_equal(update(c, "consul", "api", &cp, 1), 1);
    const struct mesh_service *s = mesh_catalog_get(c, "default", "api");
    assert_int_equal(s->n_endpoints, 1); /* the port Kubernetes gives */
    assert_int_equal(s->endpoints[0].addr.port, 8080);
    mesh_catalog_conflicts(c, MESH_CATALOG_CONFLICT_PORT, &total, &now);
    assert_int_equal(total, 1);
    assert_int_equal(now, 1);
    /* The same again: one conflict still, not a new one per update. */
    struct mesh_endpoint cp2 = ep("10.0.0.1", 9090, 2, NULL);
    assert_int_equal(update(c, "consul", "api", &cp2, 1), 1);
    mesh_catalog_conflicts(c, MESH_CATALOG_CONFLICT_PORT, &total, &now);
    assert_int_equal(total, 1);
    /* Labels: the same address:port with other labels. */
    struct mesh_endpoint cl = ep("10.0.0.1", 8080, 1, NULL);
    assert_int_equal(mesh_labels_set(&cl.labels, "version", "v2"), 0);
    assert_int_equal(update(c, "consul", "api", &cl, 1), 1);
    mesh_catalog_conflicts(c, MESH_CATALOG_CONFLICT_PORT, &total, &now);
    assert_int_equal(now, 0);
    mesh_catalog_conflicts(c, MESH_CATALOG_CONFLICT_LABELS, &total, &now);
    assert_int_equal(total, 1);
    assert_int_equal(now, 1);
    s = mesh_catalog_get(c, "default", "api");
    assert_null(mesh_service_ep_label(s, &s->endpoints[0], "version")); /* Kubernetes' labels */
    assert_int_equal(update(c, "consul", "api", NULL, 0), 1);
    mesh_catalog_conflicts(c, MESH_CATALOG_CONFLICT_LABELS, &total, &now);
    assert_int_equal(now, 0);
    mesh_endpoint_done(&cl);
    mesh_catalog_free(c);
}

/* The updates of one scenario, each (source, endpoints): applied in every order. */
struct step {
    const char *src;
    const char *ips[3];
    int ports[3];
    const char *label; /* "version" on every endpoint, or NULL */
};

static void apply_step(struct mesh_catalog *c, const struct step *st)
{
    struct mesh_endpoint eps[3];
    size_t n = 0;
    for (; n < 3 && st->ips[n]; n++) {
        eps[n] = ep(st->ips[n], st->ports[n], (unsigned)(n + 1), "z");
        if (st->label)
            assert_int_equal(mesh_labels_set(&eps[n].labels, "version", st->label), 0);
    }
    assert_true(update(c, st->src, "api", eps, n) >= 0);
    for (size_t i = 0; i < n; i++)
        mesh_endpoint_done(&eps[i]);
}

/* What a merged service resolves to, as text: compared between orders. */
static void describe(const struct mesh_service *s, char *out, size_t size)
{
    size_t len = (size_t)snprintf(out, size, "%s %d %zu:", s->key, s->protocol, s->n_sources);
    for (size_t i = 0; i < s->n_sources; i++)
        len += (size_t)snprintf(out + len, size - len, " %s", s->sources[i]);
    for (size_t i = 0; i < s->n_endpoints && len < size; i++) {
        const struct mesh_endpoint *e = &s->endpoints[i];
        char a[64];
        const char *v = mesh_service_ep_label(s, e, "version");
        len += (size_t)snprintf(
            out + len, size - len, " [%s w%u %s %s", mesh_ipport_format(&e->addr, a, sizeof(a)),
            e->weight, mesh_service_ep_label(s, e, MESH_CATALOG_REGISTRY_LABEL), v ? v : "-");
        for (size_t k = 0; k < s->n_sources; k++)
            len += (size_t)snprintf(out + len, size - len, "%s",
                                    mesh_service_ep_from(s, e, s->sources[k]) ? " +" : " .");
        len += (size_t)snprintf(out + len, size - len, "]");
    }
}

/* Rule 6: the resolved catalog is the same whatever order the updates arrive in. */
static void test_merge_is_independent_of_update_order(void **state)
{
    (void)state;
    /* Overlapping addresses, a port conflict, a label conflict, four sources. */
    static const struct step steps[] = {
        {"k8s", {"10.0.0.5", "10.0.0.1", "10.0.0.9"}, {80, 80, 80}, NULL},
        {"consul", {"10.0.0.9", "10.0.0.3", "10.0.0.5"}, {80, 80, 81}, "v2"},
        {"files", {"10.0.0.7", "10.0.0.3", NULL}, {80, 80, 0}, "v1"},
        {"files2", {"10.0.0.1", "10.0.0.2", "10.0.0.8"}, {80, 80, 80}, NULL},
    };
    enum { N = MESH_ARRAY_SIZE(steps) };
    char first[2048] = "", now[2048];
    int perm[N] = {0, 1, 2, 3}, orders = 0;
    for (;;) {
        struct mesh_catalog *c = new_catalog(true);
        for (int i = 0; i < N; i++)
            apply_step(c, &steps[perm[i]]);
        describe(mesh_catalog_get(c, "default", "api"), now, sizeof(now));
        if (!first[0])
            memcpy(first, now, sizeof(now));
        else
            assert_string_equal(now, first);
        mesh_catalog_free(c);
        orders++;
        /* The next permutation, in lexicographic order. */
        int i = N - 2;
        while (i >= 0 && perm[i] > perm[i + 1])
            i--;
        if (i < 0)
            break;
        int j = N - 1;
        while (perm[j] < perm[i])
            j--;
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        for (int a = i + 1, b = N - 1; a < b; a++, b--) {
            t = perm[a];
            perm[a] = perm[b];
            perm[b] = t;
        }
    }
    assert_int_equal(orders, 24);
    /* 10.0.0.3 from files (v1) and consul: one endpoint, both sources. */
    assert_non_null(strstr(first, "[10.0.0.3:80 w2 files v1"));
}

/* Rule 7: a source may say a service exists with no endpoints; it stays until removed. */
static void test_service_with_no_endpoints_stays(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL);
    struct mesh_catalog_source_stats st;
    assert_int_equal(update(c, "k8s", "api", &e, 1), 1);
    struct mesh_service_update u = {"default", "api", MESH_PROTO_TCP, NULL, 0, true, NULL};
    assert_int_equal(mesh_catalog_update(c, "k8s", &u), 1);
    const struct mesh_service *s = mesh_catalog_get(c, "default", "api");
    assert_non_null(s);
    assert_int_equal(s->n_endpoints, 0);
    assert_int_equal(mesh_catalog_source_stats(c, "k8s", &st), 0);
    assert_int_equal(st.services, 1);
    assert_int_equal(st.endpoints, 0);
    assert_int_equal(update(c, "k8s", "api", NULL, 0), 1);
    assert_null(mesh_catalog_get(c, "default", "api"));
    assert_int_equal(mesh_catalog_source_stats(c, "k8s", &st), 0);
    assert_int_equal(st.services, 0);
    mesh_catalog_free(c);
}

/* A source may name the identity a service's workloads present; a change of it is a change. */
static void test_identity_is_carried_and_compared(void **state)
{
    (void)state;
    struct mesh_catalog *c = new_catalog(true);
    struct mesh_endpoint e = ep("10.0.0.1", 80, 1, NULL);
    const char *id = "spiffe://td/ns/default/sa/payments";
    struct mesh_service_update u = {"default", "api", MESH_PROTO_HTTP, &e, 1, false, id};
    assert_int_equal(mesh_catalog_update(c, "files", &u), 1);
    assert_string_equal(mesh_catalog_get(c, "default", "api")->identity, id);
    assert_int_equal(mesh_catalog_update(c, "files", &u), 0);
    u.identity = NULL;
    assert_int_equal(mesh_catalog_update(c, "files", &u), 1);
    assert_null(mesh_catalog_get(c, "default", "api")->identity);
    u.identity = id;
    assert_int_equal(mesh_catalog_update(c, "files", &u), 1);
    assert_string_equal(mesh_catalog_get(c, "default", "api")->identity, id);
    mesh_catalog_free(c);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_union_with_registry_label),
        UNIT_TEST(test_same_address_precedence),
        UNIT_TEST(test_same_type_first_listed_wins),
        UNIT_TEST(test_no_merge),
        UNIT_TEST(test_protocol_precedence),
        UNIT_TEST(test_sync_sweeps_at_end),
        UNIT_TEST(test_unchanged_update_is_no_change),
        UNIT_TEST(test_invalid_updates_refused),
        UNIT_TEST(test_lone_source_shares_endpoints),
        UNIT_TEST(test_duplicate_within_one_source_keeps_first),
        UNIT_TEST(test_removing_a_source_drops_its_data),
        UNIT_TEST(test_published_service_outlives_change),
        UNIT_TEST(test_many_services_listed_sorted),
        UNIT_TEST(test_allocation_failures),
        UNIT_TEST(test_endpoint_of_two_sources_is_tagged_with_both),
        UNIT_TEST(test_disagreeing_sources_are_a_conflict),
        UNIT_TEST(test_merge_is_independent_of_update_order),
        UNIT_TEST(test_service_with_no_endpoints_stays),
        UNIT_TEST(test_identity_is_carried_and_compared),
    };
    return cmocka_run_group_tests_name("catalog", tests, NULL, NULL);
}
