#define MESH_LOG_MODULE "trace"

/* Span export in batches over HTTP (agent/trace_export.h). */
#include "agent/trace_export.h"

#include <errno.h>
#include <string.h>

#include "agent/trace_encode.h"
#include "common/alloc.h"
#include "common/backoff.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/macros.h"
#include "common/prom.h"
#include "proxy/trace.h"

#define TAKE_CHUNK 256
#define BODY_MAX (64u << 20)

struct sender {
    struct mesh_trace_exporter *e;
    const char *name; /* "otlp", "zipkin" */
    char *url;
    int (*encode)(const struct mesh_span *spans, size_t n, struct mesh_buf *out);
    struct mesh_span *q; /* a ring of cap spans */
    size_t cap, head, count;
    uint64_t first_at; /* loop ms: when the oldest span queued came */
    struct mesh_span *batch;
    size_t in_flight; /* spans of the batch being sent; 0: none */
    struct mesh_buf body;
    struct mesh_http_req req;
    unsigned failures;       /* in a row */
    uint64_t failing_since;  /* loop ms of the first of them */
    uint64_t retry_at;       /* loop ms */
    uint64_t refusal_logged; /* loop ms of the last refusal logged (one every 10 s) */
    /* Counters. */
    uint64_t exported, failed, dropped, requests_ok, requests_retried, requests_failed;
};

struct mesh_trace_exporter {
    uv_loop_t *loop;
    struct mesh_proxy *proxy;
    struct mesh_http_client *client;
    uv_timer_t tick;
    size_t batch_size;
    uint64_t flush_ms, timeout_ms, max_backoff_ms;
    struct sender senders[2];
    size_t n_senders;
    struct mesh_span *take; /* TAKE_CHUNK spans */
    uint64_t recorded;
    bool closing;
    int open;
};

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static void maybe_send(struct sender *s);
static void on_tick(uv_timer_t *t);

static void on_sent(struct mesh_http_req *req)
{
    struct sender *s = container_of(req, struct sender, req);
    struct mesh_trace_exporter *e = s->e;
    uint64_t now = uv_now(e->loop);
    size_t n = s->in_flight;
    s->in_flight = 0;
    long st = req->status;
    bool ok = req->result == 0 && st >= 200 && st < 300;
    /* OTLP/HTTP's retryable answers (429, 502, 503, 504) and no answer at all. */
    bool again =
        !ok && (req->result < 0 || st == 0 || st == 429 || st == 502 || st == 503 || st == 504);
    if (again && s->failures && now - s->failing_since >= MESH_TRACE_GIVE_UP_MS)
        again = false;
    if (ok) {
        s->exported += n;
        s->requests_ok++;
        if (s->failures)
            mesh_log_info("%s collector '%s' takes spans again", s->name, s->url);
        s->failures = 0;
    } else if (again) {
        s->requests_retried++;
        if (!s->failures++) {
            s->failing_since = now;
            mesh_log_warn("%s collector '%s' did not take %zu spans (%s); retrying with backoff",
                          s->name, s->url, n, req->result < 0 ? req->error : "busy");
        }
        s->retry_at = now + mesh_backoff_ms(s->failures, 250, e->max_backoff_ms);
        maybe_send(s);
        return;
    } else {
        s->requests_failed++;
        s->failed += n;
        s->failures = 0;
        /* A collector that refuses every batch would otherwise log each one. */
        if (!s->refusal_logged || now - s->refusal_logged >= 10000) {
            s->refusal_logged = now;
            mesh_log_warn(
                "%s collector '%s' refused %zu spans (%s%ld: %.200s); dropping them "
                "(mesh_trace_spans_failed_total counts them)",
                s->name, s->url, n, req->result < 0 ? "given up, last status " : "status ", st,
                req->result < 0 ? req->error : (req->answer.data ? req->answer.data : ""));
        }
    }
    /* Taken or given up: the batch leaves the queue. */
    s->head = (s->head + n) % s->cap;
    s->count -= n;
    s->first_at = now;
    maybe_send(s);
}

