/*
 * handler.c - BaseRequestHandler: the per-request instance and
 * finish_request, which runs setup, handle and finish in Python's order.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

void sks__release_files(sks_handler *h)
{
    if (h->wfile == NULL)
        return;
    if (!h->wf.borrowed)
        free(h->wf.buf);
    if (h->rf.lent)
        sks__wait_give(h->rf.buf, h->rf.cap);
    else if (h->rf.owned)
        free(h->rf.buf);
    sks__conn_close(&h->conn);
    h->rfile = NULL;
    h->wfile = NULL;
}

/* What a request cut at its connection's deadline, or shed, returns: see
 * "Deadlines" in sockserver.h. */
static int deadline_verdict(sks_server *srv, const sks_handler *h, int err)
{
    if (h->conn.cut == SKS__CUT_NONE && !atomic_load(&h->request->wait.shed))
        return err;
    atomic_fetch_add(&srv->timed_out, 1);
    if (h->conn.cut != SKS__CUT_REQUEST)
        return err == -ETIMEDOUT ? 0 : err;
    return -ETIMEDOUT;
}

int sks_base_finish_request(sks_server *srv, sks_request *req)
{
    const sks_handler_class *cls = srv->handler;
    /* Field by field, not `= { ... }`: an initializer zeroes the whole
     * instance, reply[] included, which was a sixth of a datagram server's
     * own instructions per datagram.  rf and wf stay unset until a
     * flavour's setup writes them whole, just before it points rfile and
     * wfile at them; nothing reads them through a NULL rfile or wfile. */
    sks_handler h;
    h.server = srv;
    h.request = req;
    h.cls = cls;
    h.user = NULL;
    h.rfile = NULL;
    h.wfile = NULL;
    /* Read after finish (deadline_verdict) whether or not a flavour's
     * setup made the connection. */
    h.conn.cut = SKS__CUT_NONE;
    /* The PROXY header is read here, in the request's own thread or child,
     * so that a slow or silent proxy never holds up the accept loop; a bad
     * header ends the request before the handler sees it. */
    if (srv->proxy_versions != 0 && !req->datagram) {
        int perr = sks__proxy_accept(srv, req);
        if (perr != 0)
            return perr;
    }
    /* Zero or positive is success (a handler may return a byte count),
     * negative an error. */
    int err = cls->setup ? cls->setup(&h) : 0;
    if (err < 0) {
        /* As Python: no handle, no finish after a failed setup.  But a
         * setup override that ran the flavour's setup before failing would
         * leak its buffers on every such request: release them here. */
        sks__release_files(&h);
        return deadline_verdict(srv, &h, err);
    }
    int herr = cls->handle ? cls->handle(&h) : 0;
    int ferr = cls->finish ? cls->finish(&h) : 0;
    atomic_store(&req->wait.idle_since, 0.0);
    return deadline_verdict(srv, &h, ferr < 0 ? ferr : herr < 0 ? herr : 0);
}

sks_server *sks_handler_server(const sks_handler *h)
{
    return h->server;
}

sks_request *sks_handler_request(const sks_handler *h)
{
    return h->request;
}

const sks_addr *sks_handler_client_address(const sks_handler *h)
{
    return &h->request->client;
}

sks_rfile *sks_handler_rfile(const sks_handler *h)
{
    return h->rfile;
}

sks_wfile *sks_handler_wfile(const sks_handler *h)
{
    return h->wfile;
}

void *sks_handler_get_user(const sks_handler *h)
{
    return h->user;
}

void sks_handler_set_user(sks_handler *h, void *user)
{
    h->user = user;
}

int sks_handler_await_request(sks_handler *h)
{
    if (h->wfile == NULL || h->request->datagram)
        return -EINVAL;
    sks__conn_await_request(&h->conn, h->rf.pos < h->rf.end);
    return 0;
}

int sks_handler_set_deadline(sks_handler *h, double seconds)
{
    if (h->wfile == NULL || h->request->datagram || isnan(seconds) ||
        seconds < 0)
        return -EINVAL;
    sks__conn_set_deadline(&h->conn, seconds);
    return 0;
}

double sks_deadline_for_rate(double bytes, double min_rate, double slack)
{
    if (!(min_rate > 0))
        return INFINITY;
    return bytes / min_rate + (slack > 0 ? slack : 0);
}

int sks_handler_set_timeout(sks_handler *h, double seconds)
{
    if (h->wfile == NULL || isnan(seconds) || seconds < 0)
        return -EINVAL;
    /* Read by the next operation: a kernel timeout already set for the
     * old value is corrected by the I/O layer when it would overshoot. */
    h->conn.timeout = sks__conn_make(h->conn.fd, seconds).timeout;
    return 0;
}
