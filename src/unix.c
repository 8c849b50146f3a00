/*
 * unix.c - UnixStreamServer and UnixDatagramServer: the TCP and UDP hooks
 * over AF_UNIX, plus the socket-file policy at bind and close.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

/* A filesystem path (not abstract, not unnamed)? */
static const char *socket_path(const sks_addr *a)
{
    if (a->u.sa.sa_family != AF_UNIX ||
        a->len <= offsetof(struct sockaddr_un, sun_path) ||
        a->u.un.sun_path[0] == '\0')
        return NULL;
    return a->u.un.sun_path;
}

/*
 * A stale socket file is one nobody listens on: a connect() to it is
 * refused.  Anything else (a live server, a regular file, a permission
 * problem) is left alone.
 */
static bool is_stale_socket(const sks_server *srv, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return false;
    /* Non-blocking: a live server whose backlog is full would make a
     * blocking connect wait for it; EAGAIN says "alive" at once. */
    int fd = sks__socket(AF_UNIX, srv->ops->socket_type, true);
    if (fd < 0)
        return false;
    int r;
    do
        r = connect(fd, &srv->address.u.sa, srv->address.len);
    while (r != 0 && errno == EINTR);
    bool stale = r != 0 && errno == ECONNREFUSED;
    sks__close(fd);
    return stale;
}

int sks_unix_server_bind(sks_server *srv)
{
    const char *path = socket_path(&srv->address);
    int err = sks__bind(srv);

    if (err == -EADDRINUSE && path != NULL && srv->unlink_stale &&
        is_stale_socket(srv, path)) {
        if (unlink(path) != 0 && errno != ENOENT)
            return -errno;
        err = sks__bind(srv);
    }
    if (err != 0)
        return err;
    /* Remember which file we made, so close removes only that one. */
    struct stat st;
    path = socket_path(&srv->address);
    if (path != NULL && lstat(path, &st) == 0) {
        srv->have_sock_file = true;
        srv->sock_dev = st.st_dev;
        srv->sock_ino = st.st_ino;
    }
    return 0;
}

void sks_unix_server_close(sks_server *srv)
{
    const char *path = socket_path(&srv->address);
    struct stat st;

    sks__close(srv->fd);
    srv->fd = -1;
    if (srv->unlink_on_close && srv->have_sock_file && path != NULL &&
        lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_dev == srv->sock_dev && st.st_ino == srv->sock_ino)
        (void)unlink(path);
    srv->have_sock_file = false;
}

const sks_server_ops sks_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "UnixStreamServer",
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__SYNC_HOOKS,
    .server_close = sks_unix_server_close,
};

const sks_server_ops sks_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "UnixDatagramServer",
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__SYNC_HOOKS,
    .server_close = sks_unix_server_close,
};
