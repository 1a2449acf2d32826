/* Fuzzes the HTTP/1.1 response parser and body framing: what an upstream may send. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct mesh_http_limits lim = {4096, 32, 1024};
    struct mesh_http_header headers[32];
    struct mesh_http_response res;
    const char *buf = (const char *)data;
    int r = mesh_http_parse_response(buf, size, &lim, headers, &res);
    if (r == -EAGAIN || r < 0)
        return 0;
    if ((size_t)r > size || res.num_headers > lim.max_headers || res.status < 100 ||
        res.status > 999)
        abort();
    if ((res.flags & MESH_HTTP_F_CHUNKED) && (res.flags & MESH_HTTP_F_CONTENT_LENGTH))
        abort(); /* a smuggling vector must never parse */
    for (size_t i = 0; i < res.num_headers; i++) {
        if (headers[i].name < buf || headers[i].value + headers[i].value_len > buf + r)
            abort();
    }
    /* The body that follows, framed as the proxy frames it. */
    if (res.flags & MESH_HTTP_F_CHUNKED) {
        char *copy = malloc(size - (size_t)r + 1);
        if (!copy)
            return 0;
        memcpy(copy, buf + r, size - (size_t)r);
        struct mesh_http_chunked scan, dec;
        size_t used1 = 0, used2 = 0, out = 0;
        const char *err;
        mesh_http_chunked_init(&scan);
        mesh_http_chunked_init(&dec);
        int a = mesh_http_chunked_decode(&scan, copy, size - (size_t)r, &used1, NULL, &err);
        int b = mesh_http_chunked_decode(&dec, copy, size - (size_t)r, &used2, &out, &err);
        /* Scanning and decoding agree on where the body ends and whether it is valid. */
        if (a != b || (a >= 0 && used1 != used2) || out > used2)
            abort();
        free(copy);
    }
    return 0;
}
