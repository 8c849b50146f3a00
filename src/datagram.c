/*
 * datagram.c - the Datagram handler flavour (Python's
 * DatagramRequestHandler): rfile reads the packet in place, wfile collects
 * the reply, and finish sends it as one datagram.
 */
#include "internal.h"


int sks_datagram_setup(sks_handler *h)
{
    sks_request *req = h->request;
    h->conn = sks__conn_make(req->fd, h->cls->timeout);
    h->rf = (struct sks_rfile){
        .buf = (char *)req->packet,
        .cap = req->packet_len ? req->packet_len : 1,
        .end = req->packet_len,
        .eof = true,
    };
    h->wf = (struct sks_wfile){ .conn = &h->conn, .collect = true,
                                .buf = h->reply, .cap = sizeof(h->reply),
                                .borrowed = true };
    h->rfile = &h->rf;
    h->wfile = &h->wf;
    return 0;
}

int sks_datagram_finish(sks_handler *h)
{
    if (h->wfile == NULL)
        return 0;
    /* Always one datagram, even an empty one, and even after handle
     * failed: Python's finish does the same. */
    int err = sks__sendto(h->conn.fd, h->wf.buf, h->wf.len,
                          &h->request->client, sks__conn_deadline(&h->conn));
    sks__release_files(h);
    return err;
}

const sks_handler_class sks_datagram_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "DatagramRequestHandler",
    .setup = sks_datagram_setup,
    .finish = sks_datagram_finish,
};
