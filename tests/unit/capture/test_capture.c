/* The capture rules' text, its input checks, and the conflict check over saved rulesets
 * (tests/unit/capture/data, made with nft 1.0.6 in a scratch network namespace). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "capture/capture.h"
#include "tests/unit/unit.h"

static const uint32_t uids[] = {995, 0, 995};
static const uint16_t in_ports[] = {8080, 9090};
static const char *const vips[] = {"240.240.0.0/16", "fd00:240::/32"};
static const char *const excl[] = {"10.96.0.1", "192.168.0.0/16"};
static const uint16_t excl_ports[] = {22};

static struct mesh_capture_spec spec(struct mesh_ipport *dests, size_t n)
{
    return (struct mesh_capture_spec){
        .table = "mesh_agent",
        .outbound = true,
        .outbound_port = 15001,
        .dests = dests,
        .n_dests = n,
        .include_cidrs = vips,
        .n_include_cidrs = 2,
        .exclude_cidrs = excl,
        .n_exclude_cidrs = 2,
        .exclude_ports = excl_ports,
        .n_exclude_ports = 1,
        .exclude_uids = uids,
        .n_exclude_uids = 3,
        .inbound = true,
        .inbound_port = 15006,
        .inbound_ports = in_ports,
        .n_inbound_ports = 2,
    };
}

static void test_script_services_mode(void **state)
{
    (void)state;
    struct mesh_ipport d[3];
    assert_int_equal(mesh_ipport_from_ip("10.0.0.9", 8080, &d[0]), 0);
    assert_int_equal(mesh_ipport_from_ip("10.0.0.2", 9090, &d[1]), 0);
    d[2] = d[0]; /* reported twice: once in the set */
    struct mesh_capture_spec s = spec(d, 3);
    s.dns_port = 15053;
    struct mesh_buf b;
    char err[256] = "";
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), 0);
    const char *want = "add table inet mesh_agent\n"
                       "delete table inet mesh_agent\n"
                       "table inet mesh_agent {\n"
                       "\tset dests4 {\n"
                       "\t\ttype ipv4_addr . inet_service\n"
                       "\t\telements = { 10.0.0.2 . 9090, 10.0.0.9 . 8080 }\n"
                       "\t}\n"
                       "\tchain outbound {\n"
                       "\t\ttype nat hook output priority -100; policy accept;\n"
                       "\t\tmeta nfproto ipv6 return\n"
                       "\t\toifname \"lo\" return\n"
                       "\t\tmeta skuid { 0, 995 } return\n"
                       "\t\tmeta nfproto ipv4 udp dport 53 redirect to :15053\n"
                       "\t\tmeta nfproto ipv4 tcp dport 53 redirect to :15053\n"
                       "\t\tmeta l4proto != tcp return\n"
                       "\t\tip daddr { 10.96.0.1, 192.168.0.0/16 } return\n"
                       "\t\ttcp dport { 22 } return\n"
                       "\t\tip daddr . tcp dport @dests4 redirect to :15001\n"
                       "\t\tip daddr { 240.240.0.0/16 } meta l4proto tcp redirect to :15001\n"
                       "\t}\n"
                       "\tchain inbound {\n"
                       "\t\ttype nat hook prerouting priority -100; policy accept;\n"
                       "\t\tiifname \"lo\" return\n"
                       "\t\tmeta nfproto ipv6 return\n"
                       "\t\ttcp dport { 8080, 9090 } redirect to :15006\n"
                       "\t}\n"
                       "}\n";
    assert_string_equal(b.data, want);
    mesh_buf_done(&b);
}

static void test_script_all_mode_ipv6(void **state)
{
    (void)state;
    static const uint16_t only[] = {443, 80};
    struct mesh_capture_spec s = spec(NULL, 0);
    s.outbound_all = true;
    s.ipv6 = true;
    s.inbound = false;
    s.include_ports = only;
    s.n_include_ports = 2;
    s.n_exclude_uids = 0;
    struct mesh_buf b;
    char err[256] = "";
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), 0);
    assert_contains(b.data, "\t\ttcp dport { 80, 443 } redirect to :15001\n");
    assert_null(strstr(b.data, "set dests"));     /* all: no endpoint sets */
    assert_null(strstr(b.data, "nfproto ipv6"));  /* IPv6 captured too */
    assert_null(strstr(b.data, "chain inbound")); /* inbound off */
    assert_null(strstr(b.data, "skuid"));
    assert_null(strstr(b.data, "dport 53")); /* DNS not captured */
    mesh_buf_reset(&b);
    /* Every port: the protocol alone. */
    s.n_include_ports = 0;
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), 0);
    assert_contains(b.data, "\t\tmeta l4proto tcp redirect to :15001\n");
    mesh_buf_done(&b);
}

