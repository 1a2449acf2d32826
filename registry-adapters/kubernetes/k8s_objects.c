#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/atom.h"
#include "common/names.h"
#include "common/strutil.h"
#include "registry-adapters/kubernetes/k8s_objects-int.h"

#define MAX_ENDPOINTS 10000 /* the API caps a slice at 1000; allow headroom, not abuse */
#define MAX_PORTS 1000

static int invalid(char *err, size_t errlen, const char *what, const char *name)
{
    snprintf(err, errlen, "object '%.128s': %s", name && name[0] ? name : "?", what);
    return -EINVAL;
}

/* The value at a path of keys ("metadata", "name", NULL). */
static size_t at(const struct mesh_jdoc *d, size_t obj, const char *const *path)
{
    for (; *path && obj != MESH_JDOC_NONE; path++)
        obj = mesh_jdoc_get(d, obj, *path);
    return obj;
}

#define AT(d, obj, ...) at(d, obj, (const char *const[]){__VA_ARGS__, NULL})

static void copy_str(const struct mesh_jdoc *d, size_t tok, char *out)
{
    if (mesh_jdoc_str(d, tok, out, MESH_K8S_NAME_MAX) < 0)
        out[0] = '\0';
}

void mesh_k8s_meta(const struct mesh_jdoc *d, size_t obj, char *ret_ns, char *ret_name,
                   char *ret_rv)
{
    size_t m = mesh_jdoc_get(d, obj, "metadata");
    if (ret_ns)
        copy_str(d, mesh_jdoc_get(d, m, "namespace"), ret_ns);
    if (ret_name)
        copy_str(d, mesh_jdoc_get(d, m, "name"), ret_name);
    if (ret_rv)
        copy_str(d, mesh_jdoc_get(d, m, "resourceVersion"), ret_rv);
}

static char *make_key(const char *ns, const char *name)
{
    size_t n = strlen(ns) + strlen(name) + 2;
    char *k = mesh_malloc(n);
    if (k)
        snprintf(k, n, "%s/%s", ns, name);
    return k;
}

/* Both names present, the namespace DNS-label shaped (as the API server enforces). */
static int head(const struct mesh_jdoc *d, size_t obj, char *ns, char *name, char *err,
                size_t errlen)
{
    mesh_k8s_meta(d, obj, ns, name, NULL);
    if (!name[0] || !ns[0] || !mesh_name_is_dns_label(ns))
        return invalid(err, errlen, "metadata.namespace and metadata.name are required", name);
    return 0;
}

/* A string field copied (NULL when absent or not a string); *oom when allocation failed. */
static char *dup_field(const struct mesh_jdoc *d, size_t tok, bool *oom)
{
    bool o = false;
    char *s = mesh_jdoc_strdup(d, tok, &o);
    *oom |= o;
    return s;
}

/* A string field as an atom; NULL when absent (or not a string). */
static const char *atom_field(const struct mesh_jdoc *d, size_t tok, bool *oom)
{
    char buf[MESH_K8S_NAME_MAX];
    if (mesh_jdoc_str(d, tok, buf, sizeof(buf)) < 0)
        return NULL;
    const char *a = mesh_atom(buf);
    *oom |= !a;
    return a;
}

static void ports_free(struct mesh_k8s_port *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mesh_free(p[i].name);
        mesh_free(p[i].app_protocol);
    }
    mesh_free(p);
}

