#define MESH_LOG_MODULE "http"

/*
 * Routing a request and rewriting heads: which virtual host and rule, which action, what
 * faults apply, and the head the upstream gets (hop-by-hop headers out, header operations
 * applied, x-request-id and traceparent set); the response head the client gets.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/path_normalize.h"
#include "proxy/http_proxy-int.h"

/* The first rule holding for r, with the match that held (NULL: the rule has none). */
static struct snap_rule *select_rule(const struct snap_vhost *v, const struct mesh_http_request *r,
                                     const struct mesh_route_match **ret_match)
{
    for (size_t i = 0; i < v->n_rules; i++) {
        const struct mesh_route_rule *rule = v->rules[i].rule;
        if (!rule->n_matches) {
            *ret_match = NULL;
            return &v->rules[i];
        }
        for (size_t k = 0; k < rule->n_matches; k++) {
            if (mesh_route_match_holds(&rule->matches[k], r)) {
                *ret_match = &rule->matches[k];
                return &v->rules[i];
            }
        }
    }
    return NULL;
}

static struct snap_dest *pick_weighted(const struct snap_rule *sr, uint64_t *rng)
{
    uint64_t x = mesh_rng_next(rng) % sr->total_weight;
    for (size_t i = 0; i < sr->rule->n_dests; i++) {
        uint64_t wgt = (uint64_t)sr->rule->dests[i].weight;
        if (x < wgt)
            return sr->dests[i];
        x -= wgt;
    }
    return sr->dests[sr->rule->n_dests - 1];
}

/* ---- faults ---- */

static const struct mesh_http_header *find(const struct mesh_http_request *r, const char *name)
{
    return name ? mesh_http_find_header(r->headers, r->num_headers, name) : NULL;
}

static long header_number(const struct mesh_http_header *h, long lo, long hi)
{
    char tmp[24];
    if (!h || h->value_len == 0 || h->value_len >= sizeof(tmp))
        return -1;
    memcpy(tmp, h->value, h->value_len);
    tmp[h->value_len] = '\0';
    char *end;
    long v = strtol(tmp, &end, 10);
    return *end || v < lo || v > hi ? -1 : v;
}

static bool roll(double percent, uint64_t *rng)
{
    return percent >= 100 || (double)(mesh_rng_next(rng) % 10000) < percent * 100;
}

/* ---- ids ---- */

