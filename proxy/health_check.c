#define MESH_LOG_MODULE "health"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/io.h"
#include "common/log.h"
#include "proxy/health_check-int.h"

struct target {
    struct mesh_ep_state *state; /* a reference */
    struct mesh_ipport addr;
    uint16_t mesh_port; /* behind its host's agent: asked there, over mTLS */
};

struct hc_dest {
    struct hc_dest *next;
    struct mesh_health_checker *hc;
    char *key;
    struct mesh_health_check_policy policy; /* http_path is ours (a copy) */
    char *host;                             /* the service name, for an HTTP check's Host */
    char *sni;                              /* for the agents of its mesh endpoints */
    char *peer_id;
    uv_timer_t timer;
    struct target *targets;
    size_t n;
};

/* One check of one endpoint; owns what it needs, so its destination may go meanwhile. */
struct probe {
    struct mesh_io *io;
    uv_connect_t req;
    uv_timer_t timeout;
    struct mesh_health_checker *hc;
    struct mesh_ep_state *state;
    struct mesh_addr addr; /* where it connects: the endpoint, or its host's agent */
    int healthy_threshold;
    int unhealthy_threshold;
    int open;
    bool finished;
    /* Through an agent: the material it presents the node's identity from (a reference),
     * the SNI and the identity the agent must have. */
    struct mesh_tls_material *tls;
    char *sni, *peer_id;
    bool tcp_check;
    /* HTTP checks (and every check through an agent): the request, then the start of the
     * response. */
    uv_write_t write;
    int expected_min, expected_max;
    size_t req_len, got;
    char req_buf[512];
    char buf[256];
};

struct mesh_health_checker {
    uv_loop_t *loop;
    struct mesh_proxy_shared *shared;
    struct hc_dest *dests;
    struct mesh_io_loop iol;
    struct mesh_tls_material *tls; /* the snapshot's (a reference), or NULL */
    size_t probes_in_flight;
    uint64_t probes;
    bool closing;
    bool iol_closing;
    int closing_handles;
    void (*done)(void *data);
    void *done_data;
};

static void maybe_done(struct mesh_health_checker *hc);

static void on_iol_closed(uv_handle_t *h)
{
    struct mesh_health_checker *hc = h->data;
    hc->closing_handles--;
    maybe_done(hc);
}

static void maybe_done(struct mesh_health_checker *hc)
{
    if (!hc->closing || hc->probes_in_flight || hc->closing_handles)
        return;
    if (!hc->iol_closing) {
        /* The io loop's own handle closes last; we come back here when it has. */
        hc->iol_closing = true;
        hc->closing_handles++;
        hc->iol.idle.data = hc;
        uv_close((uv_handle_t *)&hc->iol.idle, on_iol_closed);
        return;
    }
    void (*done)(void *) = hc->done;
    void *data = hc->done_data;
    mesh_tls_material_unref(hc->tls);
    mesh_free(hc);
    if (done)
        done(data);
}

static void on_probe_closed(uv_handle_t *h)
{
    struct probe *p = h->data;
    if (--p->open > 0)
        return;
    struct mesh_health_checker *hc = p->hc;
    p->state->hc_probing = false;
    mesh_ep_state_unref(p->state);
    /* The SSL, freed after this (mesh_io_close), holds its own reference to its context
     * and needs nothing else of the material. */
    mesh_tls_material_unref(p->tls);
    mesh_free(p->sni);
    mesh_free(p->peer_id);
    mesh_free(p);
    hc->probes_in_flight--;
    maybe_done(hc);
}

