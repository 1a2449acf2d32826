#include "registry-adapters/kubernetes/k8s_stream.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void mesh_k8s_stream_init(struct mesh_k8s_stream *s, size_t max_event)
{
    mesh_buf_init(&s->line, max_event);
    s->events = 0;
}

void mesh_k8s_stream_done(struct mesh_k8s_stream *s)
{
    mesh_buf_done(&s->line);
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
    json_error_t je;
    json_t *ev = json_loadb(p, len, 0, &je);
    if (!ev) {
        if (json_error_code(&je) == json_error_out_of_memory)
            return -ENOMEM;
        snprintf(err, errlen, "a watch event that is not JSON: %s", je.text);
        return -EINVAL;
    }
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *obj = json_object_get(ev, "object");
    int r = -EINVAL;
    for (size_t i = 0; type && json_is_object(obj) && i < 5; i++) {
        if (strcmp(type, type_names[i]) == 0) {
            s->events++;
            r = cb(cb_data, (enum mesh_k8s_event_type)i, obj);
            break;
        }
    }
    if (r == -EINVAL && !(type && json_is_object(obj)))
        snprintf(err, errlen, "a watch event without a known \"type\" and an \"object\"");
    else if (r == -EINVAL)
        snprintf(err, errlen, "a watch event of unknown type \"%.32s\"", type);
    json_decref(ev);
    return r;
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