static void hex(char *out, uint64_t v, int digits)
{
    static const char d[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = d[v & 15];
}

static bool request_id_ok(const struct mesh_http_header *h)
{
    if (!h || h->value_len == 0 || h->value_len >= sizeof(((struct http_req *)0)->request_id))
        return false;
    for (size_t i = 0; i < h->value_len; i++) {
        if (!isgraph((unsigned char)h->value[i]))
            return false;
    }
    return true;
}

static void new_request_id(char out[37], uint64_t *rng)
{
    uint64_t a = mesh_rng_next(rng), b = mesh_rng_next(rng);
    /* A version 4 UUID: 8-4-4-4-12. */
    hex(out, a >> 32, 8);
    out[8] = '-';
    hex(out + 9, (a >> 16) & 0xffff, 4);
    out[13] = '-';
    hex(out + 14, 0x4000 | (a & 0x0fff), 4);
    out[18] = '-';
    hex(out + 19, 0x8000 | ((b >> 48) & 0x3fff), 4);
    out[23] = '-';
    hex(out + 24, b & 0xffffffffffffULL, 12);
    out[36] = '\0';
}

/* ---- heads ---- */

bool mesh_http_in_connection_list(const struct mesh_http_header *conn,
                                  const struct mesh_http_header *h)
{
    if (!conn)
        return false;
    char name[128];
    if (h->name_len >= sizeof(name))
        return false;
    memcpy(name, h->name, h->name_len);
    name[h->name_len] = '\0';
    return mesh_http_list_has(conn->value, conn->value_len, name);
}

/*
 * Hop-by-hop headers (RFC 9110 7.6.1) and the framing the proxy sets itself: the length or
 * coding of a body is always written by us from what the parser found, never copied, so
 * that the next hop frames the message exactly as we did.
 */
static bool hop_by_hop(const struct mesh_http_header *h)
{
    static const char *const names[] = {
        "connection", "keep-alive",     "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade",    "content-length", "http2-settings",   NULL};
    for (int i = 0; names[i]; i++) {
        if (mesh_http_header_is(h, names[i]))
            return true;
    }
    return false;
}

static bool in_list(const struct mesh_cfg_strings *l, const struct mesh_http_header *h)
{
    for (size_t i = 0; i < l->n; i++) {
        if (mesh_http_header_is(h, l->v[i]))
            return true;
    }
    return false;
}

static bool in_labels(const struct mesh_labels *l, const struct mesh_http_header *h)
{
    for (size_t i = 0; i < l->n; i++) {
        if (mesh_http_header_is(h, l->v[i].key))
            return true;
    }
    return false;
}

static void append_ops(struct mesh_buf *b, const struct mesh_header_ops *ops)
{
    for (size_t i = 0; i < ops->set.n; i++)
        mesh_buf_appendf(b, "%s: %s\r\n", ops->set.v[i].key, ops->set.v[i].value);
    for (size_t i = 0; i < ops->add.n; i++)
        mesh_buf_appendf(b, "%s: %s\r\n", ops->add.v[i].key, ops->add.v[i].value);
}

static void append_header(struct mesh_buf *b, const struct mesh_http_header *h)
{
    mesh_buf_append(b, h->name, h->name_len);
    mesh_buf_append(b, ": ", 2);
    mesh_buf_append(b, h->value, h->value_len);
    mesh_buf_append(b, "\r\n", 2);
}

/* The path the upstream gets: the matched prefix rewritten, the query kept. */
static void append_target(struct mesh_buf *b, const struct mesh_http_request *r,
                          const struct mesh_route_rule *rule, const struct mesh_route_match *m)
{
    if (rule && rule->rewrite_prefix && m && m->has_path && m->path.kind == MESH_MATCH_PREFIX) {
        size_t plen = strlen(m->path.value);
        const char *rest = r->path + plen;
        size_t rest_len = r->path_len - plen;
        size_t nlen = strlen(rule->rewrite_prefix);
        mesh_buf_append(b, rule->rewrite_prefix, nlen);
        /* "/v1/" + "x" rewritten to "/" + "x"; "/v1" + "/x" to "/" + "x", not "//x". */
        if (nlen && rule->rewrite_prefix[nlen - 1] == '/' && rest_len && rest[0] == '/')
            rest++, rest_len--;
        if (nlen == 0 && (rest_len == 0 || rest[0] != '/'))
            mesh_buf_append(b, "/", 1);
        mesh_buf_append(b, rest, rest_len);
    } else {
        mesh_buf_append(b, r->path, r->path_len);
    }
    if (r->query_len) {
        mesh_buf_append(b, "?", 1);
        mesh_buf_append(b, r->query, r->query_len);
    }
}

static void build_request_head(struct http_conn *c, const struct mesh_http_request *r,
                               const struct mesh_route_match *m)
{
    struct http_req *q = &c->req;
    const struct mesh_route_rule *rule = q->rr;
    struct mesh_buf *b = &q->head_out;
    const struct mesh_http_header *conn = find(r, "connection");
    mesh_buf_reset(b);
    mesh_buf_append(b, r->method, r->method_len);
    mesh_buf_append(b, " ", 1);
    append_target(b, r, rule, m);
    mesh_buf_append(b, " HTTP/1.1\r\n", 11);
    bool have_id = false;
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct mesh_http_header *h = &r->headers[i];
        /* An absolute-form target's authority replaces Host (RFC 9112 3.2.2). */
        if (hop_by_hop(h) || mesh_http_in_connection_list(conn, h) ||
            mesh_http_header_is(h, "expect") || (r->authority && mesh_http_header_is(h, "host")) ||
            mesh_http_header_is(h, "traceparent") ||
            mesh_http_header_is(h, "x-forwarded-client-cert") ||
            in_list(&rule->request_headers.remove, h) || in_labels(&rule->request_headers.set, h))
            continue;
        if (mesh_http_header_is(h, "x-request-id")) {
            if (have_id || !request_id_ok(h))
                continue;
            have_id = true;
        }
        append_header(b, h);
    }
    append_ops(b, &rule->request_headers);
    if (r->authority) {
        mesh_buf_append_str(b, "host: ");
        mesh_buf_append(b, r->authority, r->authority_len);
        mesh_buf_append(b, "\r\n", 2);
    } else if (!r->host) {
        mesh_buf_appendf(b, "host: %s\r\n", q->vhost->name);
    }
    if (q->body.kind == BODY_CHUNKED)
        mesh_buf_append_str(b, "transfer-encoding: chunked\r\n");
    else if (r->flags & MESH_HTTP_F_CONTENT_LENGTH)
        mesh_buf_appendf(b, "content-length: %llu\r\n", (unsigned long long)r->content_length);
    if (q->upgrade) {
        const struct mesh_http_header *up = find(r, "upgrade");
        append_header(b, up);
        mesh_buf_append_str(b, "connection: upgrade\r\n");
    }
    if (!have_id)
        mesh_buf_appendf(b, "x-request-id: %s\r\n", q->request_id);
    /* A caller's XFCC is never passed on: only the one made from our own handshake
     * (Envoy's SANITIZE_SET on mTLS, plain SANITIZE otherwise). */
    if (c->xfcc)
        mesh_buf_appendf(b, "x-forwarded-client-cert: %s\r\n", c->xfcc);
    /* The caller's trace continued with this hop's span, or a new one (mesh_trace_begin). */
    mesh_buf_appendf(b, "traceparent: %s\r\n\r\n", q->traceparent);
}

