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

#define DEFAULT_MAX_CHILDREN 40

/*
 * The model's state.  The serving thread records and reaps children; a
 * drain signals them from another thread.  `lock` keeps the two apart:
 * a pid is removed from the list only under it, after waitpid() reaped
 * it, so the drain never signals a reaped (and perhaps reused) pid nor
 * reads the list while it changes.
 */
struct forking {
    pthread_mutex_t lock;
    pid_t *children;
    size_t cap;
    atomic_size_t n;           /* read without the lock for counts */
    size_t max_children;
};

static struct forking *state_of(const sks_server *srv)
{
    return sks__model_state(srv, &sks__forking_model);
}

/* Makes room to record one more child, before forking, so that recording
 * cannot fail once the child exists. */
static int reserve(struct forking *f)
{
    if (atomic_load(&f->n) < f->cap)
        return 0;
    size_t ncap = f->cap ? f->cap * 2 : 16;
    pthread_mutex_lock(&f->lock);
    pid_t *p = realloc(f->children, ncap * sizeof(*p));
    if (p != NULL) {
        f->children = p;
        f->cap = ncap;
    }
    pthread_mutex_unlock(&f->lock);
    return p != NULL ? 0 : -ENOMEM;
}

static void remember(struct forking *f, pid_t pid)
{
    pthread_mutex_lock(&f->lock);
    size_t n = atomic_load(&f->n);
    f->children[n] = pid;
    atomic_store(&f->n, n + 1);
    pthread_mutex_unlock(&f->lock);
}

/* A child's exit status: its request's outcome, in the two counters a
 * child cannot update in the parent. */
enum { EXIT_FAILED = 1, EXIT_TIMED_OUT = 2 };

/* Reaps child i if it has exited (blocking: once it exits).  Called with
 * f->lock held; a blocking wait happens without it, and without reaping
 * (WNOWAIT), so the pid stays the child's until the list forgets it. */
static bool reaped(sks_server *srv, struct forking *f, size_t i,
                   bool blocking)
{
    pid_t pid = f->children[i], r;
    int status = 0;
    if (blocking) {
        siginfo_t si;
        pthread_mutex_unlock(&f->lock);
        while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) != 0 &&
               errno == EINTR)
            ;
        pthread_mutex_lock(&f->lock);
    }
    do
        r = waitpid(pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    /* ECHILD: someone else reaped it; forget it too. */
    if (r != pid && !(r < 0 && errno == ECHILD))
        return false;
    size_t n = atomic_load(&f->n) - 1;
    f->children[i] = f->children[n];
    atomic_store(&f->n, n);
    /* The child's exit status is its request's outcome. */
    int code = r >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_FAILED;
    if (code & EXIT_TIMED_OUT)
        atomic_fetch_add(&srv->timed_out, 1);
    sks__count_end(srv, code != 0 && code != EXIT_TIMED_OUT);
    return true;
}

static ssize_t index_of(const struct forking *f, pid_t pid)
{
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++)
        if (f->children[i] == pid)
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
static void collect(sks_server *srv, struct forking *f, bool blocking)
{
    if (f == NULL || atomic_load(&f->n) == 0)
        return;
    pthread_mutex_lock(&f->lock);
    while (!blocking && atomic_load(&f->n) > 0) {
        siginfo_t si;
        si.si_pid = 0;
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
            break;
        if (si.si_pid == 0) {
            pthread_mutex_unlock(&f->lock);
            return;
        }
        ssize_t i = index_of(f, si.si_pid);
        if (i < 0 || !reaped(srv, f, (size_t)i, false))
            break;
    }
    for (size_t i = 0; i < atomic_load(&f->n);)
        if (!reaped(srv, f, i, blocking))
            i++;
    pthread_mutex_unlock(&f->lock);
}

void sks_forking_collect_children(sks_server *srv)
{
    collect(srv, state_of(srv), false);
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
    size_t timed_out = atomic_load(&srv->timed_out);
    int err = srv->ops->finish_request(srv, req);
    if (err < 0)
        sks_server_handle_error(srv, req, err);
    srv->ops->shutdown_request(srv, req);
    sks__wake(srv); /* tell the parent to reap us now */
    bool cut = atomic_load(&srv->timed_out) != timed_out;
    _exit((err < 0 ? EXIT_FAILED : 0) | (cut ? EXIT_TIMED_OUT : 0));
}