static void verdict(struct probe *p, bool ok)
{
    struct mesh_ep_state *st = p->state;
    char a[MESH_ADDR_STRLEN];
    if (p->finished)
        return;
    p->finished = true;
    if (ok) {
        st->hc_failures = 0;
        if (!atomic_load(&st->hc_healthy) && ++st->hc_successes >= p->healthy_threshold) {
            atomic_store(&st->hc_healthy, 1);
            atomic_fetch_add(&p->hc->shared->health_epoch, 1);
            mesh_log_notice("%s of '%s' passed %d checks: healthy again",
                            mesh_ipport_format(&st->addr, a, sizeof(a)), st->dest->key,
                            st->hc_successes);
        }
    } else {
        st->hc_successes = 0;
        if (atomic_load(&st->hc_healthy) && ++st->hc_failures >= p->unhealthy_threshold) {
            atomic_store(&st->hc_healthy, 0);
            atomic_fetch_add(&p->hc->shared->health_epoch, 1);
            mesh_log_warn("%s of '%s' failed %d checks%s: unhealthy, no new connections",
                          mesh_ipport_format(&st->addr, a, sizeof(a)), st->dest->key,
                          st->hc_failures, p->tls ? " (asked its agent)" : "");
        }
    }
    uv_close((uv_handle_t *)&p->timeout, on_probe_closed);
    mesh_io_close(p->io, on_probe_closed);
}

int mesh_health_status_of(const char *b, size_t n)
{
    if (n < 13)
        return memchr(b, '\n', n) ? -EINVAL : -EAGAIN;
    if (memcmp(b, "HTTP/1.", 7) != 0 || (b[7] != '0' && b[7] != '1') || b[8] != ' ')
        return -EINVAL;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (b[i] < '0' || b[i] > '9')
            return -EINVAL;
        st = st * 10 + (b[i] - '0');
    }
    return b[12] == ' ' || b[12] == '\r' ? st : -EINVAL;
}

static void on_probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct probe *p = h->data;
    (void)suggested;
    *buf = uv_buf_init(p->buf + p->got, (unsigned)(sizeof(p->buf) - p->got));
}

static void on_probe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct probe *p = s->data;
    (void)buf;
    if (nread == 0 || p->finished)
        return;
    if (nread < 0) {
        verdict(p, false); /* closed or reset before a status line */
        return;
    }
    p->got += (size_t)nread;
    int st = mesh_health_status_of(p->buf, p->got);
    if (st == -EAGAIN && p->got < sizeof(p->buf))
        return;
    /* An agent answers a TCP check 200 when its workload took a connection. */
    if (p->tls && p->tcp_check)
        verdict(p, st == 200);
    else
        verdict(p, st >= p->expected_min && st <= p->expected_max);
}

static void on_probe_written(uv_write_t *req, int status)
{
    struct probe *p = container_of(req, struct probe, write);
    if (status < 0)
        verdict(p, false);
}

/* Sends the request and reads the status line of the answer. */
static void ask(struct probe *p)
{
    uv_buf_t b = uv_buf_init(p->req_buf, (unsigned)p->req_len);
    if (mesh_io_write(&p->write, p->io, &b, 1, on_probe_written) < 0 ||
        mesh_io_read_start(p->io, on_probe_alloc, on_probe_read) < 0)
        verdict(p, false);
}

static void on_agent_handshake(struct mesh_io *io, int status)
{
    struct probe *p = io->tcp.data;
    if (p->finished)
        return;
    if (status < 0) {
        verdict(p, false); /* the agent is not there (or not one of ours) */
        return;
    }
    if (!mesh_tls_alpn_is_health(mesh_io_ssl(io))) {
        verdict(p, true); /* an agent that cannot be asked: it is up, which is all we know */
        return;
    }
    ask(p);
}

static void on_probe_connect(uv_connect_t *req, int status)
{
    struct probe *p = container_of(req, struct probe, req);
    if (p->finished)
        return;
    if (status < 0 || (!p->req_len && !p->tls)) {
        verdict(p, status == 0);
        return;
    }
    if (!p->tls) {
        ask(p);
        return;
    }
    /* The endpoint's agent: mTLS as the node, then the question (health_serve.c). */
    char peer[MESH_ADDR_STRLEN];
    mesh_addr_format(&p->addr, peer, sizeof(peer));
    SSL *ssl = mesh_tls_client_session(&p->tls->ids[0], p->sni, p->peer_id, NULL, peer);
    if (!ssl || mesh_tls_alpn_offer_health(ssl) < 0) {
        if (ssl)
            SSL_free(ssl);
        verdict(p, false);
        return;
    }
    if (mesh_io_tls_start(p->io, ssl, on_agent_handshake) < 0)
        verdict(p, false); /* the io owns ssl once given */
}

