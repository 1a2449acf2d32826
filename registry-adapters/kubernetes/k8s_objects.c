#include "registry-adapters/kubernetes/k8s_objects.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/strutil.h"

#define MAX_ENDPOINTS 10000 /* the API caps a slice at 1000; allow headroom, not abuse */
#define MAX_PORTS 1000

static int invalid(char *err, size_t errlen, const char *what, const char *name)
{
    snprintf(err, errlen, "%s '%.128s': %s", "object", name ? name : "?", what);
    return -EINVAL;
}

void mesh_k8s_meta(json_t *obj, const char **ret_ns, const char **ret_name, const char **ret_rv)
{
    json_t *m = json_object_get(obj, "metadata");
    if (ret_ns)
        *ret_ns = json_string_value(json_object_get(m, "namespace"));
    if (ret_name)
        *ret_name = json_string_value(json_object_get(m, "name"));
    if (ret_rv)
        *ret_rv = json_string_value(json_object_get(m, "resourceVersion"));
}

static char *make_key(const char *ns, const char *name)
{
    size_t n = strlen(ns) + strlen(name) + 2;
    char *k = mesh_malloc(n);
    if (k)
        snprintf(k, n, "%s/%s", ns, name);
    return k;
}

/* Both names DNS-label shaped (as the API server enforces for namespaces and services). */
static int head(json_t *obj, const char **ret_ns, const char **ret_name, char *err, size_t errlen)
{
    mesh_k8s_meta(obj, ret_ns, ret_name, NULL);
    if (!*ret_name || !*ret_ns || !**ret_name || strlen(*ret_name) > 253 ||
        !mesh_is_dns_label(*ret_ns))
        return invalid(err, errlen, "metadata.namespace and metadata.name are required", *ret_name);
    return 0;
}

static void ports_free(struct mesh_k8s_port *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mesh_free(p[i].name);
        mesh_free(p[i].app_protocol);
    }
    mesh_free(p);
}

