/*
 * pool.c - ThreadPoolMixIn: a bounded pool of worker threads fed by a
 * bounded queue, and the predefined Pool*Server tables.
 *
 * The bound is enforced by the loop, not here: the model's limit is
 * max_workers + queue_size, and the loop stops accepting (or refuses) when
 * that many requests are in flight.  So the queue never overflows and
 * process_request never blocks the loop.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#define DEFAULT_POOL_MIN 4
#define DEFAULT_POOL_MAX 64
#define DEFAULT_POOL_QUEUE 64
#define DEFAULT_POOL_IDLE 30.0

struct worker {
    pthread_t tid;
    struct worker *next;
    bool exited;    /* left on idle timeout: join me */
    bool detached;  /* server closed without block_on_close: free myself */
};

/* The model's state, made at server creation; the ring and the first
 * workers when the first request comes (sks_server_set_pool may still
 * size them until then). */
struct sks__pool {
    size_t min_workers, max_workers, queue_size;
    double idle_timeout;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t work;
    sks_request **ring;
    size_t cap, head, count;
    size_t workers, idle;
    bool stopping;
    struct worker *threads;
};

struct start {
    sks_server *srv;
    struct sks__pool *pool;
    struct worker *self;
};

static void *worker_main(void *arg);

/* Called with p->lock held.  Returns 0 or a pthread error. */
static int spawn(sks_server *srv, struct sks__pool *p)
{
    struct worker *w = calloc(1, sizeof(*w));
    struct start *st = malloc(sizeof(*st));
    if (w == NULL || st == NULL) {
        free(w);
        free(st);
        return ENOMEM;
    }
    st->srv = srv;
    st->pool = p;
    st->self = w;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (srv->stack_size != 0)
        pthread_attr_setstacksize(&attr, srv->stack_size);
    sks__server_ref(srv);
    int err = pthread_create(&w->tid, &attr, worker_main, st);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        sks__server_unref(srv);
        free(w);
        free(st);
        return err;
    }
    w->next = p->threads;
    p->threads = w;
    p->workers++;
    return 0;
}

/* The ring and the first workers, at the first request. */
static int start(sks_server *srv, struct sks__pool *p)
{
    p->cap = p->max_workers + p->queue_size;
    p->ring = calloc(p->cap, sizeof(*p->ring));
    if (p->ring == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&p->lock);
    p->started = true;
    for (size_t i = 0; i < p->min_workers; i++)
        if (spawn(srv, p) != 0)
            break; /* fewer to start with; more are made on demand */
    pthread_mutex_unlock(&p->lock);
    return 0;
}

static void add_seconds(struct timespec *ts, double s)
{
    clock_gettime(CLOCK_REALTIME, ts);
    double whole = floor(s);
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((s - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *worker_main(void *arg)
{
    struct start *st = arg;
    sks_server *srv = st->srv;
    struct worker *self = st->self;
    struct sks__pool *p = st->pool;
    free(st);

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->count == 0 && !p->stopping) {
            p->idle++;
            int r;
            if (p->workers > p->min_workers) {
                struct timespec until;
                add_seconds(&until, p->idle_timeout);
                r = pthread_cond_timedwait(&p->work, &p->lock, &until);
            } else {
                r = pthread_cond_wait(&p->work, &p->lock);
            }
            p->idle--;
            if (r == ETIMEDOUT && p->count == 0 &&
                p->workers > p->min_workers)
                goto leave;
        }
        if (p->count == 0)
            goto leave; /* stopping, and nothing left to serve */
        sks_request *req = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->lock);

        int err = srv->ops->finish_request(srv, req);
        if (err < 0)
            sks_server_handle_error(srv, req, err);
        sks_server_shutdown_request(srv, req);

        pthread_mutex_lock(&p->lock);
    }
leave:
    p->workers--;
    bool detached = self->detached;
    self->exited = true;
    pthread_mutex_unlock(&p->lock);
    if (detached)
        free(self);
    sks__server_unref(srv);
    return NULL;
}

/* Joins the workers that left on idle timeout. */
static void reap(struct sks__pool *p)
{
    struct worker *gone = NULL;
    pthread_mutex_lock(&p->lock);
    for (struct worker **w = &p->threads; *w != NULL;) {
        if ((*w)->exited) {
            struct worker *x = *w;
            *w = x->next;
            x->next = gone;
            gone = x;
        } else {
            w = &(*w)->next;
        }
    }
    pthread_mutex_unlock(&p->lock);
    while (gone != NULL) {
        struct worker *next = gone->next;
        pthread_join(gone->tid, NULL);
        free(gone);
        gone = next;
    }
}

