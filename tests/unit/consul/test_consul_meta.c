/* Service.Meta as the Consul adapter writes and reads it: labels and the namespace. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "registry-adapters/consul/consul-int.h"
#include "tests/unit/unit.h"

struct skips {
    char keys[8][320];
    const char *why[8];
    size_t n;
};

static void on_skip(void *data, const char *key, const char *why)
{
    struct skips *s = data;
    assert_true(s->n < 8);
    snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", key);
    s->why[s->n++] = why;
}

static void test_meta_keys_as_consul_checks_them(void **state)
{
    (void)state;
    assert_null(mesh_consul_meta_key_check("version"));
    assert_null(mesh_consul_meta_key_check("Team_2-x"));
    assert_non_null(mesh_consul_meta_key_check(""));
    assert_non_null(mesh_consul_meta_key_check("app.kubernetes.io/name"));
    assert_non_null(mesh_consul_meta_key_check("a b"));
    assert_non_null(mesh_consul_meta_key_check("consul-x"));
    assert_null(mesh_consul_meta_key_check("Consul-x")); /* Consul's prefix check is exact */
    char long_key[130];
    memset(long_key, 'k', 128);
    long_key[128] = '\0';
    assert_null(mesh_consul_meta_key_check(long_key));
    long_key[128] = 'k';
    long_key[129] = '\0';
    assert_contains(mesh_consul_meta_key_check(long_key), "128");
    assert_true(mesh_consul_meta_key_reserved("mesh-port"));
    assert_true(mesh_consul_meta_key_reserved("mesh-namespace"));
    assert_true(mesh_consul_meta_key_reserved("protocol"));
    assert_false(mesh_consul_meta_key_reserved("version"));
}

static void test_labels_written_to_meta(void **state)
{
    (void)state;
    struct mesh_labels l = {0};
    assert_int_equal(mesh_labels_set(&l, "version", "v1"), 0);
    assert_int_equal(mesh_labels_set(&l, "zone_hint", ""), 0);
    assert_int_equal(mesh_labels_set(&l, "app.kubernetes.io/part-of", "shop"), 0);
    assert_int_equal(mesh_labels_set(&l, "consul-tier", "gold"), 0);
    assert_int_equal(mesh_labels_set(&l, "mesh-port", "1"), 0);
    assert_int_equal(mesh_labels_set(&l, "protocol", "udp"), 0);
    json_t *meta = json_pack("{s:s, s:s}", "protocol", "http", "mesh-namespace", "shop");
    struct skips s = {0};
    assert_int_equal(mesh_consul_meta_add_labels(meta, &l, on_skip, &s), 4);
    assert_string_equal(json_string_value(json_object_get(meta, "version")), "v1");
    assert_string_equal(json_string_value(json_object_get(meta, "zone_hint")), "");
    /* The mesh's own keys are never overwritten by a label. */
    assert_string_equal(json_string_value(json_object_get(meta, "protocol")), "http");
    assert_null(json_object_get(meta, "mesh-port"));
    assert_int_equal(json_object_size(meta), 4);
    /* Each one left out is named, with why (labels are kept sorted by key). */
    assert_int_equal(s.n, 4);
    assert_string_equal(s.keys[0], "app.kubernetes.io/part-of");
    assert_contains(s.why[0], "letters, digits");
    assert_string_equal(s.keys[1], "consul-tier");
    assert_contains(s.why[1], "reserves");
    assert_string_equal(s.keys[2], "mesh-port");
    assert_string_equal(s.keys[3], "protocol");
    json_decref(meta);
    mesh_labels_done(&l);
}

static void test_meta_pair_limit(void **state)
{
    (void)state;
    struct mesh_labels l = {0};
    char key[16];
    for (int i = 0; i < 70; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        assert_int_equal(mesh_labels_set(&l, key, "v"), 0);
    }
    json_t *meta = json_pack("{s:s, s:s}", "protocol", "tcp", "mesh-namespace", "default");
    /* 2 of the mesh's keys and 62 labels make Consul's 64; the last 8 are left out. */
    assert_int_equal(mesh_consul_meta_add_labels(meta, &l, NULL, NULL), 8);
    assert_int_equal(json_object_size(meta), MESH_CONSUL_META_MAX_PAIRS);
    assert_non_null(json_object_get(meta, "k61"));
    assert_null(json_object_get(meta, "k62"));
    json_decref(meta);
    mesh_labels_done(&l);
}