static void test_dests_script(void **state)
{
    (void)state;
    struct mesh_ipport d[2];
    assert_int_equal(mesh_ipport_from_ip("10.0.0.9", 8080, &d[0]), 0);
    assert_int_equal(mesh_ipport_from_ip("fd00::9", 8080, &d[1]), 0);
    struct mesh_capture_spec s = spec(d, 2);
    s.ipv6 = true;
    struct mesh_buf b;
    char err[256] = "";
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    assert_int_equal(mesh_capture_dests_script(&s, &b, err, sizeof(err)), 0);
    assert_string_equal(b.data, "flush set inet mesh_agent dests4\n"
                                "add element inet mesh_agent dests4 { 10.0.0.9 . 8080 }\n"
                                "flush set inet mesh_agent dests6\n"
                                "add element inet mesh_agent dests6 { fd00::9 . 8080 }\n");
    mesh_buf_done(&b);
}

/* A value that would add a command to the script is refused, naming it. */
static void test_script_refuses_injection(void **state)
{
    (void)state;
    struct mesh_capture_spec s = spec(NULL, 0);
    struct mesh_buf b;
    char err[256] = "";
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    s.table = "mesh; flush ruleset";
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), -EINVAL);
    assert_contains(err, "table name 'mesh; flush ruleset'");
    s.table = "mesh_agent";
    static const char *const bad[] = {"10.0.0.0/8 } ; flush ruleset ; {"};
    s.exclude_cidrs = bad;
    s.n_exclude_cidrs = 1;
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), -EINVAL);
    assert_contains(err, "'10.0.0.0/8 } ; flush ruleset ; {' has a prefix length out of range");
    assert_int_equal(b.len, 0);
    static const char *const bad2[] = {"10.0.0.1 } ; flush ruleset"};
    s.exclude_cidrs = bad2;
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), -EINVAL);
    assert_contains(err, "is not an address or CIDR");
    assert_non_null(mesh_capture_check_cidr("10.0.0.0/33"));
    assert_non_null(mesh_capture_check_cidr("fd00::/129"));
    assert_non_null(mesh_capture_check_cidr("10.0.0.0/"));
    assert_null(mesh_capture_check_cidr("fd00::/8"));
    assert_null(mesh_capture_check_cidr("10.1.2.3"));
    mesh_buf_done(&b);
}

/* Kubernetes node mode: the pods chain in prerouting, before kube-proxy's DNAT (-100). */
static void test_script_pods(void **state)
{
    (void)state;
    static const char *const pod_cidrs[] = {"10.244.1.0/24", "fd00:244:1::/64"};
    static const char *const ifaces[] = {"cali*", "cni0"};
    struct mesh_ipport d[2];
    assert_int_equal(mesh_ipport_from_ip("10.96.0.10", 8080, &d[0]), 0); /* a ClusterIP */
    assert_int_equal(mesh_ipport_from_ip("10.244.2.7", 8080, &d[1]), 0); /* a pod */
    struct mesh_capture_spec s = spec(d, 2);
    s.inbound = false;
    s.n_include_cidrs = 0;
    s.n_exclude_cidrs = 0;
    s.pod_cidrs = pod_cidrs;
    s.n_pod_cidrs = 2;
    s.pod_interfaces = ifaces;
    s.n_pod_interfaces = 2;
    s.pods_exclude_port = 15443;
    struct mesh_buf b;
    char err[256] = "";
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), 0);
    assert_contains(b.data, "\t\telements = { 10.96.0.10 . 8080, 10.244.2.7 . 8080 }\n");
    assert_contains(b.data,
                    "\tchain pods {\n"
                    "\t\ttype nat hook prerouting priority -110; policy accept;\n"
                    "\t\tmeta nfproto ipv6 return\n"
                    "\t\tmeta l4proto != tcp return\n"
                    "\t\ttcp dport { 22, 15443 } return\n"
                    "\t\tip saddr { 10.244.1.0/24 } ip daddr . tcp dport @dests4 "
                    "redirect to :15001\n"
                    "\t\tiifname \"cali*\" ip daddr . tcp dport @dests4 redirect to :15001\n"
                    "\t\tiifname \"cni0\" ip daddr . tcp dport @dests4 redirect to :15001\n"
                    "\t}\n"
                    "}\n");
    /* With IPv6: the IPv6 pod CIDR and set too. */
    mesh_buf_reset(&b);
    s.ipv6 = true;
    s.n_pod_interfaces = 0;
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), 0);
    assert_contains(b.data, "\t\tip6 saddr { fd00:244:1::/64 } ip6 daddr . tcp dport @dests6 "
                            "redirect to :15001\n");
    /* All outbound TCP of local processes still gives the pods chain its sets. */
    mesh_buf_reset(&b);
    s.ipv6 = false;
    s.outbound_all = true;
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), 0);
    assert_contains(b.data, "\tset dests4 {\n");
    assert_contains(b.data, "\tchain pods {\n");
    /* No pod CIDR or interface, or no outbound: no pods chain. */
    mesh_buf_reset(&b);
    s.outbound_all = false;
    s.n_pod_cidrs = 0;
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), 0);
    assert_null(strstr(b.data, "chain pods"));
    mesh_buf_done(&b);
}

