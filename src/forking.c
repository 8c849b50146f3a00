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
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

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
}

/* Tries to reap children[i] (waiting for it if `blocking`); true when it
 * is gone from the list, which then holds another child at i. */
static bool reap(sks_server *srv, size_t i, bool blocking)
{
    pid_t r;
    int status = 0;
    do
        r = waitpid(srv->children[i], &status, blocking ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    /* ECHILD: someone else reaped it; forget it too. */
    if (r != srv->children[i] && !(r < 0 && errno == ECHILD))
        return false;
    size_t n = atomic_load(&srv->nchildren) - 1;
    srv->children[i] = srv->children[n];
    atomic_store(&srv->nchildren, n);
    /* The child's exit status is its request's outcome. */
    sks__count_end(srv, r < 0 || !WIFEXITED(status) ||
                            WEXITSTATUS(status) != 0);
    return true;
}

static ssize_t index_of(const sks_server *srv, pid_t pid)
{
    size_t n = atomic_load(&srv->nchildren);
    for (size_t i = 0; i < n; i++)
        if (srv->children[i] == pid)
            return (ssize_t)i;
    return -1;
}

/*
 * Without blocking, only the children that have exited are looked at: one
 * waitid() that reaps nothing (WNOWAIT) names an exited child, which is
 * reaped by its pid, until none is left.  A busy server so pays about one
 * waitpid per child it started instead of one per running child on every
 * turn.  When waitid names a child that is not ours (its status must stay
 * collectable by its owner), or fails (ECHILD: the list is stale), every
 * child is looked at, as when blocking.
 */
static void collect(sks_server *srv, bool blocking)
{
    while (!blocking && atomic_load(&srv->nchildren) > 0) {
        siginfo_t si;
        si.si_pid = 0;
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
            break;
        if (si.si_pid == 0)
            return;
        ssize_t i = index_of(srv, si.si_pid);
        if (i < 0)
            break;
        if (!reap(srv, (size_t)i, false))
            break;
    }
    for (size_t i = 0; i < atomic_load(&srv->nchildren);)
        if (!reap(srv, i, blocking))
            i++;
}

void sks_forking_collect_children(sks_server *srv)
{
    collect(srv, false);
}

/*
 * A child must not answer the parent's shutdown signals as the parent does
 * (an inherited SIGTERM handler would only stop the child's copy of the
 * loop, which is not running): it takes their default action, so a drain
 * can end it.  Ignored signals stay ignored.
 */
static void default_shutdown_signals(void)
{
    static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigemptyset(&dfl.sa_mask);
    /* Set and read the old action in one call (one system call per
     * signal, every request); put SIG_IGN back in the rare case. */
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction old;
        if (sigaction(sigs[i], &dfl, &old) == 0 && old.sa_handler == SIG_IGN)
            sigaction(sigs[i], &old, NULL);
    }
}

/* The child's whole life: it must never return into the server loop. */
_Noreturn static void run_child(sks_server *srv, sks_request *req)
{
    /* The child serves one request; the listening socket is the parent's
     * business (a datagram request uses the server socket itself). */
    if (req->fd != srv->fd)
        sks__close(srv->fd);
    /* The wake-up pipe's read end is left open (it goes at _exit, and is
     * close-on-exec): the child never reads it, and holding it changes
     * nothing for the parent, whose writes never block (O_NONBLOCK, and a
     * full pipe already holds a pending wake-up).  Closing it cost every
     * request a system call that the hand-written child does not make. */
    default_shutdown_signals();
    int err = srv->ops->finish_request(srv, req);
    if (err != 0)
        sks_server_handle_error(srv, req, err);
    srv->ops->shutdown_request(srv, req);
    sks__wake(srv); /* tell the parent to reap us now */
    _exit(err != 0 ? 1 : 0);
}

int sks_forking_process_request(sks_server *srv, sks_request *req)
{
    /* The loop stops accepting at this bound (or refuses, by policy). */
    srv->mixin_limit = srv->max_children;
    int err = reserve(srv);
    if (err != 0)
        return err;
    pid_t pid = fork();
    if (pid < 0)
        return -errno; /* the loop reports it and closes the request */
    if (pid == 0)
        run_child(srv, req);

    remember(srv, pid);
    /* close, not shutdown: a FIN from the parent would cut the child's
     * connection.  The request stays counted as active until the child is
     * reaped; its exit status decides completed or failed. */
    sks__request_release(srv, req);
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
