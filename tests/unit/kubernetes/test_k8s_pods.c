/*
 * This node's pods by IP (registry-adapters/kubernetes/k8s_pods.c), fed Pod objects as the
 * watch decodes them: an address names a pod only while exactly one live pod of its own
 * network namespace claims it (not hostNetwork, not being deleted, Running).
 */
#include <stdio.h>
#include <string.h>

#include "common/json_tok.h"
#include "registry-adapters/kubernetes/k8s-int.h"
#include "registry-adapters/kubernetes/k8s_objects-int.h"
#include "registry-adapters/kubernetes/k8s_pods.h"
#include "tests/unit/unit.h"

static void reg_init(struct k8s_registry *k)
{
    memset(k, 0, sizeof(*k));
    k->base.ops = &mesh_k8s_registry_ops;
    for (int i = 0; i < K8S_KINDS; i++)
        mesh_hmap_init(&k->cache[i]);
    mesh_hmap_init(&k->groups);
    mesh_hmap_init(&k->pods_by_ip);
}

static void reg_done(struct k8s_registry *k)
{
    const struct mesh_hmap_entry *e;
    mesh_hmap_done(&k->pods_by_ip);
    for (size_t i = 0; mesh_hmap_next(&k->cache[K8S_PODS], &i, &e);)
        mesh_k8s_pod_free(e->value);
    for (int i = 0; i < K8S_KINDS; i++)
        mesh_hmap_done(&k->cache[i]);
    mesh_hmap_done(&k->groups);
    mesh_free(k->problem);
}

/* Pod shop/<name> at `ip`; `extra_meta`, `extra_spec` and `extra_status` are JSON members
 * ("" for none, else starting with a comma). */
static void put(struct k8s_registry *k, const char *name, const char *ip, const char *phase,
                const char *extra_meta, const char *extra_spec, const char *extra_status)
{
    char json[1024], err[256];
    snprintf(json, sizeof(json),
             "{\"metadata\":{\"namespace\":\"shop\",\"name\":\"%s\"%s},"
             "\"spec\":{\"nodeName\":\"node-a\",\"serviceAccountName\":\"%s\"%s},"
             "\"status\":{\"phase\":\"%s\",\"podIP\":\"%s\",\"podIPs\":[{\"ip\":\"%s\"}]%s}}",
             name, extra_meta, name, extra_spec, phase, ip, ip, extra_status);
    struct mesh_jdoc d;
    mesh_jdoc_init(&d, 256);
    assert_int_equal(mesh_jdoc_parse(&d, json, strlen(json), err, sizeof(err)), 0);
    struct mesh_k8s_pod *p = NULL;
    assert_int_equal(mesh_k8s_pod_decode(&d, 0, &p, err, sizeof(err)), 0);
    mesh_jdoc_done(&d);
    assert_int_equal(mesh_k8s__upsert(k, K8S_PODS, p), 0);
}

static void running(struct k8s_registry *k, const char *name, const char *ip)
{
    put(k, name, ip, "Running", "", "", "");
}

/* The name of the pod holding ip, or "" for none. */
static const char *owner(struct k8s_registry *k, const char *ip)
{
    struct mesh_k8s_pod_ref p;
    return mesh_k8s_pod_by_ip(&k->base, ip, &p) ? p.name : "";
}

static void test_reused_ip_is_never_the_old_pods(void **state)
{
    (void)state;
    struct k8s_registry k;
    reg_init(&k);
    running(&k, "a", "10.0.0.7");
    assert_string_equal(owner(&k, "10.0.0.7"), "a");
    /* B gets A's address while A's deletion has not reached the watch yet. */
    running(&k, "b", "10.0.0.7");
    assert_string_not_equal(owner(&k, "10.0.0.7"), "a");
    /* A late status update of A (still Running with its old podIP) must not take it back:
     * two live pods claim the address, so it names neither. */
    running(&k, "a", "10.0.0.7");
    assert_string_equal(owner(&k, "10.0.0.7"), "");
    /* A goes: B alone holds it. */
    mesh_k8s__delete(&k, K8S_PODS, "shop/a");
    assert_string_equal(owner(&k, "10.0.0.7"), "b");
    reg_done(&k);
}