/* 1xx and 204 responses have neither body nor Content-Length (RFC 9110 8.6). */
static bool status_has_no_content(int status)
{
    return status < 200 || status == 204;
}

int mesh_http_response_head(struct http_conn *c, const struct mesh_http_response *res,
                            struct mesh_buf *out)
{
    struct http_req *q = &c->req;
    const struct mesh_route_rule *rule = q->rr;
    const struct mesh_http_header *conn =
        mesh_http_find_header(res->headers, res->num_headers, "connection");
    mesh_buf_reset(out);
    mesh_buf_appendf(out, "HTTP/1.1 %d ", res->status);
    mesh_buf_append(out, res->reason, res->reason_len);
    mesh_buf_append(out, "\r\n", 2);
    bool switching = res->status == 101;
    for (size_t i = 0; i < res->num_headers; i++) {
        const struct mesh_http_header *h = &res->headers[i];
        if (switching && mesh_http_header_is(h, "upgrade")) {
            append_header(out, h);
            continue;
        }
        if (hop_by_hop(h) || mesh_http_in_connection_list(conn, h) ||
            in_list(&rule->response_headers.remove, h) || in_labels(&rule->response_headers.set, h))
            continue;
        append_header(out, h);
    }
    append_ops(out, &rule->response_headers);
    if (switching) {
        mesh_buf_append_str(out, "connection: upgrade\r\n\r\n");
        return out->err;
    }
    if (q->res_body.kind == BODY_CHUNKED && !q->res_chunked_to_raw)
        mesh_buf_append_str(out, "transfer-encoding: chunked\r\n");
    else if ((res->flags & MESH_HTTP_F_CONTENT_LENGTH) && !status_has_no_content(res->status))
        mesh_buf_appendf(out, "content-length: %llu\r\n", (unsigned long long)res->content_length);
    if (c->close_after)
        mesh_buf_append_str(out, "connection: close\r\n");
    else if (q->version == 10)
        mesh_buf_append_str(out, "connection: keep-alive\r\n");
    mesh_buf_append(out, "\r\n", 2);
    return out->err;
}

