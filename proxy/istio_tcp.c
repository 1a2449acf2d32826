/* The Istio series of a TCP connection (worker threads; docs/metrics.md). */
#include <string.h>

#include "common/alloc.h"
#include "proxy/proxy-int.h"

struct mesh_istio_series *mesh_istio_tcp_series(struct mesh_proxy_shared *sh,
                                                const struct snap_listener *l,
                                                const struct snap_dest *d, const char *peer_id)
{
    if (!l || !l->istio || !d || !d->istio)
        return NULL;
    char storage[MESH_ISTIO_LABELS_MAX];
    struct mesh_buf b;
    mesh_buf_init_fixed(&b, storage, sizeof(storage));
    if (l->istio_inbound) {
        char *src = mesh_istio_peer_part(peer_id);
        if (!src)
            return NULL;
        mesh_buf_appendf(&b, "reporter=\"destination\",%s,%s", src, l->istio);
        mesh_free(src);
    } else {
        mesh_buf_appendf(&b, "reporter=\"source\",%s,%s", l->istio, d->istio);
    }
    mesh_buf_appendf(&b,
                     ",request_protocol=\"tcp\",response_flags=\"-\","
                     "connection_security_policy=\"%s\"",
                     !l->istio_inbound ? "unknown"
                     : peer_id         ? "mutual_tls"
                                       : "none");
    return b.err ? NULL : mesh_istio_series(&sh->istio, true, b.data, b.len);
}

struct mesh_istio_series *mesh_istio_tcp_flagged(struct mesh_proxy_shared *sh,
                                                 const struct mesh_istio_series *s,
                                                 const char *flags)
{
    static const char none[] = "response_flags=\"-\"";
    const char *at = s ? memmem(s->labels, s->len, none, sizeof(none) - 1) : NULL;
    if (!at)
        return NULL;
    char storage[MESH_ISTIO_LABELS_MAX];
    struct mesh_buf b;
    mesh_buf_init_fixed(&b, storage, sizeof(storage));
    size_t head = (size_t)(at - s->labels), tail = head + sizeof(none) - 1;
    mesh_buf_appendf(&b, "%.*sresponse_flags=\"%s\"%.*s", (int)head, s->labels, flags,
                     (int)(s->len - tail), s->labels + tail);
    return b.err ? NULL : mesh_istio_series(&sh->istio, true, b.data, b.len);
}