/* Sends the next batch when one is due and none is in flight. */
static void maybe_send(struct sender *s)
{
    struct mesh_trace_exporter *e = s->e;
    uint64_t now = uv_now(e->loop);
    if (e->closing || s->in_flight || !s->count || now < s->retry_at)
        return;
    if (s->count < e->batch_size && now - s->first_at < e->flush_ms)
        return;
    size_t n = s->count < e->batch_size ? s->count : e->batch_size;
    const struct mesh_span *spans = &s->q[s->head];
    if (s->head + n > s->cap) { /* the batch wraps around the ring's end */
        for (size_t i = 0; i < n; i++)
            s->batch[i] = s->q[(s->head + i) % s->cap];
        spans = s->batch;
    }
    mesh_buf_reset(&s->body);
    int r = s->encode(spans, n, &s->body);
    if (r == 0) {
        mesh_http_req_done(&s->req); /* the last answer's buffers */
        s->req = (struct mesh_http_req){
            .method = "POST",
            .url = s->url,
            .headers = json_headers,
            .body = s->body.data,
            .body_len = s->body.len,
            .timeout_ms = (long)e->timeout_ms,
            .max_answer = 64 * 1024,
            .done = on_sent,
        };
        r = mesh_http_req_start(e->client, &s->req);
    }
    if (r < 0) {
        mesh_log_warn("cannot send %zu spans to '%s': %s; dropping them", n, s->url, strerror(-r));
        s->failed += n;
        s->head = (s->head + n) % s->cap;
        s->count -= n;
        return;
    }
    s->in_flight = n;
}

static void enqueue(struct sender *s, const struct mesh_span *spans, size_t n, uint64_t now)
{
    for (size_t i = 0; i < n; i++) {
        if (s->count == s->cap) {
            s->dropped += n - i;
            return;
        }
        if (!s->count)
            s->first_at = now;
        s->q[(s->head + s->count++) % s->cap] = spans[i];
    }
}

/*
 * How soon to look at the workers' queues again: soon while spans come fast, else every
 * 100 ms, or flush_interval when that is shorter. (A worker whose queue is half full also
 * calls for it: on_spans.)
 */
static uint64_t next_tick(const struct mesh_trace_exporter *e, size_t took)
{
    if (took >= 64)
        return 10;
    return e->flush_ms < 100 ? e->flush_ms : 100;
}

/*
 * Takes what the workers recorded into the queues: straight into the first one's free
 * space, copied from there into the other's. Returns how many spans were taken.
 */
static size_t take_all(struct mesh_trace_exporter *e, uint64_t now)
{
    struct sender *first = &e->senders[0];
    size_t took = 0, n, room;
    do {
        struct mesh_span *dst = e->take;
        room = TAKE_CHUNK;
        if (first->count < first->cap) {
            size_t tail = (first->head + first->count) % first->cap;
            size_t contiguous = first->cap - tail, free = first->cap - first->count;
            room = contiguous < free ? contiguous : free;
            dst = &first->q[tail];
        }
        n = mesh_proxy_take_spans(e->proxy, dst, room);
        if (dst == e->take) {
            first->dropped += n;
        } else {
            if (!first->count && n)
                first->first_at = now;
            first->count += n;
        }
        for (size_t i = 1; i < e->n_senders; i++)
            enqueue(&e->senders[i], dst, n, now);
        took += n;
    } while (n == room);
    return took;
}

static void run(struct mesh_trace_exporter *e)
{
    size_t took = take_all(e, uv_now(e->loop));
    e->recorded += took;
    for (size_t i = 0; i < e->n_senders; i++)
        maybe_send(&e->senders[i]);
    uv_timer_start(&e->tick, on_tick, next_tick(e, took), 0);
}

static void on_tick(uv_timer_t *t)
{
    run(container_of(t, struct mesh_trace_exporter, tick));
}

/* A worker's queue is half full: empty it now rather than at the next tick. */
static void on_spans(void *data)
{
    run(data);
}

static int add_sender(struct mesh_trace_exporter *e, const char *name, const char *url,
                      int (*encode)(const struct mesh_span *, size_t, struct mesh_buf *),
                      size_t cap)
{
    struct sender *s = &e->senders[e->n_senders];
    s->e = e;
    s->name = name;
    s->encode = encode;
    s->cap = cap;
    mesh_buf_init(&s->body, BODY_MAX);
    e->n_senders++;
    s->url = mesh_strdup(url);
    s->q = mesh_calloc(cap, sizeof(*s->q));
    s->batch = mesh_calloc(e->batch_size, sizeof(*s->batch));
    return s->url && s->q && s->batch ? 0 : -ENOMEM;
}

static void free_exporter(struct mesh_trace_exporter *e)
{
    for (size_t i = 0; i < e->n_senders; i++) {
        struct sender *s = &e->senders[i];
        mesh_http_req_done(&s->req);
        mesh_buf_done(&s->body);
        mesh_free(s->url);
        mesh_free(s->q);
        mesh_free(s->batch);
    }
    mesh_free(e->take);
    mesh_free(e);
}

static void on_part_closed(struct mesh_trace_exporter *e)
{
    if (--e->open == 0)
        free_exporter(e);
}

static void on_timer_closed(uv_handle_t *h)
{
    on_part_closed(container_of((uv_timer_t *)h, struct mesh_trace_exporter, tick));
}

