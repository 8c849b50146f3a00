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

#define DEFAULT_MAX_THREADS 1024

/* The model's state.  The counts and the list are kept under srv->lock,
 * which the request threads share with the serving thread. */
struct threading {
    bool daemon_threads;
    size_t max_threads;
    size_t nthreads;           /* request threads running */
    size_t ntracked;           /* joinable threads still running */
    struct sks__thread *done;  /* joinable threads that ended */
};

struct sks__thread {
    pthread_t tid;
    sks_server *srv;
    struct threading *th;
    sks_request *req;
    bool tracked;
    atomic_bool ended; /* set by the thread as its last act */
    struct sks__thread *next;
};

static void *request_thread(void *arg)
{
    struct sks__thread *t = arg;
    sks_server *srv = t->srv;
    sks_request *req = t->req;
    struct threading *th = t->th;
    bool tracked = t->tracked;

    int err = srv->ops->finish_request(srv, req);
    if (err < 0)
        sks_server_handle_error(srv, req, err);
    sks_server_shutdown_request(srv, req);

    pthread_mutex_lock(&srv->lock);
    th->nthreads--;
    if (tracked) {
        /* From here on t belongs to the joiner. */
        t->next = th->done;
        th->done = t;
        th->ntracked--;
        pthread_cond_broadcast(&srv->cond);
    }
    pthread_mutex_unlock(&srv->lock);
    if (!tracked)
        free(t);
    sks__server_unref(srv);
    if (tracked)
        sks__thread_ended(&t->ended);
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
static void reap(sks_server *srv, struct threading *th, bool wait)
{
    struct sks__thread *keep = NULL;

    pthread_mutex_lock(&srv->lock);
    struct sks__thread *t = th->done;
    th->done = NULL;
    pthread_mutex_unlock(&srv->lock);
    while (t != NULL) {
        struct sks__thread *next = t->next;
        if (wait) {
            pthread_join(t->tid, NULL);
            free(t);
        } else if (sks__thread_tryjoin(t->tid, &t->ended) == EBUSY) {
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
    t->next = th->done;
    th->done = keep;
    pthread_mutex_unlock(&srv->lock);
}

int sks_threading_process_request(sks_server *srv, sks_request *req)
{
    struct threading *th = sks__model_state(srv, &sks__threading_model);
    pthread_attr_t attr;
    struct sks__thread *t;
    int err;

    if (th == NULL)
        return -EINVAL; /* a table naming this hook but another model */
    reap(srv, th, false);
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->srv = srv;
    t->th = th;
    t->req = req;
    t->tracked = srv->block_on_close && !th->daemon_threads;

    if ((err = pthread_attr_init(&attr)) != 0) {
        free(t);
        return -err;
    }
    if (!t->tracked)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (srv->stack_size != 0)
        pthread_attr_setstacksize(&attr, srv->stack_size);

    pthread_mutex_lock(&srv->lock);
    th->nthreads++;
    if (t->tracked)
        th->ntracked++;
    pthread_mutex_unlock(&srv->lock);

    sks__server_ref(srv);
    /* Into a local: a detached thread may end, and free t, before
     * pthread_create returns (musl stores the id only once the thread has
     * started).  A tracked thread's t lives until it is joined, by this
     * thread (reap) or by close, both after this returns. */
    bool tracked = t->tracked;
    pthread_t tid;
    err = pthread_create(&tid, &attr, request_thread, t);
    pthread_attr_destroy(&attr);
    if (err == 0 && tracked)
        t->tid = tid;
    if (err != 0) {
        /* EAGAIN and friends: the loop reports it and closes the request. */
        pthread_mutex_lock(&srv->lock);
        th->nthreads--;
        if (t->tracked)
            th->ntracked--;
        pthread_mutex_unlock(&srv->lock);
        sks__server_unref(srv);
        free(t);
        return -err;
    }
    return 0;
}

void sks_threading_service_actions(sks_server *srv)
{
    struct threading *th = sks__model_state(srv, &sks__threading_model);
    if (th != NULL)
        reap(srv, th, false);
    sks__model_super(srv, &sks__threading_model)->service_actions(srv);
}

/* Joinable threads exist only with block_on_close (and no daemon
 * threads): those are waited for; the rest were detached. */
static void threading_close(sks_server *srv, void *state)
{
    struct threading *th = state;
    pthread_mutex_lock(&srv->lock);
    while (th->ntracked > 0)
        pthread_cond_wait(&srv->cond, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    reap(srv, th, true);
}

void sks_threading_server_close(sks_server *srv)
{
    /* Close the listening socket first, then wait: as Python. */
    sks__model_super(srv, &sks__threading_model)->server_close(srv);
    void *th = sks__model_state(srv, &sks__threading_model);
    if (th != NULL)
        threading_close(srv, th);
}

static int threading_attach(sks_server *srv, void **state)
{
    (void)srv;
    struct threading *th = calloc(1, sizeof(*th));
    if (th == NULL)
        return -ENOMEM;
    th->max_threads = DEFAULT_MAX_THREADS;
    *state = th;
    return 0;
}

static size_t threading_limit(const void *state)
{
    const struct threading *th = state;
    return th->max_threads;
}

const sks_model sks__threading_model = {
    .name = "threading",
    .roles = SKS__RUNS_REQUESTS,
    .process_request = sks_threading_process_request,
    .attach = threading_attach,
    .limit = threading_limit,
    .close = threading_close,
    .free = free,
};

int sks_server_set_daemon_threads(sks_server *srv, bool on)
{
    struct threading *th = sks__model_state(srv, &sks__threading_model);
    if (th != NULL) /* else not a threading server: nothing to set */
        th->daemon_threads = on;
    return 0;
}

int sks_server_set_max_threads(sks_server *srv, size_t n)
{
    struct threading *th = sks__model_state(srv, &sks__threading_model);
    if (th != NULL)
        th->max_threads = n;
    return 0;
}

int sks_threading_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    int err = sks__mixin_wrap(out, base, &sks__threading_model);
    if (err != 0)
        return err;
    out->process_request = sks_threading_process_request;
    out->service_actions = sks_threading_service_actions;
    out->server_close = sks_threading_server_close;
    return 0;
}

const sks_server_ops sks_threading_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingTCPServer",
    .parent = &sks_tcp_ops,
    .model = &sks__threading_model,
    SKS__TCP_TRANSPORT,
    SKS__THREADING_HOOKS,
};

const sks_server_ops sks_threading_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingUDPServer",
    .parent = &sks_udp_ops,
    .model = &sks__threading_model,
    SKS__UDP_TRANSPORT,
    SKS__THREADING_HOOKS,
};

const sks_server_ops sks_threading_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    .model = &sks__threading_model,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__THREADING_HOOKS,
};

const sks_server_ops sks_threading_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ThreadingUnixDatagramServer",
    .parent = &sks_unix_dgram_ops,
    .model = &sks__threading_model,
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__THREADING_HOOKS,
};
