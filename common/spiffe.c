#include "common/spiffe.h"

#include <stdio.h>
#include <string.h>

#include <openssl/x509v3.h>

static bool td_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

const char *mesh_spiffe_trust_domain_check(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return "must be 1 to 255 characters";
    for (size_t i = 0; i < n; i++) {
        if (!td_char(s[i]))
            return "only lowercase letters, digits, '.', '-' and '_' are allowed";
    }
    return NULL;
}

bool mesh_spiffe_id_valid(const char *id, size_t len, const char *trust_domain, const char **why)
{
    static const char scheme[] = "spiffe://";
    if (len > MESH_SPIFFE_ID_MAX) {
        *why = "longer than 2048 bytes";
        return false;
    }
    if (len < sizeof(scheme) - 1 || memcmp(id, scheme, sizeof(scheme) - 1) != 0) {
        *why = "does not start with \"spiffe://\"";
        return false;
    }
    size_t i = sizeof(scheme) - 1, td = i;
    while (i < len && id[i] != '/') {
        if (!td_char(id[i])) {
            *why = "the trust domain may only hold lowercase letters, digits, '.', '-' and '_'";
            return false;
        }
        i++;
    }
    if (i == td) {
        *why = "the trust domain is empty";
        return false;
    }
    if (trust_domain &&
        (strlen(trust_domain) != i - td || memcmp(id + td, trust_domain, i - td) != 0)) {
        *why = "belongs to another trust domain";
        return false;
    }
    if (i == len) {
        *why = "has no path";
        return false;
    }
    while (i < len) {
        size_t seg = ++i; /* past the '/' */
        while (i < len && id[i] != '/') {
            if (!path_char(id[i])) {
                *why = "a path segment may only hold letters, digits, '.', '-' and '_'";
                return false;
            }
            i++;
        }
        size_t n = i - seg;
        if (n == 0) {
            *why = "has an empty path segment (or a trailing '/')";
            return false;
        }
        if ((n == 1 && id[seg] == '.') || (n == 2 && id[seg] == '.' && id[seg + 1] == '.')) {
            *why = "has a '.' or '..' path segment";
            return false;
        }
    }
    return true;
}

bool mesh_spiffe_check_leaf(X509 *cert, const char *trust_domain, char *out, size_t size,
                            const char **why)
{
    uint32_t ku = X509_get_key_usage(cert); /* UINT32_MAX: no extension */
    uint32_t flags = X509_get_extension_flags(cert);
    if (flags & EXFLAG_INVALID) {
        *why = "the certificate has invalid extensions";
        return false;
    }
    if (flags & EXFLAG_CA) {
        *why = "a leaf SVID must not be a CA";
        return false;
    }
    /* X509-SVID 4.3: "The key usage extension MUST be set on all SVIDs, and MUST be marked
     * critical." */
    int at = X509_get_ext_by_NID(cert, NID_key_usage, -1);
    if (ku == UINT32_MAX || at < 0) {
        *why = "a leaf SVID must have the keyUsage extension";
        return false;
    }
    if (!X509_EXTENSION_get_critical(X509_get_ext(cert, at))) {
        *why = "the keyUsage extension of an SVID must be critical";
        return false;
    }
    if (!(ku & KU_DIGITAL_SIGNATURE)) {
        *why = "a leaf SVID must have the digitalSignature key usage";
        return false;
    }
    if (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) {
        *why = "a leaf SVID must not have keyCertSign or cRLSign";
        return false;
    }
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int n_uri = 0;
    const ASN1_IA5STRING *uri = NULL;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_URI) {
            n_uri++;
            uri = g->d.uniformResourceIdentifier;
        }
    }
    bool ok = false;
    if (n_uri != 1)
        *why = n_uri ? "an SVID must carry exactly one URI SAN" : "the certificate has no URI SAN";
    else if (!mesh_spiffe_id_valid((const char *)ASN1_STRING_get0_data(uri),
                                   (size_t)ASN1_STRING_length(uri), trust_domain, why))
        ;
    else if ((size_t)ASN1_STRING_length(uri) >= size)
        *why = "the SPIFFE ID is too long";
    else {
        memcpy(out, ASN1_STRING_get0_data(uri), (size_t)ASN1_STRING_length(uri));
        out[ASN1_STRING_length(uri)] = '\0';
        ok = true;
    }
    GENERAL_NAMES_free(names);
    return ok;
}

void mesh_spiffe_service_id(char *out, size_t size, const char *td, const char *ns,
                            const char *account)
{
    snprintf(out, size, "spiffe://%s/ns/%s/sa/%s", td, ns, account);
}

void mesh_spiffe_legacy_service_id(char *out, size_t size, const char *td, const char *ns,
                                   const char *name)
{
    snprintf(out, size, "spiffe://%s/ns/%s/svc/%s", td, ns, name);
}

bool mesh_spiffe_canonical(const char *id, char *out, size_t size)
{
    /* spiffe://<td>/ns/<ns>/svc/<name>: exactly five segments after the scheme. */
    const char *p = strncmp(id, "spiffe://", 9) == 0 ? strchr(id + 9, '/') : NULL;
    const char *ns = p && strncmp(p, "/ns/", 4) == 0 ? p + 4 : NULL;
    const char *slash = ns ? strchr(ns, '/') : NULL;
    bool legacy = slash && slash > ns && strncmp(slash, "/svc/", 5) == 0 && slash[5] &&
                  !strchr(slash + 5, '/') && strlen(id) + 1 < size;
    if (!legacy) {
        snprintf(out, size, "%s", id);
        return false;
    }
    size_t head = (size_t)(slash - id);
    memcpy(out, id, head);
    snprintf(out + head, size - head, "/sa/%s", slash + 5);
    return true;
}

void mesh_spiffe_node_id(char *out, size_t size, const char *td, const char *node)
{
    snprintf(out, size, "spiffe://%s/node/%s", td, node);
}

bool mesh_spiffe_match(const char *pattern, const char *id)
{
    const char *star = strchr(pattern, '*');
    if (!star)
        return strcmp(pattern, id) == 0;
    size_t pre = (size_t)(star - pattern), post = strlen(star + 1), n = strlen(id);
    return n >= pre + post && memcmp(id, pattern, pre) == 0 &&
           memcmp(id + n - post, star + 1, post) == 0;
}