static void test_meta_read_back(void **state)
{
    (void)state;
    json_t *meta = json_loads("{\"version\": \"v2\", \"mesh-namespace\": \"shop\", \"protocol\": "
                              "\"http\", \"mesh-port\": \"15008\", \"mesh-identity\": "
                              "\"spiffe://td/ns/shop/svc/api\", \"external-source\": \"nomad\", "
                              "\"bad key!\": \"x\", \"long\": \"" /* a value no label takes */
                              "0123456789012345678901234567890123456789012345678901234567890123"
                              "\", \"num\": 1}",
                              0, NULL);
    assert_non_null(meta);
    struct mesh_labels l = {0};
    assert_int_equal(mesh_consul_meta_labels(meta, &l), 0);
    /* Foreign keys that are valid labels map as they are; the mesh's own never do. */
    assert_int_equal(l.n, 2);
    assert_string_equal(mesh_labels_get(&l, "version"), "v2");
    assert_string_equal(mesh_labels_get(&l, "external-source"), "nomad");
    mesh_labels_done(&l);
    const char *ns = NULL;
    assert_int_equal(mesh_consul_meta_namespace(meta, &ns), 0);
    assert_string_equal(ns, "shop");
    json_decref(meta);

    static const char *const bad[] = {"{\"mesh-namespace\": \"Shop\"}",
                                      "{\"mesh-namespace\": \"\"}", "{\"mesh-namespace\": \"a/b\"}",
                                      "{\"mesh-namespace\": 7}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        meta = json_loads(bad[i], 0, NULL);
        assert_int_equal(mesh_consul_meta_namespace(meta, &ns), -EINVAL);
        json_decref(meta);
    }
    meta = json_loads("{\"version\": \"v1\"}", 0, NULL);
    assert_int_equal(mesh_consul_meta_namespace(meta, &ns), 0);
    assert_null(ns);
    json_decref(meta);
    assert_int_equal(mesh_consul_meta_namespace(NULL, &ns), 0);
    assert_null(ns);
}

/* One answer, instances in three namespaces: one service each, never mixed. */
static void test_decode_splits_namespaces(void **state)
{
    (void)state;
    const char *json =
        "[{\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"mesh-namespace\": \"shop\", \"version\": \"v1\", \"protocol\": \"http\"}}},"
        " {\"Node\": {\"Node\": \"n2\", \"Address\": \"10.0.0.2\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"mesh-namespace\": \"shop\", \"version\": \"v2\"}}},"
        " {\"Node\": {\"Node\": \"n3\", \"Address\": \"10.0.0.1\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"mesh-namespace\": \"payments\"}}},"
        " {\"Node\": {\"Node\": \"n4\", \"Address\": \"10.0.0.4\"}, \"Service\": {\"Port\": 80}},"
        " {\"Node\": {\"Node\": \"n5\", \"Address\": \"10.0.0.5\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"mesh-namespace\": \"Not_A_Label\"}}},"
        " {\"Node\": {\"Node\": \"n6\", \"Address\": \"10.0.0.6\"}, \"Service\": {\"Port\": 80, "
        "\"Meta\": {\"mesh-namespace\": \"team\"}}, \"Checks\": [{\"Status\": \"critical\"}]}]";
    struct mesh_consul_health_options o = {.zone_key = "zone", .namespace = "legacy"};
    struct mesh_consul_instances in = {0};
    char err[256];
    assert_int_equal(mesh_consul_decode_health(json, strlen(json), &o, &in, err, sizeof(err)), 0);
    assert_int_equal(in.n_groups, 3); /* legacy (no meta), payments, shop; team is unhealthy */
    assert_string_equal(in.groups[0].namespace, "legacy");
    assert_int_equal(in.groups[0].n, 1);
    assert_string_equal(in.groups[1].namespace, "payments");
    assert_int_equal(in.groups[1].n, 1); /* 10.0.0.1:80 in payments is not the one in shop */
    assert_string_equal(in.groups[2].namespace, "shop");
    assert_int_equal(in.groups[2].n, 2);
    assert_int_equal(in.groups[2].protocol, MESH_PROTO_HTTP);
    assert_int_equal(in.groups[1].protocol, MESH_PROTO_TCP);
    const struct mesh_endpoint *shop = in.v + in.groups[2].first;
    assert_string_equal(mesh_labels_get(&shop[0].labels, "version"), "v1");
    assert_string_equal(mesh_labels_get(&shop[1].labels, "version"), "v2");
    assert_null(mesh_labels_get(&shop[0].labels, "mesh-namespace"));
    assert_null(mesh_labels_get(&shop[0].labels, "protocol"));
    assert_int_equal(in.bad_namespace, 1);
    assert_string_equal(in.first_bad_namespace, "Not_A_Label");
    assert_int_equal(in.unhealthy, 1);

    /* The digest tells a move between namespaces apart. */
    uint64_t key[2] = {1, 2};
    uint64_t d1 = mesh_consul_instances_digest(&in, key);
    mesh_consul_instances_done(&in);
    char *moved = strdup(json);
    char *p = strstr(moved, "\"payments\"");
    memcpy(p, "\"paymentz\"", 10);
    assert_int_equal(mesh_consul_decode_health(moved, strlen(moved), &o, &in, err, sizeof(err)), 0);
    assert_int_not_equal(mesh_consul_instances_digest(&in, key), d1);
    mesh_consul_instances_done(&in);
    free(moved);
}

