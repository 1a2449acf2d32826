/*
 * Fuzzes what a peer or an enrolling agent hands us about identity: the first byte picks
 * a SPIFFE ID (our parser), a DER certificate (OpenSSL's parser, then our SVID checks), or
 * a PEM certificate request (read, checked and signed by a CA, as the controller will).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "common/alloc.h"
#include "common/spiffe.h"
#include "common/x509.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static X509 *ca;
static EVP_PKEY *ca_key;

static void make_ca(void)
{
    ca_key = mesh_x509_new_key();
    ca = X509_new();
    X509_set_version(ca, 2);
    X509_NAME *n = X509_get_subject_name(ca);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(ca, n);
    X509_gmtime_adj(X509_getm_notBefore(ca), 0);
    X509_gmtime_adj(X509_getm_notAfter(ca), 86400);
    X509_set_pubkey(ca, ca_key);
    X509_sign(ca, ca_key, EVP_sha256());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *why = NULL;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        bool a = mesh_spiffe_id_valid(rest, n, NULL, &why);
        bool b = mesh_spiffe_id_valid(rest, n, "mesh.local", &why);
        if (b && !a)
            abort(); /* a trust domain only narrows */
        if (a && (n < 11 || memcmp(rest, "spiffe://", 9) != 0 || memchr(rest, '\0', n)))
            abort();
        if (a) { /* the current form of a valid ID (a transition from .../svc/...) is valid */
            char id[MESH_SPIFFE_ID_MAX + 1], now[MESH_SPIFFE_ID_MAX + 1];
            memcpy(id, rest, n);
            id[n] = '\0';
            mesh_spiffe_canonical(id, now, sizeof(now));
            if (!mesh_spiffe_id_valid(now, strlen(now), NULL, &why))
                abort();
        }
        break;
    }
    case 1: {
        const unsigned char *p = (const unsigned char *)rest;
        X509 *x = d2i_X509(NULL, &p, (long)n);
        if (x) {
            char id[MESH_SPIFFE_ID_MAX + 1];
            if (mesh_spiffe_check_leaf(x, NULL, id, sizeof(id), &why) &&
                !mesh_spiffe_id_valid(id, strlen(id), NULL, &why))
                abort(); /* an accepted SVID carries a valid ID */
            X509_free(x);
        }
        break;
    }
    default: {
        if (!ca)
            make_ca();
        char err[256];
        X509 *x = mesh_x509_sign_csr(ca, ca_key, rest, n, "spiffe://mesh.local/ns/a/svc/b", 60, err,
                                     sizeof(err));
        if (x) {
            char id[MESH_SPIFFE_ID_MAX + 1];
            if (!mesh_spiffe_check_leaf(x, "mesh.local", id, sizeof(id), &why) ||
                strcmp(id, "spiffe://mesh.local/ns/a/svc/b") != 0)
                abort(); /* what we sign is an SVID for the identity asked */
            X509_free(x);
        }
        break;
    }
    }
    return 0;
}
