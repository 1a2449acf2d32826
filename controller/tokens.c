#include "controller/tokens.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/alloc.h"
#include "common/macros.h"
#include "common/spiffe.h"
#include "common/strutil.h"
#include "controller/addresses.h"

#define TOKEN_PREFIX "mesh1."
#define TTL_MAX_S (30 * 86400)

int mesh_pattern_match(const char *pattern, const char *s)
{
    return mesh_spiffe_match(pattern, s);
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sha256_hex(const char *s, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    if (EVP_Digest(s, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return -1;
    hex(md, 32, out);
    return 0;
}

static int pattern_valid(const char *p)
{
    const char *star = strchr(p, '*');
    return !star || !strchr(star + 1, '*');
}

/*
 * Why a service pattern may not be on a token, or NULL: it must name workloads only, never
 * a node (those come with enrollment, each to its own node), the controller, or the whole
 * trust domain. A pattern that could match any node ID is refused: its text before the
 * '*' and "spiffe://<td>/node/" must not be prefixes of one another.
 */
static const char *pattern_too_wide(const char *p, const char *td)
{
    char node[300], ctl[300], domain[300];
    snprintf(node, sizeof(node), "spiffe://%s/node/", td);
    snprintf(ctl, sizeof(ctl), "spiffe://%s/mesh-controller", td);
    snprintf(domain, sizeof(domain), "spiffe://%s/", td);
    const char *star = strchr(p, '*');
    size_t lit = star ? (size_t)(star - p) : strlen(p), nl = strlen(node);
    if (star && lit <= strlen(domain))
        return "it covers the whole trust domain";
    if (strncmp(p, node, MESH_MIN(lit, nl)) == 0 && (star || lit >= nl))
        return "it covers node identities (each node gets its own when it enrolls)";
    if (mesh_pattern_match(p, ctl))
        return "it covers the controller's identity";
    return NULL;
}

int mesh_token_services_check(json_t *services, const char *trust_domain, const char *where,
                              char *err, size_t err_size)
{
    if (!json_is_array(services) || json_array_size(services) > 100) {
        snprintf(err, err_size, "services: expected an array of at most 100 SPIFFE ID patterns");
        return -EINVAL;
    }
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "spiffe://%s/", trust_domain);
    size_t i;
    json_t *v;
    json_array_foreach(services, i, v)
    {
        const char *p = json_string_value(v);
        if (!p || strncmp(p, prefix, strlen(prefix)) != 0 || !pattern_valid(p) ||
            strlen(p) > MESH_SPIFFE_ID_MAX) {
            snprintf(err, err_size, "services[%zu]: expected a SPIFFE ID or pattern under %s", i,
                     prefix);
            return -EINVAL;
        }
        const char *why = pattern_too_wide(p, trust_domain);
        if (why) {
            snprintf(err, err_size, "services[%zu]: '%s' may not be %s: %s", i, p, where, why);
            return -EINVAL;
        }
    }
    return 0;
}

json_t *mesh_token_create(struct mesh_store *s, const char *trust_domain, json_t *req,
                          char **ret_token, char *err, size_t err_size)
{
    const char *node = NULL, *ttl_text = "1h", *description = "";
    json_t *services = NULL, *addresses = NULL;
    json_int_t uses = 1;
    json_error_t jerr;
    if (!json_is_object(req) ||
        json_unpack_ex(req, &jerr, JSON_STRICT, "{s:s, s:o, s?s, s?I, s?s, s?o}", "node", &node,
                       "services", &services, "ttl", &ttl_text, "uses", &uses, "description",
                       &description, "addresses", &addresses) < 0) {
        snprintf(err, err_size,
                 "expected {\"node\": pattern, \"services\": [patterns], \"ttl\": "
                 "duration, \"uses\": n, \"description\": text, \"addresses\": [IPs or "
                 "CIDRs]}; \"node\" and \"services\" are required: %s",
                 jerr.text);
        return NULL;
    }
    if (!mesh_ctl_addresses_valid(addresses, err, err_size))
        return NULL;
    uint64_t ttl_ms = 0;
    if (mesh_parse_duration_ms(ttl_text, &ttl_ms) < 0 || ttl_ms < 1000 ||
        ttl_ms / 1000 > TTL_MAX_S) {
        snprintf(err, err_size, "ttl: expected a duration from 1s to 720h, got \"%s\"", ttl_text);
        return NULL;
    }
    if (uses < 1 || uses > 10000) {
        snprintf(err, err_size, "uses: expected 1 to 10000");
        return NULL;
    }
    if (!pattern_valid(node) || strlen(node) > 253) {
        snprintf(err, err_size, "node: a node name pattern with at most one '*'");
        return NULL;
    }
    if (mesh_token_services_check(services, trust_domain, "on a token", err, err_size) < 0)
        return NULL;
    unsigned char idb[8], secret[32];
    char id[17], secret_hex[65], hash[65];
    if (RAND_bytes(idb, sizeof(idb)) != 1 || RAND_bytes(secret, sizeof(secret)) != 1) {
        snprintf(err, err_size, "no randomness");
        return NULL;
    }
    hex(idb, sizeof(idb), id);
    hex(secret, sizeof(secret), secret_hex);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (sha256_hex(secret_hex, 64, hash) < 0) {
        snprintf(err, err_size, "hashing failed");
        return NULL;
    }
    time_t now = time(NULL);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:O, s:I, s:I, s:I, s:I, s:s, s:b}", "id", id, "hash",
                            hash, "node", node, "services", services, "created_at", (json_int_t)now,
                            "expires_at", (json_int_t)(now + (time_t)(ttl_ms / 1000)), "uses", uses,
                            "uses_left", uses, "description", description, "revoked", 0);
    if (rec && addresses)
        json_object_set(rec, "addresses", addresses);
    char *token = mesh_malloc(sizeof(TOKEN_PREFIX) + 16 + 1 + 64);
    if (!rec || !token || mesh_store_put(s, "tokens", id, rec) < 0) {
        json_decref(rec);
        mesh_free(token);
        snprintf(err, err_size, "cannot store the token");
        return NULL;
    }
    sprintf(token, TOKEN_PREFIX "%s.%s", id, secret_hex);
    OPENSSL_cleanse(secret_hex, sizeof(secret_hex));
    *ret_token = token;
    json_t *pub = json_deep_copy(rec);
    json_decref(rec);
    json_object_del(pub, "hash");
    return pub;
}