static void on_probe_timeout(uv_timer_t *t)
{
    verdict(t->data, false);
}

/* The request of a check: the HTTP check's GET, or a TCP check asked of an agent. */
static int make_request(struct hc_dest *d, struct probe *p)
{
    if (!d->policy.http_path && !p->tls)
        return 0;
    int n = snprintf(p->req_buf, sizeof(p->req_buf),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mesh-agent-health-check\r\n"
                     "%sConnection: close\r\n\r\n",
                     d->policy.http_path ? d->policy.http_path : "/", d->host,
                     p->tcp_check ? "x-mesh-health-check: tcp\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(p->req_buf))
        return -ENAMETOOLONG;
    p->req_len = (size_t)n;
    return 0;
}

static void start_probe(struct hc_dest *d, struct target *t)
{
    struct mesh_health_checker *hc = d->hc;
    if (t->state->hc_probing)
        return; /* the last one has not finished: no pile-up on a slow endpoint */
    bool via_agent = t->mesh_port && hc->tls && hc->tls->n && d->sni && d->peer_id;
    if (t->mesh_port && !via_agent)
        return; /* behind an agent we cannot ask (yet): never probed across hosts */
    struct probe *p = mesh_calloc(1, sizeof(*p));
    if (!p)
        return;
    p->hc = hc;
    p->healthy_threshold = d->policy.healthy_threshold;
    p->unhealthy_threshold = d->policy.unhealthy_threshold;
    p->expected_min = d->policy.expected_min;
    p->expected_max = d->policy.expected_max;
    p->tcp_check = !d->policy.http_path;
    mesh_ipport_to_addr(&t->addr, &p->addr);
    if (via_agent) {
        mesh_addr_set_port(&p->addr, t->mesh_port);
        p->tls = mesh_tls_material_ref(hc->tls);
        char sni[200]; /* the instance: its agent may run several */
        mesh_tls_instance_sni(sni, sizeof(sni), d->sni, t->addr.port);
        p->sni = mesh_strdup(sni);
        p->peer_id = mesh_strdup(d->peer_id);
    }
    p->io = mesh_io_new(&hc->iol, hc->loop);
    if (!p->io || (via_agent && (!p->sni || !p->peer_id)) || make_request(d, p) < 0) {
        if (p->io)
            mesh_io_close(p->io, NULL);
        mesh_tls_material_unref(p->tls);
        mesh_free(p->sni);
        mesh_free(p->peer_id);
        mesh_free(p);
        return;
    }
    p->state = t->state;
    atomic_fetch_add(&t->state->refs, 1);
    uv_timer_init(hc->loop, &p->timeout);
    p->io->tcp.data = p->timeout.data = p;
    p->open = 2;
    t->state->hc_probing = true;
    hc->probes_in_flight++;
    hc->probes++;
    uv_timer_start(&p->timeout, on_probe_timeout, d->policy.timeout_ms, 0);
    if (uv_tcp_connect(&p->req, &p->io->tcp, (const struct sockaddr *)&p->addr.ss,
                       on_probe_connect) < 0)
        verdict(p, false);
}

static void on_tick(uv_timer_t *t)
{
    struct hc_dest *d = t->data;
    for (size_t i = 0; i < d->n; i++)
        start_probe(d, &d->targets[i]);
}

static void free_targets(struct hc_dest *d)
{
    for (size_t i = 0; i < d->n; i++)
        mesh_ep_state_unref(d->targets[i].state);
    mesh_free(d->targets);
    d->targets = NULL;
    d->n = 0;
}

static void on_dest_timer_closed(uv_handle_t *h)
{
    struct hc_dest *d = h->data;
    struct mesh_health_checker *hc = d->hc;
    mesh_free(d->key);
    mesh_free(d->policy.http_path);
    mesh_free(d->host);
    mesh_free(d->sni);
    mesh_free(d->peer_id);
    mesh_free(d);
    hc->closing_handles--;
    maybe_done(hc);
}

/* Checks stop for d: its endpoints are judged without them again. */
static void drop_dest(struct hc_dest *d)
{
    bool changed = false;
    for (size_t i = 0; i < d->n; i++) {
        if (!atomic_exchange(&d->targets[i].state->hc_healthy, 1))
            changed = true;
        d->targets[i].state->hc_failures = d->targets[i].state->hc_successes = 0;
    }
    if (changed)
        atomic_fetch_add(&d->hc->shared->health_epoch, 1);
    free_targets(d);
    d->hc->closing_handles++;
    uv_close((uv_handle_t *)&d->timer, on_dest_timer_closed);
}

int mesh_health_checker_new(uv_loop_t *loop, struct mesh_proxy_shared *shared,
                            struct mesh_health_checker **ret)
{
    struct mesh_health_checker *hc = mesh_calloc(1, sizeof(*hc));
    if (!hc)
        return -ENOMEM;
    hc->loop = loop;
    hc->shared = shared;
    mesh_io_loop_init(&hc->iol, loop);
    *ret = hc;
    return 0;
}

static int set_targets(struct hc_dest *d, const struct snap_dest *sd)
{
    struct target *t = mesh_calloc(sd->n ? sd->n : 1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < sd->n; i++) {
        t[i].state = sd->eps[i].state;
        atomic_fetch_add(&t[i].state->refs, 1);
        t[i].addr = sd->eps[i].addr;
        t[i].mesh_port = sd->eps[i].mesh_port;
    }
    free_targets(d);
    d->targets = t;
    d->n = sd->n;
    return 0;
}

int mesh_health_checker_update(struct mesh_health_checker *hc,
                               const struct mesh_proxy_snapshot *snap)
{
    struct hc_dest *keep = NULL, *d;
    if (hc->tls != snap->tls) {
        mesh_tls_material_unref(hc->tls);
        hc->tls = snap->tls ? mesh_tls_material_ref(snap->tls) : NULL;
    }
    for (size_t i = 0; i < snap->n_dests; i++) {
        const struct snap_dest *sd = &snap->dests[i];
        if (!sd->policy->health_check.enabled)
            continue;
        struct hc_dest **pd = &hc->dests;
        while (*pd && strcmp((*pd)->key, sd->key) != 0)
            pd = &(*pd)->next;
        d = *pd;
        if (d) {
            *pd = d->next;
        } else {
            d = mesh_calloc(1, sizeof(*d));
            if (!d || !(d->key = mesh_strdup(sd->key))) {
                mesh_free(d);
                return -ENOMEM;
            }
            d->hc = hc;
            uv_timer_init(hc->loop, &d->timer);
            d->timer.data = d;
        }
        d->next = keep;
        keep = d;
        if (set_targets(d, sd) < 0)
            return -ENOMEM;
        bool restart = d->policy.interval_ms != sd->policy->health_check.interval_ms;
        char *path = sd->policy->health_check.http_path;
        mesh_free(d->policy.http_path);
        d->policy = sd->policy->health_check;
        d->policy.http_path = NULL;
        if (path && !(d->policy.http_path = mesh_strdup(path)))
            return -ENOMEM;
        if (!d->host) {
            const char *slash = strchr(sd->service, '/');
            if (!(d->host = mesh_strdup(slash ? slash + 1 : sd->service)))
                return -ENOMEM;
        }
        if (!d->sni && sd->sni && sd->peer_id &&
            (!(d->sni = mesh_strdup(sd->sni)) || !(d->peer_id = mesh_strdup(sd->peer_id))))
            return -ENOMEM;
        if (restart || !uv_is_active((uv_handle_t *)&d->timer))
            uv_timer_start(&d->timer, on_tick, 0, d->policy.interval_ms);
    }
    /* Destinations no longer checked. */
    while (hc->dests) {
        d = hc->dests;
        hc->dests = d->next;
        drop_dest(d);
    }
    hc->dests = keep;
    return 0;
}

void mesh_health_checker_close(struct mesh_health_checker *hc, void (*done)(void *data), void *data)
{
    hc->closing = true;
    hc->done = done;
    hc->done_data = data;
    while (hc->dests) {
        struct hc_dest *d = hc->dests;
        hc->dests = d->next;
        drop_dest(d);
    }
    maybe_done(hc);
}

uint64_t mesh_health_checker_probes(const struct mesh_health_checker *hc)
{
    return hc->probes;
}