/* An interface pattern that would add a command to the script is refused. */
static void test_script_refuses_bad_interface(void **state)
{
    (void)state;
    static const char *const bad[] = {"cali*\" accept; flush ruleset; \""};
    struct mesh_capture_spec s = spec(NULL, 0);
    s.pod_interfaces = bad;
    s.n_pod_interfaces = 1;
    struct mesh_buf b;
    char err[256] = "";
    mesh_buf_init(&b, MESH_BUF_UNLIMITED);
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), -EINVAL);
    assert_contains(err, "interface 'cali*\" accept");
    assert_int_equal(b.len, 0);
    static const char *const bad_cidr[] = {"10.244.0.0/16 } accept"};
    s.n_pod_interfaces = 0;
    s.pod_cidrs = bad_cidr;
    s.n_pod_cidrs = 1;
    assert_int_equal(mesh_capture_script(&s, &b, err, sizeof(err)), -EINVAL);
    assert_contains(err, "'10.244.0.0/16 } accept'");
    assert_null(mesh_capture_check_ifname("cali*"));
    assert_null(mesh_capture_check_ifname("veth.1_a-b"));
    assert_null(mesh_capture_check_ifname("cni0"));
    assert_non_null(mesh_capture_check_ifname("*"));
    assert_non_null(mesh_capture_check_ifname("ca*li"));
    assert_non_null(mesh_capture_check_ifname("cali**"));
    assert_non_null(mesh_capture_check_ifname(""));
    assert_non_null(mesh_capture_check_ifname("abcdefghijklmnop"));
    assert_non_null(mesh_capture_check_ifname("eth 0"));
    mesh_buf_done(&b);
}

static json_t *load(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", MESH_CAPTURE_DATA, name);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: %s", path, je.text);
    return j;
}

static int conflicts(const char *file, const struct mesh_capture_spec *s, char *err, size_t n)
{
    json_t *j = load(file);
    int r = mesh_capture_conflicts(j, s, err, n);
    json_decref(j);
    return r;
}

static void test_conflicts(void **state)
{
    (void)state;
    struct mesh_ipport d;
    assert_int_equal(mesh_ipport_from_ip("10.0.0.9", 8080, &d), 0);
    struct mesh_capture_spec s = spec(&d, 1);
    char err[512] = "";
    assert_int_equal(conflicts("clean.json", &s, err, sizeof(err)), 0);
    /* Istio's chains from iptables-nft (and its REDIRECT in a chain without a hook). */
    assert_int_equal(conflicts("istio.json", &s, err, sizeof(err)), 1);
    assert_contains(err, "chain ISTIO_OUTPUT in table ip nat belongs to another mesh");
    assert_int_equal(conflicts("linkerd.json", &s, err, sizeof(err)), 1);
    assert_contains(err, "chain PROXY_INIT_OUTPUT in table ip nat");
    /* A REDIRECT of inbound TCP port 8080, which inbound capture takes too. */
    assert_int_equal(conflicts("redirect_inbound.json", &s, err, sizeof(err)), 1);
    assert_contains(err, "table ip nat chain PREROUTING rule handle 2 (redirect) rewrites the "
                         "destination of inbound TCP");
    /* ... and not when inbound capture is off or on other ports. */
    s.inbound = false;
    assert_int_equal(conflicts("redirect_inbound.json", &s, err, sizeof(err)), 0);
    s.inbound = true;
    static const uint16_t other[] = {9443};
    s.inbound_ports = other;
    s.n_inbound_ports = 1;
    assert_int_equal(conflicts("redirect_inbound.json", &s, err, sizeof(err)), 0);
    /* TPROXY of all TCP in prerouting. */
    assert_int_equal(conflicts("tproxy.json", &s, err, sizeof(err)), 1);
    assert_contains(err, "table ip mangle chain PREROUTING rule handle 2 (tproxy)");
    /* UDP 53 redirected, DNAT of ports 9000-9100, masquerade, and our own table: nothing
     * captured is touched... */
    s.n_include_cidrs = 0;
    assert_int_equal(conflicts("unrelated.json", &s, err, sizeof(err)), 0);
    /* ... until an endpoint on port 9050 is captured. */
    assert_int_equal(mesh_ipport_from_ip("10.0.0.9", 9050, &d), 0);
    assert_int_equal(conflicts("unrelated.json", &s, err, sizeof(err)), 1);
    assert_contains(err, "table ip nat chain OUTPUT rule handle 4 (dnat) rewrites the "
                         "destination of outbound TCP");
    /* All outbound TCP: any port may be taken. */
    s.n_dests = 0;
    s.outbound_all = true;
    assert_int_equal(conflicts("unrelated.json", &s, err, sizeof(err)), 1);
    json_t *bad = json_pack("{s:i}", "rules", 1);
    assert_int_equal(mesh_capture_conflicts(bad, &s, err, sizeof(err)), -EINVAL);
    json_decref(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_script_services_mode),
        UNIT_TEST(test_script_all_mode_ipv6),
        UNIT_TEST(test_dests_script),
        UNIT_TEST(test_script_refuses_injection),
        UNIT_TEST(test_script_pods),
        UNIT_TEST(test_script_refuses_bad_interface),
        UNIT_TEST(test_conflicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
