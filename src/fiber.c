/*
 * fiber.c - the fiber model: each request runs as a fiber on one of
 * `loops` threads, each with its own epoll loop (fiber_loop.c), and the
 * predefined Fiber*Server tables.
 *
 * Handlers stay blocking-style: rfile and wfile call io.c, which tries
 * each system call and calls the wait layer only on EAGAIN; on a loop
 * thread the wait backend below parks the fiber instead of blocking, with
 * the operation's deadline in the loop's timer heap.  Connections are made
 * non-blocking at accept and join their loop's epoll once.
 *
 * Each loop has an acceptor fiber: it takes requests from the shared
 * listening socket in batches (up to ACCEPT_BATCH per wake-up, then lets
 * the handlers run), admits them as the base loop does, and backs off on
 * its own when descriptors or memory run out.  A fiber stays on its loop
 * for life.  The thread that called serve_forever only supervises: it
 * waits on the wake-up pipe, runs service_actions, and watches for a
 * fiber that holds its loop (the watchdog).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define ACCEPT_BATCH 64
#define DEFAULT_HELPERS 4
#define DEFAULT_WATCHDOG 0.1
#define CACHED_STACKS 64
/* At a concurrency bound, how often an acceptor looks again on its own
 * (a request's end also wakes it, through the supervisor). */
#define LIMIT_RECHECK 0.02
#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 100
/* Free read buffers a loop keeps: only fibers between a wake-up and their
 * next park hold one, a handful at a time on one thread. */
#define POOL_KEEP 64
/* Fibers running at once past which their leaving hands memory back. */
#define SCAVENGE_PEAK 1024

struct fiber_model;

struct fiber_loop {
    struct fiber_model *fm;
    sks_server *srv;
    struct sks__floop *fl;
    int fd;                           /* the listening socket it accepts on */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t acceptor_gone;
    struct sks__fib *acceptor;        /* (lock) while it runs */
    /* The acceptor, while it runs a datagram request itself (see
     * hand_off); NULL otherwise.  This loop's thread only. */
    struct sks__fib *inline_fib;
    bool acceptor_done;               /* (lock) */
    int backoff_ms;                   /* EMFILE and friends, this loop's */
    double resume;
    unsigned long resumes_seen;       /* the watchdog's last sample */
    unsigned held;                    /* samples in a row it was held */
    /* Read buffers lent to this loop's connections while they read (the
     * wait backend's take and give): free ones of pool_size bytes, and
     * how many are out (written by this loop only, read by any thread). */
    size_t pool_size;
    unsigned pool_nfree;
    void *pool[POOL_KEEP];
    atomic_size_t lent;
};

struct fiber_model {
    size_t loops;                     /* 0: one per CPU we may run on */
    size_t stack_size;                /* 0: SKS__FIBER_STACK_DEFAULT */
    size_t helpers;
    double watchdog;                  /* seconds; 0: off */
    struct sks__helpers pool;
    bool pool_started;
    struct fiber_loop *lp;            /* n loops, from serve until close */
    size_t n;
    atomic_bool stopping;
    atomic_size_t fibers;             /* request fibers running */
    atomic_size_t stalls;
    size_t peak;                      /* fibers, since the last scavenge */
    bool crowd;                       /* peak reached SCAVENGE_PEAK: scavenge
                                         as it leaves (supervisor only) */
    pthread_mutex_t stall_lock;
    sks_fiber_stall last_stall;       /* (stall_lock) valid once stalls > 0 */
};

static _Thread_local struct fiber_loop *this_loop;

static void acceptor(void *arg);

/* ------------------------------------------------------------------------ */
/* Datagrams inline                                                          */

/*
 * A datagram handler rarely waits (its reply goes out at once), so the
 * acceptor runs it itself: a fiber per datagram, its making and the two
 * switches, was most of the model's cost over the epoll ceiling.  Should
 * the handler be about to park (a full send buffer, sks_sleep, blocking
 * work), the acceptor hands its role to a new fiber first and stays with
 * the request, which then ends as a fiber of its own would.  Every way a
 * handler parks passes here: the wait backend (io.c waits only after
 * EAGAIN), sks_sleep and sks_run_blocking.
 */