/* ports[]: name, port, protocol (TCP only), appProtocol. */
static int decode_ports(const struct mesh_jdoc *d, size_t arr, struct mesh_k8s_port **ret,
                        size_t *ret_n, const char *who, char *err, size_t errlen)
{
    *ret = NULL;
    *ret_n = 0;
    if (arr == MESH_JDOC_NONE || mesh_jdoc_is(d, arr, MESH_JT_NULL))
        return 0;
    if (!mesh_jdoc_is(d, arr, MESH_JT_ARRAY) || d->t[arr].size > MAX_PORTS)
        return invalid(err, errlen, "ports is not a list (of at most 1000)", who);
    struct mesh_k8s_port *v = mesh_calloc(d->t[arr].size + 1, sizeof(*v));
    size_t n = 0;
    if (!v)
        return -ENOMEM;
    for (size_t p = mesh_jdoc_child(d, arr), i = 0; i < d->t[arr].size;
         i++, p = mesh_jdoc_next(d, p)) {
        int64_t port;
        if (!mesh_jdoc_is(d, p, MESH_JT_OBJECT) ||
            mesh_jdoc_int(d, mesh_jdoc_get(d, p, "port"), &port) < 0) {
            ports_free(v, n);
            return invalid(err, errlen, "a port without a number", who);
        }
        size_t proto = mesh_jdoc_get(d, p, "protocol");
        if (port < 1 || port > 65535 ||
            (proto != MESH_JDOC_NONE && !mesh_jdoc_streq(d, proto, "TCP")))
            continue; /* UDP and SCTP are not proxied */
        bool oom = false;
        struct mesh_k8s_port *o = &v[n++];
        o->port = (uint16_t)port;
        o->name = dup_field(d, mesh_jdoc_get(d, p, "name"), &oom);
        o->app_protocol = dup_field(d, mesh_jdoc_get(d, p, "appProtocol"), &oom);
        if (!o->name && !oom)
            oom = !(o->name = mesh_strdup(""));
        if (oom) {
            ports_free(v, n);
            return -ENOMEM;
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

static bool cond(const struct mesh_jdoc *d, size_t conds, const char *key, bool def)
{
    size_t v = mesh_jdoc_get(d, conds, key);
    if (mesh_jdoc_is(d, v, MESH_JT_TRUE))
        return true;
    if (mesh_jdoc_is(d, v, MESH_JT_FALSE))
        return false;
    return def;
}

/* One endpoints[] entry; 1 when kept, 0 when it has no usable address, <0 on error. */
static int endpoint(const struct mesh_jdoc *d, size_t e, const char *node,
                    struct mesh_k8s_endpoint *ep, char **ret_pod)
{
    char ip[64];
    size_t addrs = mesh_jdoc_get(d, e, "addresses");
    if (!mesh_jdoc_is(d, e, MESH_JT_OBJECT) ||
        mesh_jdoc_str(d, mesh_jdoc_child(d, addrs), ip, sizeof(ip)) < 0 ||
        !mesh_jdoc_is(d, addrs, MESH_JT_ARRAY) || mesh_ipport_from_ip(ip, 0, &ep->addr) < 0)
        return 0;
    size_t c = mesh_jdoc_get(d, e, "conditions");
    /* The API's reading of absent conditions: ready unknown counts as ready, serving as
     * ready, terminating as false. */
    bool ready = cond(d, c, "ready", true);
    bool serving = cond(d, c, "serving", ready);
    bool terminating = cond(d, c, "terminating", false);
    ep->health = (ready ? MESH_EP_READY : 0) | (serving ? MESH_EP_SERVING : 0) |
                 (terminating ? MESH_EP_TERMINATING : 0);
    bool oom = false;
    ep->zone = atom_field(d, mesh_jdoc_get(d, e, "zone"), &oom);
    ep->node = atom_field(d, mesh_jdoc_get(d, e, "nodeName"), &oom);
    size_t ref = mesh_jdoc_get(d, e, "targetRef");
    if ((!node || (ep->node && strcmp(ep->node, node) == 0)) &&
        mesh_jdoc_streq(d, mesh_jdoc_get(d, ref, "kind"), "Pod"))
        *ret_pod = dup_field(d, mesh_jdoc_get(d, ref, "name"), &oom);
    return oom ? -ENOMEM : 1;
}

int mesh_k8s_slice_decode(const struct mesh_jdoc *d, size_t obj, const char *node,
                          struct mesh_k8s_slice **ret, char *err, size_t errlen)
{
    char ns[MESH_K8S_NAME_MAX], name[MESH_K8S_NAME_MAX], svc[MESH_K8S_NAME_MAX];
    int r = head(d, obj, ns, name, err, errlen);
    if (r < 0)
        return r;
    struct mesh_k8s_slice *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    copy_str(d, AT(d, obj, "metadata", "labels", MESH_K8S_SERVICE_NAME_LABEL), svc);
    if (!(s->head.key = make_key(ns, name)) || !(s->namespace = mesh_strdup(ns)) ||
        (mesh_name_is_dns_label(svc) && !(s->service = mesh_strdup(svc)))) {
        r = -ENOMEM;
        goto fail;
    }
    r = decode_ports(d, mesh_jdoc_get(d, obj, "ports"), &s->ports, &s->n_ports, name, err, errlen);
    if (r < 0)
        goto fail;
    size_t type = mesh_jdoc_get(d, obj, "addressType");
    size_t eps = mesh_jdoc_get(d, obj, "endpoints");
    if (!mesh_jdoc_is(d, type, MESH_JT_STRING)) {
        r = invalid(err, errlen, "addressType is required", name);
        goto fail;
    }
    if (eps != MESH_JDOC_NONE && !mesh_jdoc_is(d, eps, MESH_JT_NULL) &&
        (!mesh_jdoc_is(d, eps, MESH_JT_ARRAY) || d->t[eps].size > MAX_ENDPOINTS)) {
        r = invalid(err, errlen, "endpoints is not a list (of at most 10000)", name);
        goto fail;
    }
    size_t count = mesh_jdoc_is(d, eps, MESH_JT_ARRAY) ? d->t[eps].size : 0;
    if (!mesh_jdoc_streq(d, type, "IPv4") && !mesh_jdoc_streq(d, type, "IPv6"))
        count = 0; /* FQDN slices name hosts: nothing to connect to without resolving */
    s->eps = mesh_calloc(count + 1, sizeof(*s->eps));
    if (!s->eps) {
        r = -ENOMEM;
        goto fail;
    }
    for (size_t e = mesh_jdoc_child(d, eps), i = 0; i < count; i++, e = mesh_jdoc_next(d, e)) {
        struct mesh_k8s_endpoint *ep = &s->eps[s->n_eps];
        char *pod = NULL;
        r = endpoint(d, e, node, ep, &pod);
        if (pod && !s->pods && !(s->pods = mesh_calloc(count, sizeof(*s->pods))))
            r = -ENOMEM;
        if (s->pods)
            s->pods[s->n_eps] = pod;
        else
            mesh_free(pod);
        if (r < 0) {
            s->n_eps++; /* freed with the slice */
            goto fail;
        }
        s->n_eps += (size_t)r;
    }
    *ret = s;
    return 0;
fail:
    mesh_k8s_slice_free(s);
    return r;
}

void mesh_k8s_slice_free(struct mesh_k8s_slice *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_eps; i++) {
        mesh_atom_unref(s->eps[i].zone);
        mesh_atom_unref(s->eps[i].node);
        if (s->pods)
            mesh_free(s->pods[i]);
    }
    mesh_free(s->pods);
    mesh_free(s->eps);
    ports_free(s->ports, s->n_ports);
    mesh_free(s->head.key);
    mesh_free(s->namespace);
    mesh_free(s->service);
    mesh_free(s);
}

/* spec.clusterIPs, else spec.clusterIP: "None" (headless) and "" are no address; anything
 * else must be an IP literal (the API server validates it; a bad one is refused here). */
static int decode_cluster_ips(const struct mesh_jdoc *d, size_t obj, struct mesh_k8s_service *s,
                              const char *who, char *err, size_t errlen)
{
    size_t arr = AT(d, obj, "spec", "clusterIPs");
    size_t one = AT(d, obj, "spec", "clusterIP");
    bool list = arr != MESH_JDOC_NONE && mesh_jdoc_is(d, arr, MESH_JT_ARRAY);
    if (arr != MESH_JDOC_NONE && !list && !mesh_jdoc_is(d, arr, MESH_JT_NULL))
        return invalid(err, errlen, "spec.clusterIPs is not a list", who);
    size_t n = list ? d->t[arr].size : (one != MESH_JDOC_NONE);
    if (n > 2)
        return invalid(err, errlen, "spec.clusterIPs has more than two addresses", who);
    size_t tok = list && n ? mesh_jdoc_child(d, arr) : one;
    for (size_t i = 0; i < n; i++, tok = mesh_jdoc_next(d, tok)) {
        char ip[64];
        if (mesh_jdoc_is(d, tok, MESH_JT_NULL))
            continue;
        if (!mesh_jdoc_is(d, tok, MESH_JT_STRING) || mesh_jdoc_str(d, tok, ip, sizeof(ip)) < 0)
            return invalid(err, errlen, "a cluster IP that is not a string", who);
        if (!ip[0] || strcmp(ip, "None") == 0)
            continue;
        if (mesh_ipport_from_ip(ip, 0, &s->cluster_ips[s->n_cluster_ips]) < 0)
            return invalid(err, errlen, "a cluster IP that is not an IP address", who);
        s->n_cluster_ips++;
    }
    return 0;
}

int mesh_k8s_service_decode(const struct mesh_jdoc *d, size_t obj, struct mesh_k8s_service **ret,
                            char *err, size_t errlen)
{
    char ns[MESH_K8S_NAME_MAX], name[MESH_K8S_NAME_MAX];
    int r = head(d, obj, ns, name, err, errlen);
    if (r < 0)
        return r;
    struct mesh_k8s_service *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    size_t ann = AT(d, obj, "metadata", "annotations");
    bool oom = false;
    s->protocol_hint = dup_field(d, mesh_jdoc_get(d, ann, MESH_K8S_PROTOCOL_ANNOTATION), &oom);
    s->port_hint = dup_field(d, mesh_jdoc_get(d, ann, MESH_K8S_PORT_ANNOTATION), &oom);
    s->service_account =
        dup_field(d, mesh_jdoc_get(d, ann, MESH_K8S_SERVICE_ACCOUNT_ANNOTATION), &oom);
    if (oom || !(s->head.key = make_key(ns, name)) || !(s->namespace = mesh_strdup(ns)) ||
        !(s->name = mesh_strdup(name))) {
        mesh_k8s_service_free(s);
        return -ENOMEM;
    }
    r = decode_ports(d, AT(d, obj, "spec", "ports"), &s->ports, &s->n_ports, name, err, errlen);
    if (r == 0)
        r = decode_cluster_ips(d, obj, s, name, err, errlen);
    if (r < 0) {
        mesh_k8s_service_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

void mesh_k8s_service_free(struct mesh_k8s_service *s)
{
    if (!s)
        return;
    ports_free(s->ports, s->n_ports);
    mesh_free(s->head.key);
    mesh_free(s->namespace);
    mesh_free(s->name);
    mesh_free(s->protocol_hint);
    mesh_free(s->port_hint);
    mesh_free(s->service_account);
    mesh_free(s);
}

/* True when `ip` (normalized) is the node's own address: status.hostIP or one of
 * status.hostIPs. */
static bool is_host_ip(const struct mesh_jdoc *d, size_t obj, const char *ip)
{
    char s[MESH_K8S_NAME_MAX], norm[MESH_ADDR_STRLEN];
    struct mesh_ipport a;
    size_t arr = AT(d, obj, "status", "hostIPs");
    size_t n = mesh_jdoc_is(d, arr, MESH_JT_ARRAY) ? d->t[arr].size : 0;
    size_t tok = n ? mesh_jdoc_child(d, arr) : MESH_JDOC_NONE;
    copy_str(d, AT(d, obj, "status", "hostIP"), s);
    for (size_t i = 0;; i++, tok = mesh_jdoc_next(d, tok)) {
        if (mesh_ipport_from_ip(s, 0, &a) == 0 &&
            strcmp(mesh_ipport_ip(&a, norm, sizeof(norm)), ip) == 0)
            return true;
        if (i >= n || i >= 4)
            return false;
        s[0] = '\0';
        if (mesh_jdoc_is(d, tok, MESH_JT_OBJECT))
            copy_str(d, mesh_jdoc_get(d, tok, "ip"), s);
    }
}

/* The pod's IPs while it may hold them, normalized ("" when none): status.podIP into
 * out[0], and a dual-stack pod's address of the other family (status.podIPs) into out[1].
 * A pod holds its IPs only while Pending or Running (*ret_pending tells which) and not
 * being deleted (metadata.deletionTimestamp: its address may be a new pod's before its last
 * status update arrives), and only in a network namespace of its own: a hostNetwork pod's
 * address is the node's, which the node's every process calls from. */
static void pod_ips(const struct mesh_jdoc *d, size_t obj, char out[2][MESH_ADDR_STRLEN],
                    bool *ret_pending)
{
    char ip[MESH_K8S_NAME_MAX], phase[MESH_K8S_NAME_MAX];
    struct mesh_ipport a, b;
    out[0][0] = out[1][0] = '\0';
    size_t deleting = AT(d, obj, "metadata", "deletionTimestamp");
    copy_str(d, AT(d, obj, "status", "phase"), phase);
    copy_str(d, AT(d, obj, "status", "podIP"), ip);
    *ret_pending = strcmp(phase, "Pending") == 0;
    if ((strcmp(phase, "Running") != 0 && !*ret_pending) ||
        (deleting != MESH_JDOC_NONE && !mesh_jdoc_is(d, deleting, MESH_JT_NULL)) ||
        mesh_jdoc_is(d, AT(d, obj, "spec", "hostNetwork"), MESH_JT_TRUE) ||
        mesh_ipport_from_ip(ip, 0, &a) < 0)
        return;
    mesh_ipport_ip(&a, out[0], MESH_ADDR_STRLEN);
    if (is_host_ip(d, obj, out[0])) {
        out[0][0] = '\0';
        return;
    }
    size_t arr = AT(d, obj, "status", "podIPs");
    if (arr == MESH_JDOC_NONE || !mesh_jdoc_is(d, arr, MESH_JT_ARRAY))
        return;
    size_t n = d->t[arr].size, tok = n ? mesh_jdoc_child(d, arr) : MESH_JDOC_NONE;
    for (size_t i = 0; i < n && i < 2; i++, tok = mesh_jdoc_next(d, tok)) {
        if (!mesh_jdoc_is(d, tok, MESH_JT_OBJECT))
            continue;
        copy_str(d, mesh_jdoc_get(d, tok, "ip"), ip);
        if (mesh_ipport_from_ip(ip, 0, &b) == 0 && b.family != a.family) {
            mesh_ipport_ip(&b, out[1], MESH_ADDR_STRLEN);
            if (is_host_ip(d, obj, out[1]))
                out[1][0] = '\0';
            return;
        }
    }
}

int mesh_k8s_pod_decode(const struct mesh_jdoc *d, size_t obj, struct mesh_k8s_pod **ret, char *err,
                        size_t errlen)
{
    char ns[MESH_K8S_NAME_MAX], name[MESH_K8S_NAME_MAX], sa[MESH_K8S_NAME_MAX];
    char ip[2][MESH_ADDR_STRLEN];
    int r = head(d, obj, ns, name, err, errlen);
    if (r < 0)
        return r;
    struct mesh_k8s_pod *p = mesh_calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    size_t t = AT(d, obj, "spec", "serviceAccountName");
    /* A pod without one runs as the namespace's "default" service account; one the mesh
     * cannot name is never taken for another. */
    sa[0] = '\0';
    if (t != MESH_JDOC_NONE && mesh_jdoc_str(d, t, sa, sizeof(sa)) < 0)
        snprintf(sa, sizeof(sa), "!"); /* not a string, or too long: no DNS label */
    if (!sa[0])
        snprintf(sa, sizeof(sa), "default");
    pod_ips(d, obj, ip, &p->pending);
    if (!(p->head.key = make_key(ns, name)) || !(p->namespace = mesh_strdup(ns)) ||
        !(p->name = mesh_strdup(name)) ||
        (mesh_name_is_dns_label(sa) && !(p->service_account = mesh_strdup(sa))) ||
        (ip[0][0] && !(p->ip = mesh_strdup(ip[0]))) ||
        (ip[1][0] && !(p->ip2 = mesh_strdup(ip[1])))) {
        mesh_k8s_pod_free(p);
        return -ENOMEM;
    }
    *ret = p;
    return 0;
}

void mesh_k8s_pod_free(struct mesh_k8s_pod *p)
{
    if (!p)
        return;
    mesh_free(p->head.key);
    mesh_free(p->namespace);
    mesh_free(p->name);
    mesh_free(p->service_account);
    mesh_free(p->ip);
    mesh_free(p->ip2);
    mesh_free(p);
}

static bool prefixed(const char *name, const char *proto)
{
    size_t n = strlen(proto);
    return strncmp(name, proto, n) == 0 && (name[n] == '\0' || name[n] == '-');
}

enum mesh_protocol mesh_k8s_protocol(const struct mesh_k8s_port *p, const char *hint)
{
    static const struct {
        const char *name;
        enum mesh_protocol proto;
    } names[] = {{"http", MESH_PROTO_HTTP}, {"kubernetes.io/h2c", MESH_PROTO_HTTP2},
                 {"h2c", MESH_PROTO_HTTP2}, {"http2", MESH_PROTO_HTTP2},
                 {"grpc", MESH_PROTO_GRPC}, {"tcp", MESH_PROTO_TCP}};
    for (size_t i = 0; p && p->app_protocol && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(p->app_protocol, names[i].name) == 0)
            return names[i].proto;
    }
    /* Longer prefixes first: "http2-x" is HTTP/2, not HTTP. */
    static const int order[] = {3, 2, 4, 0, 5};
    for (size_t k = 0; p && p->name && k < sizeof(order) / sizeof(order[0]); k++) {
        if (prefixed(p->name, names[order[k]].name))
            return names[order[k]].proto;
    }
    for (size_t i = 0; hint && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(hint, names[i].name) == 0)
            return names[i].proto;
    }
    return MESH_PROTO_TCP;
}
