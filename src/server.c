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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MAX_PACKET 8192
#define DEFAULT_MAX_THREADS 1024
#define DEFAULT_MAX_CHILDREN 40
/* Back-off while accept fails for lack of descriptors or memory. */
#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 100

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

sks_request *sks__request_new(int fd, size_t packet_cap)
{
    sks_request *req = malloc(sizeof(*req) + packet_cap);
    if (req == NULL)
        return NULL;
    req->fd = fd;
    memset(&req->client, 0, sizeof(req->client));
    req->packet_len = 0;
    req->truncated = false;
    req->datagram = packet_cap > 0;
    return req;
}

void sks__request_free(sks_request *req)
{
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

/* ------------------------------------------------------------------------ */
/* Creation and release                                                      */

static bool family_suits(const sks_server_ops *ops, int family)
{
    if (ops->address_family == AF_UNIX)
        return family == AF_UNIX;
    return family == AF_INET || family == AF_INET6;
}

int sks_server_new(sks_server **out, const sks_server_ops *ops,
                   const char *address, const sks_handler_class *handler,
                   void *user, unsigned flags)
{
    sks_server *srv;
    int wake[2];
    int err;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (ops == NULL || handler == NULL || address == NULL ||
        (ops->socket_type != SOCK_STREAM && ops->socket_type != SOCK_DGRAM))
        return -EINVAL;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    err = sks_addr_parse(address, &srv->address);
    if (err == 0 && !family_suits(ops, srv->address.u.sa.sa_family))
        err = -EAFNOSUPPORT;
    if (err != 0) {
        free(srv);
        return err;
    }
    srv->ops = ops;
    srv->handler = handler;
    srv->user = user;
    srv->queue_size = SOMAXCONN;
    srv->timeout = -1.0;
    srv->max_packet_size = DEFAULT_MAX_PACKET;
    srv->block_on_close = true;
    srv->max_threads = DEFAULT_MAX_THREADS;
    srv->max_children = DEFAULT_MAX_CHILDREN;
    atomic_init(&srv->refs, 1);
    atomic_init(&srv->shutdown_request, 0);
    atomic_init(&srv->accept_paused, false);
    atomic_init(&srv->active, 0);
    atomic_init(&srv->nchildren, 0);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);

    /* Stream listeners are non-blocking so that a connection reset between
     * poll and accept (or taken by another process sharing the socket)
     * never blocks the loop; accepted sockets are blocking again. */
    int type = ops->socket_type | SOCK_CLOEXEC;
    if (ops->socket_type == SOCK_STREAM)
        type |= SOCK_NONBLOCK;
    srv->fd = socket(srv->address.u.sa.sa_family, type, 0);
    if (srv->fd < 0) {
        err = -errno;
        goto fail;
    }
    /* The wake-up pipe: shutdown (from any thread or a signal handler) and
     * the end of a request at a concurrency bound write one byte, so the
     * loop never sleeps through them. */
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        err = -errno;
        goto fail;
    }
    srv->wake_rd = wake[0];
    srv->wake_wr = wake[1];

    if (!(flags & SKS_NO_BIND)) {
        err = sks_server_bind_and_activate(srv);
        if (err != 0)
            goto fail;
    }
    *out = srv;
    return 0;

fail:
    sks__close(srv->fd);
    srv->fd = -1;
    srv->closed = true;
    sks_server_free(srv);
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
    while (read(srv->wake_rd, buf, sizeof(buf)) > 0)
        ;
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
        sks_server_shutdown_request(srv, req); /* bpo-26309 */
        return true;
    }
    err = ops->process_request(srv, req);
    if (err != 0) {
        ops->handle_error(srv, req, err);
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
    if (atomic_load(&srv->accept_paused)) {
        n = 1;
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

static int seconds_to_ms(double s)
{
    if (s < 0)
        return -1;
    if (s > 86400.0)
        return 86400 * 1000;
    return (int)ceil(s * 1000.0);
}

int sks_server_serve_forever(sks_server *srv, double poll_interval)
{
    int ms = seconds_to_ms(poll_interval);
    int rc = 0;

    pthread_mutex_lock(&srv->lock);
    if (srv->serving) {
        pthread_mutex_unlock(&srv->lock);
        return -EBUSY;
    }
    srv->serving = true;
    srv->is_shut_down = false;
    srv->serving_thread = pthread_self();
    pthread_mutex_unlock(&srv->lock);

    while (!atomic_load(&srv->shutdown_request)) {
        int r = wait_for_request(srv, ms);
        /* bpo-35017: a shutdown seen after the wait ends the loop before
         * another request is accepted. */
        if (atomic_load(&srv->shutdown_request))
            break;
        if (r < 0) {
            rc = r;
            break;
        }
        if (r > 0)
            handle_request_noblock(srv);
        srv->ops->service_actions(srv);
    }

    pthread_mutex_lock(&srv->lock);
    atomic_store(&srv->shutdown_request, 0);
    srv->serving = false;
    srv->is_shut_down = true;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    return rc;
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
    srv->ops->shutdown_request(srv, req);
    sks__request_free(req);
}

void sks_server_handle_error(sks_server *srv, sks_request *req, int err)
{
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
    return atomic_load(&((sks_server *)srv)->active);
}

size_t sks_server_active_children(const sks_server *srv)
{
    return atomic_load(&((sks_server *)srv)->nchildren);
}
