#include "common/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char *copy = mesh_strdup(path);
    if (!copy)
        return -ENOMEM;
    int r = 0;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        r = -errno;
    else if (fsync(fd) < 0)
        r = -errno;
    if (fd >= 0)
        close(fd);
    mesh_free(copy);
    return r;
}

int mesh_fs_atomic_begin(struct mesh_fs_atomic *w, const char *path, mode_t mode)
{
    *w = (struct mesh_fs_atomic){.path = path, .fd = -1};
    w->tmp = mesh_asprintf("%s.tmp.%ld", path, (long)getpid());
    if (!w->tmp)
        return w->err = -ENOMEM;
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (w->fd < 0)
        return w->err = -errno;
    /* The umask may have cut bits; an existing temp file may have had others. */
    if (fchmod(w->fd, mode) < 0)
        return w->err = -errno;
    return 0;
}

int mesh_fs_atomic_write(struct mesh_fs_atomic *w, const void *data, size_t len)
{
    if (!w->err)
        w->err = write_all(w->fd, data, len);
    return w->err;
}

int mesh_fs_atomic_commit(struct mesh_fs_atomic *w)
{
    int r = w->err;
    if (r == 0 && fsync(w->fd) < 0)
        r = -errno;
    if (w->fd >= 0 && close(w->fd) < 0 && r == 0)
        r = -errno;
    w->fd = -1;
    if (r == 0 && rename(w->tmp, w->path) < 0)
        r = -errno;
    if (r == 0)
        r = fsync_dir_of(w->path);
    else if (w->tmp)
        unlink(w->tmp);
    mesh_free(w->tmp);
    w->tmp = NULL;
    return r;
}

int mesh_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    struct mesh_fs_atomic w;
    if (mesh_fs_atomic_begin(&w, path, mode) == 0)
        mesh_fs_atomic_write(&w, data, len);
    return mesh_fs_atomic_commit(&w);
}

int mesh_fs_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len)
{
    return mesh_fs_read_file_stat(path, max, ret_data, ret_len, NULL);
}

int mesh_fs_read_file_stat(const char *path, size_t max, char **ret_data, size_t *ret_len,
                           struct stat *ret_st)
{
    int r = 0;
    char *data = NULL;
    size_t len = 0, cap = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        r = -EISDIR;
        goto out;
    }
    if (st.st_size > 0 && (size_t)st.st_size > max) {
        r = -EFBIG;
        goto out;
    }
    /* Files can grow between fstat and read (procfs reports 0): read until EOF. */
    cap = MESH_MIN((size_t)st.st_size, max) + 2;
    data = mesh_malloc(cap);
    if (!data) {
        r = -ENOMEM;
        goto out;
    }
    for (;;) {
        if (len + 1 == cap) {
            r = mesh_grow((void **)&data, &cap, cap + 1, 1);
            if (r < 0)
                goto out;
        }
        ssize_t n = read(fd, data + len, cap - len - 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            r = -EFBIG;
            goto out;
        }
    }
    data[len] = '\0';
    if (ret_st)
        *ret_st = st;
    *ret_data = data;
    if (ret_len)
        *ret_len = len;
    data = NULL;
out:
    mesh_free(data);
    close(fd);
    return r;
}

int mesh_fs_mkdir_private(const char *path, mode_t mode)
{
    char *copy = mesh_strdup(path);
    if (!copy)
        return -ENOMEM;
    int r = 0;
    /* Parents get 0755 so that other tools can reach their own files beside ours. */
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
            r = -errno;
            goto out;
        }
        *p = '/';
    }
    if (mkdir(copy, mode) < 0 && errno != EEXIST) {
        r = -errno;
        goto out;
    }
    struct stat st;
    if (stat(copy, &st) < 0) {
        r = -errno;
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        r = -ENOTDIR;
        goto out;
    }
    if ((st.st_mode & 07777 & ~mode) && chmod(copy, mode) < 0)
        r = -errno;
out:
    mesh_free(copy);
    return r;
}
