/*
 * server.c - BaseServer's life: creation (tables filled, models attached),
 * close and release, shutdown and the graceful drain.  The request object,
 * the loop, admission, the attributes and the clock have files of their
 * own.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The listen() backlog: the kernel clamps it to its own limit
 * (net.core.somaxconn, kern.ipc.somaxconn).  Not SOMAXCONN, which is a
 * libc header's constant: 4096 in glibc but 128 in musl, so the same
 * program would queue 32 times fewer connections once linked with musl. */
#define DEFAULT_BACKLOG 4096
#define DEFAULT_MAX_PACKET 8192

/* ------------------------------------------------------------------------ */
/* Creation and release                                                      */

static bool family_suits(const sks_server_ops *ops, int family)
{
    if (ops->address_family == AF_UNIX)
        return family == AF_UNIX;
    return family == AF_INET || family == AF_INET6;
}

int sks__server_make(sks_server **out, const sks_server_ops *ops,
                     const sks_addr *address,
                     const sks_handler_class *handler, void *user, int fd)
{
    sks_server *srv;
    int wake[2];
    int err;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    /* Not 0 (stdin): the failure path below closes these when socket()
     * or the pipe fails before they are set. */
    srv->fd = srv->wake_rd = srv->wake_wr = -1;
    srv->address = *address;
    srv->given = ops;
    srv->ops = &srv->table;
    srv->handler = &srv->hclass;
    srv->user = user;
    srv->queue_size = DEFAULT_BACKLOG;
    srv->timeout = -1.0;
    srv->max_packet_size = DEFAULT_MAX_PACKET;
    srv->block_on_close = true;
    /* Request threads' stacks: see sks_server_set_thread_stack_size. */
    srv->stack_size = SKS_DEFAULT_THREAD_STACK_SIZE;
    atomic_init(&srv->refs, 1);
    atomic_init(&srv->spare, NULL);
    atomic_init(&srv->shutdown_request, 0);
    atomic_init(&srv->accepted, 0);
    atomic_init(&srv->completed, 0);
    atomic_init(&srv->failed, 0);
    atomic_init(&srv->refused, 0);
    srv->upgrade.owner = getpid();
    srv->upgrade.timeout = SKS_UPGRADE_TIMEOUT;
    atomic_init(&srv->upgrade.requested, false);
    atomic_init(&srv->upgrade.busy, false);
    atomic_init(&srv->upgrade.handed_over, false);
    atomic_init(&srv->upgrade.cancel, false);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);

    /* The server calls its own filled copies of the tables, so a NULL
     * member never reaches a call; the models are attached now, so their
     * bounds hold before the first request. */
    if ((err = sks__table_fill(&srv->table, ops)) != 0 ||
        (err = sks__handler_fill(&srv->hclass, handler)) != 0 ||
        (err = sks__models_attach(srv)) != 0)
        goto fail;

    /* The wake-up pipe: shutdown (from any thread or a signal handler) and
     * the end of a request at a concurrency bound write one byte, so the
     * loop never sleeps through them. */
    err = sks__pipe(wake);
    if (err != 0)
        goto fail;
    srv->wake_rd = wake[0];
    srv->wake_wr = wake[1];

    if (fd < 0) {
        /* Stream listeners are non-blocking so that a connection reset
         * between poll and accept (or taken by another process sharing the
         * socket) never blocks the loop; accepted sockets are blocking
         * again. */
        fd = sks__socket(address->u.sa.sa_family, ops->socket_type,
                         ops->socket_type == SOCK_STREAM);
        if (fd < 0) {
            err = fd;
            goto fail;
        }
    }
    srv->fd = fd; /* owned from here on */
    *out = srv;
    return 0;

fail:
    srv->closed = true;
    sks_server_free(srv);
    return err;
}

int sks_server_new(sks_server **out, const sks_server_ops *ops,
                   const char *address, const sks_handler_class *handler,
                   void *user, unsigned flags)
{
    sks_addr addr;
    int err;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (ops == NULL || handler == NULL || address == NULL ||
        (ops->socket_type != SOCK_STREAM && ops->socket_type != SOCK_DGRAM))
        return -EINVAL;
    err = sks_addr_parse(address, &addr);
    if (err == 0 && !family_suits(ops, addr.u.sa.sa_family))
        err = -EAFNOSUPPORT;
    if (err == 0)
        err = sks__server_make(out, ops, &addr, handler, user, -1);
    if (err == 0 && !(flags & SKS_NO_BIND)) {
        /* On failure bind_and_activate has closed the socket already. */
        err = sks_server_bind_and_activate(*out);
        if (err != 0) {
            sks_server_free(*out);
            *out = NULL;
        }
    }
    return err;
}

