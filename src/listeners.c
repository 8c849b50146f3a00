/*
 * listeners.c - a server's set of listening sockets: its socket (srv->fd)
 * and the SO_REUSEPORT siblings bound to the same address, each with an
 * accept queue of its own, among which the kernel spreads connections.
 *
 * Siblings come from socket activation (sockets passed together: an
 * upgrade passes all of a server's) or from a model that wants one per
 * loop (the fiber model).  They live and die with srv->fd: an upgrade
 * passes every one, since closing one would reset the connections queued
 * on it, and server_close closes them after it.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <unistd.h>

/* The socket get_request accepts on in this thread, for accept_srv only
 * (another server's get_request in the same thread uses its own fd). */
static _Thread_local const sks_server *accept_srv;
static _Thread_local int accept_fd = -1;

size_t sks__listeners(const sks_server *srv, int *out, size_t cap)
{
    size_t n = 0;
    if (srv->fd < 0)
        return 0;
    if (n < cap)
        out[n++] = srv->fd;
    for (size_t i = 0; i < srv->nmore && n < cap; i++)
        out[n++] = srv->more[i];
    return n;
}

int sks__listener_adopt(sks_server *srv, int fd)
{
    if (srv->nmore >= SKS__MAX_LISTENERS - 1)
        return -ENOSPC;
    srv->more[srv->nmore++] = fd;
    return 0;
}

static bool has_reuse_port(int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    return getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == 0 && on;
}

int sks__listener_open(sks_server *srv)
{
    int family = srv->address.u.sa.sa_family;
    if (srv->fd < 0 || srv->ops->socket_type != SOCK_STREAM ||
        (family != AF_INET && family != AF_INET6) || !has_reuse_port(srv->fd))
        return -EOPNOTSUPP;
    if (srv->nmore >= SKS__MAX_LISTENERS - 1)
        return -ENOSPC;
    /* Non-blocking and close-on-exec, as srv->fd (see sks_server_new). */
    int fd = sks__socket(family, SOCK_STREAM, true);
    if (fd < 0)
        return fd;
    int one = 1, err = 0;
    if ((srv->reuse_address &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, &srv->address.u.sa, srv->address.len) != 0 ||
        listen(fd, srv->queue_size) != 0)
        err = -errno;
    if (err != 0) {
        sks__close(fd);
        return err;
    }
    srv->more[srv->nmore++] = fd;
    return 0;
}

void sks__listeners_close_more(sks_server *srv)
{
    for (size_t i = 0; i < srv->nmore; i++)
        sks__close(srv->more[i]);
    srv->nmore = 0;
}

void sks__accept_on(const sks_server *srv, int fd)
{
    accept_srv = fd >= 0 ? srv : NULL;
    accept_fd = fd;
}

int sks__accept_fd(const sks_server *srv)
{
    return accept_srv == srv && accept_fd >= 0 ? accept_fd : srv->fd;
}
