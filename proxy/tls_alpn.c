#include <string.h>

#include "proxy/tls.h"

/*
 * Offered by a caller's agent that asks about the health of a local service rather than
 * calling it (health_serve.c). Calls offer no ALPN at all and get none back; an agent that
 * does not know this protocol acknowledges none, which its caller takes as "no answer".
 */
int mesh_tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                         const unsigned char *in, unsigned int inlen, void *arg)
{
    static const char want[] = MESH_TLS_ALPN_HEALTH;
    (void)ssl;
    (void)arg;
    /* A list of 8-bit-length-prefixed names, as the client sent it. */
    for (unsigned int i = 0; i < inlen; i += 1u + in[i]) {
        unsigned int n = in[i];
        if (i + 1u + n > inlen)
            break;
        if (n == sizeof(want) - 1 && memcmp(in + i + 1, want, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

bool mesh_tls_alpn_is_health(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == sizeof(MESH_TLS_ALPN_HEALTH) - 1 && memcmp(p, MESH_TLS_ALPN_HEALTH, n) == 0;
}

int mesh_tls_alpn_offer_health(SSL *ssl)
{
    static const unsigned char list[] = "\x0b" MESH_TLS_ALPN_HEALTH;
    /* SSL_set_alpn_protos returns 0 on success. */
    return SSL_set_alpn_protos(ssl, list, sizeof(list) - 1) == 0 ? 0 : -1;
}