/* Service.Meta "mesh-identity" read back strictly: a SPIFFE ID of our trust domain naming a
 * service account of the instance's own namespace (the older /svc/ form read as /sa/), one
 * per service; anything else leaves the instance out, never moved to the default ID. */
static void test_decode_identity(void **state)
{
    (void)state;
    static const char *const inst[][3] = {
        {"10.0.0.1", "shop", "\"spiffe://mesh.local/ns/shop/sa/payments\""},
        {"10.0.0.2", "shop", "\"spiffe://mesh.local/ns/shop/svc/payments\""},
        {"10.0.0.3", "shop", "\"spiffe://evil.example/ns/shop/sa/payments\""},
        {"10.0.0.4", "shop", "\"spiffe://mesh.local/ns/bank/sa/payments\""},
        {"10.0.0.5", "shop", "\"spiffe://mesh.local/ns/shop/sa/other\""},
        {"10.0.0.6", "shop", "42"},
        {"10.0.0.7", "shop", "\"spiffe://mesh.local/ns/shop/sa/Bad_Acct\""},
        {"10.0.0.8", "team", "\"spiffe://mesh.local/ns/team/sa/api\""},
        {"10.0.0.9", "shop", "\"spiffe://mesh.local/node/host-a\""},
        {"10.0.0.10", "shop", "\"spiffe://mesh.local/ns/shop/sa/payments/x\""},
    };
    char json[4096];
    size_t len = 0;
    for (size_t i = 0; i < MESH_ARRAY_SIZE(inst); i++)
        len += (size_t)snprintf(json + len, sizeof(json) - len,
                                "%s{\"Node\": {\"Node\": \"n%zu\", \"Address\": \"%s\"}, "
                                "\"Service\": {\"Port\": 80, \"Meta\": {\"mesh-namespace\": "
                                "\"%s\", \"mesh-identity\": %s}}}",
                                i ? "," : "[", i + 1, inst[i][0], inst[i][1], inst[i][2]);
    snprintf(json + len, sizeof(json) - len, "]");
    struct mesh_consul_health_options o = {
        .namespace = "default", .trust_domain = "mesh.local", .service = "api"};
    struct mesh_consul_instances in = {0};
    char err[256];
    assert_int_equal(mesh_consul_decode_health(json, strlen(json), &o, &in, err, sizeof(err)), 0);
    assert_int_equal(in.n_groups, 2);
    assert_string_equal(in.groups[0].namespace, "shop");
    assert_int_equal(in.groups[0].n, 2); /* n1, and n2 in the older form of the same ID */
    assert_string_equal(in.groups[0].identity, "spiffe://mesh.local/ns/shop/sa/payments");
    assert_string_equal(in.groups[1].namespace, "team");
    assert_null(in.groups[1].identity); /* the default ID: sa/<service name> */
    assert_int_equal(in.bad_identity, 6);
    assert_string_equal(in.first_bad_identity, "spiffe://evil.example/ns/shop/sa/payments");
    assert_int_equal(in.identity_conflicts, 1);
    assert_string_equal(in.first_conflict, "spiffe://mesh.local/ns/shop/sa/other");

    /* The digest tells identities apart. */
    uint64_t key[2] = {1, 2};
    uint64_t d1 = mesh_consul_instances_digest(&in, key);
    mesh_consul_instances_done(&in);
    char *moved = strdup(json);
    char *p = strstr(moved, "sa/payments\"");
    memcpy(p, "sa/paymentz\"", 12);
    p = strstr(moved, "svc/payments\"");
    memcpy(p, "svc/paymentz\"", 13);
    assert_int_equal(mesh_consul_decode_health(moved, strlen(moved), &o, &in, err, sizeof(err)), 0);
    assert_string_equal(in.groups[0].identity, "spiffe://mesh.local/ns/shop/sa/paymentz");
    assert_int_not_equal(mesh_consul_instances_digest(&in, key), d1);
    mesh_consul_instances_done(&in);
    free(moved);
}

int main(void)
{
    mesh_alloc_install();
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_meta_keys_as_consul_checks_them),
        UNIT_TEST(test_labels_written_to_meta),
        UNIT_TEST(test_meta_pair_limit),
        UNIT_TEST(test_meta_read_back),
        UNIT_TEST(test_decode_splits_namespaces),
        UNIT_TEST(test_decode_identity),
    };
    return cmocka_run_group_tests_name("consul_meta", tests, NULL, NULL);
}
