/*
 * prefork.c - PreForkMixIn: a supervising parent and `workers` children
 * that each run the ordinary loop on the inherited listening socket.
 *
 * The mixin replaces only serve_forever, a hook no other mixin touches, so
 * it composes with all of them: wrap the threading or pool table and each
 * child runs threads.  The children share one non-blocking listening
 * socket: a connection wakes every child polling it, one accept wins and
 * the others see EAGAIN.  With one child per CPU that waste is small and
 * the design works for every transport (SO_REUSEPORT would not serve Unix
 * sockets, and would strand the queued connections of a child that dies).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* How often the parent looks for children that died without telling it. */
#define SUPERVISE_MS 100
#define DEFAULT_PREFORK_TIMEOUT 5.0

/* The model's state.  In a child, stop_after is its quota of requests
 * (0: none) and pids is empty. */
struct sks__prefork {
    size_t workers, max_requests;
    double timeout;
    size_t stop_after;
    pid_t *pids;   /* live children (srv->lock for readers) */
    size_t n, cap;
};

/* ------------------------------------------------------------------------ */
/* Child                                                                     */

static sks_server *child_server;

static void child_on_term(int sig)
{
    (void)sig;
    sks_server_request_shutdown(child_server); /* async-signal-safe */
}

_Noreturn static void run_child(sks_server *srv, struct sks__prefork *pf,
                                double poll_interval, const sigset_t *mask)
{
    int parent_wake = srv->wake_wr;
    int wake[2];

    /* The child is a server of its own: a fresh loop state, its own wake-up
     * pipe (the inherited one is the parent's), no socket file to remove
     * (the parent owns it), and SIGTERM/SIGINT mean "drain and leave". */
    sks__close(srv->wake_rd);
    if (sks__pipe(wake) != 0)
        _exit(1);
    srv->wake_rd = wake[0];
    srv->wake_wr = wake[1];
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    srv->serving = false;
    srv->is_shut_down = false;
    atomic_store(&srv->shutdown_request, 0);
    srv->unlink_on_close = false;
    pf->stop_after = pf->max_requests;
    /* The parent's table of children: freed, not just dropped, or the
     * child would leave it unreachable (memcheck: definitely lost). */
    free(pf->pids);
    pf->pids = NULL;
    pf->n = pf->cap = 0;

    child_server = srv;
    struct sigaction sa = { .sa_handler = child_on_term };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pthread_sigmask(SIG_SETMASK, mask, NULL); /* see spawn */

    int rc = sks_base_serve_forever(srv, poll_interval);
    (void)sks_server_drain(srv, pf->timeout, NULL, NULL);
    sks_server_close(srv);
    char c = 1;
    (void)!write(parent_wake, &c, 1); /* reap me now */
    _exit(rc == 0 ? 0 : 1);
}

/* ------------------------------------------------------------------------ */
/* Parent                                                                    */

