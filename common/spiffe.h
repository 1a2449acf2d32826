/*
 * SPIFFE IDs and X.509-SVIDs, checked by the rules of the SPIFFE specifications (SPIFFE-ID
 * and X509-SVID), which OpenSSL's chain verification does not know: an ID is
 * "spiffe://<trust domain><path>" with a strict character set; a leaf SVID carries exactly
 * one URI SAN and is not a CA, has a critical keyUsage extension, may sign
 * (digitalSignature) and may not sign certificates.
 */
#ifndef MESH_SPIFFE_H
#define MESH_SPIFFE_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#define MESH_SPIFFE_ID_MAX 2048

/*
 * Whether id is a valid SPIFFE ID; on failure *why says why. With trust_domain, the ID's
 * trust domain must be it.
 */
bool mesh_spiffe_id_valid(const char *id, size_t len, const char *trust_domain, const char **why);

/*
 * Checks a leaf certificate as an X509-SVID of trust_domain and copies its ID into out
 * (size bytes). Returns true, or false with *why set.
 */
bool mesh_spiffe_check_leaf(X509 *cert, const char *trust_domain, char *out, size_t size,
                            const char **why);

/* Whether s is a trust domain (1 to 255 of lowercase letters, digits, '.', '-', '_');
 * NULL when it is, else why not (for config checks). */
const char *mesh_spiffe_trust_domain_check(const char *s);

/*
 * The ID of a workload, on a VM as on Kubernetes: "spiffe://td/ns/<ns>/sa/<account>" (a VM
 * service's account defaults to its name); or of a node ("/node/<name>").
 */
void mesh_spiffe_service_id(char *out, size_t size, const char *td, const char *ns,
                            const char *account);
void mesh_spiffe_node_id(char *out, size_t size, const char *td, const char *node);

/*
 * The transition from the older form of a VM service's ID, "spiffe://td/ns/<ns>/svc/<name>"
 * (docs/identity.md): mesh_spiffe_legacy_service_id writes it; mesh_spiffe_canonical copies
 * id into out (size bytes) with an older-form ID read as "/ns/<ns>/sa/<name>", and says
 * whether it was one.
 */
void mesh_spiffe_legacy_service_id(char *out, size_t size, const char *td, const char *ns,
                                   const char *name);
bool mesh_spiffe_canonical(const char *id, char *out, size_t size);

/*
 * Whether id matches a principal pattern: the exact ID, "*" for any, or a pattern with
 * one "*" standing for any run of characters (spiffe://td/ns/shop/sa/ then "*").
 */
bool mesh_spiffe_match(const char *pattern, const char *id);

#endif
