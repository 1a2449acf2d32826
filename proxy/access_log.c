/*
 * The JSON access log: one line per request, written with one write(2) from the worker
 * that served it (lines under PIPE_BUF stay whole on pipes; O_APPEND files take whole
 * writes). Fields follow Envoy's names where they exist.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "proxy/http_proxy-int.h"

static void field(struct mesh_buf *b, const char *name, const char *v, size_t len)
{
    mesh_buf_appendf(b, ",\"%s\":", name);
    if (v)
        mesh_buf_append_json_str(b, v, len);
    else
        mesh_buf_append_str(b, "null");
}

void mesh_access_log(struct mesh_proxy_shared *sh, const struct http_conn *c)
{
    if (!atomic_load_explicit(&sh->access_log_on, memory_order_relaxed))
        return;
    const struct http_req *q = &c->req;
    char line[4096], ts[40], flags[64];
    struct mesh_buf b;
    mesh_buf_init_fixed(&b, line, sizeof(line) - 1);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);
    mesh_http_flags_format(q->flags, flags, sizeof(flags));
    uint64_t us = uv_hrtime() / 1000 - q->start_us;
    const char *meta = q->meta.data;
    bool has_meta = meta && q->meta.len > q->path_off;
    mesh_buf_appendf(&b, "{\"time\":\"%s\"", ts);
    field(&b, "method", has_meta ? meta : NULL, q->method_len);
    /* Bounded so that a line, even with every character escaped, fits in 4 KiB. */
    size_t alen = has_meta ? strlen(meta + q->authority_off) : 0;
    field(&b, "authority", has_meta ? meta + q->authority_off : NULL, alen > 256 ? 256 : alen);
    size_t plen = has_meta ? q->meta.len - q->path_off : 0;
    field(&b, "path", has_meta ? meta + q->path_off : NULL, plen > 1024 ? 1024 : plen);
    mesh_buf_appendf(&b, ",\"protocol\":\"%s\",\"status\":%d",
                     c->stream          ? "HTTP/2"
                     : q->version == 10 ? "HTTP/1.0"
                                        : "HTTP/1.1",
                     q->status);
    field(&b, "response_flags", flags, strlen(flags));
    mesh_buf_appendf(&b, ",\"duration_ms\":%.3f,\"bytes_received\":%llu,\"bytes_sent\":%llu",
                     (double)us / 1000.0, (unsigned long long)q->bytes_in,
                     (unsigned long long)q->bytes_out);
    field(&b, "upstream_host", q->upstream_host[0] ? q->upstream_host : NULL,
          strlen(q->upstream_host));
    field(&b, "destination", q->dest ? q->dest->key : NULL, q->dest ? strlen(q->dest->key) : 0);
    field(&b, "route", q->vhost && q->vhost->route_name ? q->vhost->route_name : NULL,
          q->vhost && q->vhost->route_name ? strlen(q->vhost->route_name) : 0);
    mesh_buf_appendf(&b, ",\"attempts\":%d", q->tries);
    field(&b, "request_id", q->request_id[0] ? q->request_id : NULL, strlen(q->request_id));
    field(&b, "trace_id", q->trace_id[0] ? q->trace_id : NULL, strlen(q->trace_id));
    size_t idlen = c->peer_identity ? strlen(c->peer_identity) : 0;
    field(&b, "downstream_identity", c->peer_identity, idlen > 512 ? 512 : idlen);
    mesh_buf_append_str(&b, "}\n");
    if (b.err) {
        mesh_buf_init_fixed(&b, line, sizeof(line) - 1);
        mesh_buf_appendf(&b, "{\"time\":\"%s\",\"status\":%d,\"error\":\"line too long\"}\n", ts,
                         q->status);
    }
    ssize_t r = write(sh->access_log_fd, line, b.len);
    (void)r; /* a full disk must not stop traffic */
}
