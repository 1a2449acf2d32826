#include "common/token_file.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/alloc.h"
#include "common/fs.h"

#define TOKEN_MAX (64 * 1024)

void mesh_token_file_init(struct mesh_token_file *t, const char *path, uint64_t max_age_ms)
{
    memset(t, 0, sizeof(*t));
    t->path = path;
    t->max_age_ms = max_age_ms;
}

void mesh_token_file_done(struct mesh_token_file *t)
{
    if (t->value)
        OPENSSL_cleanse(t->value, strlen(t->value));
    mesh_free(t->value);
    t->value = NULL;
}

int mesh_token_file_refresh(struct mesh_token_file *t, uint64_t now_ms, char *err, size_t errlen)
{
    struct stat st;
    bool changed =
        stat(t->path, &st) == 0 &&
        (st.st_ino != t->st.st_ino || st.st_size != t->st.st_size ||
         st.st_mtim.tv_sec != t->st.st_mtim.tv_sec || st.st_mtim.tv_nsec != t->st.st_mtim.tv_nsec);
    if (!changed && !t->refused && t->value && now_ms - t->read_ms < t->max_age_ms)
        return 0;
    t->refused = false;
    t->read_ms = now_ms;
    char *data = NULL;
    size_t len = 0;
    int r = mesh_fs_read_file(t->path, TOKEN_MAX, &data, &len);
    if (r < 0) {
        snprintf(err, errlen, "cannot read the token file '%s': %s", t->path, strerror(-r));
        return r;
    }
    if (changed)
        t->st = st;
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ' ||
                   data[len - 1] == '\t'))
        len--;
    data[len] = '\0';
    if (len == 0 || strpbrk(data, "\r\n")) {
        snprintf(err, errlen, "the token file '%s' %s", t->path,
                 len ? "holds more than one line" : "is empty");
        OPENSSL_cleanse(data, len);
        mesh_free(data);
        return -EINVAL;
    }
    if (t->value && strcmp(t->value, data) == 0) {
        OPENSSL_cleanse(data, len);
        mesh_free(data);
        return 0;
    }
    mesh_token_file_done(t);
    t->value = data;
    return 1;
}