json_t *mesh_token_check(struct mesh_store *s, const char *token, const char *node, char *err,
                         size_t err_size)
{
    /* "mesh1." 16 hex "." 64 hex */
    size_t plen = sizeof(TOKEN_PREFIX) - 1;
    if (strlen(token) != plen + 16 + 1 + 64 || strncmp(token, TOKEN_PREFIX, plen) != 0 ||
        token[plen + 16] != '.') {
        snprintf(err, err_size, "not a join token");
        return NULL;
    }
    char id[17];
    memcpy(id, token + plen, 16);
    id[16] = '\0';
    json_t *rec = mesh_store_name_valid(id) ? mesh_store_get(s, "tokens", id) : NULL;
    char hash[65];
    const char *stored = rec ? json_string_value(json_object_get(rec, "hash")) : NULL;
    if (!stored || sha256_hex(token + plen + 17, 64, hash) < 0 || strlen(stored) != 64 ||
        CRYPTO_memcmp(hash, stored, 64) != 0) {
        snprintf(err, err_size, "unknown join token");
        return NULL;
    }
    if (json_is_true(json_object_get(rec, "revoked"))) {
        snprintf(err, err_size, "join token %s was revoked", id);
        return NULL;
    }
    if (json_integer_value(json_object_get(rec, "expires_at")) <= (json_int_t)time(NULL)) {
        snprintf(err, err_size, "join token %s has expired", id);
        return NULL;
    }
    if (json_integer_value(json_object_get(rec, "uses_left")) <= 0) {
        snprintf(err, err_size, "join token %s is used up", id);
        return NULL;
    }
    const char *pattern = json_string_value(json_object_get(rec, "node"));
    if (!pattern || !mesh_pattern_match(pattern, node)) {
        snprintf(err, err_size, "join token %s is for nodes '%s', not '%s'", id,
                 pattern ? pattern : "?", node);
        return NULL;
    }
    return rec;
}

int mesh_token_consume(struct mesh_store *s, json_t *rec, char *err, size_t err_size)
{
    const char *rec_id = json_string_value(json_object_get(rec, "id"));
    char id[17];
    snprintf(id, sizeof(id), "%s", rec_id ? rec_id : "?");
    json_int_t left = json_integer_value(json_object_get(rec, "uses_left"));
    json_t *next = left > 0 ? json_deep_copy(rec) : NULL;
    int r = next && json_object_set_new(next, "uses_left", json_integer(left - 1)) == 0
                ? mesh_store_put(s, "tokens", id, next)
                : -ENOMEM;
    json_decref(next);
    if (r < 0)
        snprintf(err, err_size, "cannot record the use of join token %s", id);
    return r;
}

json_t *mesh_token_use(struct mesh_store *s, const char *token, const char *node, char *err,
                       size_t err_size)
{
    json_t *rec = mesh_token_check(s, token, node, err, err_size);
    char id[17];
    if (!rec)
        return NULL;
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(rec, "id")));
    /* The record is replaced by the use: read back the new one. */
    return mesh_token_consume(s, rec, err, err_size) < 0 ? NULL : mesh_store_get(s, "tokens", id);
}
