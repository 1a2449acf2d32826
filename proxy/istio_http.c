/* A finished HTTP request in Istio's metrics (worker threads; docs/metrics.md). */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "proxy/http_proxy-int.h"

/* Where no destination was found (no route): every destination label is unknown. */
static const char unknown_dest[] =
    "destination_workload=\"unknown\",destination_workload_namespace=\"unknown\","
    "destination_principal=\"unknown\",destination_version=\"unknown\","
    "destination_service=\"unknown\",destination_service_name=\"unknown\","
    "destination_service_namespace=\"unknown\"";

void mesh_istio_http_request(struct http_conn *c, uint64_t duration_us)
{
    const struct snap_listener *l = c->listener;
    const struct http_req *q = &c->req;
    if (!l || !l->istio)
        return;
    unsigned rf = q->flags & ~RF_DENIED;
    uint64_t version = c->snap ? c->snap->version : 0;
    if (c->istio_last.series && c->istio_last.version == version && c->istio_last.dest == q->dest &&
        c->istio_last.status == q->status && c->istio_last.flags == rf) {
        mesh_istio_record_http(c->istio_last.series, duration_us, q->bytes_in, q->bytes_out);
        return;
    }
    bool inbound = l->istio_inbound;
    if (inbound && !c->istio_peer && !(c->istio_peer = mesh_istio_peer_part(c->peer_identity)))
        return;
    char storage[MESH_ISTIO_LABELS_MAX], flags[64];
    struct mesh_buf b;
    mesh_buf_init_fixed(&b, storage, sizeof(storage));
    if (inbound)
        mesh_buf_appendf(&b, "reporter=\"destination\",%s,%s", c->istio_peer, l->istio);
    else
        mesh_buf_appendf(&b, "reporter=\"source\",%s,%s", l->istio,
                         q->dest && q->dest->istio ? q->dest->istio : unknown_dest);
    /* Envoy's HTTP RBAC filter answers 403 and sets no flag: a denial shows as 403 "-". */
    mesh_http_flags_format(rf, flags, sizeof(flags));
    mesh_buf_appendf(&b,
                     ",request_protocol=\"http\",response_code=\"%d\",grpc_response_status=\"\","
                     "response_flags=\"%s\",connection_security_policy=\"%s\"",
                     q->status, flags,
                     !inbound           ? "unknown"
                     : c->peer_identity ? "mutual_tls"
                                        : "none");
    if (b.err)
        return;
    struct mesh_istio_series *s = mesh_istio_series(&c->w->shared->istio, false, b.data, b.len);
    if (!s)
        return;
    mesh_istio_record_http(s, duration_us, q->bytes_in, q->bytes_out);
    c->istio_last.series = s;
    c->istio_last.version = version;
    c->istio_last.dest = q->dest;
    c->istio_last.status = q->status;
    c->istio_last.flags = rf;
}
