/*
 * The Consul adapter's insides, shared by its files:
 *   consul_config.c   keys, environment variables, the resolved connection
 *   consul_watch.c    catalog and per-service blocking queries
 *   consul_pace.c     the index rules and the token bucket that pace those queries
 *   consul_meta.c     Service.Meta: a service's namespace and labels, written and read back
 *   consul_register.c this host's services in the local Consul agent
 *   consul.c          the adapter ops, status and metrics
 */
#ifndef MESH_CONSUL_INT_H
#define MESH_CONSUL_INT_H

#include "common/cfg.h"
#include "common/hmap.h"
#include "common/http_client.h"
#include "common/token_file.h"
#include "registry-adapters/consul/consul.h"
#include "registry-adapters/consul/consul_decode-int.h"

/* Where and how to reach Consul, from the config and then the environment. */
struct mesh_consul_conn {
    char *base_url;           /* "http://127.0.0.1:8500", no trailing slash */
    char *where;              /* for people: base_url, or "unix:///path" */
    char *unix_socket;        /* connect here instead (base_url's host then only names it) */
    char *server_name;        /* the name Consul's certificate carries, when not the host */
    char *token;              /* the value, when not from a file */
    char *token_file;         /* a file to (re-)read the token from */
    const char *token_source; /* for status: "token_file", "CONSUL_HTTP_TOKEN", ... */
    char *ca_file, *cert_file, *key_file;
    bool https;
    bool insecure;
};

typedef const char *(*mesh_consul_getenv_fn)(const char *name);

/*
 * Resolves the connection: config keys first, then CONSUL_* variables through `env`, a
 * token file winning over a token value at each level. Adds problems to `errors` (naming
 * the key or variable). Returns 0 or -EINVAL / -ENOMEM.
 */
int mesh_consul__resolve(const struct mesh_consul_config *cfg, mesh_consul_getenv_fn env,
                         struct mesh_consul_conn *ret, struct mesh_cfg_errors *errors);
void mesh_consul__conn_done(struct mesh_consul_conn *c);
extern const struct mesh_cfg_schema mesh_consul__schema;

/*
 * A token bucket, as Consul's "Blocking Queries" page advises for blocking-query loops:
 * `burst` tokens at first, then one more every `interval` ms. Counted in ms of refill.
 */
struct mesh_consul_bucket {
    uint64_t level_ms; /* interval_ms per token, at most burst * interval_ms */
    uint64_t at_ms;    /* when level_ms was last brought up to date */
};

/* A full bucket at `now_ms`. */
void mesh_consul__bucket_init(struct mesh_consul_bucket *b, uint64_t now_ms, unsigned burst,
                              uint64_t interval_ms);
/* Takes a token at `now_ms` and returns 0, or returns the ms until one is there (none taken). */
uint64_t mesh_consul__bucket_take(struct mesh_consul_bucket *b, uint64_t now_ms, unsigned burst,
                                  uint64_t interval_ms);

/*
 * The index of the next blocking query from an answer's X-Consul-Index value (`h`, `len`; h
 * NULL when the header is absent) and the previous index, by the rules of Consul's
 * "Blocking Queries" page: an index lower than the previous one is reset (*ret_reset set),
 * and the result is never below 1. Returns 0, or -EINVAL when the header is missing or not a
 * decimal number (*ret and *ret_reset untouched).
 */
int mesh_consul__next_index(const char *h, size_t len, uint64_t prev, uint64_t *ret,
                            bool *ret_reset);

enum consul_err_kind {
    CONSUL_ERR_CONNECT, /* no answer */
    CONSUL_ERR_ACL,     /* 403, or an answer emptied by ACLs */
    CONSUL_ERR_HTTP,    /* another status */
    CONSUL_ERR_DECODE,  /* an answer we could not read */
    CONSUL_ERR_KINDS,
};

struct consul_watch;
struct consul_reg;

