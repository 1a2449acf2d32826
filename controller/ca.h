/*
 * The controller's CA: an EC P-256 root it generates in its state dir on first start
 * (0600 key), or the root or intermediate an operator provides. It signs X509-SVIDs from
 * CSRs, and its own HTTPS certificate (the SVID spiffe://<td>/mesh-controller with the
 * configured IPs and DNS names), from which it builds the TLS context of its API.
 */
#ifndef MESH_CONTROLLER_CA_H
#define MESH_CONTROLLER_CA_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "controller/config.h"

struct mesh_ca {
    X509 *cert;
    EVP_PKEY *key;
    char *bundle_pem; /* what agents trust: the CA certificate (and its chain, when given) */
    size_t bundle_len;
    SSL_CTX *tls; /* the API's: its certificate; client certificates optional, verified */
    char *trust_domain;
    uint64_t ttl_s;
};

/* Loads or creates the CA and the API's certificate. Returns 0 or -errno (logged). */
int mesh_ca_open(const struct mesh_controller_config *cfg, struct mesh_ca *ca);
void mesh_ca_close(struct mesh_ca *ca);

/*
 * Signs a CSR for id; NULL with why in err. The PEM of the certificate is returned. Keys
 * other than EC P-256 or P-384, Ed25519, or RSA of at least 2048 bits are refused.
 */
char *mesh_ca_sign(struct mesh_ca *ca, const char *csr, size_t csr_len, const char *id, char *err,
                   size_t err_size, char *serial, size_t serial_size, int64_t *not_after);

#endif
