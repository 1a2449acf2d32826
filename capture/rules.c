#define MESH_LOG_MODULE "capture"

/*
 * The nft script of the capture table. Every value that reaches it is checked here (table
 * name, CIDRs) or is a number, so a config value cannot add a command to the script.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/capture.h"
#include "common/alloc.h"

const char *mesh_capture_check_table(const char *name)
{
    if (!name || !name[0])
        return "is empty";
    if (strlen(name) > MESH_CAPTURE_TABLE_MAX)
        return "is longer than 32 characters";
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return "may hold only letters, digits and '_'";
    }
    return NULL;
}

const char *mesh_capture_check_cidr(const char *cidr)
{
    char ip[64];
    const char *slash = cidr ? strchr(cidr, '/') : NULL;
    size_t len = slash ? (size_t)(slash - cidr) : (cidr ? strlen(cidr) : 0);
    if (!cidr || len == 0 || len >= sizeof(ip))
        return "is not an address or CIDR like \"10.0.0.0/8\"";
    memcpy(ip, cidr, len);
    ip[len] = '\0';
    unsigned char bin[16];
    int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, ip, bin) != 1)
        return "is not an address or CIDR like \"10.0.0.0/8\"";
    if (slash) {
        const char *p = slash + 1;
        char *end;
        long bits = strtol(p, &end, 10);
        if (!*p || *end || *p < '0' || *p > '9' || bits < 0 ||
            bits > (family == AF_INET ? 32 : 128))
            return "has a prefix length out of range";
    }
    return NULL;
}

const char *mesh_capture_check_ifname(const char *name)
{
    if (!name || !name[0])
        return "is empty";
    size_t len = strlen(name);
    if (len > MESH_CAPTURE_IFNAME_MAX)
        return "is longer than 15 characters (an interface name)";
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '*' && i == len - 1 && i > 0)
            continue;
        if (c == '*')
            return "may have one '*' only, at the end after a prefix (\"cali*\")";
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return "may hold only letters, digits, '-', '_', '.' and a final '*'";
    }
    return NULL;
}

static int cmp_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_ipport(const void *a, const void *b)
{
    return mesh_ipport_cmp(a, b);
}

/* "{ 80, 443 }" of the ports (sorted, once each; 0 left out); false when there is none. */
static bool port_set(struct mesh_buf *b, const uint16_t *ports, size_t n)
{
    uint16_t *v = mesh_calloc(n ? n : 1, sizeof(*v));
    size_t k = 0;
    if (!v) {
        b->err = -ENOMEM;
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (ports[i])
            v[k++] = ports[i];
    }
    if (!k) {
        mesh_free(v);
        return false;
    }
    qsort(v, k, sizeof(*v), cmp_u16);
    mesh_buf_append_str(b, "{ ");
    for (size_t i = 0; i < k; i++) {
        if (i && v[i] == v[i - 1])
            continue;
        mesh_buf_appendf(b, "%s%u", i ? ", " : "", (unsigned)v[i]);
    }
    mesh_buf_append_str(b, " }");
    mesh_free(v);
    return true;
}

/* "ip daddr { a, b } <tail>" for the CIDRs of one family (v6: ip6); nothing when none. */
static void cidr_rule(struct mesh_buf *b, const char *const *cidrs, size_t n, bool v6,
                      const char *middle, const char *tail)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if ((strchr(cidrs[i], ':') != NULL) != v6)
            continue;
        mesh_buf_appendf(b, "%s%s",
                         any  ? ", "
                         : v6 ? "\t\tip6 daddr { "
                              : "\t\tip daddr { ",
                         cidrs[i]);
        any = true;
    }
    if (any)
        mesh_buf_appendf(b, " }%s %s\n", middle, tail);
}

