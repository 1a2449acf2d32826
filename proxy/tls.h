/*
 * TLS material of a snapshot: the trust bundle and, per identity (the node, each local
 * service), its certificate, key and the OpenSSL contexts made from them. Immutable and
 * reference-counted: a rotation builds new material and a new snapshot, while connections
 * made with the old one keep it.
 *
 * Every context requires the peer's certificate, verifies its chain to the bundle, then
 * checks it as an X509-SVID of the trust domain in our own code (common/spiffe.h); a client
 * also wants the SPIFFE ID it expects. The server picks the local service's certificate by
 * SNI "<service>.<namespace>".
 *
 * Ownership: each SSL made here holds a reference to the material (released by an ex_data
 * free callback when the SSL is freed), so a snapshot swap in the middle of a handshake
 * frees nothing the handshake still reads; the contexts hold no pointer to the material.
 *
 * Lifetimes: a certificate past its notAfter is never presented (the server refuses the
 * SNI, the client aborts before sending its certificate). A resumed session lives no
 * longer than either certificate it was made with: tickets carry a lifetime capped by both
 * notAfters, their keys are derived per material and rotate every TICKET_KEY_PERIOD_S,
 * and a ticket of other material (a rotation, a new trust bundle) or with an expired peer
 * certificate is refused, on both sides.
 */
#ifndef MESH_PROXY_TLS_H
#define MESH_PROXY_TLS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>

#include "common/hmap.h"

struct mesh_tls_material;

struct mesh_tls_identity {
    char *id;        /* its SPIFFE ID */
    char *namespace; /* a local service's; NULL for the node */
    char *name;
    time_t not_after;
    SSL_CTX *server;
    SSL_CTX *client;
    struct mesh_tls_material *material; /* the material it belongs to (not a reference) */
};

struct mesh_tls_material {
    atomic_int refs;
    uint64_t uid; /* random: names this material (ticket keys, kept client sessions) */
    char *trust_domain;
    X509_STORE *bundle;
    bool tls12;                    /* TLS 1.2 allowed; else 1.3 only */
    struct mesh_tls_identity *ids; /* [0]: the node */
    size_t n;
    unsigned char ticket_secret[32]; /* session ticket keys are derived from it */
};

/* New material with a trust bundle (PEM, one or more CA certificates). On failure returns
 * a negative errno and writes why into err. */
int mesh_tls_material_new(const char *trust_domain, bool tls12, const char *bundle_pem,
                          size_t bundle_len, struct mesh_tls_material **ret, char *err,
                          size_t err_size);
/*
 * Adds an identity (the node first): a certificate chain (leaf first) and its key, PEM.
 * The leaf must chain to the bundle and be an SVID for `id`. Returns 0 or a negative errno
 * with why in err.
 */
int mesh_tls_material_add(struct mesh_tls_material *m, const char *id, const char *ns,
                          const char *name, const char *cert_pem, size_t cert_len,
                          const char *key_pem, size_t key_len, char *err, size_t err_size);
struct mesh_tls_material *mesh_tls_material_ref(struct mesh_tls_material *m);
void mesh_tls_material_unref(struct mesh_tls_material *m);

/* The identity of a local service, or NULL. */
const struct mesh_tls_identity *mesh_tls_find(const struct mesh_tls_material *m, const char *ns,
                                              const char *name);
/* The identity whose certificate carries SPIFFE ID `id` (the node's or a local service's), or
 * NULL when the material holds none. */
const struct mesh_tls_identity *mesh_tls_find_id(const struct mesh_tls_material *m, const char *id);
/* The earliest expiry of any certificate (0: none). */
time_t mesh_tls_earliest_expiry(const struct mesh_tls_material *m);

/*
 * Client sessions to resume, per thread (a worker's): the latest TLS 1.3 ticket per peer
 * endpoint and calling identity. A ticket made under other material (a rotation, a new
 * trust bundle) is not offered, so a new certificate is always presented in full once; nor
 * is one past the notAfter of either certificate it was made with.
 */
#define MESH_TLS_SESSIONS_MAX 4096
struct mesh_tls_sessions {
    struct mesh_hmap map; /* key -> struct tls_cached */
    uint64_t resumed;     /* handshakes that resumed a session */
};

void mesh_tls_sessions_init(struct mesh_tls_sessions *c);
void mesh_tls_sessions_done(struct mesh_tls_sessions *c);

/*
 * SNI on the inbound mTLS port: "<service>.<namespace>" names a local service, and
 * "<port>.<service>.<namespace>" one instance of it, the one whose endpoint has that port
 * (several instances of a service, or several versions, on one host). A caller's agent
 * names the instance of the endpoint it picked; a name without a port reaches the first.
 */
/* The "<service>.<namespace>" of an SNI: past a leading "<port>." label, if any. */
const char *mesh_tls_sni_service(const char *sni);
/* "<port>.<service_sni>" into out (service_sni alone when port is 0). */
void mesh_tls_instance_sni(char *out, size_t size, const char *service_sni, uint16_t port);

/* A server session on the inbound listener (it holds a reference to m); NULL when memory is
 * short. */
SSL *mesh_tls_server_session(const struct mesh_tls_material *m);
/* A client session presenting `as` (it holds a reference to as's material), naming sni and
 * wanting the peer to be expected_id (copied; NULL: any SVID of the trust domain). With
 * cache, a session kept for `peer` (the endpoint's address) is resumed, and the tickets the
 * peer sends are kept. When `as` has expired, the handshake fails before presenting it. */
SSL *mesh_tls_client_session(const struct mesh_tls_identity *as, const char *sni,
                             const char *expected_id, struct mesh_tls_sessions *cache,
                             const char *peer);
/*
 * ALPN (tls_alpn.c): "mesh-health" is a caller's agent asking about a local service's health
 * (health_serve.c) instead of calling it. mesh_tls_alpn_select is the servers' selection
 * callback; a client offers it with mesh_tls_alpn_offer_health (0, or -1 when out of memory);
 * after the handshake mesh_tls_alpn_is_health says whether both sides agreed on it.
 */
#define MESH_TLS_ALPN_HEALTH "mesh-health"
int mesh_tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                         const unsigned char *in, unsigned int inlen, void *arg);
int mesh_tls_alpn_offer_health(SSL *ssl);
bool mesh_tls_alpn_is_health(SSL *ssl);

/* After a handshake: the peer's SPIFFE ID ("" when none). */
const char *mesh_tls_peer_id(SSL *ssl);
/* After a failed handshake: why our checks refused the peer (NULL: they did not). */
const char *mesh_tls_refusal(SSL *ssl);

#endif
