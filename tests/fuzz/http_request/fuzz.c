/* Fuzzes the HTTP/1.1 request parser: any input is refused or parsed consistently. */
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
    struct mesh_http_request req;
    const char *buf = (const char *)data;
    int r = mesh_http_parse_request(buf, size, &lim, headers, &req);
    if (r > 0) {
        if ((size_t)r > size || req.num_headers > lim.max_headers || req.target_len > lim.max_uri)
            abort();
        /* Every piece lies inside the input. */
        for (size_t i = 0; i < req.num_headers; i++) {
            if (headers[i].name < buf || headers[i].value + headers[i].value_len > buf + r)
                abort();
        }
        if (req.path < req.target || req.path + req.path_len > req.target + req.target_len)
            abort();
        char out[64];
        mesh_http_query_get(req.query, req.query_len, "a", out, sizeof(out));
        /* A prefix of a complete head is never complete. */
        struct mesh_http_header h2[32];
        struct mesh_http_request prefix;
        if (mesh_http_parse_request(buf, (size_t)r - 1, &lim, h2, &prefix) >= 0)
            abort();
    } else if (r != -EAGAIN && mesh_http_error_status(r) < 400) {
        abort();
    }
    return 0;
}