static void hand_off(void)
{
    struct fiber_loop *lp = this_loop;
    struct sks__fib *me = sks__floop_self();

    if (lp == NULL || me == NULL || lp->inline_fib != me)
        return;
    lp->inline_fib = NULL;
    pthread_mutex_lock(&lp->lock);
    lp->acceptor = NULL;
    pthread_mutex_unlock(&lp->lock);
    if (sks__floop_spawn(lp->fl, acceptor, lp) == 0)
        return;
    /* No memory for a new acceptor: this one waits with the request. */
    pthread_mutex_lock(&lp->lock);
    lp->acceptor = me;
    pthread_mutex_unlock(&lp->lock);
}

/* ------------------------------------------------------------------------ */
/* The wait backend of the loop threads                                      */

static int nap(double deadline)
{
    double t = sks__now() + 0.001;
    int r = sks__floop_sleep(t < deadline ? t : deadline);
    return r < 0 ? r : 1;             /* "ready": the caller tries again */
}

static int fiber_wait(struct pollfd *fds, size_t n, double deadline)
{
    if (sks__floop_here() == NULL)    /* the scheduler itself: never */
        return sks__blocking_wait.wait(fds, n, deadline);
    hand_off();
    if (n == 0) {
        int r = sks__floop_sleep(deadline);
        return r < 0 ? r : 0;
    }
    if (n > 1) {
        /* None of the library's waits in a handler watches several
         * descriptors; a user's own may: look, then nap. */
        int r = poll(fds, (nfds_t)n, 0);
        if (r != 0)
            return r < 0 ? -errno : r;
        if (deadline != INFINITY && sks__now() >= deadline)
            return 0;
        r = nap(deadline);
        return r < 0 ? r : 0;
    }
    int r = sks__floop_wait_fd(fds[0].fd, (fds[0].events & POLLOUT) != 0,
                               deadline);
    switch (r) {
    case 0:
        fds[0].revents = fds[0].events;
        return 1;
    case -ETIMEDOUT:
        return 0;
    case -EBUSY:                      /* another fiber waits the same way */
    case -EINTR:
        return nap(deadline);
    default:
        return r;                     /* -ECANCELED: the server closes */
    }
}

static void count_lent(struct fiber_loop *lp, int by)
{
    size_t n = atomic_load_explicit(&lp->lent, memory_order_relaxed);
    atomic_store_explicit(&lp->lent, n + (size_t)by, memory_order_relaxed);
}

/* A loop's pool is of one size, the first given back (a server's rfiles
 * all have its handler class's rbufsize); other sizes are malloc'd. */
static void *fiber_take(size_t size)
{
    struct fiber_loop *lp = this_loop;
    void *buf = lp->pool_nfree > 0 && size == lp->pool_size
                    ? lp->pool[--lp->pool_nfree]
                    : malloc(size);
    if (buf != NULL)
        count_lent(lp, 1);
    return buf;
}

static void fiber_give(void *buf, size_t size)
{
    struct fiber_loop *lp = this_loop;
    count_lent(lp, -1);
    if (lp->pool_size == 0)
        lp->pool_size = size;
    if (size == lp->pool_size && lp->pool_nfree < POOL_KEEP)
        lp->pool[lp->pool_nfree++] = buf;
    else
        free(buf);
}

static const sks__wait_backend fiber_backend = {
    .name = "fiber",
    .wait = fiber_wait,
    .take = fiber_take,
    .give = fiber_give,
    .drained = sks__floop_read_drained,
    .empty = sks__floop_read_empty,
};

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

static void serve_request(sks_request *req)
{
    struct fiber_loop *lp = this_loop;
    sks_server *srv = lp->srv;
    int fd = req->fd;
    bool stream = !req->datagram;

    if (stream)
        (void)sks__floop_register(fd);
    /* What the watchdog names if this request holds its loop. */
    sks__floop_set_tag((sks__floop_tag)srv->handler->handle);
    int err = srv->ops->finish_request(srv, req);
    if (err < 0)
        sks_server_handle_error(srv, req, err);
    sks_server_shutdown_request(srv, req);
    if (stream)
        sks__floop_forget(fd);
    atomic_fetch_sub(&lp->fm->fibers, 1);
}

