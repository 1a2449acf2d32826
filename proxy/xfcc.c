#define MESH_LOG_MODULE "mtls"

/*
 * X-Forwarded-Client-Cert (XFCC) as Envoy writes it, for the workload behind an inbound
 * mTLS connection: one element of ';'-separated key=value pairs,
 *
 *   By=<the SPIFFE ID we presented>;Hash=<SHA-256 of the caller's certificate (DER), hex>;
 *   URI=<the caller's SPIFFE ID>
 *
 * A value holding ',', ';', '=' or '"' is double-quoted, with '"' and '\' escaped by '\'
 * (SPIFFE IDs never need it; the rule keeps the header parseable whatever a certificate
 * holds). Made once per connection, right after the handshake, from the certificates the
 * handshake verified (a resumed session keeps the caller's certificate).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/spiffe.h"
#include "proxy/http_proxy-int.h"

static void append_value(struct mesh_buf *b, const char *v)
{
    if (!strpbrk(v, ",;=\"\\")) {
        mesh_buf_append_str(b, v);
        return;
    }
    mesh_buf_append(b, "\"", 1);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\')
            mesh_buf_append(b, "\\", 1);
        mesh_buf_append(b, p, 1);
    }
    mesh_buf_append(b, "\"", 1);
}

char *mesh_http_proxy__xfcc(SSL *ssl, const char *peer_id)
{
    X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    X509 *own = ssl ? SSL_get_certificate(ssl) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    char by[MESH_SPIFFE_ID_MAX + 1], hash[2 * EVP_MAX_MD_SIZE + 1];
    const char *why = NULL;
    if (!peer || !own || !peer_id || !peer_id[0] ||
        !mesh_spiffe_check_leaf(own, NULL, by, sizeof(by), &why) ||
        X509_digest(peer, EVP_sha256(), md, &n) != 1)
        return NULL;
    static const char digits[] = "0123456789abcdef";
    for (unsigned int i = 0; i < n; i++) {
        hash[2 * i] = digits[md[i] >> 4];
        hash[2 * i + 1] = digits[md[i] & 15];
    }
    hash[2 * n] = '\0';
    struct mesh_buf b;
    mesh_buf_init(&b, 3 * MESH_SPIFFE_ID_MAX + 200);
    mesh_buf_append_str(&b, "By=");
    append_value(&b, by);
    mesh_buf_append_str(&b, ";Hash=");
    mesh_buf_append_str(&b, hash);
    mesh_buf_append_str(&b, ";URI=");
    append_value(&b, peer_id);
    char *out = b.err ? NULL : mesh_buf_steal(&b, NULL);
    mesh_buf_done(&b);
    return out;
}
