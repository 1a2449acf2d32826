#define MESH_LOG_MODULE "agent"

/*
 * The agent's side of the DNS responder: it owns the virtual-IP table (catalog/vip.h),
 * keeps it in step with the catalog, saves it to <state_dir>/vips.json (encoded on the
 * loop, written on the thread pool, debounced) and runs the responder (dns/dns.h) when
 * dns_responder.enabled. A missing file starts empty; a corrupt one is reported and the
 * table is rebuilt from the catalog (the hashed first choices give mostly the same
 * addresses), then saved over it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent-int.h"
#include "agent/config_dns-int.h"
#include "catalog/catalog.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/prom.h"

#define SAVE_DELAY_MS 200
#define EXPIRE_EVERY_MS 60000

struct mesh_agent_dns {
    struct mesh_agent *a;
    struct mesh_vip_table *vips;
    struct mesh_dns *dns;
    char *path;
    uv_timer_t save_timer;
    uv_timer_t expire_timer;
    uv_work_t work;
    char *data; /* what the thread pool writes */
    size_t len;
    int result;
    bool writing, dirty, stopping;
    unsigned open; /* timers, the responder and a write in flight */
    uint64_t writes, failures;
    size_t unassigned[2]; /* services without an address, as last logged */
};

static void maybe_free(struct mesh_agent_dns *ad)
{
    if (ad->open)
        return;
    mesh_vip_table_free(ad->vips);
    mesh_free(ad->path);
    mesh_free(ad);
}

static void save_now(struct mesh_agent_dns *ad);

static void write_work(uv_work_t *w)
{
    struct mesh_agent_dns *ad = container_of(w, struct mesh_agent_dns, work);
    ad->result = mesh_fs_write_atomic(ad->path, ad->data, ad->len, 0600);
}

static void after_write(uv_work_t *w, int status)
{
    struct mesh_agent_dns *ad = container_of(w, struct mesh_agent_dns, work);
    ad->writing = false;
    ad->open--;
    mesh_free(ad->data);
    ad->data = NULL;
    if (status == 0 && ad->result < 0) {
        ad->failures++;
        mesh_log_warn("cannot write the virtual IPs to '%s': %s; trying again at the next change",
                      ad->path, strerror(-ad->result));
    } else if (status == 0) {
        ad->writes++;
    }
    if (ad->dirty)
        save_now(ad);
    maybe_free(ad);
}

/* Encodes the table now; writes it on the thread pool, or blocking once stopping. */
static void save_now(struct mesh_agent_dns *ad)
{
    if (ad->writing)
        return; /* after_write saves again: dirty stays set */
    ad->dirty = false;
    struct mesh_buf b;
    mesh_buf_init(&b, MESH_VIP_FILE_MAX);
    mesh_vip_encode(ad->vips, &b);
    if (b.err) {
        mesh_log_warn("cannot encode the virtual IPs: %s", strerror(-b.err));
        mesh_buf_done(&b);
        return;
    }
    size_t len;
    char *data = mesh_buf_steal(&b, &len);
    if (ad->stopping) {
        int r = mesh_fs_write_atomic(ad->path, data, len, 0600);
        if (r < 0)
            mesh_log_warn("cannot write the virtual IPs to '%s': %s", ad->path, strerror(-r));
        mesh_free(data);
        return;
    }
    ad->data = data;
    ad->len = len;
    if (uv_queue_work(ad->a->loop, &ad->work, write_work, after_write) < 0) {
        mesh_free(ad->data);
        ad->data = NULL;
        ad->dirty = true;
        return;
    }
    ad->writing = true;
    ad->open++;
}

static void on_save_timer(uv_timer_t *t)
{
    save_now(container_of(t, struct mesh_agent_dns, save_timer));
}

/* Says once when a range runs full (and when it has room again), not at every sync. */
static void log_exhaustion(struct mesh_agent_dns *ad)
{
    struct mesh_vip_stats st;
    mesh_vip_get_stats(ad->vips, &st);
    const struct mesh_agent_dns_responder_config *c = &ad->a->cfg->dns_responder;
    for (int f = 0; f < 2; f++) {
        const char *range = f ? c->ipv6_range : c->ipv4_range;
        if (st.unassigned[f] && !ad->unassigned[f])
            mesh_log_warn("the virtual %s range %s is full: %zu services have no %s address "
                          "(their names get NODATA); widen the range or lower \"keep\"",
                          f ? "IPv6" : "IPv4", range, st.unassigned[f], f ? "IPv6" : "IPv4");
        else if (!st.unassigned[f] && ad->unassigned[f])
            mesh_log_info("the virtual %s range %s has room again: every service has an address",
                          f ? "IPv6" : "IPv4", range);
        ad->unassigned[f] = st.unassigned[f];
    }
}

/* Brings the table in step with the catalog; schedules a save when it changed. */
static void sync_table(struct mesh_agent_dns *ad)
{
    struct mesh_service **list = NULL;
    size_t n = 0;
    if (mesh_catalog_list(ad->a->catalog, &list, &n) < 0) {
        mesh_log_warn("out of memory listing the catalog; virtual IPs follow at its next change");
        return;
    }
    const char **keys = mesh_calloc(n ? n : 1, sizeof(*keys));
    int r = -ENOMEM;
    if (keys) {
        for (size_t i = 0; i < n; i++)
            keys[i] = list[i]->key;
        r = mesh_vip_sync(ad->vips, keys, n, (uint64_t)(mesh_agent__now() * 1000));
    }
    mesh_free(keys);
    mesh_free(list);
    if (r < 0)
        mesh_log_warn("out of memory giving services virtual IPs; trying again at the next change");
    log_exhaustion(ad);
    if (r > 0 && !ad->stopping) {
        ad->dirty = true;
        uv_timer_start(&ad->save_timer, on_save_timer, SAVE_DELAY_MS, 0);
    }
}

