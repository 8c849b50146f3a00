/*
 * udp.c - UDPServer: no listen, one datagram per request (read into the
 * request, truncation reported), and no shutdown or close of the shared
 * server socket per request.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>

int sks_udp_server_activate(sks_server *srv)
{
    (void)srv;
    return 0;
}

/*
 * With IP_RECVERR (or IPV6_RECVERR) set on the socket, each ICMP error also
 * waits in the socket's error queue, and poll reports POLLERR until it is
 * read: recvfrom alone never empties it, so the loop would spin at full
 * CPU.  Read it out (bounded).  Only for IP sockets: AF_UNIX ignores
 * MSG_ERRQUEUE and would hand over a real datagram instead.
 */
static void drain_error_queue(sks_server *srv)
{
    int family = srv->address.u.sa.sa_family;
    if (family == AF_INET || family == AF_INET6)
        sks__drain_error_queue(srv->fd);
}

int sks_udp_get_request(sks_server *srv, sks_request **out)
{
    sks_request *req = sks__request_new(srv, srv->fd, srv->max_packet_size);
    if (req == NULL)
        return -ENOMEM;
    /* Errors here include ECONNREFUSED from an earlier ICMP "port
     * unreachable": the loop ignores them and goes on serving. */
    ssize_t n = sks__recvfrom(srv->fd, req->packet, srv->max_packet_size,
                              &req->client, &req->truncated);
    if (n < 0) {
        sks__request_free(srv, req);
        drain_error_queue(srv);
        return (int)n;
    }
    req->packet_len = (size_t)n;
    *out = req;
    return 0;
}

void sks_udp_shutdown_request(sks_server *srv, sks_request *req)
{
    srv->ops->close_request(srv, req);
}

void sks_udp_close_request(sks_server *srv, sks_request *req)
{
    /* The request's socket is the server's: nothing to close. */
    (void)srv;
    (void)req;
}

const sks_server_ops sks_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "UDPServer",
    SKS__UDP_TRANSPORT,
    SKS__SYNC_HOOKS,
    .server_close = sks_tcp_server_close,
};
