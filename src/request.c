/*
 * request.c - the request object: its memory (a datagram's kept for the
 * next one), its accessors, and the dispatchers that end it through the
 * server's table.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sks_request *sks__request_new(sks_server *srv, int fd, size_t packet_cap)
{
    sks_request *req = NULL;
    if (packet_cap > 0) {
        req = atomic_exchange(&srv->spare, NULL);
        if (req != NULL && req->packet_cap != packet_cap) {
            free(req); /* max_packet_size changed */
            req = NULL;
        }
    }
    if (req == NULL)
        req = malloc(sizeof(*req) + packet_cap);
    if (req == NULL)
        return NULL;
    req->packet_cap = packet_cap;
    req->fd = fd;
    memset(&req->client, 0, sizeof(req->client));
    req->packet_len = 0;
    req->truncated = false;
    req->datagram = packet_cap > 0;
    req->admitted = false;
    atomic_init(&req->wait.idle_since, 0.0);
    atomic_init(&req->wait.waiting_since, 0.0);
    atomic_init(&req->wait.shed, false);
    req->failed = false;
    req->proxied = false;
    req->prev = req->next = NULL;
    return req;
}

void sks__request_free(sks_server *srv, sks_request *req)
{
    if (req->datagram)
        req = atomic_exchange(&srv->spare, req);
    free(req);
}

int sks_request_fd(const sks_request *req)
{
    return req->fd;
}

const sks_addr *sks_request_client_address(const sks_request *req)
{
    return &req->client;
}

const void *sks_request_packet(const sks_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->datagram ? req->packet_len : 0;
    return req->datagram ? req->packet : NULL;
}

bool sks_request_truncated(const sks_request *req)
{
    return req->truncated;
}

int sks_request_reply(sks_request *req, const void *buf, size_t n)
{
    if (req->datagram)
        return sks__sendto(req->fd, buf, n, &req->client, INFINITY);
    struct sks__conn c = sks__conn_make(req->fd, 0);
    return sks__conn_send_all(&c, buf, n);
}

/* ------------------------------------------------------------------------ */
/* Dispatchers                                                               */

int sks_server_finish_request(sks_server *srv, sks_request *req)
{
    return srv->ops->finish_request(srv, req);
}

void sks_server_shutdown_request(sks_server *srv, sks_request *req)
{
    bool admitted = req->admitted, failed = req->failed;
    if (admitted && !req->datagram)
        sks__inflight_remove(srv, req);
    srv->ops->shutdown_request(srv, req);
    sks__request_free(srv, req);
    if (admitted)
        sks__count_end(srv, failed);
}

void sks__request_release(sks_server *srv, sks_request *req)
{
    if (req->admitted && !req->datagram)
        sks__inflight_remove(srv, req);
    srv->ops->close_request(srv, req);
    sks__request_free(srv, req);
}

void sks_server_handle_error(sks_server *srv, sks_request *req, int err)
{
    if (req != NULL)
        req->failed = true;
    srv->ops->handle_error(srv, req, err);
}