void mesh_http_local_response(struct http_conn *c, int status, const char *type, const char *body,
                              size_t body_len, const char *extra_headers, struct mesh_buf *out)
{
    struct http_req *q = &c->req;
    char flags[64];
    mesh_buf_reset(out);
    /* 1xx, 204 and 304 have no body (RFC 9110 15.3.5, 15.4.5): one sent anyway would be
     * read as the next response on a keep-alive connection. */
    bool no_content = status_has_no_content(status) || status == 304;
    if (no_content)
        body_len = 0;
    mesh_buf_appendf(out, "HTTP/1.1 %d %s\r\n", status, mesh_http_reason(status));
    if (!no_content)
        mesh_buf_appendf(out, "content-length: %zu\r\n", body_len);
    if (body_len)
        mesh_buf_appendf(out, "content-type: %s\r\n", type);
    if (q->flags) {
        mesh_http_flags_format(q->flags, flags, sizeof(flags));
        mesh_buf_appendf(out, "x-mesh-response-flags: %s\r\n", flags);
    }
    if (q->request_id[0])
        mesh_buf_appendf(out, "x-request-id: %s\r\n", q->request_id);
    if (q->rr)
        append_ops(out, &q->rr->response_headers);
    if (extra_headers)
        mesh_buf_append_str(out, extra_headers);
    if (c->close_after)
        mesh_buf_append_str(out, "connection: close\r\n");
    else if (q->version == 10)
        mesh_buf_append_str(out, "connection: keep-alive\r\n");
    mesh_buf_append(out, "\r\n", 2);
    if (body_len && !q->head_only)
        mesh_buf_append(out, body, body_len);
}

/* ---- routing ---- */

/*
 * What the request is logged, routed, authorized and forwarded as: its method, authority
 * and normalized path (with the query) copied into q->meta, and *nr, a copy of r whose
 * path points there. The path a policy sees is the path the upstream gets. Returns 0, or
 * the status to refuse the request with (*why says why).
 */
static int copy_meta(struct http_conn *c, const struct mesh_http_request *r,
                     struct mesh_http_request *nr, const char **why)
{
    struct http_req *q = &c->req;
    struct mesh_buf *m = &q->meta;
    mesh_buf_reset(m);
    mesh_buf_append(m, r->method, r->method_len);
    mesh_buf_append(m, "", 1);
    q->method_len = r->method_len;
    q->authority_off = m->len;
    if (r->host)
        mesh_buf_append(m, r->host, r->host_len);
    mesh_buf_append(m, "", 1);
    q->path_off = m->len;
    *nr = *r;
    /* The normalized path is never longer than the path, or "/" for an empty one. */
    int err = m->err ? m->err : mesh_buf_reserve(m, r->path_len + 2 + r->query_len);
    if (err < 0) {
        *why = err == -ENOMEM ? "out of memory\n" : "request target too long\n";
        return err == -ENOMEM ? 503 : 414;
    }
    bool asterisk = r->path_len == 1 && r->path[0] == '*';
    if (asterisk) {
        mesh_buf_append(m, r->path, r->path_len);
    } else if (r->path_len == 0) {
        mesh_buf_append(m, "/", 1); /* "http://host" means "/" */
    } else {
        int n = mesh_path_normalize(r->path, r->path_len, &c->w->shared->http.path,
                                    m->data + m->len, m->cap - m->len, why);
        if (n < 0) {
            mesh_buf_append(m, r->target, r->target_len); /* logged as it came */
            return 400;
        }
        m->len += (size_t)n;
        m->data[m->len] = '\0';
    }
    nr->path = m->data + q->path_off;
    nr->path_len = m->len - q->path_off;
    if (r->query_len) {
        mesh_buf_append(m, "?", 1);
        mesh_buf_append(m, r->query, r->query_len);
    }
    return 0;
}

/* Location for a redirect: scheme, host and path, each replaced or kept. */
static void redirect_location(const struct http_req *q, const struct mesh_http_request *r,
                              const struct mesh_route_rule *rule, const struct mesh_route_match *m,
                              struct mesh_buf *b)
{
    mesh_buf_appendf(b, "location: %s://", rule->redirect_scheme ? rule->redirect_scheme : "http");
    if (rule->redirect_host)
        mesh_buf_append_str(b, rule->redirect_host);
    else if (r->host)
        mesh_buf_append(b, r->host, r->host_len);
    else
        mesh_buf_append_str(b, q->vhost->name);
    if (rule->redirect_path) {
        mesh_buf_append_str(b, rule->redirect_path);
    } else if (rule->redirect_prefix && m && m->has_path && m->path.kind == MESH_MATCH_PREFIX) {
        size_t plen = strlen(m->path.value);
        mesh_buf_append_str(b, rule->redirect_prefix);
        mesh_buf_append(b, r->path + plen, r->path_len - plen);
    } else {
        mesh_buf_append(b, r->path, r->path_len);
    }
    if (r->query_len) {
        mesh_buf_append(b, "?", 1);
        mesh_buf_append(b, r->query, r->query_len);
    }
    mesh_buf_append(b, "\r\n", 2);
}