static int check_spec(const struct mesh_capture_spec *s, char *err, size_t n)
{
    const char *why = mesh_capture_check_table(s->table);
    if (why) {
        snprintf(err, n, "table name '%s' %s", s->table ? s->table : "", why);
        return -EINVAL;
    }
    const char *const *lists[] = {s->include_cidrs, s->exclude_cidrs, s->pod_cidrs};
    size_t counts[] = {s->n_include_cidrs, s->n_exclude_cidrs, s->n_pod_cidrs};
    for (size_t l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            if ((why = mesh_capture_check_cidr(lists[l][i]))) {
                snprintf(err, n, "'%s' %s", lists[l][i], why);
                return -EINVAL;
            }
        }
    }
    for (size_t i = 0; i < s->n_pod_interfaces; i++) {
        if ((why = mesh_capture_check_ifname(s->pod_interfaces[i]))) {
            snprintf(err, n, "interface '%s' %s", s->pod_interfaces[i], why);
            return -EINVAL;
        }
    }
    if ((s->outbound && !s->outbound_port) || (s->inbound && !s->inbound_port)) {
        snprintf(err, n, "a capture listener port is 0");
        return -EINVAL;
    }
    return 0;
}

/* The elements of the IPv4 (or IPv6) endpoint set, "a . p, b . q"; false when none. */
static bool dest_elements(struct mesh_buf *b, const struct mesh_ipport *sorted, size_t n, bool v6)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if ((sorted[i].family == AF_INET6) != v6 ||
            (i && mesh_ipport_equal(&sorted[i], &sorted[i - 1])))
            continue;
        char ip[64];
        mesh_buf_appendf(b, "%s%s . %u", any ? ", " : "",
                         mesh_ipport_ip(&sorted[i], ip, sizeof(ip)), (unsigned)sorted[i].port);
        any = true;
    }
    return any;
}

static struct mesh_ipport *sorted_dests(const struct mesh_capture_spec *s)
{
    struct mesh_ipport *v = mesh_calloc(s->n_dests ? s->n_dests : 1, sizeof(*v));
    if (v && s->n_dests) {
        memcpy(v, s->dests, s->n_dests * sizeof(*v));
        qsort(v, s->n_dests, sizeof(*v), cmp_ipport);
    }
    return v;
}

static void outbound_chain(struct mesh_buf *b, const struct mesh_capture_spec *s)
{
    char to[32];
    snprintf(to, sizeof(to), "redirect to :%u", (unsigned)s->outbound_port);
    mesh_buf_appendf(b, "\tchain %s {\n", MESH_CAPTURE_CHAIN_OUT);
    mesh_buf_append_str(b, "\t\ttype nat hook output priority -100; policy accept;\n");
    if (!s->ipv6)
        mesh_buf_append_str(b, "\t\tmeta nfproto ipv6 return\n");
    /* Loopback: the explicit listeners, the agent's own capture listeners, a local stub
     * resolver. */
    mesh_buf_append_str(b, "\t\toifname \"lo\" return\n");
    if (s->n_exclude_uids) {
        uint32_t *uids = mesh_memdup(s->exclude_uids, s->n_exclude_uids * sizeof(*uids));
        if (!uids) {
            b->err = -ENOMEM;
            return;
        }
        qsort(uids, s->n_exclude_uids, sizeof(*uids), cmp_u32);
        mesh_buf_append_str(b, "\t\tmeta skuid { ");
        for (size_t i = 0; i < s->n_exclude_uids; i++) {
            if (!i || uids[i] != uids[i - 1])
                mesh_buf_appendf(b, "%s%u", i ? ", " : "", (unsigned)uids[i]);
        }
        mesh_buf_append_str(b, " } return\n");
        mesh_free(uids);
    }
    /* After the agent's user: its own forwarded queries reach the real name servers. */
    for (int tcp = 0; s->dns_port && tcp <= 1; tcp++)
        mesh_buf_appendf(b, "\t\tmeta nfproto ipv4 %s dport 53 redirect to :%u\n",
                         tcp ? "tcp" : "udp", (unsigned)s->dns_port);
    mesh_buf_append_str(b, "\t\tmeta l4proto != tcp return\n");
    cidr_rule(b, s->exclude_cidrs, s->n_exclude_cidrs, false, "", "return");
    cidr_rule(b, s->exclude_cidrs, s->n_exclude_cidrs, true, "", "return");
    struct mesh_buf ports;
    mesh_buf_init(&ports, MESH_BUF_UNLIMITED);
    if (port_set(&ports, s->exclude_ports, s->n_exclude_ports))
        mesh_buf_appendf(b, "\t\ttcp dport %.*s return\n", (int)ports.len, ports.data);
    mesh_buf_done(&ports);
    mesh_buf_init(&ports, MESH_BUF_UNLIMITED);
    /* A redirect to a port needs the transport protocol matched first. */
    char middle[1 << 12] = " meta l4proto tcp";
    if (port_set(&ports, s->include_ports, s->n_include_ports))
        snprintf(middle, sizeof(middle), " tcp dport %.*s", (int)ports.len, ports.data);
    mesh_buf_done(&ports);
    if (s->outbound_all) {
        mesh_buf_appendf(b, "\t\t%s %s\n", middle + 1, to);
    } else {
        mesh_buf_appendf(b, "\t\tip daddr . tcp dport @dests4 %s\n", to);
        if (s->ipv6)
            mesh_buf_appendf(b, "\t\tip6 daddr . tcp dport @dests6 %s\n", to);
        cidr_rule(b, s->include_cidrs, s->n_include_cidrs, false, middle, to);
        if (s->ipv6)
            cidr_rule(b, s->include_cidrs, s->n_include_cidrs, true, middle, to);
    }
    mesh_buf_append_str(b, "\t}\n");
}

