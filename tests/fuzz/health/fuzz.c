/* Fuzzes what the health checks read from the network: the status line an agent or a
 * workload answers (mesh_health_status_of), a health query's target (which must be plain
 * for the deny rules to see what the workload will), and the failure mark another agent puts
 * on a response (taken out of every response, whatever it holds). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_parse.h"
#include "proxy/health_check-int.h"
#include "proxy/http_try-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_target(const char *s, size_t n)
{
    if (!mesh_health_plain_target(s, n))
        return;
    size_t path = 0;
    while (path < n && s[path] != '?')
        path++;
    if (!path || s[0] != '/' || memchr(s, '%', path) || memchr(s, '\0', n))
        abort();
    for (size_t i = 0; i < path; i++) {
        bool seg = i == 0 || s[i - 1] == '/';
        if (s[i] == '/' && i + 1 < path && s[i + 1] == '/')
            abort(); /* "//" */
        if (seg && s[i] == '.' && (i + 1 == path || s[i + 1] == '/'))
            abort(); /* "." */
        if (seg && s[i] == '.' && i + 1 < path && s[i + 1] == '.' &&
            (i + 2 == path || s[i + 2] == '/'))
            abort(); /* ".." */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    int st = mesh_health_status_of(buf, size);
    if (st != -EAGAIN && st != -EINVAL && (st < 0 || st > 999))
        abort();
    check_target(buf, size);

    static const struct mesh_http_limits lim = {4096, 32, 1024};
    struct mesh_http_header headers[32];
    struct mesh_http_response res;
    if (mesh_http_parse_response(buf, size, &lim, headers, &res) <= 0)
        return 0;
    size_t before = res.num_headers;
    enum mesh_http_marked m = mesh_http_take_mark(&res, size % 2 == 0);
    if (res.num_headers > before || (m != MESH_HTTP_MARK_NONE && res.status < 500))
        abort();
    if (mesh_http_find_header(res.headers, res.num_headers, MESH_HTTP_FAILURE_HEADER))
        abort(); /* never passed on */
    return 0;
}
