/*
 * The certificate work an agent and a CA share: EC P-256 keys, CSRs carrying a SPIFFE ID,
 * and signing them into X509-SVIDs (one URI SAN; not a CA; digitalSignature; client and
 * server auth), all as PEM.
 */
#ifndef MESH_X509_H
#define MESH_X509_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A new EC P-256 key, or NULL. */
EVP_PKEY *mesh_x509_new_key(void);
/* PEM of a private key (PKCS#8) or certificate; malloc'ed, NUL-ended; NULL when short. */
char *mesh_x509_key_pem(EVP_PKEY *key, size_t *len);
char *mesh_x509_cert_pem(X509 *cert, size_t *len);
/* A CSR for id signed by key, as PEM; NULL when short. */
char *mesh_x509_csr_pem(EVP_PKEY *key, const char *id, size_t *len);

/*
 * Signs a CSR (PEM) for `id` with the CA, valid from a little before now (a tenth of the
 * lifetime, at most 60 s, for clocks a little behind) for ttl_s seconds (never
 * past the CA's own expiry). The CSR must be self-signed and ask for exactly `id` (or no
 * SAN). Returns the certificate, or NULL with why in err.
 */
X509 *mesh_x509_sign_csr(X509 *ca, EVP_PKEY *ca_key, const char *csr_pem, size_t csr_len,
                         const char *id, uint64_t ttl_s, char *err, size_t err_size);

/* A certificate's notBefore / notAfter as time_t (0 when unreadable). */
time_t mesh_x509_not_before(const X509 *c);
time_t mesh_x509_not_after(const X509 *c);

#endif
