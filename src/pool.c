/*
 * pool.c - ThreadPoolMixIn: a bounded pool of worker threads fed by a
 * bounded queue, and the predefined Pool*Server tables.
 *
 * The bound is enforced by the loop, not here: the mixin sets the server's
 * concurrency limit to max_workers + queue_size, and the loop stops
 * accepting (or refuses) when that many requests are in flight.  So the
 * queue never overflows and process_request never blocks the loop.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

struct worker {
    pthread_t tid;
    struct worker *next;
    bool exited;    /* left on idle timeout: join me */
    bool detached;  /* server closed without block_on_close: free myself */
};

struct sks__pool {
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

static struct sks__pool *pool_of(sks_server *srv)
{
    if (srv->pool != NULL)
        return srv->pool;
    struct sks__pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->cap = srv->pool_max + srv->pool_queue;
    p->ring = calloc(p->cap, sizeof(*p->ring));
    if (p->ring == NULL) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    /* Published under the server's lock: sks_server_stats reads it from
     * any thread. */
    pthread_mutex_lock(&srv->lock);
    srv->pool = p;
    pthread_mutex_unlock(&srv->lock);
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < srv->pool_min; i++)
        if (spawn(srv, p) != 0)
            break; /* fewer to start with; more are made on demand */
    pthread_mutex_unlock(&p->lock);
    return p;
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
    struct sks__pool *p = srv->pool;
    free(st);

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->count == 0 && !p->stopping) {
            p->idle++;
            int r;
            if (p->workers > srv->pool_min) {
                struct timespec until;
                add_seconds(&until, srv->pool_idle);
                r = pthread_cond_timedwait(&p->work, &p->lock, &until);
            } else {
                r = pthread_cond_wait(&p->work, &p->lock);
            }
            p->idle--;
            if (r == ETIMEDOUT && p->count == 0 && p->workers > srv->pool_min)
                goto leave;
        }
        if (p->count == 0)
            goto leave; /* stopping, and nothing left to serve */
        sks_request *req = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->lock);

        int err = srv->ops->finish_request(srv, req);
        if (err != 0)
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
    struct sks__pool *p = pool_of(srv);
    if (p == NULL)
        return -ENOMEM;
    /* Written only when it changes: workers read it as their requests
     * end (sks__count_end), and a rewrite of the same value is still a
     * data race for them. */
    if (srv->mixin_limit != srv->pool_max + srv->pool_queue)
        srv->mixin_limit = srv->pool_max + srv->pool_queue;
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
    if (p->idle < p->count && p->workers < srv->pool_max)
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
    if (srv->pool != NULL)
        reap(srv->pool);
    srv->ops->parent->service_actions(srv);
}

void sks_pool_server_close(sks_server *srv)
{
    struct sks__pool *p = srv->pool;
    srv->ops->parent->server_close(srv);
    if (p == NULL)
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

void sks__pool_stats(sks_server *srv, sks_stats *out)
{
    pthread_mutex_lock(&srv->lock);
    struct sks__pool *p = srv->pool;
    pthread_mutex_unlock(&srv->lock);
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    out->queued = p->count;
    out->workers = p->workers;
    pthread_mutex_unlock(&p->lock);
}

void sks__pool_free(sks_server *srv)
{
    struct sks__pool *p = srv->pool;
    if (p == NULL)
        return;
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work);
    free(p->ring);
    free(p);
    srv->pool = NULL;
}

int sks_server_set_pool(sks_server *srv, size_t min_workers,
                        size_t max_workers, double idle_timeout,
                        size_t queue_size)
{
    if (max_workers == 0 || min_workers > max_workers || srv->pool != NULL ||
        !(idle_timeout > 0))
        return -EINVAL;
    srv->pool_min = min_workers;
    srv->pool_max = max_workers;
    srv->pool_idle = idle_timeout;
    srv->pool_queue = queue_size;
    return 0;
}

void sks_pool_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    *out = *base;
    out->parent = base;
    out->process_request = sks_pool_process_request;
    out->service_actions = sks_pool_service_actions;
    out->server_close = sks_pool_server_close;
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
    SKS__TCP_TRANSPORT,
    SKS__POOL_HOOKS,
};

const sks_server_ops sks_pool_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PoolUDPServer",
    .parent = &sks_udp_ops,
    SKS__UDP_TRANSPORT,
    SKS__POOL_HOOKS,
};

const sks_server_ops sks_pool_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PoolUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__POOL_HOOKS,
};

const sks_server_ops sks_pool_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PoolUnixDatagramServer",
    .parent = &sks_unix_dgram_ops,
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__POOL_HOOKS,
};