static bool pods_on(const struct mesh_capture_spec *s)
{
    return s->outbound && (s->n_pod_cidrs || s->n_pod_interfaces);
}

/* Kubernetes node mode: the pods' TCP arrives from their network namespaces, through
 * prerouting; what they send to a mesh service's endpoint or ClusterIP goes to the outbound
 * capture listener (bound to the wildcard: a prerouting redirect lands on the address of
 * the interface the packet came in on). The agent's own traffic never crosses prerouting. */
static void pods_chain(struct mesh_buf *b, const struct mesh_capture_spec *s)
{
    char to[32];
    snprintf(to, sizeof(to), "redirect to :%u", (unsigned)s->outbound_port);
    mesh_buf_appendf(b, "\tchain %s {\n", MESH_CAPTURE_CHAIN_PODS);
    mesh_buf_appendf(b, "\t\ttype nat hook prerouting priority %d; policy accept;\n",
                     MESH_CAPTURE_PODS_PRIORITY);
    if (!s->ipv6)
        mesh_buf_append_str(b, "\t\tmeta nfproto ipv6 return\n");
    mesh_buf_append_str(b, "\t\tmeta l4proto != tcp return\n");
    cidr_rule(b, s->exclude_cidrs, s->n_exclude_cidrs, false, "", "return");
    cidr_rule(b, s->exclude_cidrs, s->n_exclude_cidrs, true, "", "return");
    uint16_t *ports = mesh_calloc(s->n_exclude_ports + 1, sizeof(*ports));
    if (!ports) {
        b->err = -ENOMEM;
        return;
    }
    if (s->n_exclude_ports)
        memcpy(ports, s->exclude_ports, s->n_exclude_ports * sizeof(*ports));
    ports[s->n_exclude_ports] = s->pods_exclude_port; /* 0 is left out */
    struct mesh_buf set;
    mesh_buf_init(&set, MESH_BUF_UNLIMITED);
    if (port_set(&set, ports, s->n_exclude_ports + 1))
        mesh_buf_appendf(b, "\t\ttcp dport %.*s return\n", (int)set.len, set.data);
    mesh_buf_done(&set);
    mesh_free(ports);
    for (int v6 = 0; v6 <= (int)s->ipv6; v6++) {
        const char *ip = v6 ? "ip6" : "ip";
        bool any = false;
        for (size_t i = 0; i < s->n_pod_cidrs; i++) {
            if ((strchr(s->pod_cidrs[i], ':') != NULL) != (bool)v6)
                continue;
            mesh_buf_appendf(b, "%s%s",
                             any  ? ", "
                             : v6 ? "\t\tip6 saddr { "
                                  : "\t\tip saddr { ",
                             s->pod_cidrs[i]);
            any = true;
        }
        if (any)
            mesh_buf_appendf(b, " } %s daddr . tcp dport @dests%d %s\n", ip, v6 ? 6 : 4, to);
        /* One rule per name: a wildcard in an anonymous set needs a recent kernel. */
        for (size_t i = 0; i < s->n_pod_interfaces; i++)
            mesh_buf_appendf(b, "\t\tiifname \"%s\" %s daddr . tcp dport @dests%d %s\n",
                             s->pod_interfaces[i], ip, v6 ? 6 : 4, to);
    }
    mesh_buf_append_str(b, "\t}\n");
}

