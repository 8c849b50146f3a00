/*
 * server.c - BaseServer: creation, the request loop (serve_forever,
 * handle_request, _handle_request_noblock), shutdown, attributes, and the
 * base hooks every transport shares.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MAX_PACKET 8192
#define DEFAULT_MAX_THREADS 1024
#define DEFAULT_MAX_CHILDREN 40
#define DEFAULT_POOL_MIN 4
#define DEFAULT_POOL_MAX 64
#define DEFAULT_POOL_QUEUE 64
#define DEFAULT_POOL_IDLE 30.0
#define DEFAULT_PREFORK_TIMEOUT 5.0
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

/* ------------------------------------------------------------------------ */
/* Clock                                                                     */

double sks__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sks__ms_until(double deadline)
{
    double left = deadline - sks__now();
    if (left <= 0)
        return 0;
    if (left > 86400.0)
        return 86400 * 1000;
    return (int)ceil(left * 1000.0);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

sks_request *sks__request_new(sks_server *srv, int fd, size_t packet_cap)
{
    sks_request *req = NULL;
    if (packet_cap > 0) {
        req = atomic_exchange(&srv->spare, NULL);
        if (req != NULL && req->packet_cap != packet_cap) {
            free(req); /* max_packet_size changed */
            req = NULL;
        }
    }
    if (req == NULL)
        req = malloc(sizeof(*req) + packet_cap);
    if (req == NULL)
        return NULL;
    req->packet_cap = packet_cap;
    req->fd = fd;
    memset(&req->client, 0, sizeof(req->client));
    req->packet_len = 0;
    req->truncated = false;
    req->datagram = packet_cap > 0;
    req->admitted = false;
    req->failed = false;
    req->proxied = false;
    req->prev = req->next = NULL;
    return req;
}

void sks__request_free(sks_server *srv, sks_request *req)
{
    if (req->datagram)
        req = atomic_exchange(&srv->spare, req);
    free(req);
}

int sks_request_fd(const sks_request *req)
{
    return req->fd;
}

const sks_addr *sks_request_client_address(const sks_request *req)
{
    return &req->client;
}

const void *sks_request_packet(const sks_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->datagram ? req->packet_len : 0;
    return req->datagram ? req->packet : NULL;
}

bool sks_request_truncated(const sks_request *req)
{
    return req->truncated;
}

int sks_request_reply(sks_request *req, const void *buf, size_t n)
{
    if (req->datagram)
        return sks__sendto(req->fd, buf, n, &req->client);
    return sks__send_all(req->fd, buf, n);
}

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
     * or pipe2() fails before they are set. */
    srv->fd = srv->wake_rd = srv->wake_wr = -1;
    srv->address = *address;
    srv->ops = ops;
    srv->handler = handler;
    srv->user = user;
    srv->queue_size = SOMAXCONN;
    srv->timeout = -1.0;
    srv->max_packet_size = DEFAULT_MAX_PACKET;
    srv->block_on_close = true;
    srv->max_threads = DEFAULT_MAX_THREADS;
    /* Request threads' stacks: see sks_server_set_thread_stack_size. */
    srv->stack_size = SKS_DEFAULT_THREAD_STACK_SIZE;
    srv->max_children = DEFAULT_MAX_CHILDREN;
    srv->pool_min = DEFAULT_POOL_MIN;
    srv->pool_max = DEFAULT_POOL_MAX;
    srv->pool_queue = DEFAULT_POOL_QUEUE;
    srv->pool_idle = DEFAULT_POOL_IDLE;
    srv->prefork_timeout = DEFAULT_PREFORK_TIMEOUT;
    atomic_init(&srv->refs, 1);
    atomic_init(&srv->spare, NULL);
    atomic_init(&srv->shutdown_request, 0);
    atomic_init(&srv->accepted, 0);
    atomic_init(&srv->completed, 0);
    atomic_init(&srv->failed, 0);
    atomic_init(&srv->refused, 0);
    atomic_init(&srv->nchildren, 0);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);

    /* The wake-up pipe: shutdown (from any thread or a signal handler) and
     * the end of a request at a concurrency bound write one byte, so the
     * loop never sleeps through them. */
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        err = -errno;
        goto fail;
    }
    srv->wake_rd = wake[0];
    srv->wake_wr = wake[1];

    if (fd < 0) {
        /* Stream listeners are non-blocking so that a connection reset
         * between poll and accept (or taken by another process sharing the
         * socket) never blocks the loop; accepted sockets are blocking
         * again. */
        int type = ops->socket_type | SOCK_CLOEXEC;
        if (ops->socket_type == SOCK_STREAM)
            type |= SOCK_NONBLOCK;
        fd = socket(address->u.sa.sa_family, type, 0);
        if (fd < 0) {
            err = -errno;
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
    sks__pool_free(srv);
    sks__prefork_free(srv);
    free(atomic_load(&srv->spare));
    free(srv->children);
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
    srv->ops->server_close(srv);
}

/* ------------------------------------------------------------------------ */
/* The loop                                                                  */

void sks__wake(sks_server *srv)
{
    /* A full pipe already holds a pending wake-up: EAGAIN is fine. */
    char c = 1;
    ssize_t r;
    do
        r = write(srv->wake_wr, &c, 1);
    while (r < 0 && errno == EINTR);
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

size_t sks__active(const sks_server *srv)
{
    sks_server *m = (sks_server *)srv;
    /* Ends first: a request that ends between the two loads then shows as
     * active a moment longer, never as a negative count. */
    size_t ended = atomic_load(&m->completed) + atomic_load(&m->failed);
    return atomic_load(&m->accepted) - ended;
}

/* The bound in force: the mixin's and max_connections, whichever is lower. */
static size_t limit(const sks_server *srv)
{
    size_t a = srv->mixin_limit, b = srv->max_connections;
    if (a == 0 || (b != 0 && b < a))
        return b;
    return a;
}

static bool at_limit(const sks_server *srv)
{
    size_t l = limit(srv);
    return l != 0 && sks__active(srv) >= l;
}

static void inflight_add(sks_server *srv, sks_request *req)
{
    pthread_mutex_lock(&srv->lock);
    req->next = srv->inflight;
    if (srv->inflight != NULL)
        srv->inflight->prev = req;
    srv->inflight = req;
    pthread_mutex_unlock(&srv->lock);
}

/* Before the socket is closed, so a drain never shuts down a descriptor
 * number that has been reused. */
static void inflight_remove(sks_server *srv, sks_request *req)
{
    pthread_mutex_lock(&srv->lock);
    if (req->prev != NULL)
        req->prev->next = req->next;
    else if (srv->inflight == req)
        srv->inflight = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    pthread_mutex_unlock(&srv->lock);
}

void sks__count_end(sks_server *srv, bool failed)
{
    bool was_at_limit = at_limit(srv);
    atomic_fetch_add(failed ? &srv->failed : &srv->completed, 1);
    /* The loop may be asleep without the listening socket: reopen it. */
    if (was_at_limit)
        sks__wake(srv);
}

static void admit(sks_server *srv, sks_request *req)
{
    req->admitted = true;
    if (!req->datagram)
        inflight_add(srv, req);
    atomic_fetch_add(&srv->accepted, 1);
}

static void refuse(sks_server *srv, sks_request *req, bool overload)
{
    atomic_fetch_add(&srv->refused, 1);
    if (overload)
        srv->ops->refuse_request(srv, req);
    sks_server_shutdown_request(srv, req);
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
        refuse(srv, req, false); /* bpo-26309: still shut down */
        return true;
    }
    if (srv->overload_policy == SKS_OVERLOAD_REFUSE && at_limit(srv)) {
        refuse(srv, req, true);
        return true;
    }
    admit(srv, req);
    err = ops->process_request(srv, req);
    if (err != 0) {
        sks_server_handle_error(srv, req, err);
        sks_server_shutdown_request(srv, req);
    }
    return true;
}

/*
 * Waits up to timeout_ms (-1: forever) for the listening socket or the wake
 * pipe.  Returns 1 when the socket is readable, 0 when not (timeout, wake,
 * EINTR, accepting paused), SKS_ECLOSED when the socket is gone.
 */
static int wait_for_request(sks_server *srv, int timeout_ms)
{
    struct pollfd p[2] = {
        { .fd = srv->wake_rd, .events = POLLIN },
        { .fd = srv->fd, .events = POLLIN },
    };
    nfds_t n = 2;

    if (srv->closed || srv->fd < 0)
        return SKS_ECLOSED;
    if (srv->overload_policy == SKS_OVERLOAD_BACKPRESSURE && at_limit(srv)) {
        /* A forked child's end is seen only when it is reaped, and its
         * wake-up byte comes just before its exit (a killed child sends
         * none): look again soon rather than sleep through it. */
        n = 1;
        if (timeout_ms < 0 || timeout_ms > LIMIT_RECHECK_MS)
            timeout_ms = LIMIT_RECHECK_MS;
    } else if (srv->backoff_ms != 0) {
        double resume = (double)srv->accept_resume.tv_sec +
                        (double)srv->accept_resume.tv_nsec / 1e9;
        int left = sks__ms_until(resume);
        if (left > 0) {
            n = 1;
            if (timeout_ms < 0 || left < timeout_ms)
                timeout_ms = left;
        }
    }
    int r = poll(p, n, timeout_ms);
    if (r < 0)
        return errno == EINTR ? 0 : -errno;
    if (p[0].revents)
        drain_wake(srv);
    if (n == 2 && (p[1].revents & POLLNVAL))
        return SKS_ECLOSED;
    return n == 2 && p[1].revents != 0;
}

/* True when the loop may try get_request without polling first: the
 * socket is open, and accepting is neither paused at the concurrency bound
 * nor backing off after descriptor or memory exhaustion. */
static bool may_take_eagerly(const sks_server *srv)
{
    return !srv->closed && srv->fd >= 0 && srv->backoff_ms == 0 &&
           !(srv->overload_policy == SKS_OVERLOAD_BACKPRESSURE &&
             at_limit(srv));
}

static int seconds_to_ms(double s)
{
    /* Negative, or NaN (whose conversion to int would be undefined): no
     * timer, as poll(-1). */
    if (!(s >= 0))
        return -1;
    if (s > 86400.0)
        return 86400 * 1000;
    return (int)ceil(s * 1000.0);
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
    return 0;
}

void sks__serve_end(sks_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    atomic_store(&srv->shutdown_request, 0);
    srv->serving = false;
    srv->is_shut_down = true;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

int sks_base_serve_forever(sks_server *srv, double poll_interval)
{
    int ms = seconds_to_ms(poll_interval);
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
        int r = eager ? 1 : wait_for_request(srv, ms);
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
        /* A pre-forked child recycles itself after its quota. */
        if (srv->stop_after != 0 &&
            atomic_load(&srv->accepted) >= srv->stop_after)
            break;
    }
    sks__serve_end(srv);
    return rc;
}

int sks_server_serve_forever(sks_server *srv, double poll_interval)
{
    if (srv->ops->serve_forever != NULL)
        return srv->ops->serve_forever(srv, poll_interval);
    return sks_base_serve_forever(srv, poll_interval);
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

static bool is_serving(sks_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    bool serving = srv->serving;
    pthread_mutex_unlock(&srv->lock);
    return serving;
}

/* Waits until the loop has stopped and no request runs, or the deadline.
 * Once the loop has stopped, this thread does the loop's housekeeping
 * (reaping threads and children), so ends are noticed. */
static bool settle(sks_server *srv, double deadline)
{
    for (;;) {
        bool serving = is_serving(srv);
        if (!serving)
            srv->ops->service_actions(srv);
        if (!serving && sks__active(srv) == 0)
            return true;
        if (sks__now() >= deadline)
            return false;
        struct timespec ts = { .tv_nsec = 2 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

/* Ends what still runs: connections shut down (blocked handlers see end of
 * input; queued ones end at once), children asked to terminate. */
static size_t cut_inflight(sks_server *srv, int sig)
{
    size_t n = 0;
    pthread_mutex_lock(&srv->lock);
    for (sks_request *r = srv->inflight; r != NULL; r = r->next) {
        (void)shutdown(r->fd, SHUT_RDWR);
        n++;
    }
    pthread_mutex_unlock(&srv->lock);
    size_t nc = atomic_load(&srv->nchildren);
    for (size_t i = 0; i < nc; i++)
        if (kill(srv->children[i], sig) == 0)
            n++;
    return n;
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

int sks_server_handle_request(sks_server *srv)
{
    double deadline = srv->timeout >= 0 ? sks__now() + srv->timeout : 0;

    for (;;) {
        int ms = srv->timeout >= 0 ? sks__ms_until(deadline) : -1;
        int r = wait_for_request(srv, ms);
        if (r < 0)
            return r;
        if (r > 0 && handle_request_noblock(srv))
            return 0;
        /* Still at the bound: only the mixin's housekeeping (a forking
         * server reaps there) can reopen accepting; without it this call
         * would wait forever. */
        if (r == 0 && srv->overload_policy == SKS_OVERLOAD_BACKPRESSURE &&
            at_limit(srv))
            srv->ops->service_actions(srv);
        if (srv->timeout >= 0 && sks__now() >= deadline) {
            srv->ops->handle_timeout(srv);
            return -ETIMEDOUT;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Dispatchers                                                               */

int sks_server_finish_request(sks_server *srv, sks_request *req)
{
    return srv->ops->finish_request(srv, req);
}

void sks_server_shutdown_request(sks_server *srv, sks_request *req)
{
    bool admitted = req->admitted, failed = req->failed;
    if (admitted && !req->datagram)
        inflight_remove(srv, req);
    srv->ops->shutdown_request(srv, req);
    sks__request_free(srv, req);
    if (admitted)
        sks__count_end(srv, failed);
}

void sks__request_release(sks_server *srv, sks_request *req)
{
    if (req->admitted && !req->datagram)
        inflight_remove(srv, req);
    srv->ops->close_request(srv, req);
    sks__request_free(srv, req);
}

void sks_server_handle_error(sks_server *srv, sks_request *req, int err)
{
    if (req != NULL)
        req->failed = true;
    srv->ops->handle_error(srv, req, err);
}

/* ------------------------------------------------------------------------ */
/* Base hooks                                                                */

bool sks_base_verify_request(sks_server *srv, sks_request *req)
{
    (void)srv;
    (void)req;
    return true;
}

int sks_base_process_request(sks_server *srv, sks_request *req)
{
    int err = srv->ops->finish_request(srv, req);
    if (err != 0)
        return err; /* the loop reports it, then shuts the request down */
    sks_server_shutdown_request(srv, req);
    return 0;
}

void sks_base_shutdown_request(sks_server *srv, sks_request *req)
{
    srv->ops->close_request(srv, req);
}

void sks_base_close_request(sks_server *srv, sks_request *req)
{
    (void)srv;
    (void)req;
}

void sks_base_handle_error(sks_server *srv, sks_request *req, int err)
{
    char addr[SKS_ADDRSTRLEN] = "unknown";
    (void)srv;
    if (req != NULL && sks_addr_format(&req->client, addr, sizeof(addr)) < 0)
        snprintf(addr, sizeof(addr), "unknown");
    /* One fprintf, under the stream lock, so that blocks from concurrent
     * request threads do not interleave. */
    flockfile(stderr);
    fprintf(stderr,
            "----------------------------------------\n"
            "Exception occurred during processing of request from %s\n"
            "Error: %s (%s)\n"
            "----------------------------------------\n",
            addr, sks_strerror(err), sks_errname(err));
    funlockfile(stderr);
}

void sks_base_handle_timeout(sks_server *srv)
{
    (void)srv;
}

void sks_base_service_actions(sks_server *srv)
{
    (void)srv;
}

void sks_base_refuse_request(sks_server *srv, sks_request *req)
{
    (void)srv;
    (void)req;
}

/* ------------------------------------------------------------------------ */
/* Attributes                                                                */

int sks_server_fileno(const sks_server *srv)
{
    return srv->fd;
}

const sks_addr *sks_server_address(const sks_server *srv)
{
    return &srv->address;
}

int sks_server_address_family(const sks_server *srv)
{
    return srv->address.u.sa.sa_family;
}

int sks_server_socket_type(const sks_server *srv)
{
    return srv->ops->socket_type;
}

const sks_server_ops *sks_server_ops_of(const sks_server *srv)
{
    return srv->ops;
}

void *sks_server_user(const sks_server *srv)
{
    return srv->user;
}

int sks_server_set_allow_reuse_address(sks_server *srv, bool on)
{
    srv->reuse_address = on;
    return 0;
}

int sks_server_set_allow_reuse_port(sks_server *srv, bool on)
{
    srv->reuse_port = on;
    return 0;
}

int sks_server_set_request_queue_size(sks_server *srv, int n)
{
    if (n < 0)
        return -EINVAL;
    srv->queue_size = n;
    return 0;
}

int sks_server_set_timeout(sks_server *srv, double seconds)
{
    if (isnan(seconds))
        return -EINVAL;
    srv->timeout = seconds < 0 ? -1.0 : seconds;
    return 0;
}

double sks_server_timeout(const sks_server *srv)
{
    return srv->timeout;
}

int sks_server_set_max_packet_size(sks_server *srv, size_t n)
{
    if (n == 0 || n > (1u << 24))
        return -EINVAL;
    srv->max_packet_size = n;
    return 0;
}

int sks_server_set_unlink_stale(sks_server *srv, bool on)
{
    srv->unlink_stale = on;
    return 0;
}

int sks_server_set_unlink_on_close(sks_server *srv, bool on)
{
    srv->unlink_on_close = on;
    return 0;
}

int sks_server_set_block_on_close(sks_server *srv, bool on)
{
    srv->block_on_close = on;
    return 0;
}

int sks_server_set_daemon_threads(sks_server *srv, bool on)
{
    srv->daemon_threads = on;
    return 0;
}

int sks_server_set_max_threads(sks_server *srv, size_t n)
{
    srv->max_threads = n;
    return 0;
}

int sks_server_set_thread_stack_size(sks_server *srv, size_t bytes)
{
    if (bytes != 0 && bytes < 16384)
        return -EINVAL;
    srv->stack_size = bytes;
    return 0;
}

int sks_server_set_max_children(sks_server *srv, size_t n)
{
    if (n == 0)
        return -EINVAL;
    srv->max_children = n;
    return 0;
}

size_t sks_server_active_requests(const sks_server *srv)
{
    return sks__active(srv);
}

int sks_server_set_max_connections(sks_server *srv, size_t n)
{
    srv->max_connections = n;
    return 0;
}

int sks_server_set_overload_policy(sks_server *srv, int policy)
{
    if (policy != SKS_OVERLOAD_BACKPRESSURE && policy != SKS_OVERLOAD_REFUSE)
        return -EINVAL;
    srv->overload_policy = policy;
    return 0;
}

void sks_server_stats(const sks_server *srv, sks_stats *out)
{
    sks_server *m = (sks_server *)srv;
    /* Ends before accepted, so that active is never negative. */
    out->completed = atomic_load(&m->completed);
    out->failed = atomic_load(&m->failed);
    out->accepted = atomic_load(&m->accepted);
    out->refused = atomic_load(&m->refused);
    out->active = out->accepted - out->completed - out->failed;
    out->queued = 0;
    out->workers = 0;
    sks__pool_stats(m, out);
}

size_t sks_server_active_children(const sks_server *srv)
{
    return atomic_load(&((sks_server *)srv)->nchildren);
}