static void on_expire_timer(uv_timer_t *t)
{
    sync_table(container_of(t, struct mesh_agent_dns, expire_timer));
}

static void load_table(struct mesh_agent_dns *ad)
{
    char *data = NULL;
    size_t len = 0;
    int r = mesh_fs_read_file(ad->path, MESH_VIP_FILE_MAX, &data, &len);
    if (r == -ENOENT)
        return;
    if (r < 0) {
        mesh_log_warn("cannot read the virtual IPs '%s': %s; giving addresses afresh", ad->path,
                      strerror(-r));
        return;
    }
    struct mesh_cfg_errors errors = {0};
    r = mesh_vip_load(ad->vips, ad->path, data, len, &errors);
    mesh_free(data);
    if (r < 0) {
        mesh_agent__log_errors(&errors);
        mesh_log_warn("ignoring the virtual IPs '%s'; giving addresses afresh", ad->path);
        ad->dirty = true; /* the rebuilt table replaces the bad file */
    } else if (errors.n) {
        mesh_agent__log_errors(&errors);
        mesh_log_warn("loaded the virtual IPs of %d services from '%s', dropping the bad entries "
                      "above; those services get new addresses",
                      r, ad->path);
        ad->dirty = true;
    } else {
        mesh_log_info("loaded the virtual IPs of %d services from '%s'", r, ad->path);
    }
    mesh_cfg_errors_done(&errors);
}

int mesh_agent__dns_start(struct mesh_agent *a)
{
    const struct mesh_agent_dns_responder_config *c = &a->cfg->dns_responder;
    if (!c->enabled)
        return 0;
    struct mesh_agent_dns *ad = mesh_calloc(1, sizeof(*ad));
    if (!ad)
        return -ENOMEM;
    struct mesh_dns_options o;
    struct mesh_vip_options vo;
    char upstreams[4096];
    mesh_agent__dns_options(c, &o, &vo, upstreams, sizeof(upstreams));
    ad->a = a;
    ad->path = mesh_asprintf("%s/%s", a->cfg->state_dir, MESH_VIP_FILE);
    int r = ad->path ? mesh_vip_table_new(&vo, &ad->vips) : -ENOMEM;
    if (r < 0) {
        mesh_free(ad->path);
        mesh_free(ad);
        return r;
    }
    load_table(ad);
    uv_timer_init(a->loop, &ad->save_timer);
    uv_timer_init(a->loop, &ad->expire_timer);
    ad->open = 2;
    a->dns = ad;
    sync_table(ad);
    if (ad->dirty)
        uv_timer_start(&ad->save_timer, on_save_timer, SAVE_DELAY_MS, 0);
    uv_timer_start(&ad->expire_timer, on_expire_timer, EXPIRE_EVERY_MS, EXPIRE_EVERY_MS);
    r = mesh_dns_new(a->loop, &o, a->catalog, ad->vips, &ad->dns);
    if (r < 0)
        return r;
    ad->open++;
    r = mesh_dns_start(ad->dns);
    if (r < 0)
        return r;
    mesh_log_info("DNS responder on %s (UDP and TCP), %zu services with virtual IPs", c->listen,
                  mesh_vip_count(ad->vips));
    return 0;
}

void mesh_agent__dns_on_catalog_change(struct mesh_agent *a)
{
    if (a->dns && !a->dns->stopping)
        sync_table(a->dns);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct mesh_agent_dns *ad = h->data;
    ad->open--;
    maybe_free(ad);
}

static void on_dns_closed(void *data)
{
    struct mesh_agent_dns *ad = data;
    ad->open--;
    maybe_free(ad);
}

void mesh_agent__dns_stop(struct mesh_agent *a)
{
    struct mesh_agent_dns *ad = a->dns;
    if (!ad)
        return;
    a->dns = NULL;
    ad->stopping = true;
    /* The last state is written before the agent exits; a write in flight writes it after. */
    if (ad->dirty && !ad->writing)
        save_now(ad);
    ad->save_timer.data = ad->expire_timer.data = ad;
    uv_close((uv_handle_t *)&ad->save_timer, on_timer_closed);
    uv_close((uv_handle_t *)&ad->expire_timer, on_timer_closed);
    if (ad->dns)
        mesh_dns_close(ad->dns, on_dns_closed, ad);
    ad->dns = NULL;
}

void mesh_agent__dns_metrics(const struct mesh_agent *a, struct mesh_buf *b)
{
    if (!a->dns || !a->dns->dns)
        return;
    mesh_dns_metrics(a->dns->dns, b);
    mesh_prom_family(b, "mesh_agent_vip_writes_total", "counter",
                     "Writes of the virtual IPs to the state dir, by result.");
    mesh_prom_sample(b, "mesh_agent_vip_writes_total",
                     (struct mesh_prom_label[]){{"result", "success"}, {NULL, NULL}},
                     (double)a->dns->writes);
    mesh_prom_sample(b, "mesh_agent_vip_writes_total",
                     (struct mesh_prom_label[]){{"result", "failure"}, {NULL, NULL}},
                     (double)a->dns->failures);
}

struct mesh_vip_table *mesh_agent__vips(const struct mesh_agent *a)
{
    return a->dns ? a->dns->vips : NULL;
}