static void test_terminating_pod_gives_its_ip_up(void **state)
{
    (void)state;
    struct k8s_registry k;
    reg_init(&k);
    running(&k, "a", "10.0.0.7");
    running(&k, "b", "10.0.0.7");
    /* A's update with deletionTimestamp set: it claims nothing, B is named. */
    put(&k, "a", "10.0.0.7", "Running", ",\"deletionTimestamp\":\"2024-01-01T00:00:00Z\"", "", "");
    assert_string_equal(owner(&k, "10.0.0.7"), "b");
    put(&k, "a", "10.0.0.7", "Running", ",\"deletionTimestamp\":\"2024-01-01T00:00:00Z\"", "", "");
    assert_string_equal(owner(&k, "10.0.0.7"), "b");
    /* A pod being deleted is never named, even alone. */
    put(&k, "c", "10.0.0.8", "Running", ",\"deletionTimestamp\":\"2024-01-01T00:00:00Z\"", "", "");
    assert_string_equal(owner(&k, "10.0.0.8"), "");
    reg_done(&k);
}

static void test_only_running_pods_are_named(void **state)
{
    (void)state;
    struct k8s_registry k;
    reg_init(&k);
    put(&k, "a", "10.0.0.7", "Pending", "", "", "");
    put(&k, "b", "10.0.0.8", "Succeeded", "", "", "");
    put(&k, "c", "10.0.0.9", "Unknown", "", "", "");
    assert_string_equal(owner(&k, "10.0.0.7"), "");
    assert_string_equal(owner(&k, "10.0.0.8"), "");
    assert_string_equal(owner(&k, "10.0.0.9"), "");
    running(&k, "a", "10.0.0.7");
    assert_string_equal(owner(&k, "10.0.0.7"), "a");
    /* A new pod given A's address, not Running yet (its init containers may call): it
     * claims the address, so A is no longer named by it, nor is it yet. */
    put(&k, "n", "10.0.0.7", "Pending", "", "", "");
    assert_string_equal(owner(&k, "10.0.0.7"), "");
    mesh_k8s__delete(&k, K8S_PODS, "shop/a");
    assert_string_equal(owner(&k, "10.0.0.7"), "");
    running(&k, "n", "10.0.0.7");
    assert_string_equal(owner(&k, "10.0.0.7"), "n");
    reg_done(&k);
}

static void test_host_network_pods_are_not_indexed(void **state)
{
    (void)state;
    struct k8s_registry k;
    reg_init(&k);
    /* Their podIP is the node's: every host process would be named as them. */
    put(&k, "h", "192.0.2.1", "Running", "", ",\"hostNetwork\":true", ",\"hostIP\":\"192.0.2.1\"");
    assert_string_equal(owner(&k, "192.0.2.1"), "");
    /* Without spec.hostNetwork, a podIP that is the node's (status.hostIP) is the host's. */
    put(&k, "g", "192.0.2.1", "Running", "", "", ",\"hostIP\":\"192.0.2.1\"");
    assert_string_equal(owner(&k, "192.0.2.1"), "");
    /* hostNetwork: false is an ordinary pod. */
    put(&k, "p", "10.0.0.7", "Running", "", ",\"hostNetwork\":false", ",\"hostIP\":\"192.0.2.1\"");
    assert_string_equal(owner(&k, "10.0.0.7"), "p");
    /* A pod that turns out to be one: it leaves the index. */
    put(&k, "p", "10.0.0.7", "Running", "", ",\"hostNetwork\":true", ",\"hostIP\":\"192.0.2.1\"");
    assert_string_equal(owner(&k, "10.0.0.7"), "");
    reg_done(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_reused_ip_is_never_the_old_pods),
        UNIT_TEST(test_terminating_pod_gives_its_ip_up),
        UNIT_TEST(test_only_running_pods_are_named),
        UNIT_TEST(test_host_network_pods_are_not_indexed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
