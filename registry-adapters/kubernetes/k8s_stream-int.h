/*
 * The decoder of a Kubernetes watch stream: JSON objects, one per line
 * ({"type": "ADDED", "object": {...}}), arriving in pieces of any size. An event split
 * across reads is put together; a line longer than the cap is an error; what is left when
 * the stream is cut mid-object is dropped with the stream. Pure; fuzzed.
 */
#ifndef MESH_K8S_STREAM_H
#define MESH_K8S_STREAM_H

#include <stddef.h>

#include "common/buf.h"
#include "common/json_tok.h"

enum mesh_k8s_event_type {
    MESH_K8S_ADDED,
    MESH_K8S_MODIFIED,
    MESH_K8S_DELETED,
    MESH_K8S_BOOKMARK,
    MESH_K8S_ERROR,
};

/* One event: its object is token `obj` of `doc`, both borrowed for the call. */
typedef int (*mesh_k8s_event_cb)(void *data, enum mesh_k8s_event_type type,
                                 const struct mesh_jdoc *doc, size_t obj);

struct mesh_k8s_stream {
    struct mesh_buf line; /* an event not complete yet */
    struct mesh_jdoc doc; /* the tokens of the event being read */
};

/* `max_event` caps one event's size (the bytes of one line). */
void mesh_k8s_stream_init(struct mesh_k8s_stream *s, size_t max_event);
void mesh_k8s_stream_done(struct mesh_k8s_stream *s);
/* Forgets a partial event (a new stream starts). */
void mesh_k8s_stream_reset(struct mesh_k8s_stream *s);
/*
 * Feeds bytes; calls cb for every complete event, in order. Returns 0, a callback's
 * non-zero result (feeding stops there), -EMSGSIZE for an event over the cap, -EINVAL for
 * a line that is not an event (err says why), -ENOMEM.
 */
int mesh_k8s_stream_feed(struct mesh_k8s_stream *s, const char *data, size_t len,
                         mesh_k8s_event_cb cb, void *cb_data, char *err, size_t errlen);

#endif