int sks_forking_process_request(sks_server *srv, sks_request *req)
{
    struct forking *f = state_of(srv);
    if (f == NULL)
        return -EINVAL; /* a table naming this hook but another model */
    int err = reserve(f);
    if (err != 0)
        return err;
    /* The child ends in _exit and nothing in it returns, so the compiler
     * may let every register that held the server go; memcheck would then
     * report the server's memory, which the exit releases, as lost.  This
     * frame stays until the exit: the server is kept in its memory. */
    sks_server *volatile serving = srv;
    pid_t pid = fork();
    if (pid < 0)
        return -errno; /* the loop reports it and closes the request */
    if (pid == 0)
        run_child(serving, req);

    remember(f, pid);
    /* close, not shutdown: a FIN from the parent would cut the child's
     * connection.  The request stays counted as active until the child is
     * reaped; its exit status decides completed or failed. */
    sks__request_release(srv, req);
    return 0;
}

void sks_forking_service_actions(sks_server *srv)
{
    collect(srv, state_of(srv), false);
    sks__model_super(srv, &sks__forking_model)->service_actions(srv);
}

void sks_forking_handle_timeout(sks_server *srv)
{
    collect(srv, state_of(srv), false);
    sks__model_super(srv, &sks__forking_model)->handle_timeout(srv);
}

static void forking_close(sks_server *srv, void *state)
{
    collect(srv, state, srv->block_on_close);
}

void sks_forking_server_close(sks_server *srv)
{
    sks__model_super(srv, &sks__forking_model)->server_close(srv);
    forking_close(srv, state_of(srv));
}

static int forking_attach(sks_server *srv, void **state)
{
    (void)srv;
    struct forking *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    pthread_mutex_init(&f->lock, NULL);
    atomic_init(&f->n, 0);
    f->max_children = DEFAULT_MAX_CHILDREN;
    *state = f;
    return 0;
}

static size_t forking_limit(const void *state)
{
    const struct forking *f = state;
    return f->max_children;
}

static size_t forking_cut(void *state, int sig)
{
    struct forking *f = state;
    size_t n = 0;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < atomic_load(&f->n); i++)
        if (kill(f->children[i], sig) == 0)
            n++;
    pthread_mutex_unlock(&f->lock);
    return n;
}

static void forking_free(void *state)
{
    struct forking *f = state;
    pthread_mutex_destroy(&f->lock);
    free(f->children);
    free(f);
}

const sks_model sks__forking_model = {
    .name = "forking",
    .roles = SKS__RUNS_REQUESTS,
    .process_request = sks_forking_process_request,
    .attach = forking_attach,
    .limit = forking_limit,
    .cut = forking_cut,
    .close = forking_close,
    .free = forking_free,
};

int sks_server_set_max_children(sks_server *srv, size_t n)
{
    struct forking *f = state_of(srv);
    if (n == 0)
        return -EINVAL;
    if (f != NULL) /* else not a forking server: nothing to set */
        f->max_children = n;
    return 0;
}

size_t sks_server_active_children(const sks_server *srv)
{
    struct forking *f = state_of(srv);
    return f != NULL ? atomic_load(&f->n) : 0;
}

int sks_forking_mixin(sks_server_ops *out, const sks_server_ops *base)
{
    int err = sks__mixin_wrap(out, base, &sks__forking_model);
    if (err != 0)
        return err;
    out->process_request = sks_forking_process_request;
    out->service_actions = sks_forking_service_actions;
    out->handle_timeout = sks_forking_handle_timeout;
    out->server_close = sks_forking_server_close;
    return 0;
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
    .model = &sks__forking_model,
    SKS__TCP_TRANSPORT,
    SKS__FORKING_HOOKS,
};

const sks_server_ops sks_forking_udp_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ForkingUDPServer",
    .parent = &sks_udp_ops,
    .model = &sks__forking_model,
    SKS__UDP_TRANSPORT,
    SKS__FORKING_HOOKS,
};

const sks_server_ops sks_forking_unix_stream_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ForkingUnixStreamServer",
    .parent = &sks_unix_stream_ops,
    .model = &sks__forking_model,
    SKS__UNIX_STREAM_TRANSPORT,
    SKS__FORKING_HOOKS,
};

const sks_server_ops sks_forking_unix_dgram_ops = {
    .version = SKS_OPS_VERSION,
    .name = "ForkingUnixDatagramServer",
    .parent = &sks_unix_dgram_ops,
    .model = &sks__forking_model,
    SKS__UNIX_DGRAM_TRANSPORT,
    SKS__FORKING_HOOKS,
};