static void request_fiber(void *arg)
{
    serve_request(arg);
}

int sks_fiber_process_request(sks_server *srv, sks_request *req)
{
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    if (fm == NULL)
        return -EINVAL;
    struct sks__floop *l = sks__floop_here();
    if (l == NULL || this_loop == NULL || this_loop->srv != srv)
        /* handle_request from an ordinary thread: run it there. */
        return sks__model_super(srv, &sks__fiber_model)
            ->process_request(srv, req);
    atomic_fetch_add(&fm->fibers, 1);
    struct fiber_loop *lp = this_loop;
    struct sks__fib *me = sks__floop_self();
    if (req->datagram && lp->acceptor == me && lp->inline_fib == NULL) {
        lp->inline_fib = me;
        serve_request(req);
        if (lp->inline_fib == me) {
            lp->inline_fib = NULL;
            sks__floop_set_tag(NULL);
        }
        return 0;
    }
    int err = sks__floop_spawn(l, request_fiber, req);
    if (err != 0)
        atomic_fetch_sub(&fm->fibers, 1);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Acceptors                                                                 */

static bool exhaustion(int err)
{
    return err == -EMFILE || err == -ENFILE || err == -ENOBUFS ||
           err == -ENOMEM;
}

/* One request, as the base loop's _handle_request_noblock: 1 when one was
 * taken (whatever became of it), 0 when none waits, -1 when accepting
 * backs off. */
static int take_one(struct fiber_loop *lp)
{
    sks_server *srv = lp->srv;
    const sks_server_ops *ops = srv->ops;
    sks_request *req = NULL;
    int err = ops->get_request(srv, &req);

    if (err == -EAGAIN || err == -EWOULDBLOCK)
        return 0;
    if (err != 0) {
        if (!exhaustion(err))
            return 1;                 /* ECONNABORTED and such: next */
        lp->backoff_ms = lp->backoff_ms ? lp->backoff_ms * 2 : BACKOFF_FIRST_MS;
        if (lp->backoff_ms > BACKOFF_MAX_MS)
            lp->backoff_ms = BACKOFF_MAX_MS;
        lp->resume = sks__now() + lp->backoff_ms / 1000.0;
        return -1;
    }
    lp->backoff_ms = 0;
    if (!req->datagram &&
        fcntl(req->fd, F_SETFL, fcntl(req->fd, F_GETFL) | O_NONBLOCK) != 0) {
        sks__refuse(srv, req, false);
        return 1;
    }
    if (!ops->verify_request(srv, req)) {
        sks__refuse(srv, req, false);
        return 1;
    }
    if (srv->overload_policy == SKS_OVERLOAD_REFUSE && sks__at_limit(srv)) {
        sks__refuse(srv, req, true);
        return 1;
    }
    sks__admit(srv, req);
    err = ops->process_request(srv, req);
    if (err < 0) {
        sks_server_handle_error(srv, req, err);
        sks_server_shutdown_request(srv, req);
    }
    return 1;
}

static void acceptor(void *arg)
{
    struct fiber_loop *lp = arg;
    sks_server *srv = lp->srv;
    struct fiber_model *fm = lp->fm;

    pthread_mutex_lock(&lp->lock);
    lp->acceptor = sks__floop_self();
    pthread_mutex_unlock(&lp->lock);
    sks__accept_on(srv, lp->fd);      /* get_request, on this loop */
    (void)sks__floop_register(lp->fd);
    /* A cancelled loop (the server is closing) ends every wait at once:
     * leave rather than spin. */
    int r = 0;
    while (!atomic_load(&fm->stopping) && r != -ECANCELED) {
        if (srv->overload_policy == SKS_OVERLOAD_BACKPRESSURE &&
            sks__at_limit(srv)) {
            r = sks__floop_sleep(sks__now() + LIMIT_RECHECK);
            continue;
        }
        if (lp->backoff_ms != 0 && sks__now() < lp->resume) {
            r = sks__floop_sleep(lp->resume);
            continue;
        }
        int taken = 0, got = 1;
        while (taken < ACCEPT_BATCH && !atomic_load(&fm->stopping) &&
               (got = take_one(lp)) > 0) {
            taken++;
            if (lp->acceptor != sks__floop_self())
                return;               /* handed off: the request is done */
        }
        if (got == 0)
            r = sks__floop_wait_fd(lp->fd, false, INFINITY);
        else if (taken == ACCEPT_BATCH)
            sks__floop_yield();       /* let this batch's handlers run */
    }
    /* The listening socket stays open (serve_forever may run again) and in
     * this loop's epoll until it is closed; its slot is free from now on,
     * for the descriptor that reuses its number then. */
    sks__floop_forget(lp->fd);
    sks__accept_on(srv, -1);
    pthread_mutex_lock(&lp->lock);
    lp->acceptor = NULL;
    lp->acceptor_done = true;
    pthread_cond_broadcast(&lp->acceptor_gone);
    pthread_mutex_unlock(&lp->lock);
}

/* serve_forever returns only once no acceptor can touch the listening
 * socket again: server_close closes it next, and a late accept on a
 * closed (or reused) descriptor number would take someone else's. */
static void await_acceptors(struct fiber_model *fm)
{
    for (size_t i = 0; i < fm->n; i++) {
        struct fiber_loop *lp = &fm->lp[i];
        pthread_mutex_lock(&lp->lock);
        while (!lp->acceptor_done)
            pthread_cond_wait(&lp->acceptor_gone, &lp->lock);
        pthread_mutex_unlock(&lp->lock);
    }
}

static void wake_acceptors(struct fiber_model *fm)
{
    for (size_t i = 0; i < fm->n; i++) {
        struct fiber_loop *lp = &fm->lp[i];
        pthread_mutex_lock(&lp->lock);
        if (lp->acceptor != NULL)
            sks__floop_interrupt(lp->acceptor);
        pthread_mutex_unlock(&lp->lock);
    }
}

/* ------------------------------------------------------------------------ */
/* Loops                                                                     */

static void *loop_main(void *arg)
{
    struct fiber_loop *lp = arg;

    this_loop = lp;
    sks__wait_use(&fiber_backend);
    (void)sks__floop_run(lp->fl);
    sks__wait_use(NULL);
    this_loop = NULL;
    return NULL;
}

/* Ends the loops: with cancel, their fibers' waits first.  A loop ends
 * once its fibers have: the acceptor at `stopping`, the handlers when
 * their clients are done (or cut). */
static void end_loops(struct fiber_model *fm, bool cancel)
{
    atomic_store(&fm->stopping, true);
    wake_acceptors(fm);
    for (size_t i = 0; i < fm->n; i++) {
        struct fiber_loop *lp = &fm->lp[i];
        if (cancel && lp->fl != NULL)
            sks__floop_cancel(lp->fl);
        if (lp->started)
            pthread_join(lp->thread, NULL);
        sks__floop_free(lp->fl);
        while (lp->pool_nfree > 0)
            free(lp->pool[--lp->pool_nfree]);
        pthread_cond_destroy(&lp->acceptor_gone);
        pthread_mutex_destroy(&lp->lock);
    }
    free(fm->lp);
    fm->lp = NULL;
    fm->n = 0;
}

static int start_loops(sks_server *srv, struct fiber_model *fm)
{
    /* A previous serve_forever's loops: let their handlers finish. */
    end_loops(fm, false);
    atomic_store(&fm->stopping, false);
    if (!fm->pool_started && fm->helpers > 0) {
        int err = sks__helpers_start(&fm->pool, fm->helpers);
        if (err != 0)
            return err;
        fm->pool_started = true;
    }
    size_t n = fm->loops ? fm->loops : sks__cpus_allowed();
    /* Each loop its own listening socket where the server's has
     * SO_REUSEPORT (the kernel then spreads connections over the loops,
     * and a loop never wakes for another's); an inherited set larger than
     * the loops gets a loop per socket, as a socket nobody accepts from
     * would strand its queue.  Else the loops share the socket. */
    int lfd[SKS__MAX_LISTENERS];
    size_t nl = sks__listeners(srv, lfd, SKS__MAX_LISTENERS);
    while (nl < n && sks__listener_open(srv) == 0)
        nl = sks__listeners(srv, lfd, SKS__MAX_LISTENERS);
    if (nl == 0)
        return SKS_ECLOSED;
    if (nl > n)
        n = nl;
    fm->lp = calloc(n, sizeof(*fm->lp));
    if (fm->lp == NULL)
        return -ENOMEM;
    fm->n = n;
    for (size_t i = 0; i < n; i++) {
        struct fiber_loop *lp = &fm->lp[i];
        lp->fm = fm;
        lp->srv = srv;
        lp->fd = lfd[i % nl];
        pthread_mutex_init(&lp->lock, NULL);
        pthread_cond_init(&lp->acceptor_gone, NULL);
        int err = sks__floop_new(&lp->fl, fm->stack_size, CACHED_STACKS);
        if (err == 0)
            err = sks__floop_spawn(lp->fl, acceptor, lp);
        if (err == 0)
            err = -pthread_create(&lp->thread, NULL, loop_main, lp);
        if (err != 0) {
            end_loops(fm, true);
            return err;
        }
        lp->started = true;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The supervisor: serve_forever                                             */

/* Samples come every half threshold.  A loop "held" at a sample has run
 * one fiber since the sample before, without a switch: at least half the
 * threshold; two in a row, at least the threshold.  One report per
 * stall. */
static void watch(sks_server *srv, struct fiber_model *fm)
{
    for (size_t i = 0; i < fm->n; i++) {
        struct fiber_loop *lp = &fm->lp[i];
        sks__floop_tag tag;
        if (!sks__floop_held(lp->fl, &lp->resumes_seen, &tag)) {
            lp->held = 0;
            continue;
        }
        if (++lp->held == 2) {
            /* Where, before handle_error hears of it (it may ask). */
            pthread_mutex_lock(&fm->stall_lock);
            fm->last_stall = (sks_fiber_stall){
                .loop = i,
                .handle = (int (*)(sks_handler *))tag,
                .thread = lp->thread,
            };
            pthread_mutex_unlock(&fm->stall_lock);
            atomic_fetch_add(&fm->stalls, 1);
            sks_server_handle_error(srv, NULL, -ETIME);
        }
    }
}

/*
 * Go's scavenger, in small: once a crowd of connections has gone (a burst,
 * an attack of slow clients), the allocator still holds their buffers,
 * resident (glibc keeps the holes in its heaps: some 10 KiB a connection
 * of the HTTP example's after 10,000 slowloris connections).  Once the
 * fibers running have reached SCAVENGE_PEAK, that memory goes back to the
 * system each time they fall to a quarter of their last count, down to a
 * few: a crowd that leaves gradually (cut at its deadlines) is handed
 * back nearly whole, not only its first three quarters.
 */
static void scavenge(struct fiber_model *fm)
{
    size_t now = atomic_load(&fm->fibers);
    if (now > fm->peak)
        fm->peak = now;
    if (fm->peak >= SCAVENGE_PEAK)
        fm->crowd = true;
    if (fm->crowd && now <= fm->peak / 4) {
        sks__release_free_memory();
        fm->peak = now;
        fm->crowd = now > SCAVENGE_PEAK / 64;
    }
}

/*
 * The loops need descriptors (an epoll instance and an eventfd each) and
 * threads.  Out of descriptors or memory, serve_forever does what the
 * accept loop does: backs off and tries again, so a server started while
 * descriptors run out serves once they are back; shutdown still ends it.
 */
static int start_loops_or_wait(sks_server *srv, struct fiber_model *fm)
{
    int backoff_ms = BACKOFF_FIRST_MS;
    for (;;) {
        int rc = start_loops(srv, fm);
        if (!exhaustion(rc) || atomic_load(&srv->shutdown_request))
            return rc;
        struct pollfd p = { .fd = srv->wake_rd, .events = POLLIN };
        (void)sks__wait(&p, 1, sks__now() + backoff_ms / 1000.0);
        if (backoff_ms < BACKOFF_MAX_MS)
            backoff_ms *= 2;
    }
}

int sks_fiber_serve_forever(sks_server *srv, double poll_interval)
{
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    if (fm == NULL)
        return -EINVAL;
    int rc = sks__serve_begin(srv);
    if (rc != 0)
        return rc;
    rc = start_loops_or_wait(srv, fm);
    double turn = poll_interval >= 0 ? poll_interval : INFINITY;
    /* The watchdog samples twice per threshold (see watch). */
    double sample = fm->watchdog > 0 ? fm->watchdog / 2 : INFINITY;
    double next_turn = sks__now() + turn, next_sample = sks__now() + sample;
    while (rc == 0 && !atomic_load(&srv->shutdown_request)) {
        struct pollfd p = { .fd = srv->wake_rd, .events = POLLIN };
        double until = next_turn < next_sample ? next_turn : next_sample;
        int r = sks__wait(&p, 1, until);
        if (r < 0 && r != -EINTR) {
            rc = r;
            break;
        }
        if (p.revents) {
            char buf[64];
            while (read(srv->wake_rd, buf, sizeof(buf)) > 0)
                ;
            /* A request that ended may have reopened accepting. */
            wake_acceptors(fm);
        }
        if (atomic_load(&srv->shutdown_request))
            break;
        if (sks__now() >= next_sample) {
            watch(srv, fm);
            next_sample = sks__now() + sample;
        }
        scavenge(fm);
        if (sks__now() >= next_turn) {
            srv->ops->service_actions(srv);
            next_turn = sks__now() + turn;
        }
        sks__upgrade_turn(srv);
        if (sks__models_done(srv))
            break;
    }
    /* Stop accepting; handlers in flight run on (server_close waits). */
    atomic_store(&fm->stopping, true);
    wake_acceptors(fm);
    await_acceptors(fm);
    sks__serve_end(srv);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

static void fiber_close(sks_server *srv, void *state)
{
    struct fiber_model *fm = state;
    end_loops(fm, !srv->block_on_close);
    if (fm->pool_started) {
        sks__helpers_stop(&fm->pool);
        fm->pool_started = false;
    }
}

void sks_fiber_server_close(sks_server *srv)
{
    sks__model_super(srv, &sks__fiber_model)->server_close(srv);
    void *fm = sks__model_state(srv, &sks__fiber_model);
    if (fm != NULL)
        fiber_close(srv, fm);
}

/* A drain's cut has shut down every admitted connection already (and
 * counted them), which wakes its fiber with end of input; the cancel
 * reaches what that cannot: a fiber asleep, or waiting on a descriptor of
 * its own. */
static size_t fiber_cut(void *state, int sig)
{
    struct fiber_model *fm = state;
    (void)sig;
    for (size_t i = 0; i < fm->n; i++)
        sks__floop_cancel(fm->lp[i].fl);
    return 0;
}

static void fiber_stats(void *state, sks_stats *out)
{
    struct fiber_model *fm = state;
    out->workers = atomic_load(&fm->fibers);
    out->queued = 0;
}

static int fiber_attach(sks_server *srv, void **state)
{
    (void)srv;
    struct fiber_model *fm = calloc(1, sizeof(*fm));
    if (fm == NULL)
        return -ENOMEM;
    fm->helpers = DEFAULT_HELPERS;
    fm->watchdog = DEFAULT_WATCHDOG;
    pthread_mutex_init(&fm->stall_lock, NULL);
    *state = fm;
    return 0;
}

static void fiber_free(void *state)
{
    struct fiber_model *fm = state;
    pthread_mutex_destroy(&fm->stall_lock);
    free(fm);
}

const sks_model sks__fiber_model = {
    .name = "fiber",
    .roles = SKS__RUNS_REQUESTS | SKS__RUNS_LOOP,
    .process_request = sks_fiber_process_request,
    .serve_forever = sks_fiber_serve_forever,
    .attach = fiber_attach,
    .stats = fiber_stats,
    .cut = fiber_cut,
    .close = fiber_close,
    .free = fiber_free,
};

/* ------------------------------------------------------------------------ */
/* Setters, and what handlers call                                           */

int sks_server_set_fiber_loops(sks_server *srv, size_t n)
{
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    if (fm != NULL)
        fm->loops = n;
    return 0;
}

int sks_server_set_fiber_stack_size(sks_server *srv, size_t bytes)
{
    if (bytes != 0 && bytes < SKS__FIBER_STACK_MIN)
        return -EINVAL;
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    if (fm != NULL)
        fm->stack_size = bytes;
    return 0;
}

int sks_server_set_fiber_watchdog(sks_server *srv, double seconds)
{
    if (!(seconds >= 0))
        return -EINVAL;
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    if (fm != NULL)
        fm->watchdog = seconds;
    return 0;
}

size_t sks_server_fiber_stalls(const sks_server *srv)
{
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    return fm != NULL ? atomic_load(&fm->stalls) : 0;
}

int sks_server_fiber_last_stall(const sks_server *srv, sks_fiber_stall *out)
{
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    if (fm == NULL || out == NULL)
        return -EINVAL;
    if (atomic_load(&fm->stalls) == 0)
        return -ENOENT;
    pthread_mutex_lock(&fm->stall_lock);
    *out = fm->last_stall;
    pthread_mutex_unlock(&fm->stall_lock);
    return 0;
}

size_t sks_server_fiber_read_buffers(const sks_server *srv)
{
    struct fiber_model *fm = sks__model_state(srv, &sks__fiber_model);
    size_t n = 0;
    for (size_t i = 0; fm != NULL && i < fm->n; i++)
        n += atomic_load_explicit(&fm->lp[i].lent, memory_order_relaxed);
    return n;
}

int sks_run_blocking(sks_handler *h, void (*fn)(void *), void *arg)
{
    if (h == NULL || fn == NULL)
        return -EINVAL;
    struct fiber_model *fm = sks__model_state(h->server, &sks__fiber_model);
    if (fm == NULL || !fm->pool_started) {
        fn(arg);
        return 0;
    }
    hand_off();
    return sks__floop_offload(&fm->pool, fn, arg);
}

int sks_sleep(sks_handler *h, double seconds)
{
    if (h == NULL || !(seconds >= 0))
        return -EINVAL;
    double deadline = sks__now() + seconds;
    if (sks__floop_here() != NULL) {
        hand_off();
        return sks__floop_sleep(deadline);
    }
    for (;;) {
        double left = deadline - sks__now();
        if (left <= 0)
            return 0;
        struct timespec ts = { (time_t)left,
                               (long)((left - (double)(time_t)left) * 1e9) };
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Mixin and tables                                                          */

int sks_fiber_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    int err = sks__mixin_wrap(out, base, &sks__fiber_model);
    if (err != 0)
        return err;
    out->process_request = sks_fiber_process_request;
    out->serve_forever = sks_fiber_serve_forever;
    out->server_close = sks_fiber_server_close;
    return 0;
}

#define SKS__FIBER_HOOKS                                                     \
    .process_request = sks_fiber_process_request,                            \
    .serve_forever = sks_fiber_serve_forever,                                \
    .service_actions = sks_base_service_actions,                             \
    .handle_timeout = sks_base_handle_timeout,                               \
    .server_close = sks_fiber_server_close

const sks_server_ops sks_fiber_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "FiberTCPServer",
    .parent = &sks_tcp_ops,
    .model = &sks__fiber_model,
    SKS__TCP_TRANSPORT,
    SKS__FIBER_HOOKS,
};

const sks_server_ops sks_fiber_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "FiberUDPServer",
    .parent = &sks_udp_ops,
    .model = &sks__fiber_model,
    SKS__UDP_TRANSPORT,
    SKS__FIBER_HOOKS,
};

const sks_server_ops sks_fiber_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "FiberUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    .model = &sks__fiber_model,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__FIBER_HOOKS,
};

const sks_server_ops sks_fiber_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "FiberUnixDatagramServer",
    .parent = &sks_unix_dgram_ops,
    .model = &sks__fiber_model,
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__FIBER_HOOKS,
};
