/*
 * loop.c - the request loop: Python's serve_forever, handle_request and
 * _handle_request_noblock, the wait for a request, and the wake-up pipe
 * that ends that wait.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <unistd.h>

/* Back-off while accept fails for lack of descriptors or memory. */
#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 100
/* At a concurrency bound, how often the loop looks again whether a request
 * has ended (see wait_for_request). */
#define LIMIT_RECHECK_MS 20
/* After an eager try of get_request finds nothing waiting, this many
 * requests are taken after a poll before the loop tries eagerly again
 * (see sks_base_serve_forever). */
#define EAGER_PAUSE 16

void sks__wake(sks_server *srv)
{
    /* A full pipe already holds a pending wake-up: EAGAIN is fine.  But
     * this runs in signal handlers (sks_server_request_shutdown), between
     * the interrupted code's failing call and its read of errno: that
     * errno must survive. */
    int saved = errno;
    char c = 1;
    ssize_t r;
    do
        r = write(srv->wake_wr, &c, 1);
    while (r < 0 && errno == EINTR);
    errno = saved;
}

static void drain_wake(sks_server *srv)
{
    char buf[64];
    ssize_t r;
    /* A short read emptied the pipe: stop there rather than pay a second
     * read for its EAGAIN (a system call per wake-up, so per request of a
     * forking server).  A byte written after it makes the next poll
     * return at once, so none is missed. */
    do
        r = read(srv->wake_rd, buf, sizeof(buf));
    while (r == (ssize_t)sizeof(buf) || (r < 0 && errno == EINTR));
}

static bool exhaustion(int err)
{
    return err == -EMFILE || err == -ENFILE || err == -ENOBUFS ||
           err == -ENOMEM;
}

/* Python's _handle_request_noblock.  Returns true when a request was taken
 * (whatever became of it). */
static bool handle_request_noblock(sks_server *srv)
{
    const sks_server_ops *ops = srv->ops;
    sks_request *req = NULL;
    int err = ops->get_request(srv, &req);

    if (err != 0) {
        /* Errors are not the handler's business (Python ignores them), but
         * retrying at once while out of descriptors would spin: pause
         * accepting for a growing back-off instead. */
        if (exhaustion(err)) {
            srv->backoff_ms = srv->backoff_ms ? srv->backoff_ms * 2
                                              : BACKOFF_FIRST_MS;
            if (srv->backoff_ms > BACKOFF_MAX_MS)
                srv->backoff_ms = BACKOFF_MAX_MS;
            double resume = sks__now() + srv->backoff_ms / 1000.0;
            srv->accept_resume.tv_sec = (time_t)resume;
            srv->accept_resume.tv_nsec =
                (long)((resume - (double)(time_t)resume) * 1e9);
        }
        return false;
    }
    srv->backoff_ms = 0;
    if (!ops->verify_request(srv, req)) {
        sks__refuse(srv, req, false); /* bpo-26309: still shut down */
        return true;
    }
    if (srv->overload_policy == SKS_OVERLOAD_REFUSE && sks__at_limit(srv)) {
        sks__refuse(srv, req, true);
        return true;
    }
    sks__admit(srv, req);
    err = ops->process_request(srv, req);
    if (err < 0) {
        sks_server_handle_error(srv, req, err);
        sks_server_shutdown_request(srv, req);
    }
    return true;
}

/*
 * Waits until deadline (INFINITY: forever) for the listening sockets (the
 * server's and its SO_REUSEPORT siblings: listeners.c) or the wake pipe.
 * Returns 1 when a socket is readable (get_request then accepts on it),
 * 0 when not (deadline, wake, accepting paused), SKS_ECLOSED when the
 * socket is gone.
 */
static int wait_for_request(sks_server *srv, double deadline)
{
    struct pollfd p[1 + SKS__MAX_LISTENERS];
    int lfd[SKS__MAX_LISTENERS];
    size_t nl = sks__listeners(srv, lfd, SKS__MAX_LISTENERS);
    bool listen = true;

    if (srv->closed || nl == 0)
        return SKS_ECLOSED;
    p[0] = (struct pollfd){ .fd = srv->wake_rd, .events = POLLIN };
    for (size_t i = 0; i < nl; i++)
        p[1 + i] = (struct pollfd){ .fd = lfd[i], .events = POLLIN };
    if (sks__paused(srv)) {
        /* A forked child's end is seen only when it is reaped, and its
         * wake-up byte comes just before its exit (a killed child sends
         * none): look again soon rather than sleep through it. */
        listen = false;
        double recheck = sks__now() + LIMIT_RECHECK_MS / 1000.0;
        if (recheck < deadline)
            deadline = recheck;
        /* Shedding: a connection waiting to be accepted sheds one in
         * flight, once per slot (until a request ends and wakes the loop,
         * or the recheck finds none to shed). */
        if (srv->overload_policy == SKS_OVERLOAD_SHED_IDLE && !srv->shedding)
            listen = true;
    } else if (srv->backoff_ms != 0) {
        double resume = (double)srv->accept_resume.tv_sec +
                        (double)srv->accept_resume.tv_nsec / 1e9;
        if (resume > sks__now()) {
            listen = false;
            if (resume < deadline)
                deadline = resume;
        }
    }
    int r = sks__wait(p, listen ? 1 + nl : 1, deadline);
    if (r < 0)
        return r;
    if (p[0].revents || r == 0)
        srv->shedding = false;
    if (p[0].revents)
        drain_wake(srv);
    /* The sockets take turns in being looked at first, so that a busy one
     * never starves another's queue. */
    size_t ready = 0;
    for (size_t k = 0; listen && k < nl && ready == 0; k++) {
        size_t i = 1 + (srv->listen_turn + k) % nl;
        if (p[i].revents != 0)
            ready = i;
    }
    srv->listen_turn++;
    if (ready != 0 && sks__paused(srv)) {
        srv->shedding = true;
        (void)sks__shed_one(srv);
        return 0;
    }
    if (ready != 0 && (p[ready].revents & POLLNVAL))
        return SKS_ECLOSED;
    if (ready != 0)
        sks__accept_on(srv, nl > 1 ? p[ready].fd : -1);
    return ready != 0;
}

