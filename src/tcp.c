/*
 * tcp.c - TCPServer: bind with the reuse options, listen, accept, and the
 * SHUT_WR-then-close end of a connection.  UnixStreamServer shares all of
 * it but bind and close (unix.c); UDPServer shares bind (udp.c).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <unistd.h>

int sks__bind(sks_server *srv)
{
    int one = 1;
    int family = srv->address.u.sa.sa_family;

    if (srv->reuse_address &&
        setsockopt(srv->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        return -errno;
    /* As CPython since gh-128916: Linux 6.12.9 rejects SO_REUSEPORT on
     * anything but IPv4/IPv6 sockets. */
    if (srv->reuse_port && (family == AF_INET || family == AF_INET6) &&
        setsockopt(srv->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        return -errno;
    if (bind(srv->fd, &srv->address.u.sa, srv->address.len) != 0)
        return -errno;
    /* Port 0 becomes the real port; Python stores getsockname() too. */
    sks_addr bound;
    bound.len = sizeof(bound.u.ss);
    if (getsockname(srv->fd, &bound.u.sa, &bound.len) != 0)
        return -errno;
    srv->address = bound;
    return 0;
}

int sks_tcp_server_bind(sks_server *srv)
{
    return sks__bind(srv);
}

int sks_tcp_server_activate(sks_server *srv)
{
    if (listen(srv->fd, srv->queue_size) != 0)
        return -errno;
    return 0;
}

int sks_tcp_get_request(sks_server *srv, sks_request **out)
{
    sks_addr peer;
    int fd = sks__accept(sks__accept_fd(srv), &peer);

    if (fd < 0)
        return fd;
    sks_request *req = sks__request_new(srv, fd, 0);
    if (req == NULL) {
        sks__close(fd);
        return -ENOMEM;
    }
    req->client = peer;
    *out = req;
    return 0;
}

void sks_tcp_shutdown_request(sks_server *srv, sks_request *req)
{
    /* An explicit FIN: close() alone only drops our reference, and a
     * forked child may still hold the socket.  ENOTCONN (peer already
     * gone) is expected and ignored, as in Python. */
    (void)shutdown(req->fd, SHUT_WR);
    srv->ops->close_request(srv, req);
}

void sks_tcp_close_request(sks_server *srv, sks_request *req)
{
    (void)srv;
    sks__close(req->fd);
    req->fd = -1;
}

void sks_tcp_server_close(sks_server *srv)
{
    sks__close(srv->fd);
    srv->fd = -1;
}

const sks_server_ops sks_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "TCPServer",
    SKS__TCP_TRANSPORT,
    SKS__SYNC_HOOKS,
    .server_close = sks_tcp_server_close,
};
