/*
 * base.c - BaseServer's hooks, which every transport's table shares and
 * which fill what a table leaves out: the synchronous process_request,
 * the default handle_error report, and the hooks that do nothing.
 */
#include "internal.h"

#include <stdio.h>

bool sks_base_verify_request(sks_server *srv, sks_request *req)
{
    (void)srv;
    (void)req;
    return true;
}

int sks_base_process_request(sks_server *srv, sks_request *req)
{
    int err = srv->ops->finish_request(srv, req);
    if (err < 0)
        return err; /* the loop reports it, then shuts the request down */
    sks_server_shutdown_request(srv, req);
    return 0;
}

void sks_base_shutdown_request(sks_server *srv, sks_request *req)
{
    srv->ops->close_request(srv, req);
}

void sks_base_close_request(sks_server *srv, sks_request *req)
{
    (void)srv;
    (void)req;
}

void sks_base_handle_error(sks_server *srv, sks_request *req, int err)
{
    char addr[SKS_ADDRSTRLEN] = "unknown";
    (void)srv;
    if (req != NULL && sks_addr_format(&req->client, addr, sizeof(addr)) < 0)
        snprintf(addr, sizeof(addr), "unknown");
    /* One fprintf, under the stream lock, so that blocks from requests
     * running concurrently do not interleave. */
    flockfile(stderr);
    fprintf(stderr,
            "----------------------------------------\n"
            "Exception occurred during processing of request from %s\n"
            "Error: %s (%s)\n"
            "----------------------------------------\n",
            addr, sks_strerror(err), sks_errname(err));
    funlockfile(stderr);
}

void sks_base_handle_timeout(sks_server *srv)
{
    (void)srv;
}

void sks_base_service_actions(sks_server *srv)
{
    (void)srv;
}

void sks_base_refuse_request(sks_server *srv, sks_request *req)
{
    (void)srv;
    (void)req;
}
