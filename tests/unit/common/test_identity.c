/* SPIFFE IDs, SVID checks, CSR signing and TLS material: the rules our code adds to
 * OpenSSL's chain verification. */
#include <stdio.h>
#include <stdlib.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/spiffe.h"
#include "common/x509.h"
#include "proxy/tls.h"
#include "tests/unit/unit.h"

static bool id_ok(const char *id, const char *td)
{
    const char *why = NULL;
    bool ok = mesh_spiffe_id_valid(id, strlen(id), td, &why);
    if (!ok)
        assert_non_null(why);
    return ok;
}

static void test_spiffe_ids(void **state)
{
    (void)state;
    assert_true(id_ok("spiffe://mesh.local/ns/shop/svc/web", NULL));
    assert_true(id_ok("spiffe://mesh.local/ns/shop/svc/web", "mesh.local"));
    assert_true(id_ok("spiffe://a-b_c.d/x.y-Z_0", NULL));
    assert_false(id_ok("spiffe://mesh.local/ns/shop/svc/web", "other.local"));
    assert_false(id_ok("https://mesh.local/ns/x", NULL));
    assert_false(id_ok("spiffe://", NULL));
    assert_false(id_ok("spiffe:///path", NULL));
    assert_false(id_ok("spiffe://mesh.local", NULL));
    assert_false(id_ok("spiffe://mesh.local/", NULL));
    assert_false(id_ok("spiffe://Mesh.local/x", NULL));
    assert_false(id_ok("spiffe://mesh.local:8080/x", NULL));
    assert_false(id_ok("spiffe://user@mesh.local/x", NULL));
    assert_false(id_ok("spiffe://mesh.local/a//b", NULL));
    assert_false(id_ok("spiffe://mesh.local/a/./b", NULL));
    assert_false(id_ok("spiffe://mesh.local/a/..", NULL));
    assert_false(id_ok("spiffe://mesh.local/a?q=1", NULL));
    assert_false(id_ok("spiffe://mesh.local/a#f", NULL));
    assert_false(id_ok("spiffe://mesh.local/a%20b", NULL));
    char long_id[2100];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    memcpy(long_id, "spiffe://m/", 11);
    assert_false(id_ok(long_id, NULL));
}

static void test_spiffe_match(void **state)
{
    (void)state;
    const char *id = "spiffe://td/ns/shop/svc/web";
    assert_true(mesh_spiffe_match(id, id));
    assert_true(mesh_spiffe_match("*", id));
    assert_true(mesh_spiffe_match("spiffe://td/ns/shop/*", id));
    assert_true(mesh_spiffe_match("*/svc/web", id));
    assert_false(mesh_spiffe_match("spiffe://td/ns/bank/*", id));
    assert_false(mesh_spiffe_match("spiffe://td/ns/shop/svc/we", id));
    assert_false(mesh_spiffe_match("spiffe://td/ns/shop/svc/web*x", id));
}

/* A self-signed CA made with our helpers (its own CSR signed by itself would not be a CA,
 * so it is built here by hand). */
