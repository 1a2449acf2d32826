#define MESH_LOG_MODULE "api"

/*
 * Enrollment, and who speaks for an enrolled node.
 *
 * A node enrolls with a join token whose pattern covers its name, and gets the node
 * certificate spiffe://<td>/node/<name>; from then on that certificate authenticates it.
 * A name already enrolled is taken again only by the same node, proving it with its
 * current certificate, even an expired one (a node off for longer than its certificate's
 * life comes back this way, with a new token use), or after an operator reset the node
 * (POST /v1/agents/<node>/reset, "meshctl node reset"). So a token holder cannot take
 * another node's identity, and the real node's certificate keeps working. A refused
 * enrollment spends no token use, nor does a CSR that cannot be signed; a bad token and an
 * enrollment without its proof count against the source (controller/auth_limit.h).
 *
 * The node record (store kind "agents") keeps what its token allowed ("services",
 * "addresses") and the serials of the node certificates that speak for it: the last
 * NODE_SERIALS issued to it (one lost answer leaves the node with the one before). A reset
 * empties the list: none of its certificates speaks for it any more. Records from before
 * serials were kept take any certificate of the node until its first renewal.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/x509.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/spiffe.h"
#include "controller/api.h"
#include "controller/tokens.h"

#define NODE_SERIALS 3

/* The serial of a certificate as mesh_ca_sign() writes it (hex). */
static void cert_serial(X509 *x, char out[80])
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    snprintf(out, 80, "%s", hex ? hex : "");
    OPENSSL_free(hex);
    BN_free(bn);
}

/* Whether a certificate with this serial speaks for the node of rec. */
static bool serial_speaks(json_t *rec, const char *serial)
{
    json_t *serials = json_object_get(rec, "serials");
    if (!serials)
        return !json_is_true(json_object_get(rec, "reset")); /* an older record */
    size_t i;
    json_t *v;
    json_array_foreach(serials, i, v)
    {
        if (serial[0] && json_is_string(v) && strcmp(json_string_value(v), serial) == 0)
            return true;
    }
    return false;
}

/*
 * The node certificate the peer presented, its chain verified by the handshake (see
 * verify_allow_expired() in ca.c): its node's name in *ret_node (pointing into id), or NULL
 * with why. An expired certificate passes only with allow_expired.
 */
static X509 *peer_node_cert(struct mesh_api *api, struct mesh_http_exchange *ex, bool allow_expired,
                            char *id, size_t size, const char **ret_node, const char **why)
{
    SSL *ssl = mesh_http_exchange_ssl(ex);
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!cert) {
        *why = "a node certificate is required (enroll with a join token first)";
        return NULL;
    }
    long v = SSL_get_verify_result(ssl);
    /* Checked here too: a resumed session keeps the verdict of its first handshake. */
    bool expired =
        v == X509_V_ERR_CERT_HAS_EXPIRED || X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0;
    if (v != X509_V_OK && v != X509_V_ERR_CERT_HAS_EXPIRED) {
        *why = "the node certificate does not verify";
        return NULL;
    }
    if (expired && !allow_expired) {
        *why = "the node certificate has expired: the node enrolls again with a join token";
        return NULL;
    }
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "spiffe://%s/node/", api->ca->trust_domain);
    if (!mesh_spiffe_check_leaf(cert, api->ca->trust_domain, id, size, why))
        return NULL;
    if (strncmp(id, prefix, strlen(prefix)) != 0) {
        *why = "not a node certificate";
        return NULL;
    }
    *ret_node = id + strlen(prefix);
    return cert;
}

const char *mesh_api_node(struct mesh_api *api, struct mesh_http_exchange *ex, char *buf,
                          size_t size)
{
    const char *why = NULL, *node = NULL;
    X509 *cert = peer_node_cert(api, ex, false, buf, size, &node, &why);
    if (!cert) {
        mesh_api_fail(api, ex, 401, why ? why : "not a node certificate");
        return NULL;
    }
    json_t *rec = mesh_store_get(api->store, "agents", node);
    if (!rec) {
        mesh_api_fail(api, ex, 403, "this node is not enrolled (or was removed)");
        return NULL;
    }
    char serial[80];
    cert_serial(cert, serial);
    if (!serial_speaks(rec, serial)) {
        char msg[400];
        snprintf(msg, sizeof(msg),
                 "this certificate no longer speaks for node %s: the node was reset or "
                 "enrolled again since",
                 node);
        mesh_api_fail(api, ex, 403, msg);
        return NULL;
    }
    return node;
}

void mesh_api_node_renewed(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node,
                           const char *serial)
{
    json_t *rec = mesh_store_get(api->store, "agents", node);
    json_t *next = rec ? json_deep_copy(rec) : NULL;
    json_t *serials = json_object_get(next, "serials");
    if (next && !serials) {
        /* An older record: the certificate that asked still speaks for the node. */
        SSL *ssl = mesh_http_exchange_ssl(ex);
        X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
        char current[80];
        serials = json_array();
        json_object_set_new(next, "serials", serials);
        if (cert) {
            cert_serial(cert, current);
            json_array_append_new(serials, json_string(current));
        }
    }
    if (!next || json_array_append_new(serials, json_string(serial)) < 0) {
        json_decref(next);
        mesh_log_error("cannot note the new certificate of node %s", node);
        return;
    }
    while (json_array_size(serials) > NODE_SERIALS)
        json_array_remove(serials, 0);
    if (mesh_store_put(api->store, "agents", node, next) < 0)
        mesh_log_error("cannot note the new certificate of node %s", node);
    json_decref(next);
}