int sks_server_bind_and_activate(sks_server *srv)
{
    int err;
    if (srv->closed)
        return SKS_ECLOSED;
    err = srv->ops->server_bind(srv);
    if (err == 0)
        err = srv->ops->server_activate(srv);
    if (err != 0)
        sks_server_close(srv); /* bpo-22435: no descriptor leaks */
    return err;
}

void sks__server_ref(sks_server *srv)
{
    atomic_fetch_add(&srv->refs, 1);
}

void sks__server_unref(sks_server *srv)
{
    if (atomic_fetch_sub(&srv->refs, 1) != 1)
        return;
    sks__close(srv->wake_rd);
    sks__close(srv->wake_wr);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->cond);
    sks__models_free(srv);
    free(atomic_load(&srv->spare));
    free(srv->upgrade.name);
    free(srv);
}

void sks_server_free(sks_server *srv)
{
    if (srv == NULL)
        return;
    sks_server_close(srv);
    sks__server_unref(srv);
}

void sks_server_close(sks_server *srv)
{
    if (srv->closed)
        return;
    srv->closed = true;
    /* An upgrade under way is given up (its successor killed) first: it
     * passes the listening socket that server_close closes. */
    sks__upgrade_close(srv);
    srv->ops->server_close(srv);
    sks__listeners_close_more(srv);
    /* Even when an override of server_close did not call its super. */
    sks__models_close(srv);
}

void sks_server_request_shutdown(sks_server *srv)
{
    atomic_store(&srv->shutdown_request, 1);
    sks__wake(srv);
}

void sks_server_shutdown(sks_server *srv)
{
    sks_server_request_shutdown(srv);
    pthread_mutex_lock(&srv->lock);
    if (srv->serving && pthread_equal(srv->serving_thread, pthread_self())) {
        /* Waiting here would wait for ourselves (Python deadlocks). */
        pthread_mutex_unlock(&srv->lock);
        return;
    }
    while (!srv->is_shut_down)
        pthread_cond_wait(&srv->cond, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
}

/* Waits until the loop has stopped and no request runs, or the deadline.
 * Once the loop has stopped, this thread does the loop's housekeeping
 * (service_actions, where models notice work that ended), so ends are
 * counted. */
static bool settle(sks_server *srv, double deadline)
{
    for (;;) {
        bool serving = sks__is_serving(srv);
        if (!serving)
            srv->ops->service_actions(srv);
        if (!serving && sks__active(srv) == 0)
            return true;
        if (sks__now() >= deadline)
            return false;
        (void)sks__wait(NULL, 0, sks__now() + 0.002);
    }
}

/* Ends what still runs: connections shut down, and each model's own work
 * (sig for what the model runs in other processes). */
static size_t cut_inflight(sks_server *srv, int sig)
{
    return sks__inflight_cut(srv) + sks__models_cut(srv, sig);
}

int sks_server_drain(sks_server *srv, double timeout, size_t *finished,
                     size_t *cut)
{
    size_t ncut = 0;

    pthread_mutex_lock(&srv->lock);
    bool self = srv->serving && pthread_equal(srv->serving_thread,
                                              pthread_self());
    pthread_mutex_unlock(&srv->lock);
    if (self)
        return -EDEADLK; /* the drain would wait for its own request */

    sks_server_request_shutdown(srv);
    size_t ended0 = atomic_load(&srv->completed) + atomic_load(&srv->failed);
    bool done = settle(srv, sks__now() + (timeout > 0 ? timeout : 0));
    size_t ended = atomic_load(&srv->completed) + atomic_load(&srv->failed);
    if (!done) {
        /* A cut request is given a second to notice; a child that ignores
         * SIGTERM then gets SIGKILL and another second. */
        ncut = cut_inflight(srv, SIGTERM);
        done = settle(srv, sks__now() + 1.0);
        if (!done) {
            (void)cut_inflight(srv, SIGKILL);
            done = settle(srv, sks__now() + 1.0);
        }
    }
    if (finished != NULL)
        *finished = ended - ended0;
    if (cut != NULL)
        *cut = ncut;
    return done ? 0 : -ETIMEDOUT;
}