static void make_ca(X509 **ca, EVP_PKEY **key, long days)
{
    *key = mesh_x509_new_key();
    *ca = X509_new();
    X509_set_version(*ca, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(*ca), 1);
    X509_NAME *n = X509_get_subject_name(*ca);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"test ca", -1, -1, 0);
    X509_set_issuer_name(*ca, n);
    X509_gmtime_adj(X509_getm_notBefore(*ca), -3600);
    X509_gmtime_adj(X509_getm_notAfter(*ca), days * 86400);
    X509_set_pubkey(*ca, *key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, *ca, *ca, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(*ca, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
    X509_add_ext(*ca, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(*ca, *key, EVP_sha256());
}

static void test_sign_and_check(void **state)
{
    (void)state;
    X509 *ca;
    EVP_PKEY *ca_key;
    make_ca(&ca, &ca_key, 1);
    const char *id = "spiffe://td/ns/shop/svc/web";
    EVP_PKEY *key = mesh_x509_new_key();
    size_t csr_len = 0, cert_len = 0, key_len = 0;
    char *csr = mesh_x509_csr_pem(key, id, &csr_len);
    assert_non_null(csr);
    char err[256];
    X509 *leaf = mesh_x509_sign_csr(ca, ca_key, csr, csr_len, id, 600, err, sizeof(err));
    if (!leaf)
        fail_msg("signing failed: %s", err);
    char got[MESH_SPIFFE_ID_MAX + 1];
    const char *why = NULL;
    assert_true(mesh_spiffe_check_leaf(leaf, "td", got, sizeof(got), &why));
    assert_string_equal(got, id);
    assert_false(mesh_spiffe_check_leaf(leaf, "other", got, sizeof(got), &why));
    assert_false(mesh_spiffe_check_leaf(ca, "td", got, sizeof(got), &why)); /* a CA */
    assert_string_equal(why, "a leaf SVID must not be a CA");
    time_t life = mesh_x509_not_after(leaf) - time(NULL);
    assert_true(life > 590 && life <= 600);

    /* A CSR asking for another identity is refused, and so is a tampered one. */
    assert_null(mesh_x509_sign_csr(ca, ca_key, csr, csr_len, "spiffe://td/ns/shop/svc/api", 600,
                                   err, sizeof(err)));
    assert_contains(err, "another identity");
    assert_null(mesh_x509_sign_csr(ca, ca_key, "garbage", 7, id, 600, err, sizeof(err)));
    assert_contains(err, "not a PEM certificate request");

    /* TLS material takes the leaf for its own ID only, and only when it chains. */
    char *cert_pem = mesh_x509_cert_pem(leaf, &cert_len);
    char *key_pem = mesh_x509_key_pem(key, &key_len);
    size_t ca_len = 0;
    char *ca_pem = mesh_x509_cert_pem(ca, &ca_len);
    struct mesh_tls_material *m = NULL;
    assert_int_equal(mesh_tls_material_new("td", false, ca_pem, ca_len, &m, err, sizeof(err)), 0);
    assert_int_not_equal(mesh_tls_material_add(m, "spiffe://td/ns/shop/svc/api", "shop", "api",
                                               cert_pem, cert_len, key_pem, key_len, err,
                                               sizeof(err)),
                         0);
    assert_contains(err, "is for spiffe://td/ns/shop/svc/web");
    assert_int_equal(mesh_tls_material_add(m, id, "shop", "web", cert_pem, cert_len, key_pem,
                                           key_len, err, sizeof(err)),
                     0);
    assert_non_null(mesh_tls_find(m, "shop", "web"));
    assert_null(mesh_tls_find(m, "shop", "api"));
    assert_int_equal(mesh_tls_earliest_expiry(m), mesh_x509_not_after(leaf));
    mesh_tls_material_unref(m);

    /* Another CA's bundle: the leaf does not chain. */
    X509 *ca2;
    EVP_PKEY *ca2_key;
    make_ca(&ca2, &ca2_key, 1);
    size_t ca2_len = 0;
    char *ca2_pem = mesh_x509_cert_pem(ca2, &ca2_len);
    assert_int_equal(mesh_tls_material_new("td", false, ca2_pem, ca2_len, &m, err, sizeof(err)), 0);
    assert_int_not_equal(mesh_tls_material_add(m, id, "shop", "web", cert_pem, cert_len, key_pem,
                                               key_len, err, sizeof(err)),
                         0);
    assert_contains(err, "does not chain to the trust bundle");
    mesh_tls_material_unref(m);
    /* A bundle must hold CA certificates. */
    assert_int_not_equal(
        mesh_tls_material_new("td", false, cert_pem, cert_len, &m, err, sizeof(err)), 0);
    assert_contains(err, "not a CA");

    mesh_free(ca_pem);
    mesh_free(ca2_pem);
    mesh_free(cert_pem);
    mesh_free(key_pem);
    mesh_free(csr);
    X509_free(leaf);
    X509_free(ca);
    X509_free(ca2);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(ca2_key);
}

/* The leaf without its keyUsage extension (remove) or with it not critical, re-signed by
 * the CA. */
static X509 *resigned(X509 *leaf, X509 *ca, EVP_PKEY *ca_key, bool remove)
{
    X509 *x = X509_dup(leaf);
    int at = X509_get_ext_by_NID(x, NID_key_usage, -1);
    assert_true(at >= 0);
    if (remove)
        X509_EXTENSION_free(X509_delete_ext(x, at));
    else
        X509_EXTENSION_set_critical(X509_get_ext(x, at), 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
    return x;
}

/* X509-SVID 4.3: the key usage extension must be there, and critical. */
static void test_key_usage_must_be_critical(void **state)
{
    (void)state;
    X509 *ca;
    EVP_PKEY *ca_key;
    make_ca(&ca, &ca_key, 1);
    const char *id = "spiffe://td/ns/shop/svc/web";
    EVP_PKEY *key = mesh_x509_new_key();
    size_t csr_len = 0;
    char *csr = mesh_x509_csr_pem(key, id, &csr_len);
    char err[256], got[MESH_SPIFFE_ID_MAX + 1];
    X509 *leaf = mesh_x509_sign_csr(ca, ca_key, csr, csr_len, id, 600, err, sizeof(err));
    assert_non_null(leaf);
    const char *why = NULL;
    /* What we issue complies: critical keyUsage with digitalSignature. */
    int crit = -1;
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(leaf, NID_key_usage, &crit, NULL);
    assert_non_null(ku);
    assert_int_equal(crit, 1);
    ASN1_BIT_STRING_free(ku);
    assert_true(mesh_spiffe_check_leaf(leaf, "td", got, sizeof(got), &why));

    X509 *none = resigned(leaf, ca, ca_key, true);
    assert_false(mesh_spiffe_check_leaf(none, "td", got, sizeof(got), &why));
    assert_string_equal(why, "a leaf SVID must have the keyUsage extension");
    X509 *plain = resigned(leaf, ca, ca_key, false);
    assert_false(mesh_spiffe_check_leaf(plain, "td", got, sizeof(got), &why));
    assert_string_equal(why, "the keyUsage extension of an SVID must be critical");

    X509_free(none);
    X509_free(plain);
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    mesh_free(csr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT_TEST(test_spiffe_ids),
        UNIT_TEST(test_spiffe_match),
        UNIT_TEST(test_sign_and_check),
        UNIT_TEST(test_key_usage_must_be_critical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
