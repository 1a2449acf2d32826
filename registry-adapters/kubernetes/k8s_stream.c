#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "registry-adapters/kubernetes/k8s_stream-int.h"

void mesh_k8s_stream_init(struct mesh_k8s_stream *s, size_t max_event)
{
    mesh_buf_init(&s->line, max_event);
    /* A value takes at least two bytes ("1,"): the cap on bytes caps the tokens. */
    mesh_jdoc_init(&s->doc, max_event / 2 + 16);
}

void mesh_k8s_stream_done(struct mesh_k8s_stream *s)
{
    mesh_buf_done(&s->line);
    mesh_jdoc_done(&s->doc);
}

void mesh_k8s_stream_reset(struct mesh_k8s_stream *s)
{
    mesh_buf_reset(&s->line);
    s->line.err = 0;
}

static const char *const type_names[] = {"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"};

static int one_event(struct mesh_k8s_stream *s, const char *p, size_t len, mesh_k8s_event_cb cb,
                     void *cb_data, char *err, size_t errlen)
{
    while (len && (p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len == 0)
        return 0; /* blank lines between events are harmless */
    char why[200];
    int r = mesh_jdoc_parse(&s->doc, p, len, why, sizeof(why));
    if (r < 0) {
        if (r != -ENOMEM)
            snprintf(err, errlen, "a watch event that is not JSON: %s", why);
        return r == -E2BIG ? -EINVAL : r;
    }
    size_t type = mesh_jdoc_get(&s->doc, 0, "type"), obj = mesh_jdoc_get(&s->doc, 0, "object");
    if (!mesh_jdoc_is(&s->doc, type, MESH_JT_STRING) ||
        !mesh_jdoc_is(&s->doc, obj, MESH_JT_OBJECT)) {
        snprintf(err, errlen, "a watch event without a \"type\" and an \"object\"");
        return -EINVAL;
    }
    for (size_t i = 0; i < 5; i++) {
        if (mesh_jdoc_streq(&s->doc, type, type_names[i])) {
            return cb(cb_data, (enum mesh_k8s_event_type)i, &s->doc, obj);
        }
    }
    char name[40];
    if (mesh_jdoc_str(&s->doc, type, name, sizeof(name)) < 0)
        snprintf(name, sizeof(name), "?");
    snprintf(err, errlen, "a watch event of unknown type \"%s\"", name);
    return -EINVAL;
}

int mesh_k8s_stream_feed(struct mesh_k8s_stream *s, const char *data, size_t len,
                         mesh_k8s_event_cb cb, void *cb_data, char *err, size_t errlen)
{
    while (len) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (!nl || s->line.len) {
            /* Part of an event: keep it until its end arrives. */
            int r = mesh_buf_append(&s->line, data, take);
            if (r < 0) {
                snprintf(err, errlen, "a watch event larger than %zu bytes", s->line.max);
                return r;
            }
            if (!nl)
                return 0;
            r = one_event(s, s->line.data, s->line.len, cb, cb_data, err, errlen);
            mesh_buf_reset(&s->line);
            if (r)
                return r;
        } else {
            if (take > s->line.max) {
                snprintf(err, errlen, "a watch event larger than %zu bytes", s->line.max);
                return -EMSGSIZE;
            }
            int r = one_event(s, data, take, cb, cb_data, err, errlen);
            if (r)
                return r;
        }
        data += take + 1;
        len -= take + 1;
    }
    return 0;
}
