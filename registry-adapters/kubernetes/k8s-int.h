/*
 * The Kubernetes adapter's insides, shared by its files:
 *   k8s_config.c   keys, in-cluster and kubeconfig connection settings
 *   k8s_watch.c    list-then-watch reflectors, one per resource kind and namespace
 *   k8s_apply.c    the object caches into catalog updates and local services
 *   k8s.c          the adapter ops, token, status and metrics
 */
#ifndef MESH_K8S_INT_H
#define MESH_K8S_INT_H

#include "common/cfg.h"
#include "common/hmap.h"
#include "common/http_client.h"
#include "common/strutil.h"
#include "common/token_file.h"
#include "registry-adapters/kubernetes/k8s.h"
#include "registry-adapters/kubernetes/k8s_objects-int.h"
#include "registry-adapters/kubernetes/k8s_stream-int.h"

struct mesh_k8s_conn {
    char *server; /* "https://host:port" */
    char *ca_file, *ca_pem;
    bool insecure;
    char *token, *token_file;
    char *cert_file, *key_file, *cert_pem, *key_pem;
    char *source; /* where the settings came from, for messages */
    char *node_name;
};

typedef const char *(*mesh_k8s_getenv_fn)(const char *name);

extern const struct mesh_cfg_schema mesh_k8s__schema;
/*
 * In order: the "kubeconfig" key, in-cluster (KUBERNETES_SERVICE_HOST/PORT and the service
 * account directory), $KUBECONFIG (its first file). The node name: the "node_name" key, then
 * $NODE_NAME, then `node_default` (the agent's node.name), unless `default_guessed` (it is
 * the hostname) in-cluster: a pod's hostname is not its node's name, so that is an error.
 * Adds problems to `errors`.
 */
int mesh_k8s__resolve(const struct mesh_k8s_config *cfg, mesh_k8s_getenv_fn env,
                      const char *node_default, bool default_guessed, struct mesh_k8s_conn *ret,
                      struct mesh_cfg_errors *errors);
void mesh_k8s__conn_done(struct mesh_k8s_conn *c);

enum k8s_kind { K8S_SLICES, K8S_SERVICES, K8S_PODS, K8S_KINDS };
enum k8s_err_kind {
    K8S_ERR_CONNECT,
    K8S_ERR_AUTH,
    K8S_ERR_FORBIDDEN,
    K8S_ERR_HTTP,
    K8S_ERR_DECODE,
    K8S_ERR_KINDS
};

struct k8s_reflector;

/* Services and the slices that belong to them, by "namespace/name". */
struct k8s_group {
    char *key;
    char *namespace, *name;
    struct mesh_k8s_slice **slices;
    size_t n_slices, cap_slices;
    bool dirty;
    struct mesh_local_service *local; /* its workload on this node, or NULL */
    bool here;                        /* it has a workload here (in local_groups) */
    char said[768];                   /* the last problem reported about that workload */
};

struct k8s_registry {
    struct mesh_registry base;
    const struct mesh_k8s_config *cfg;
    struct mesh_k8s_conn conn;
    struct mesh_http_client *http;
    struct mesh_http_tls tls;
    bool started; /* the reflectors' timers exist */
    bool stopping;
    unsigned pending_closes;
    mesh_registry_stopped_cb stopped_cb;
    void *stopped_data;

    /* The bearer token. */
    char *auth_header;
    const char *headers[3];
    struct mesh_token_file token;

    struct k8s_reflector **refl;
    size_t n_refl;
    uint64_t gen;          /* list generations */
    struct mesh_jdoc page; /* the tokens of the list page being read */

    /* Caches: "namespace/name" -> object. */
    struct mesh_hmap cache[K8S_KINDS];
    struct mesh_hmap groups;     /* "namespace/name" -> struct k8s_group */
    struct mesh_hmap pods_by_ip; /* this node's pods: IP -> struct mesh_k8s_pod (k8s_pods.c) */
    struct k8s_group **dirty;
    size_t n_dirty, cap_dirty;
    struct k8s_group **local_groups; /* the groups with a workload on this node */
    size_t n_local_groups, cap_local_groups;
    bool pods_dirty;     /* a pod changed: the local groups' identities may have */
    bool locals_changed; /* the local services must go to the sink */
    bool addrs_changed;  /* a ClusterIP or a pod's IP or account: tell the sink (k8s_addrs.h) */
    bool synced;         /* a full sync went to the catalog */

    /* Figures. */
    uint64_t events[K8S_KINDS][5];
    uint64_t watch_restarts[K8S_KINDS];
    uint64_t relists[K8S_KINDS];
    uint64_t errors[K8S_ERR_KINDS];
    uint64_t requests;
    uint64_t identity_mismatches;  /* a local pod's service account is not its Service's */
    uint64_t bad_service_accounts; /* a Service's annotation that is no service account */
    double apply_seconds_sum;
    uint64_t apply_count;
    double last_success;
    char *problem;
};

extern const char *const mesh_k8s__kind_names[K8S_KINDS];

uint64_t mesh_k8s__now(struct k8s_registry *k);
const char *const *mesh_k8s__headers(struct k8s_registry *k);
void mesh_k8s__problem(struct k8s_registry *k, enum k8s_err_kind kind, const char *fmt, ...)
    MESH_PRINTF(3, 4);
void mesh_k8s__ok(struct k8s_registry *k);
void mesh_k8s__closed_one(struct k8s_registry *k);
int mesh_k8s__start(struct k8s_registry *k, struct mesh_http_req *req);

/* k8s_watch.c */
int mesh_k8s__reflectors_new(struct k8s_registry *k);
void mesh_k8s__reflectors_start(struct k8s_registry *k);
void mesh_k8s__reflectors_stop(struct k8s_registry *k);
bool mesh_k8s__all_listed(const struct k8s_registry *k);

/* k8s_pods.c: the pods-by-IP index follows the Pod cache (old replaced by pod; either NULL). */
void mesh_k8s__pods_index(struct k8s_registry *k, const struct mesh_k8s_pod *old,
                          struct mesh_k8s_pod *pod);

/* k8s_apply.c: the port of a Service the mesh uses (its mesh.io/port annotation, else the
 * first); NULL when it has none. */
const struct mesh_k8s_port *mesh_k8s__service_port(const struct mesh_k8s_service *svc);

/* k8s_addrs.c: whether replacing `old` by `obj` (of `kind`) changes what k8s_addrs.h
 * answers: a Service's ClusterIPs or mesh port, a pod's IP or service account. */
bool mesh_k8s__addrs_differ(enum k8s_kind kind, const void *old, const void *obj);

/* Frees a decoded object of `kind` (k8s_watch.c). */
void mesh_k8s__obj_free(enum k8s_kind kind, void *obj);

/* k8s_apply.c: the caches change through these, and flush pushes what changed. */
int mesh_k8s__upsert(struct k8s_registry *k, enum k8s_kind kind, void *obj);
void mesh_k8s__delete(struct k8s_registry *k, enum k8s_kind kind, const char *key);
/* Deletes what list generation `gen` did not see, in namespace `ns` (NULL: all). */
void mesh_k8s__sweep(struct k8s_registry *k, enum k8s_kind kind, const char *ns, uint64_t gen);
void mesh_k8s__flush(struct k8s_registry *k);
/* Every service to the catalog between sync_begin and sync_end. */
void mesh_k8s__full_sync(struct k8s_registry *k);
void mesh_k8s__caches_done(struct k8s_registry *k);

#endif