static void on_client_closed(void *data)
{
    on_part_closed(data);
}

int mesh_trace_exporter_new(uv_loop_t *loop, struct mesh_proxy *proxy,
                            const struct mesh_agent_tracing_config *cfg,
                            struct mesh_trace_exporter **ret)
{
    if (!mesh_agent_tracing_on(cfg))
        return -EINVAL;
    struct mesh_trace_exporter *e = mesh_calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->loop = loop;
    e->proxy = proxy;
    e->batch_size = (size_t)cfg->batch_size;
    e->flush_ms = cfg->flush_interval_ms;
    e->timeout_ms = cfg->timeout_ms;
    e->max_backoff_ms = cfg->max_backoff_ms;
    int r = 0;
    if (cfg->otlp_endpoint[0])
        r = add_sender(e, "otlp", cfg->otlp_endpoint, mesh_trace_encode_otlp,
                       (size_t)cfg->queue_size);
    if (r == 0 && cfg->zipkin_endpoint[0])
        r = add_sender(e, "zipkin", cfg->zipkin_endpoint, mesh_trace_encode_zipkin,
                       (size_t)cfg->queue_size);
    e->take = mesh_calloc(TAKE_CHUNK, sizeof(*e->take));
    struct mesh_http_client_options copts = {.max_host_connections = 2};
    if (r < 0 || !e->take || mesh_http_client_new(loop, &copts, &e->client) < 0) {
        free_exporter(e);
        return -ENOMEM;
    }
    uv_timer_init(loop, &e->tick);
    uv_timer_start(&e->tick, on_tick, next_tick(e, 0), 0);
    mesh_proxy_on_spans(proxy, on_spans, e);
    e->open = 2;
    *ret = e;
    return 0;
}

void mesh_trace_exporter_free(struct mesh_trace_exporter *e)
{
    if (!e || e->closing)
        return;
    e->closing = true;
    mesh_proxy_on_spans(e->proxy, NULL, NULL);
    uv_close((uv_handle_t *)&e->tick, on_timer_closed);
    mesh_http_client_close(e->client, on_client_closed, e);
}

void mesh_trace_exporter_metrics(struct mesh_trace_exporter *e, struct mesh_buf *b)
{
    if (!e)
        return;
    mesh_prom_family(b, "mesh_trace_spans_recorded_total", "counter",
                     "Spans the data plane recorded and the exporter took.");
    mesh_prom_sample(b, "mesh_trace_spans_recorded_total", NULL, (double)e->recorded);
    mesh_prom_family(b, "mesh_trace_spans_dropped_total", "counter",
                     "Spans dropped because a queue was full (the workers', or an exporter's).");
    mesh_prom_sample(b, "mesh_trace_spans_dropped_total",
                     (struct mesh_prom_label[]){{"queue", "worker"}, {NULL, NULL}},
                     (double)mesh_proxy_spans_dropped(e->proxy));
    for (size_t i = 0; i < e->n_senders; i++)
        mesh_prom_sample(b, "mesh_trace_spans_dropped_total",
                         (struct mesh_prom_label[]){{"queue", e->senders[i].name}, {NULL, NULL}},
                         (double)e->senders[i].dropped);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"mesh_trace_spans_exported_total", "counter", "Spans a collector accepted."},
        {"mesh_trace_spans_failed_total", "counter",
         "Spans a collector refused, or that were given up after retries."},
        {"mesh_trace_export_requests_total", "counter", "Export requests, by result."},
        {"mesh_trace_queue_spans", "gauge", "Spans waiting to be exported."},
        {"mesh_trace_queue_capacity", "gauge", "The most spans that can wait (queue_size)."},
    };
    for (size_t f = 0; f < MESH_ARRAY_SIZE(fam); f++) {
        mesh_prom_family(b, fam[f].name, fam[f].type, fam[f].help);
        for (size_t i = 0; i < e->n_senders; i++) {
            const struct sender *s = &e->senders[i];
            if (f == 2) {
                static const char *const results[] = {"ok", "retry", "failed"};
                const uint64_t v[] = {s->requests_ok, s->requests_retried, s->requests_failed};
                for (int k = 0; k < 3; k++)
                    mesh_prom_sample(b, fam[f].name,
                                     (struct mesh_prom_label[]){{"exporter", s->name},
                                                                {"result", results[k]},
                                                                {NULL, NULL}},
                                     (double)v[k]);
                continue;
            }
            const uint64_t v[] = {s->exported, s->failed, 0, s->count, s->cap};
            mesh_prom_sample(b, fam[f].name,
                             (struct mesh_prom_label[]){{"exporter", s->name}, {NULL, NULL}},
                             (double)v[f]);
        }
    }
}
