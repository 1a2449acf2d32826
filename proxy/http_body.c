/* Where HTTP message bodies end, as they stream by. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proxy/http_proxy-int.h"

ssize_t mesh_body_feed(struct body_framing *f, char *data, size_t len, const char **error)
{
    switch (f->kind) {
    case BODY_NONE:
        f->done = true;
        return 0;
    case BODY_LENGTH: {
        size_t n = f->left < len ? (size_t)f->left : len;
        f->left -= n;
        f->done = f->left == 0;
        return (ssize_t)n;
    }
    case BODY_CHUNKED: {
        size_t used = 0;
        /* Scan only: the bytes go on as they came. */
        int r = mesh_http_chunked_decode(&f->chunked, data, len, &used, NULL, error);
        if (r < 0)
            return -EBADMSG;
        f->done = r == 1;
        return (ssize_t)used;
    }
    case BODY_UNTIL_CLOSE:
        return (ssize_t)len;
    }
    return 0;
}

void mesh_http_flags_format(unsigned flags, char *out, size_t size)
{
    static const char *const names[] = {"NR", "UH", "UF", "UO", "UT",  "URX",  "FI",
                                        "DI", "RL", "UC", "DC", "UPE", "RBAC", "DPE"};
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if ((flags & (1u << i)) && len + 6 < size)
            len += (size_t)snprintf(out + len, size - len, "%s%s", len ? "," : "", names[i]);
    }
    if (!len && size > 1)
        snprintf(out, size, "-");
}