static int spawn(sks_server *srv, struct sks__prefork *pf, double poll)
{
    if (pf->n == pf->cap) {
        size_t ncap = pf->cap ? pf->cap * 2 : 8;
        pid_t *p = realloc(pf->pids, ncap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        pthread_mutex_lock(&srv->lock);
        pf->pids = p;
        pf->cap = ncap;
        pthread_mutex_unlock(&srv->lock);
    }
    /* SIGTERM and SIGINT stay blocked from before the fork until the
     * child has its own handler and loop state: one arriving in between
     * would run the parent's handler, then be wiped out by the reset of
     * shutdown_request, and the child would serve on until SIGKILL. */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    pthread_sigmask(SIG_BLOCK, &term, &old);
    pid_t pid = fork();
    if (pid == 0)
        run_child(srv, pf, poll, &old);
    int err = pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return err;
    pthread_mutex_lock(&srv->lock);
    pf->pids[pf->n++] = pid;
    pthread_mutex_unlock(&srv->lock);
    return 0;
}

/* Reaps children that have exited; returns how many. */
static size_t reap(sks_server *srv, struct sks__prefork *pf, bool blocking)
{
    size_t gone = 0;
    for (size_t i = 0; i < pf->n;) {
        pid_t r;
        do
            r = waitpid(pf->pids[i], NULL, blocking ? 0 : WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == pf->pids[i] || (r < 0 && errno == ECHILD)) {
            pthread_mutex_lock(&srv->lock);
            pf->pids[i] = pf->pids[--pf->n];
            pthread_mutex_unlock(&srv->lock);
            gone++;
        } else {
            i++;
        }
    }
    return gone;
}

static void signal_all(struct sks__prefork *pf, int sig)
{
    for (size_t i = 0; i < pf->n; i++)
        (void)kill(pf->pids[i], sig);
}

/* Sleeps on the wake-up pipe until deadline: children write to it as they
 * leave. */
static void nap(sks_server *srv, double deadline)
{
    struct pollfd p = { .fd = srv->wake_rd, .events = POLLIN };
    if (sks__wait(&p, 1, deadline) > 0) {
        char buf[64];
        while (read(srv->wake_rd, buf, sizeof(buf)) > 0)
            ;
    }
}

static size_t wanted_workers(const struct sks__prefork *pf)
{
    if (pf->workers != 0)
        return pf->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

int sks_prefork_serve_forever(sks_server *srv, double poll_interval)
{
    struct sks__prefork *pf = sks__model_state(srv, &sks__prefork_model);
    if (srv->closed || srv->fd < 0)
        return SKS_ECLOSED;
    if (pf == NULL)
        return -EINVAL; /* a table naming this hook but another model */
    size_t want = wanted_workers(pf);
    int rc = sks__serve_begin(srv);
    if (rc != 0)
        return rc;

    while (!atomic_load(&srv->shutdown_request)) {
        /* Replace children that died or recycled themselves.  A failed
         * fork is retried on the next turn, not in a tight loop. */
        while (pf->n < want && spawn(srv, pf, poll_interval) == 0)
            ;
        nap(srv, sks__now() + SUPERVISE_MS / 1000.0);
        reap(srv, pf, false);
        srv->ops->service_actions(srv);
        sks__upgrade_turn(srv);
    }

    /* Shutdown: every child drains for up to the timeout, then leaves. */
    signal_all(pf, SIGTERM);
    double deadline = sks__now() + pf->timeout + 1.0;
    while (pf->n > 0 && sks__now() < deadline) {
        double turn = sks__now() + SUPERVISE_MS / 1000.0;
        nap(srv, turn < deadline ? turn : deadline);
        reap(srv, pf, false);
    }
    signal_all(pf, SIGKILL);
    reap(srv, pf, true);
    sks__serve_end(srv);
    return 0;
}

size_t sks_server_prefork_children(sks_server *srv, pid_t *pids, size_t cap)
{
    struct sks__prefork *pf = sks__model_state(srv, &sks__prefork_model);
    size_t n = 0;
    if (pf == NULL)
        return 0;
    pthread_mutex_lock(&srv->lock);
    n = pf->n;
    for (size_t i = 0; i < n && i < cap; i++)
        pids[i] = pf->pids[i];
    pthread_mutex_unlock(&srv->lock);
    return n;
}

int sks_server_set_prefork(sks_server *srv, size_t workers,
                           size_t max_requests_per_child, double timeout)
{
    struct sks__prefork *pf = sks__model_state(srv, &sks__prefork_model);
    if (!(timeout >= 0) || workers > 4096)
        return -EINVAL;
    if (pf == NULL)
        return 0; /* not a pre-forking server: nothing to set */
    pf->workers = workers;
    pf->max_requests = max_requests_per_child;
    pf->timeout = timeout;
    return 0;
}

static int prefork_attach(sks_server *srv, void **state)
{
    (void)srv;
    struct sks__prefork *pf = calloc(1, sizeof(*pf));
    if (pf == NULL)
        return -ENOMEM;
    pf->timeout = DEFAULT_PREFORK_TIMEOUT;
    *state = pf;
    return 0;
}

/* A pre-forked child recycles itself after its quota. */
static bool prefork_done(sks_server *srv, void *state)
{
    const struct sks__prefork *pf = state;
    return pf->stop_after != 0 &&
           atomic_load(&srv->accepted) >= pf->stop_after;
}

static void prefork_free(void *state)
{
    struct sks__prefork *pf = state;
    free(pf->pids);
    free(pf);
}

const sks_model sks__prefork_model = {
    .name = "prefork",
    .roles = SKS__RUNS_LOOP,
    .serve_forever = sks_prefork_serve_forever,
    .attach = prefork_attach,
    .done = prefork_done,
    .free = prefork_free,
};

/* Only serve_forever changes: the model that runs requests (threading,
 * pool, forking, or none), wherever it sits in the chain, runs in each
 * child, so prefork over X and X over prefork are the same server. */
int sks_prefork_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    int err = sks__mixin_wrap(out, base, &sks__prefork_model);
    if (err != 0)
        return err;
    out->serve_forever = sks_prefork_serve_forever;
    return 0;
}

const sks_server_ops sks_prefork_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PreForkTCPServer",
    .parent = &sks_tcp_ops,
    .model = &sks__prefork_model,
    SKS__TCP_TRANSPORT,
    SKS__SYNC_HOOKS,
    .server_close = sks_tcp_server_close,
    .serve_forever = sks_prefork_serve_forever,
};

const sks_server_ops sks_prefork_threading_tcp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PreForkThreadingTCPServer",
    .parent = &sks_threading_tcp_ops,
    .model = &sks__prefork_model,
    SKS__TCP_TRANSPORT,
    SKS__THREADING_HOOKS,
    .serve_forever = sks_prefork_serve_forever,
};

const sks_server_ops sks_prefork_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PreForkUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    .model = &sks__prefork_model,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__SYNC_HOOKS,
    .server_close = sks_unix_server_close,
    .serve_forever = sks_prefork_serve_forever,
};

const sks_server_ops sks_prefork_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "PreForkUDPServer",
    .parent = &sks_udp_ops,
    .model = &sks__prefork_model,
    SKS__UDP_TRANSPORT,
    SKS__SYNC_HOOKS,
    .server_close = sks_tcp_server_close,
    .serve_forever = sks_prefork_serve_forever,
};
