/*
 * A gzip'd ustar archive of a few small members, for meshctl vm bootstrap: the files a VM
 * needs, laid out so that `tar -C / -xzf` installs them. Members carry their mode and an
 * owner name (tar maps names to ids when root extracts), uid/gid 0, no links.
 *
 * Written here rather than with libarchive: a ustar header for a handful of regular files
 * is forty lines, and zlib (already on every host) does the compression; libarchive would
 * add a build and run-time dependency for this one command.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "controller/meshctl-int.h"

#define BLOCK 512

/* One ustar header; -ENAMETOOLONG when the name does not fit its 100 bytes. */
static int header(unsigned char h[BLOCK], const struct mesh_ctl_member *m, time_t mtime)
{
    size_t n = strlen(m->name);
    if (n == 0 || n >= 100)
        return -ENAMETOOLONG;
    memset(h, 0, BLOCK);
    memcpy(h, m->name, n);
    snprintf((char *)h + 100, 8, "%07o", m->mode & 07777);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011lo", m->data ? (unsigned long)m->len : 0UL);
    snprintf((char *)h + 136, 12, "%011lo", (unsigned long)mtime);
    h[156] = m->data ? '0' : '5';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    const char *owner = m->owner ? m->owner : "root";
    snprintf((char *)h + 265, 32, "%s", owner);
    snprintf((char *)h + 297, 32, "%s", owner);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < BLOCK; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
    return 0;
}

static int put(gzFile gz, const void *p, size_t len)
{
    return len == 0 || gzwrite(gz, p, (unsigned)len) == (int)len ? 0 : -EIO;
}

static int write_members(gzFile gz, const struct mesh_ctl_member *m, size_t n)
{
    static const unsigned char zero[BLOCK * 2];
    time_t now = time(NULL);
    unsigned char h[BLOCK];
    for (size_t i = 0; i < n; i++) {
        int r = header(h, &m[i], now);
        if (r < 0)
            return r;
        if (put(gz, h, BLOCK) < 0 || (m[i].data && put(gz, m[i].data, m[i].len) < 0) ||
            (m[i].data && put(gz, zero, (BLOCK - m[i].len % BLOCK) % BLOCK) < 0))
            return -EIO;
    }
    return put(gz, zero, sizeof(zero));
}

int mesh_ctl__tar_write(const char *path, bool force, const struct mesh_ctl_member *m, size_t n)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp))
        return -ENAMETOOLONG;
    /* 0600: the archive holds the join token. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    gzFile gz = gzdopen(fd, "wb9");
    if (!gz) {
        close(fd);
        unlink(tmp);
        return -ENOMEM;
    }
    int r = write_members(gz, m, n);
    if (gzclose(gz) != Z_OK && r == 0)
        r = -EIO;
    if (r == 0)
        r = mesh_ctl__publish(tmp, path, force);
    if (r < 0)
        unlink(tmp);
    return r;
}

int mesh_ctl__publish(const char *tmp, const char *path, bool force)
{
    /* link() fails on an existing name: nothing is ever replaced without --force. */
    int r = force ? rename(tmp, path) : link(tmp, path);
    if (r < 0)
        return -errno;
    if (!force)
        unlink(tmp);
    return 0;
}
