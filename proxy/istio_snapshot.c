/* The Istio label parts of a snapshot's listeners and destinations (main loop, at build). */
#include <errno.h>

#include "proxy/proxy-int.h"

int mesh_istio_snapshot_labels(struct mesh_proxy_snapshot *s, const struct mesh_proxy_inputs *in,
                               const struct want_listener *wl, size_t n)
{
    for (size_t i = 0; i < s->n_dests; i++) {
        struct snap_dest *d = &s->dests[i];
        if (!(d->istio = mesh_istio_dest_part(d->service, d->key, d->peer_id)))
            return -ENOMEM;
    }
    for (size_t i = 0; i < n && i < s->n_listeners; i++) {
        struct snap_listener *l = &s->listeners[i];
        const struct mesh_local_service *local = wl[i].local, *from = wl[i].from;
        if (local) {
            const struct mesh_tls_identity *id =
                in->tls ? mesh_tls_find(in->tls, local->namespace, local->name) : NULL;
            char service[300];
            snprintf(service, sizeof(service), "%s/%s", local->namespace, local->name);
            l->istio_inbound = true;
            l->istio = mesh_istio_dest_part(service, NULL, id ? id->id : NULL);
        } else {
            const struct mesh_tls_identity *id = l->tls_as;
            if (from)
                l->istio = mesh_istio_source_part(from->namespace, from->name, id ? id->id : NULL);
            else
                l->istio = mesh_istio_source_part(NULL, NULL, id ? id->id : NULL);
        }
        if (!l->istio)
            return -ENOMEM;
    }
    return 0;
}