static bool is_idempotent(const struct mesh_http_request *r)
{
    static const char *const m[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", NULL};
    for (int i = 0; m[i]; i++) {
        if (strlen(m[i]) == r->method_len && memcmp(m[i], r->method, r->method_len) == 0)
            return true;
    }
    return false;
}

int mesh_http_route(struct http_conn *c, const struct mesh_http_request *r,
                    struct mesh_http_decision *d)
{
    struct http_req *q = &c->req;
    struct mesh_worker *w = c->w;
    memset(d, 0, sizeof(*d));
    mesh_buf_init_fixed(&d->headers, d->headers_storage, sizeof(d->headers_storage));
    d->content_type = "text/plain";
    struct mesh_http_request normalized;
    const char *why = NULL;
    int refused = copy_meta(c, r, &normalized, &why);
    q->version = r->version;
    q->idempotent = is_idempotent(r);
    q->head_only = r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0;
    const struct mesh_http_header *id = find(r, "x-request-id");
    if (request_id_ok(id)) {
        memcpy(q->request_id, id->value, id->value_len);
        q->request_id[id->value_len] = '\0';
    } else {
        new_request_id(q->request_id, &w->rng);
    }
    mesh_trace_begin(c, r);
    q->rr = &w->http->default_rule;
    if (refused) {
        q->flags |= RF_BAD_REQUEST;
        d->status = refused;
        d->body = why;
        return d->status;
    }
    r = &normalized; /* from here on, the path is the normalized one */
    /* Which service. */
    q->vhost = c->listener->vhost;
    if (!q->vhost && r->host)
        q->vhost = mesh_snapshot_vhost_by_host(c->snap, r->host, r->host_len);
    if (!q->vhost) {
        q->flags |= RF_NO_ROUTE;
        d->status = 404;
        d->body = "no service for this Host\n";
        return d->status;
    }
    /* May the caller make it? (Inbound: the service's AuthorizationPolicy.) */
    if (q->vhost->authz && !mesh_authz_allows(q->vhost->authz, r, c->peer_identity)) {
        atomic_fetch_add_explicit(&q->vhost->dest->state->authz_denied, 1, memory_order_relaxed);
        q->flags |= RF_DENIED;
        d->status = 403;
        d->body = "RBAC: access denied\n";
        return d->status;
    }
    /* Which rule, and what it does. */
    const struct mesh_route_match *m = NULL;
    q->rule = select_rule(q->vhost, r, &m);
    if (q->rule)
        q->rr = q->rule->rule;
    const struct mesh_route_rule *rule = q->rr;
    if (rule->has_direct) {
        d->status = rule->direct_status;
        d->body = rule->direct_body;
        d->content_type = rule->direct_content_type;
        return d->status;
    }
    if (rule->has_redirect) {
        d->status = rule->redirect_status;
        d->body = "";
        redirect_location(q, r, rule, m, &d->headers);
        return d->status;
    }
    q->dest = q->rule ? pick_weighted(q->rule, &w->rng) : q->vhost->dest;
    /* Faults: an abort answers now; a delay holds the request first. */
    const struct mesh_fault_policy *f = &rule->fault;
    if (f->has_abort) {
        const struct mesh_http_header *h = find(r, f->abort_header);
        long st = header_number(h, 200, 599);
        if (f->abort_header ? st > 0 : roll(f->abort_percent, &w->rng)) {
            q->flags |= RF_FAULT_ABORT;
            d->status = st > 0 ? (int)st : f->abort_status;
            d->body = "fault filter abort\n";
            return d->status;
        }
    }
    if (f->has_delay) {
        const struct mesh_http_header *h = find(r, f->delay_header);
        long ms = header_number(h, 0, 600000);
        if (f->delay_header ? ms >= 0 : roll(f->delay_percent, &w->rng)) {
            q->flags |= RF_FAULT_DELAY;
            d->delay_ms = ms >= 0 ? (uint64_t)ms : f->delay_ms;
        }
    }
    build_request_head(c, r, m);
    if (q->head_out.err) {
        d->status = 431;
        d->body = "request head too large after rewriting\n";
        return d->status;
    }
    return 0;
}
