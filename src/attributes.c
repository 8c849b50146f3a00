/*
 * attributes.c - the server's attributes: what it is (socket, address,
 * table, user pointer) and the options every server reads (bind options,
 * timeout, packet size, Unix socket file policy, and the two that every
 * model running requests elsewhere reads).  A model's own options live in
 * the model's file.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>

int sks_server_fileno(const sks_server *srv)
{
    return srv->fd;
}

const sks_addr *sks_server_address(const sks_server *srv)
{
    return &srv->address;
}

int sks_server_address_family(const sks_server *srv)
{
    return srv->address.u.sa.sa_family;
}

int sks_server_socket_type(const sks_server *srv)
{
    return srv->ops->socket_type;
}

const sks_server_ops *sks_server_ops_of(const sks_server *srv)
{
    return srv->given;
}

void *sks_server_user(const sks_server *srv)
{
    return srv->user;
}

int sks_server_set_allow_reuse_address(sks_server *srv, bool on)
{
    srv->reuse_address = on;
    return 0;
}

int sks_server_set_allow_reuse_port(sks_server *srv, bool on)
{
    srv->reuse_port = on;
    return 0;
}

int sks_server_set_request_queue_size(sks_server *srv, int n)
{
    if (n < 0)
        return -EINVAL;
    srv->queue_size = n;
    return 0;
}

int sks_server_set_timeout(sks_server *srv, double seconds)
{
    if (isnan(seconds))
        return -EINVAL;
    srv->timeout = seconds < 0 ? -1.0 : seconds;
    return 0;
}

double sks_server_timeout(const sks_server *srv)
{
    return srv->timeout;
}

int sks_server_set_max_packet_size(sks_server *srv, size_t n)
{
    if (n == 0 || n > (1u << 24))
        return -EINVAL;
    srv->max_packet_size = n;
    return 0;
}

int sks_server_set_unlink_stale(sks_server *srv, bool on)
{
    srv->unlink_stale = on;
    return 0;
}

int sks_server_set_unlink_on_close(sks_server *srv, bool on)
{
    srv->unlink_on_close = on;
    return 0;
}

int sks_server_set_block_on_close(sks_server *srv, bool on)
{
    srv->block_on_close = on;
    return 0;
}

int sks_server_set_thread_stack_size(sks_server *srv, size_t bytes)
{
    if (bytes != 0 && bytes < 16384)
        return -EINVAL;
    srv->stack_size = bytes;
    return 0;
}
