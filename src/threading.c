/*
 * threading.c - ThreadingMixIn: each request runs in a new thread, and the
 * predefined Threading*Server tables.
 *
 * Bookkeeping stays proportional to the requests running, never to those
 * served (bpo-37193): a thread that must be joined (block_on_close, not a
 * daemon) puts itself on the `done` list as it ends, and the serving
 * thread joins that list on its next turn; other threads are detached.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

struct sks__thread {
    pthread_t tid;
    sks_server *srv;
    sks_request *req;
    bool tracked;
    struct sks__thread *next;
};

static void *request_thread(void *arg)
{
    struct sks__thread *t = arg;
    sks_server *srv = t->srv;
    sks_request *req = t->req;
    bool tracked = t->tracked;

    int err = srv->ops->finish_request(srv, req);
    if (err != 0)
        sks_server_handle_error(srv, req, err);
    sks_server_shutdown_request(srv, req);

    pthread_mutex_lock(&srv->lock);
    srv->nthreads--;
    if (tracked) {
        /* From here on t belongs to the joiner. */
        t->next = srv->done;
        srv->done = t;
        srv->ntracked--;
        pthread_cond_broadcast(&srv->cond);
    }
    pthread_mutex_unlock(&srv->lock);
    if (!tracked)
        free(t);
    sks__server_unref(srv);
    return NULL;
}

/*
 * Joins the threads that have ended.  A thread puts itself on `done` just
 * before it returns, so one may not have exited yet: joining it would put
 * the serving thread to sleep (a futex wait and two context switches, for
 * about every other request on a busy server).  Unless `wait` is set, such
 * a thread stays on the list for a later turn, as Python's reap() keeps
 * the threads still alive.
 */
static void reap(sks_server *srv, bool wait)
{
    struct sks__thread *keep = NULL;

    pthread_mutex_lock(&srv->lock);
    struct sks__thread *t = srv->done;
    srv->done = NULL;
    pthread_mutex_unlock(&srv->lock);
    while (t != NULL) {
        struct sks__thread *next = t->next;
        if (wait) {
            pthread_join(t->tid, NULL);
            free(t);
        } else if (pthread_tryjoin_np(t->tid, NULL) == EBUSY) {
            t->next = keep;
            keep = t;
        } else {
            free(t);
        }
        t = next;
    }
    if (keep == NULL)
        return;
    pthread_mutex_lock(&srv->lock);
    t = keep;
    while (t->next != NULL)
        t = t->next;
    t->next = srv->done;
    srv->done = keep;
    pthread_mutex_unlock(&srv->lock);
}

int sks_threading_process_request(sks_server *srv, sks_request *req)
{
    pthread_attr_t attr;
    struct sks__thread *t;
    int err;

    reap(srv, false);
    /* The loop stops accepting at this bound (or refuses, by policy).
     * Written only when it changes: request threads read it as they end
     * (sks__count_end), and a rewrite of the same value is still a data
     * race for them. */
    if (srv->mixin_limit != srv->max_threads)
        srv->mixin_limit = srv->max_threads;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->srv = srv;
    t->req = req;
    t->tracked = srv->block_on_close && !srv->daemon_threads;

    if ((err = pthread_attr_init(&attr)) != 0) {
        free(t);
        return -err;
    }
    if (!t->tracked)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (srv->stack_size != 0)
        pthread_attr_setstacksize(&attr, srv->stack_size);

    pthread_mutex_lock(&srv->lock);
    srv->nthreads++;
    if (t->tracked)
        srv->ntracked++;
    pthread_mutex_unlock(&srv->lock);

    sks__server_ref(srv);
    err = pthread_create(&t->tid, &attr, request_thread, t);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        /* EAGAIN and friends: the loop reports it and closes the request. */
        pthread_mutex_lock(&srv->lock);
        srv->nthreads--;
        if (t->tracked)
            srv->ntracked--;
        pthread_mutex_unlock(&srv->lock);
        sks__server_unref(srv);
        free(t);
        return -err;
    }
    return 0;
}

void sks_threading_service_actions(sks_server *srv)
{
    reap(srv, false);
    srv->ops->parent->service_actions(srv);
}

void sks_threading_server_close(sks_server *srv)
{
    /* Close the listening socket first, then wait: as Python. */
    srv->ops->parent->server_close(srv);
    /* Joinable threads exist only with block_on_close (and no daemon
     * threads): those are waited for; the rest were detached. */
    pthread_mutex_lock(&srv->lock);
    while (srv->ntracked > 0)
        pthread_cond_wait(&srv->cond, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    reap(srv, true);
}

void sks_threading_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    *out = *base;
    out->parent = base;
    out->process_request = sks_threading_process_request;
    out->service_actions = sks_threading_service_actions;
    out->server_close = sks_threading_server_close;
}

const sks_server_ops sks_threading_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingTCPServer",
    .parent = &sks_tcp_ops,
    SKS__TCP_TRANSPORT,
    SKS__THREADING_HOOKS,
};

const sks_server_ops sks_threading_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingUDPServer",
    .parent = &sks_udp_ops,
    SKS__UDP_TRANSPORT,
    SKS__THREADING_HOOKS,
};

const sks_server_ops sks_threading_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__THREADING_HOOKS,
};

const sks_server_ops sks_threading_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingUnixDatagramServer",
    .parent = &sks_unix_dgram_ops,
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__THREADING_HOOKS,
};
