#include "common/sd.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/strutil.h"

/* Fills a unix address from a path or an "@abstract" name. Returns its length or -errno. */
static int unix_addr(const char *name, struct sockaddr_un *sun)
{
    size_t n = strlen(name);
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (n == 0 || n >= sizeof(sun->sun_path))
        return -EINVAL;
    if (name[0] != '/' && name[0] != '@')
        return -EINVAL;
    memcpy(sun->sun_path, name, n);
    if (name[0] == '@') {
        sun->sun_path[0] = '\0'; /* abstract: a leading NUL, no terminator */
        return (int)(offsetof(struct sockaddr_un, sun_path) + n);
    }
    return (int)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

static int send_datagram(int fd, const char *to, const void *data, size_t len)
{
    struct sockaddr_un sun;
    int alen = unix_addr(to, &sun);
    if (alen < 0)
        return alen;
    ssize_t w;
    do {
        w = sendto(fd, data, len, MSG_NOSIGNAL, (struct sockaddr *)&sun, (socklen_t)alen);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        return -errno;
    return (size_t)w == len ? 0 : -EMSGSIZE;
}

int mesh_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int r = send_datagram(fd, path, state, strlen(state));
    close(fd);
    return r < 0 ? r : 1;
}

int mesh_sd_watchdog(uint64_t *ret_usec)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    uint64_t v, p;
    if (!usec)
        return 0;
    if (mesh_parse_u64(usec, strlen(usec), &v) < 0 || v == 0)
        return -EINVAL;
    if (pid) {
        if (mesh_parse_u64(pid, strlen(pid), &p) < 0)
            return -EINVAL;
        if (p != (uint64_t)getpid())
            return 0; /* meant for another process */
    }
    *ret_usec = v;
    return 1;
}

/* One socket for the life of the process, opened on first use by whichever thread. */
static atomic_int journal_fd = -1;
static const char *_Atomic journal_path = MESH_SD_JOURNAL_SOCKET;

void mesh_sd__set_journal_socket(const char *path)
{
    atomic_store(&journal_path, path);
}

static int journal_socket(void)
{
    int fd = atomic_load(&journal_fd);
    if (fd >= 0)
        return fd;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int expected = -1;
    if (!atomic_compare_exchange_strong(&journal_fd, &expected, fd)) {
        close(fd);
        return expected;
    }
    return fd;
}

int mesh_sd_journal_send(const struct mesh_sd_field *fields, size_t n)
{
    char storage[16384];
    struct mesh_buf b;
    mesh_buf_init_fixed(&b, storage, sizeof(storage));
    for (size_t i = 0; i < n; i++) {
        const struct mesh_sd_field *f = &fields[i];
        if (!memchr(f->value, '\n', f->value_len)) {
            mesh_buf_append_str(&b, f->key);
            mesh_buf_append(&b, "=", 1);
            mesh_buf_append(&b, f->value, f->value_len);
            mesh_buf_append(&b, "\n", 1);
            continue;
        }
        /* KEY, newline, the size as 64-bit little endian, the bytes, newline. */
        unsigned char size[8];
        uint64_t len = f->value_len;
        for (int k = 0; k < 8; k++)
            size[k] = (unsigned char)(len >> (8 * k));
        mesh_buf_append_str(&b, f->key);
        mesh_buf_append(&b, "\n", 1);
        mesh_buf_append(&b, size, sizeof(size));
        mesh_buf_append(&b, f->value, f->value_len);
        mesh_buf_append(&b, "\n", 1);
    }
    if (b.err)
        return b.err;
    int fd = journal_socket();
    if (fd < 0)
        return fd;
    return send_datagram(fd, atomic_load(&journal_path), b.data, b.len);
}