struct consul_registry {
    struct mesh_registry base;
    const struct mesh_consul_config *cfg;
    struct mesh_consul_conn conn;
    struct mesh_http_client *http;
    struct mesh_http_tls tls;
    bool stopping;
    bool closing; /* handles are being closed */
    unsigned pending_closes;
    mesh_registry_stopped_cb stopped_cb;
    void *stopped_data;

    /* The token and the header carrying it. */
    char *token_header; /* "X-Consul-Token: ..." or NULL */
    const char *headers[2];
    struct mesh_token_file token; /* when it comes from a file */

    /* Discovery (consul_watch.c). */
    struct mesh_http_req catalog;
    char *catalog_url;
    uint64_t catalog_index;
    uint64_t catalog_started_ms;
    unsigned catalog_failures;
    struct mesh_consul_bucket catalog_bucket;
    bool catalog_need_token; /* the last answer brought nothing new */
    bool catalog_known;      /* catalog_digest holds the last names followed */
    uint64_t catalog_digest;
    uint64_t digest_key[2]; /* random: what Consul sends cannot aim at a collision */
    uv_timer_t catalog_timer;
    struct mesh_hmap watches; /* service name -> struct consul_watch */
    size_t n_active;          /* watches holding a slot (querying or waiting to) */
    struct consul_watch *queue_head, *queue_tail;
    bool synced; /* the first full sync ended */
    bool sync_started;
    size_t sync_pending; /* services whose first answer the first sync waits for */

    /* Registration (consul_register.c). */
    struct mesh_hmap regs; /* service ID -> struct consul_reg */
    struct mesh_http_req cleanup;
    char *cleanup_url;
    bool cleanup_done;
    unsigned cleanup_failures;
    char **stale; /* IDs an earlier run registered, to deregister */
    size_t n_stale;
    uv_timer_t cleanup_timer;
    size_t deregistering; /* deregistrations in flight during stop */
    uv_timer_t stop_timer;

    /* Figures. */
    uint64_t requests;
    uint64_t index_resets;
    uint64_t rate_limited; /* queries the token bucket held back */
    uint64_t errors[CONSUL_ERR_KINDS];
    uint64_t registrations;
    uint64_t deregistrations;
    uint64_t check_updates;
    uint64_t bad_identities; /* instances left out for their mesh-identity */
    double last_sync;
    char *problem; /* the last problem, shown in status until the next success */
};

/* Time on the loop, in ms. */
uint64_t mesh_consul__now(struct consul_registry *c);
/* The token header for a request, re-reading the token file when it changed or is due. */
const char *const *mesh_consul__headers(struct consul_registry *c);
/* Logs, counts and shows a problem; the last good state stays. */
void mesh_consul__problem(struct consul_registry *c, enum consul_err_kind kind, const char *fmt,
                          ...) MESH_PRINTF(3, 4);
void mesh_consul__ok(struct consul_registry *c);
/* Classifies a failed request and reports it with `what` ("watching 'web'"). */
enum consul_err_kind mesh_consul__failed(struct consul_registry *c, struct mesh_http_req *req,
                                         const char *what);
/* One of the adapter's handles closed (counted in pending_closes); the last ends stop(). */
void mesh_consul__closed_one(struct consul_registry *c);
/* While stopping: closes everything once no deregistration is in flight. */
void mesh_consul__maybe_closed(struct consul_registry *c);
/* Starts a request, counting it. */
int mesh_consul__start(struct consul_registry *c, struct mesh_http_req *req);

int mesh_consul__watch_start(struct consul_registry *c);
void mesh_consul__watch_stop(struct consul_registry *c);

void mesh_consul__register_set(struct consul_registry *c, const struct mesh_local_service *const *v,
                               size_t n);
void mesh_consul__register_stop(struct consul_registry *c);
/* Frees what is left of the registrations, without a word to Consul. */
void mesh_consul__register_abandon(struct consul_registry *c);
void mesh_consul__stale_done(struct consul_registry *c);

#endif
