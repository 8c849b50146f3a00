/*
 * forking.c - ForkingMixIn: each request runs in a forked child, and the
 * predefined Forking*Server tables.
 *
 * The parent reaps only the children it started (waitpid on each pid, never
 * waitpid(-1), so a foreign child's status stays collectable).  At
 * max_children it stops accepting instead of blocking in waitpid; each
 * child writes to the server's wake-up pipe as it leaves, so the loop
 * reaps it and reopens at once rather than after poll_interval.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void gate(sks_server *srv)
{
    atomic_store(&srv->accept_paused,
                 atomic_load(&srv->nchildren) >= srv->max_children);
}

/* Makes room to record one more child, before forking, so that recording
 * cannot fail once the child exists. */
static int reserve(sks_server *srv)
{
    if (atomic_load(&srv->nchildren) < srv->children_cap)
        return 0;
    size_t ncap = srv->children_cap ? srv->children_cap * 2 : 16;
    pid_t *p = realloc(srv->children, ncap * sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    srv->children = p;
    srv->children_cap = ncap;
    return 0;
}

static void remember(sks_server *srv, pid_t pid)
{
    size_t n = atomic_load(&srv->nchildren);
    srv->children[n] = pid;
    atomic_store(&srv->nchildren, n + 1);
    atomic_fetch_add(&srv->active, 1);
}

static void collect(sks_server *srv, bool blocking)
{
    size_t n = atomic_load(&srv->nchildren);
    for (size_t i = 0; i < n;) {
        pid_t r;
        do
            r = waitpid(srv->children[i], NULL, blocking ? 0 : WNOHANG);
        while (r < 0 && errno == EINTR);
        /* ECHILD: someone else reaped it; forget it too. */
        if (r == srv->children[i] || (r < 0 && errno == ECHILD)) {
            srv->children[i] = srv->children[--n];
            atomic_store(&srv->nchildren, n);
            atomic_fetch_sub(&srv->active, 1);
        } else {
            i++;
        }
    }
    gate(srv);
}

void sks_forking_collect_children(sks_server *srv)
{
    collect(srv, false);
}

/* The child's whole life: it must never return into the server loop. */
_Noreturn static void run_child(sks_server *srv, sks_request *req)
{
    /* The child serves one request; the listening socket is the parent's
     * business (a datagram request uses the server socket itself). */
    if (req->fd != srv->fd)
        sks__close(srv->fd);
    sks__close(srv->wake_rd);
    int err = srv->ops->finish_request(srv, req);
    if (err != 0)
        srv->ops->handle_error(srv, req, err);
    srv->ops->shutdown_request(srv, req);
    sks__wake(srv); /* tell the parent to reap us now */
    _exit(err != 0 ? 1 : 0);
}

int sks_forking_process_request(sks_server *srv, sks_request *req)
{
    int err = reserve(srv);
    if (err != 0)
        return err;
    pid_t pid = fork();
    if (pid < 0)
        return -errno; /* the loop reports it and closes the request */
    if (pid == 0)
        run_child(srv, req);

    remember(srv, pid);
    gate(srv);
    /* close, not shutdown: a FIN from the parent would cut the child's
     * connection. */
    srv->ops->close_request(srv, req);
    sks__request_free(req);
    return 0;
}

void sks_forking_service_actions(sks_server *srv)
{
    collect(srv, false);
    srv->ops->parent->service_actions(srv);
}

void sks_forking_handle_timeout(sks_server *srv)
{
    collect(srv, false);
    srv->ops->parent->handle_timeout(srv);
}

void sks_forking_server_close(sks_server *srv)
{
    srv->ops->parent->server_close(srv);
    collect(srv, srv->block_on_close);
}

void sks_forking_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    *out = *base;
    out->parent = base;
    out->process_request = sks_forking_process_request;
    out->service_actions = sks_forking_service_actions;
    out->handle_timeout = sks_forking_handle_timeout;
    out->server_close = sks_forking_server_close;
}

#define SKS__FORKING_HOOKS                                                   \
    .process_request = sks_forking_process_request,                          \
    .service_actions = sks_forking_service_actions,                          \
    .handle_timeout = sks_forking_handle_timeout,                            \
    .server_close = sks_forking_server_close

const sks_server_ops sks_forking_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ForkingTCPServer",
    .parent = &sks_tcp_ops,
    SKS__TCP_TRANSPORT,
    SKS__FORKING_HOOKS,
};

const sks_server_ops sks_forking_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ForkingUDPServer",
    .parent = &sks_udp_ops,
    SKS__UDP_TRANSPORT,
    SKS__FORKING_HOOKS,
};

const sks_server_ops sks_forking_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ForkingUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__FORKING_HOOKS,
};

const sks_server_ops sks_forking_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ForkingUnixDatagramServer",
    .parent = &sks_unix_dgram_ops,
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__FORKING_HOOKS,
};