/* True when the loop may try get_request without polling first: the
 * socket is open, and accepting is neither paused at the concurrency bound
 * nor backing off after descriptor or memory exhaustion. */
static bool may_take_eagerly(const sks_server *srv)
{
    return !srv->closed && srv->fd >= 0 && srv->backoff_ms == 0 &&
           !sks__paused(srv);
}

int sks__serve_begin(sks_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    if (srv->serving) {
        pthread_mutex_unlock(&srv->lock);
        return -EBUSY;
    }
    srv->serving = true;
    srv->is_shut_down = false;
    srv->serving_thread = pthread_self();
    pthread_mutex_unlock(&srv->lock);
    /* A successor started by an upgrade serves now: its predecessor may
     * stop accepting (connections queue meanwhile on the shared socket). */
    sks__upgrade_signal_ready();
    return 0;
}

void sks__serve_end(sks_server *srv)
{
    sks__accept_on(srv, -1);
    pthread_mutex_lock(&srv->lock);
    atomic_store(&srv->shutdown_request, 0);
    srv->serving = false;
    srv->is_shut_down = true;
    sks__upgrade_loop_ended(srv);
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

int sks_base_serve_forever(sks_server *srv, double poll_interval)
{
    int rc = sks__serve_begin(srv);
    if (rc != 0)
        return rc;

    /*
     * Eager turns: right after a request was taken the next one is often
     * waiting already (a busy datagram server, a burst of connections), and
     * taking it without the poll saves a system call per request, as a
     * blocking recvfrom or accept loop would.  get_request never blocks
     * (non-blocking listener, MSG_DONTWAIT datagrams), so a try that finds
     * nothing costs one -EAGAIN; after such a miss the next EAGER_PAUSE
     * requests are taken the usual way.  Shutdown is still checked, and
     * service_actions still runs, every turn.
     */
    bool took = false;
    unsigned pause = 0;
    while (!atomic_load(&srv->shutdown_request)) {
        bool eager = took && pause == 0 && may_take_eagerly(srv);
        int r = eager ? 1
                      : wait_for_request(srv, sks__deadline_in(poll_interval));
        /* bpo-35017: a shutdown seen after the wait ends the loop before
         * another request is accepted. */
        if (atomic_load(&srv->shutdown_request))
            break;
        if (r < 0) {
            rc = r;
            break;
        }
        took = r > 0 && handle_request_noblock(srv);
        if (eager && !took)
            pause = EAGER_PAUSE;
        else if (took && !eager && pause > 0)
            pause--;
        srv->ops->service_actions(srv);
        sks__upgrade_turn(srv);
        /* A model may end the loop (a pre-forked child's quota). */
        if (sks__models_done(srv))
            break;
    }
    sks__serve_end(srv);
    return rc;
}

int sks_server_serve_forever(sks_server *srv, double poll_interval)
{
    return srv->ops->serve_forever(srv, poll_interval);
}

bool sks__is_serving(sks_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    bool serving = srv->serving;
    pthread_mutex_unlock(&srv->lock);
    return serving;
}

int sks_server_handle_request(sks_server *srv)
{
    double deadline = sks__deadline_in(srv->timeout);

    for (;;) {
        int r = wait_for_request(srv, deadline);
        if (r < 0)
            return r;
        if (r > 0 && handle_request_noblock(srv))
            return 0;
        /* Still at the bound: only the mixin's housekeeping (a forking
         * server reaps there) can reopen accepting; without it this call
         * would wait forever. */
        if (r == 0 && sks__paused(srv))
            srv->ops->service_actions(srv);
        if (deadline != INFINITY && sks__now() >= deadline) {
            srv->ops->handle_timeout(srv);
            return -ETIMEDOUT;
        }
    }
}
