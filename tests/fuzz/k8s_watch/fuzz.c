/*
 * Fuzzes the Kubernetes watch stream: the bytes arrive in two reads split where the first
 * byte says, and every event's object goes through the decoder the second byte picks
 * (EndpointSlice, Service, Pod).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/addr.h"
#include "common/names.h"
#include "registry-adapters/kubernetes/k8s_objects-int.h"
#include "registry-adapters/kubernetes/k8s_stream-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_event(void *data, enum mesh_k8s_event_type type, const struct mesh_jdoc *d,
                    size_t obj)
{
    char err[256];
    unsigned which = *(const unsigned *)data % 3;
    (void)type;
    if (which == 0) {
        struct mesh_k8s_slice *s = NULL;
        if (mesh_k8s_slice_decode(d, obj, NULL, &s, err, sizeof(err)) == 0) {
            for (size_t i = 0; i < s->n_ports; i++) {
                if (s->ports[i].port == 0)
                    abort(); /* decoded ports are 1..65535 */
            }
            mesh_k8s_protocol(s->n_ports ? &s->ports[0] : NULL, "http");
        }
        mesh_k8s_slice_free(s);
    } else if (which == 1) {
        struct mesh_k8s_service *s = NULL;
        if (mesh_k8s_service_decode(d, obj, &s, err, sizeof(err)) == 0) {
            mesh_k8s_protocol(s->n_ports ? &s->ports[0] : NULL, s->protocol_hint);
            if (s->n_cluster_ips > 2)
                abort(); /* one per family at most */
            for (size_t i = 0; i < s->n_cluster_ips; i++) {
                if (s->cluster_ips[i].family != AF_INET && s->cluster_ips[i].family != AF_INET6)
                    abort(); /* an IP address, nothing else */
            }
        }
        mesh_k8s_service_free(s);
    } else {
        struct mesh_k8s_pod *p = NULL;
        struct mesh_ipport a = {0}, b = {0};
        if (mesh_k8s_pod_decode(d, obj, &p, err, sizeof(err)) == 0 &&
            ((p->service_account && !mesh_name_is_dns_label(p->service_account)) ||
             (p->ip && mesh_ipport_from_ip(p->ip, 0, &a) < 0) ||
             (p->ip2 &&
              (!p->ip || mesh_ipport_from_ip(p->ip2, 0, &b) < 0 || a.family == b.family))))
            abort(); /* an account the mesh can name, or none; IP literals, or none; a
                      * second one only beside the first, and of the other family */
        mesh_k8s_pod_free(p);
        char ns[MESH_K8S_NAME_MAX], name[MESH_K8S_NAME_MAX], rv[MESH_K8S_NAME_MAX];
        mesh_k8s_meta(d, obj, ns, name, rv);
        if (strlen(ns) >= MESH_K8S_NAME_MAX || strlen(rv) >= MESH_K8S_NAME_MAX)
            abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned which = data[1];
    const char *body = (const char *)data + 2;
    size_t len = size - 2, cut = len ? data[0] % (len + 1) : 0;
    struct mesh_k8s_stream s;
    char err[256];
    mesh_k8s_stream_init(&s, 4096);
    if (mesh_k8s_stream_feed(&s, body, cut, on_event, &which, err, sizeof(err)) == 0)
        mesh_k8s_stream_feed(&s, body + cut, len - cut, on_event, &which, err, sizeof(err));
    mesh_k8s_stream_done(&s);
    return 0;
}
