/*
 * transport.c - which transport a stream connection's bytes go through
 * (sks_transport), and the points of a connection's life where the core
 * hands over to it: start in the worker before the handler's setup
 * returns, shutdown at the stream's end, close when its buffers go.  The
 * plain transport's members are io.c's; a layered one (TLS) lives in its
 * own library and reaches the socket through io.c's sks_conn_* calls.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>

int sks_server_set_transport(sks_server *srv, const sks_transport *t,
                             void *arg, double start_timeout)
{
    if (srv->ops->socket_type != SOCK_STREAM)
        return -EOPNOTSUPP;
    if (t != NULL && (t->version > SKS_TRANSPORT_VERSION || t->recv == NULL ||
                      t->send == NULL))
        return -EINVAL;
    srv->transport = t == &sks_plain_transport ? NULL : t;
    srv->transport_arg = arg;
    srv->transport_timeout = start_timeout > 0 ? start_timeout : INFINITY;
    return 0;
}

int sks__conn_start(struct sks__conn *c, const sks_server *srv)
{
    const sks_transport *t = srv->transport;
    if (t == NULL)
        return 0;
    c->transport = t;
    c->transport_state = NULL;
    if (t->start == NULL)
        return 0;
    /* The start's own deadline, whatever the handler class's limits: they
     * are armed after it (sks__conn_limits), for the request itself. */
    double saved = c->deadline;
    c->deadline = sks__deadline_in(srv->transport_timeout);
    c->starting = true;
    int err = t->start(c, srv->transport_arg, &c->transport_state);
    c->starting = false;
    c->deadline = saved;
    if (err != 0)
        c->transport = &sks_plain_transport;
    return err < 0 ? err : 0;
}

void sks__conn_end(struct sks__conn *c)
{
    if (c->transport->shutdown != NULL)
        c->transport->shutdown(c);
}

void sks__conn_close(struct sks__conn *c)
{
    if (c->transport->close != NULL)
        c->transport->close(c);
    c->transport = &sks_plain_transport;
    c->transport_state = NULL;
}

sks_conn *sks_handler_conn(sks_handler *h)
{
    return h->wfile != NULL && !h->request->datagram ? &h->conn : NULL;
}

const sks_transport *sks_conn_transport(const sks_conn *c)
{
    return c->transport;
}

void *sks_conn_state(const sks_conn *c)
{
    return c->transport_state;
}