int sks_pool_process_request(sks_server *srv, sks_request *req)
{
    struct sks__pool *p = sks__model_state(srv, &sks__pool_model);
    if (p == NULL)
        return -EINVAL; /* a table naming this hook but another model */
    if (!p->started) {
        int serr = start(srv, p);
        if (serr != 0)
            return serr;
    }
    reap(p);

    pthread_mutex_lock(&p->lock);
    if (p->count == p->cap) {
        /* Cannot happen while the loop enforces the limit; if a user's
         * override admits more, refuse rather than overflow. */
        pthread_mutex_unlock(&p->lock);
        return -EAGAIN;
    }
    p->ring[(p->head + p->count) % p->cap] = req;
    p->count++;
    int err = 0;
    if (p->idle < p->count && p->workers < p->max_workers)
        err = spawn(srv, p);
    if (err != 0 && p->workers == 0) {
        /* Nobody would ever serve it: take it back, the loop reports. */
        p->count--;
        pthread_mutex_unlock(&p->lock);
        return -err;
    }
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void sks_pool_service_actions(sks_server *srv)
{
    struct sks__pool *p = sks__model_state(srv, &sks__pool_model);
    if (p != NULL)
        reap(p);
    sks__model_super(srv, &sks__pool_model)->service_actions(srv);
}

/* Runs again harmlessly: the second time finds no worker and no queue. */
static void pool_close(sks_server *srv, void *state)
{
    struct sks__pool *p = state;
    if (!p->started)
        return;

    sks_request **dropped = NULL;
    size_t ndropped = 0;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    if (!srv->block_on_close && p->count > 0) {
        dropped = malloc(p->count * sizeof(*dropped));
        while (dropped != NULL && p->count > 0) {
            dropped[ndropped++] = p->ring[p->head];
            p->head = (p->head + 1) % p->cap;
            p->count--;
        }
    }
    pthread_cond_broadcast(&p->work);
    /* Workers not waited for are detached here, under the lock: once it
     * is released such a worker may free its record at any moment, so
     * the record must not be touched again.  The others are joined. */
    struct worker *all = NULL;
    while (p->threads != NULL) {
        struct worker *w = p->threads;
        p->threads = w->next;
        if (!srv->block_on_close && !w->exited) {
            w->detached = true;
            pthread_detach(w->tid);
        } else {
            w->next = all;
            all = w;
        }
    }
    pthread_mutex_unlock(&p->lock);

    for (size_t i = 0; i < ndropped; i++) {
        dropped[i]->failed = true; /* closed unserved */
        sks_server_shutdown_request(srv, dropped[i]);
    }
    free(dropped);
    while (all != NULL) {
        struct worker *next = all->next;
        pthread_join(all->tid, NULL);
        free(all);
        all = next;
    }
}

void sks_pool_server_close(sks_server *srv)
{
    sks__model_super(srv, &sks__pool_model)->server_close(srv);
    void *p = sks__model_state(srv, &sks__pool_model);
    if (p != NULL)
        pool_close(srv, p);
}

static int pool_attach(sks_server *srv, void **state)
{
    (void)srv;
    struct sks__pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->min_workers = DEFAULT_POOL_MIN;
    p->max_workers = DEFAULT_POOL_MAX;
    p->queue_size = DEFAULT_POOL_QUEUE;
    p->idle_timeout = DEFAULT_POOL_IDLE;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    *state = p;
    return 0;
}

/* The loop stops accepting (or refuses, by policy) at this bound. */
static size_t pool_limit(const void *state)
{
    const struct sks__pool *p = state;
    return p->max_workers + p->queue_size;
}

static void pool_stats(void *state, sks_stats *out)
{
    struct sks__pool *p = state;
    pthread_mutex_lock(&p->lock);
    out->queued = p->count;
    out->workers = p->workers;
    pthread_mutex_unlock(&p->lock);
}

static void pool_free(void *state)
{
    struct sks__pool *p = state;
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work);
    free(p->ring);
    free(p);
}

const sks_model sks__pool_model = {
    .name = "pool",
    .roles = SKS__RUNS_REQUESTS,
    .process_request = sks_pool_process_request,
    .attach = pool_attach,
    .limit = pool_limit,
    .stats = pool_stats,
    .close = pool_close,
    .free = pool_free,
};

int sks_server_set_pool(sks_server *srv, size_t min_workers,
                        size_t max_workers, double idle_timeout,
                        size_t queue_size)
{
    struct sks__pool *p = sks__model_state(srv, &sks__pool_model);
    if (max_workers == 0 || min_workers > max_workers ||
        !(idle_timeout > 0) || (p != NULL && p->started))
        return -EINVAL;
    if (p == NULL)
        return 0; /* not a pool server: nothing to set */
    p->min_workers = min_workers;
    p->max_workers = max_workers;
    p->idle_timeout = idle_timeout;
    p->queue_size = queue_size;
    return 0;
}

int sks_pool_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    int err = sks__mixin_wrap(out, base, &sks__pool_model);
    if (err != 0)
        return err;
    out->process_request = sks_pool_process_request;
    out->service_actions = sks_pool_service_actions;
    out->server_close = sks_pool_server_close;
    return 0;
}

#define SKS__POOL_HOOKS                                                      \
    .process_request = sks_pool_process_request,                             \
    .service_actions = sks_pool_service_actions,                             \
    .handle_timeout = sks_base_handle_timeout,                               \
    .server_close = sks_pool_server_close

const sks_server_ops sks_pool_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PoolTCPServer",
    .parent = &sks_tcp_ops,
    .model = &sks__pool_model,
    SKS__TCP_TRANSPORT,
    SKS__POOL_HOOKS,
};

const sks_server_ops sks_pool_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PoolUDPServer",
    .parent = &sks_udp_ops,
    .model = &sks__pool_model,
    SKS__UDP_TRANSPORT,
    SKS__POOL_HOOKS,
};

const sks_server_ops sks_pool_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PoolUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    .model = &sks__pool_model,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__POOL_HOOKS,
};

const sks_server_ops sks_pool_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PoolUnixDatagramServer",
    .parent = &sks_unix_dgram_ops,
    .model = &sks__pool_model,
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__POOL_HOOKS,
};