static void inbound_chain(struct mesh_buf *b, const struct mesh_capture_spec *s)
{
    mesh_buf_appendf(b, "\tchain %s {\n", MESH_CAPTURE_CHAIN_IN);
    mesh_buf_append_str(b, "\t\ttype nat hook prerouting priority -100; policy accept;\n");
    mesh_buf_append_str(b, "\t\tiifname \"lo\" return\n");
    if (!s->ipv6)
        mesh_buf_append_str(b, "\t\tmeta nfproto ipv6 return\n");
    struct mesh_buf ports;
    mesh_buf_init(&ports, MESH_BUF_UNLIMITED);
    if (port_set(&ports, s->inbound_ports, s->n_inbound_ports))
        mesh_buf_appendf(b, "\t\ttcp dport %.*s redirect to :%u\n", (int)ports.len, ports.data,
                         (unsigned)s->inbound_port);
    mesh_buf_done(&ports);
    mesh_buf_append_str(b, "\t}\n");
}

int mesh_capture_script(const struct mesh_capture_spec *s, struct mesh_buf *out, char *err,
                        size_t n)
{
    int r = check_spec(s, err, n);
    if (r < 0)
        return r;
    struct mesh_ipport *dests = sorted_dests(s);
    if (!dests)
        return -ENOMEM;
    size_t before = out->len;
    mesh_buf_appendf(out, "add table inet %s\ndelete table inet %s\ntable inet %s {\n", s->table,
                     s->table, s->table);
    if (s->outbound && (!s->outbound_all || pods_on(s))) {
        for (int v6 = 0; v6 <= (int)s->ipv6; v6++) {
            mesh_buf_appendf(out, "\tset dests%d {\n\t\ttype %s . inet_service\n", v6 ? 6 : 4,
                             v6 ? "ipv6_addr" : "ipv4_addr");
            struct mesh_buf el;
            mesh_buf_init(&el, MESH_BUF_UNLIMITED);
            if (dest_elements(&el, dests, s->n_dests, v6))
                mesh_buf_appendf(out, "\t\telements = { %.*s }\n", (int)el.len, el.data);
            mesh_buf_done(&el);
            mesh_buf_append_str(out, "\t}\n");
        }
    }
    if (s->outbound)
        outbound_chain(out, s);
    if (pods_on(s))
        pods_chain(out, s);
    if (s->inbound)
        inbound_chain(out, s);
    mesh_buf_append_str(out, "}\n");
    mesh_free(dests);
    if (out->err) {
        out->len = before;
        return -ENOMEM;
    }
    return 0;
}

int mesh_capture_dests_script(const struct mesh_capture_spec *s, struct mesh_buf *out, char *err,
                              size_t n)
{
    int r = check_spec(s, err, n);
    if (r < 0)
        return r;
    struct mesh_ipport *dests = sorted_dests(s);
    if (!dests)
        return -ENOMEM;
    for (int v6 = 0; v6 <= (int)s->ipv6; v6++) {
        mesh_buf_appendf(out, "flush set inet %s dests%d\n", s->table, v6 ? 6 : 4);
        struct mesh_buf el;
        mesh_buf_init(&el, MESH_BUF_UNLIMITED);
        if (dest_elements(&el, dests, s->n_dests, v6))
            mesh_buf_appendf(out, "add element inet %s dests%d { %.*s }\n", s->table, v6 ? 6 : 4,
                             (int)el.len, el.data);
        mesh_buf_done(&el);
    }
    mesh_free(dests);
    return out->err ? -ENOMEM : 0;
}