/* ports[]: name, port (or `port_key`), protocol (TCP only), appProtocol. */
static int decode_ports(json_t *arr, const char *port_key, struct mesh_k8s_port **ret,
                        size_t *ret_n, const char *who, char *err, size_t errlen)
{
    *ret = NULL;
    *ret_n = 0;
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > MAX_PORTS)
        return invalid(err, errlen, "ports is not a list (of at most 1000)", who);
    struct mesh_k8s_port *v = mesh_calloc(json_array_size(arr) + 1, sizeof(*v));
    size_t n = 0, i;
    json_t *p;
    if (!v)
        return -ENOMEM;
    json_array_foreach(arr, i, p)
    {
        const char *proto = json_string_value(json_object_get(p, "protocol"));
        json_t *num = json_object_get(p, port_key);
        if (!json_is_object(p) || !json_is_integer(num)) {
            ports_free(v, n);
            return invalid(err, errlen, "a port without a number", who);
        }
        json_int_t port = json_integer_value(num);
        if (port < 1 || port > 65535 || (proto && strcmp(proto, "TCP") != 0))
            continue; /* UDP and SCTP are not proxied */
        const char *name = json_string_value(json_object_get(p, "name"));
        const char *app = json_string_value(json_object_get(p, "appProtocol"));
        struct mesh_k8s_port *o = &v[n++];
        o->port = (uint16_t)port;
        if (!(o->name = mesh_strdup(name ? name : "")) ||
            (app && !(o->app_protocol = mesh_strdup(app)))) {
            ports_free(v, n);
            return -ENOMEM;
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

static bool cond(json_t *conds, const char *key, bool def)
{
    json_t *v = json_object_get(conds, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

int mesh_k8s_slice_decode(json_t *obj, struct mesh_k8s_slice **ret, char *err, size_t errlen)
{
    const char *ns, *name;
    int r = head(obj, &ns, &name, err, errlen);
    if (r < 0)
        return r;
    struct mesh_k8s_slice *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
    const char *svc = json_string_value(json_object_get(labels, MESH_K8S_SERVICE_NAME_LABEL));
    if (!(s->key = make_key(ns, name)) || !(s->namespace = mesh_strdup(ns)) ||
        (svc && mesh_is_dns_label(svc) && !(s->service = mesh_strdup(svc)))) {
        r = -ENOMEM;
        goto fail;
    }
    r = decode_ports(json_object_get(obj, "ports"), "port", &s->ports, &s->n_ports, name, err,
                     errlen);
    if (r < 0)
        goto fail;
    const char *type = json_string_value(json_object_get(obj, "addressType"));
    json_t *eps = json_object_get(obj, "endpoints");
    if (!type) {
        r = invalid(err, errlen, "addressType is required", name);
        goto fail;
    }
    if (eps && !json_is_null(eps) &&
        (!json_is_array(eps) || json_array_size(eps) > MAX_ENDPOINTS)) {
        r = invalid(err, errlen, "endpoints is not a list (of at most 10000)", name);
        goto fail;
    }
    if (strcmp(type, "IPv4") != 0 && strcmp(type, "IPv6") != 0)
        eps = NULL; /* FQDN slices name hosts: nothing to connect to without resolving */
    s->eps = mesh_calloc(json_array_size(eps) + 1, sizeof(*s->eps));
    if (!s->eps) {
        r = -ENOMEM;
        goto fail;
    }
    size_t i;
    json_t *e;
    json_array_foreach(eps, i, e)
    {
        const char *ip = json_string_value(json_array_get(json_object_get(e, "addresses"), 0));
        struct mesh_k8s_endpoint *ep = &s->eps[s->n_eps];
        if (!json_is_object(e) || !ip || mesh_addr_from_ip(ip, 0, &ep->addr) < 0)
            continue; /* an endpoint without a usable address */
        json_t *c = json_object_get(e, "conditions");
        /* The API's reading of absent conditions: ready unknown counts as ready, serving
         * as ready, terminating as false. */
        bool ready = cond(c, "ready", true);
        bool serving = cond(c, "serving", ready);
        bool terminating = cond(c, "terminating", false);
        ep->health = (ready ? MESH_EP_READY : 0) | (serving ? MESH_EP_SERVING : 0) |
                     (terminating ? MESH_EP_TERMINATING : 0);
        const char *zone = json_string_value(json_object_get(e, "zone"));
        const char *node = json_string_value(json_object_get(e, "nodeName"));
        json_t *ref = json_object_get(e, "targetRef");
        const char *kind = json_string_value(json_object_get(ref, "kind"));
        const char *pod = kind && strcmp(kind, "Pod") == 0
                              ? json_string_value(json_object_get(ref, "name"))
                              : NULL;
        s->n_eps++;
        if ((zone && !(ep->zone = mesh_strdup(zone))) ||
            (node && !(ep->node = mesh_strdup(node))) || (pod && !(ep->pod = mesh_strdup(pod)))) {
            r = -ENOMEM;
            goto fail;
        }
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
        mesh_free(s->eps[i].zone);
        mesh_free(s->eps[i].node);
        mesh_free(s->eps[i].pod);
    }
    mesh_free(s->eps);
    ports_free(s->ports, s->n_ports);
    mesh_free(s->key);
    mesh_free(s->namespace);
    mesh_free(s->service);
    mesh_free(s);
}

int mesh_k8s_service_decode(json_t *obj, struct mesh_k8s_service **ret, char *err, size_t errlen)
{
    const char *ns, *name;
    int r = head(obj, &ns, &name, err, errlen);
    if (r < 0)
        return r;
    struct mesh_k8s_service *s = mesh_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    json_t *ann = json_object_get(json_object_get(obj, "metadata"), "annotations");
    const char *proto = json_string_value(json_object_get(ann, MESH_K8S_PROTOCOL_ANNOTATION));
    const char *port = json_string_value(json_object_get(ann, MESH_K8S_PORT_ANNOTATION));
    if (!(s->key = make_key(ns, name)) || !(s->namespace = mesh_strdup(ns)) ||
        !(s->name = mesh_strdup(name)) || (proto && !(s->protocol_hint = mesh_strdup(proto))) ||
        (port && !(s->port_hint = mesh_strdup(port)))) {
        mesh_k8s_service_free(s);
        return -ENOMEM;
    }
    r = decode_ports(json_object_get(json_object_get(obj, "spec"), "ports"), "port", &s->ports,
                     &s->n_ports, name, err, errlen);
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
    mesh_free(s->key);
    mesh_free(s->namespace);
    mesh_free(s->name);
    mesh_free(s->protocol_hint);
    mesh_free(s->port_hint);
    mesh_free(s);
}

int mesh_k8s_pod_decode(json_t *obj, struct mesh_k8s_pod **ret, char *err, size_t errlen)
{
    const char *ns, *name;
    int r = head(obj, &ns, &name, err, errlen);
    if (r < 0)
        return r;
    json_t *spec = json_object_get(obj, "spec");
    const char *sa = json_string_value(json_object_get(spec, "serviceAccountName"));
    const char *node = json_string_value(json_object_get(spec, "nodeName"));
    const char *phase = json_string_value(json_object_get(json_object_get(obj, "status"), "phase"));
    struct mesh_k8s_pod *p = mesh_calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->running = phase && strcmp(phase, "Running") == 0;
    /* A pod without one runs as the namespace's "default" service account. */
    if (!(p->key = make_key(ns, name)) || !(p->namespace = mesh_strdup(ns)) ||
        !(p->name = mesh_strdup(name)) ||
        !(p->service_account = mesh_strdup(sa && mesh_is_dns_label(sa) ? sa : "default")) ||
        (node && !(p->node = mesh_strdup(node)))) {
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
    mesh_free(p->key);
    mesh_free(p->namespace);
    mesh_free(p->name);
    mesh_free(p->service_account);
    mesh_free(p->node);
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