/* Whether the peer proves it is node, enrolled as rec: one of its current certificates. */
static bool proves(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node,
                   json_t *rec)
{
    char id[MESH_SPIFFE_ID_MAX + 1], serial[80];
    const char *who = NULL, *why = NULL;
    X509 *cert = peer_node_cert(api, ex, true, id, sizeof(id), &who, &why);
    if (!cert || strcmp(who, node) != 0)
        return false;
    cert_serial(cert, serial);
    return serial_speaks(rec, serial);
}

/* Consumes the token use and records the node. Returns 0 or -1 with why in err. */
static int record_node(struct mesh_api *api, json_t *tok, const char *node, const char *serial,
                       char *err, size_t err_size)
{
    json_t *agent = json_pack("{s:s, s:O, s:O, s:I, s:[s]}", "node", node, "services",
                              json_object_get(tok, "services"), "token", json_object_get(tok, "id"),
                              "enrolled_at", (json_int_t)time(NULL), "serials", serial);
    json_t *addresses = json_object_get(tok, "addresses");
    if (agent && addresses)
        json_object_set(agent, "addresses", addresses);
    int r = agent ? mesh_token_consume(api->store, tok, err, err_size) : -1;
    if (r == 0 && mesh_store_put(api->store, "agents", node, agent) < 0) {
        snprintf(err, err_size, "cannot record the node");
        r = -1;
    }
    json_decref(agent);
    return r < 0 ? -1 : 0;
}

void mesh_api_enroll(struct mesh_api *api, struct mesh_http_exchange *ex)
{
    if (!mesh_api_may_try(api, ex))
        return;
    json_t *req = mesh_api_body_json(ex);
    const char *token = NULL, *node = NULL, *csr = NULL;
    char err[600], id[600], serial[80];
    if (!req ||
        json_unpack(req, "{s:s, s:s, s:s}", "token", &token, "node", &node, "csr", &csr) < 0) {
        mesh_api_cert_failed(api, ex, MESH_API_CERT_INVALID_REQUEST, 400,
                             "expected {\"token\", \"node\", \"csr\"}");
        goto out;
    }
    if (!mesh_store_name_valid(node)) {
        mesh_api_cert_failed(api, ex, MESH_API_CERT_INVALID_REQUEST, 400,
                             "node: a lowercase DNS name");
        goto out;
    }
    json_t *tok = mesh_token_check(api->store, token, node, err, sizeof(err));
    if (!tok) {
        mesh_api_auth_failed(api, ex, &api->n.enroll_failures);
        mesh_api_cert_failed(api, ex, MESH_API_CERT_UNAUTHENTICATED, 401, err);
        goto out;
    }
    json_t *existing = mesh_store_get(api->store, "agents", node); /* replaced below */
    bool again = existing && !json_is_true(json_object_get(existing, "reset"));
    bool after_reset = existing && !again;
    if (again && !proves(api, ex, node, existing)) {
        mesh_api_auth_failed(api, ex, &api->n.enroll_failures);
        snprintf(err, sizeof(err),
                 "node %s is already enrolled: enrolling it again takes its current certificate "
                 "(even expired), or an operator's reset first (meshctl node reset %s)",
                 node, node);
        mesh_api_cert_failed(api, ex, MESH_API_CERT_UNAUTHENTICATED, 409, err);
        goto out;
    }
    /* Signed before the token use is spent: a request that cannot be signed costs none. */
    int64_t not_after = 0;
    mesh_spiffe_node_id(id, sizeof(id), api->ca->trust_domain, node);
    char *pem = mesh_api_sign(api, csr, id, err, sizeof(err), serial, &not_after);
    if (!pem) {
        mesh_api_cert_failed(api, ex, MESH_API_CERT_INVALID_CSR, 400, err);
        goto out;
    }
    if (record_node(api, tok, node, serial, err, sizeof(err)) < 0) {
        mesh_free(pem);
        mesh_api_cert_failed(api, ex, MESH_API_CERT_INTERNAL, 500, err);
        goto out;
    }
    mesh_auth_limit_passed(&api->limit, mesh_http_exchange_client(ex));
    api->n.enrollments++;
    api->n.token_uses++;
    mesh_log_info("enrolled node %s from %s%s", node, mesh_http_exchange_peer(ex),
                  again         ? " again, proved by its certificate"
                  : after_reset ? " again, after a reset"
                                : "");
    mesh_api_issued(api, ex, node, id, pem, serial, not_after);
out:
    json_decref(req);
}

void mesh_api_node_reset(struct mesh_api *api, struct mesh_http_exchange *ex, const char *node)
{
    json_t *rec = mesh_store_name_valid(node) ? mesh_store_get(api->store, "agents", node) : NULL;
    if (!rec) {
        mesh_api_fail(api, ex, 404, "no such node");
        return;
    }
    json_t *next = json_deep_copy(rec);
    int r = next ? 0 : -1;
    if (r == 0)
        r = json_object_set_new(next, "reset", json_true());
    if (r == 0)
        r = json_object_set_new(next, "serials", json_array());
    if (r == 0)
        r = json_object_set_new(next, "reset_at", json_integer((json_int_t)time(NULL)));
    if (r == 0)
        r = mesh_store_put(api->store, "agents", node, next);
    json_decref(next);
    if (r < 0) {
        mesh_api_fail(api, ex, 500, "cannot record the reset");
        return;
    }
    mesh_api_member_forget(api, node);
    mesh_log_notice("reset node %s: its certificates no longer speak for it; it may enroll "
                    "again with a join token",
                    node);
    mesh_http_respond_json(ex, 200, json_pack("{s:s, s:b}", "node", node, "reset", 1));
}
