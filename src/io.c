/*
 * io.c - the system-call layer under the readers, writers, the PROXY
 * header and the transports.  Every byte a handler reads or writes, and
 * every datagram and connection the servers take or send, passes through
 * these few functions: EINTR is retried here, SIGPIPE is suppressed here,
 * and deadlines are kept here.
 *
 * Each operation tries its system call first and waits (sks__wait, the
 * thread's wait backend) only when the call reports EAGAIN, as Go's
 * internal/poll.FD.Read does: data already queued costs no wait, and a
 * backend whose sockets are non-blocking (fibers parking on an epoll loop)
 * slots in under these functions without a change above them.  A timeout
 * is reported only once the operation's deadline has passed; EAGAIN before
 * it means "not ready yet" and is waited out.  One exception, where the
 * backend keeps a read hint (fibers): a stream read right after a short
 * one, with no readiness since, waits first, as an epoll server reads once
 * per readiness instead of a second time for EAGAIN.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                 */

/* The handler class's convention for every limit in seconds: 0, negative,
 * NaN, INFINITY and anything over INT_MAX seconds mean none. */
static double seconds_or_none(double s)
{
    return s > 0 && s < (double)INT_MAX ? s : INFINITY;
}

struct sks__conn sks__conn_make(int fd, double timeout)
{
    return (struct sks__conn){
        .fd = fd,
        .timeout = seconds_or_none(timeout),
        .deadline = INFINITY,
        .request_timeout = INFINITY,
        .idle_timeout = INFINITY,
        .transport = &sks_plain_transport,
    };
}

static void set_idle(struct sks__conn *c, bool idle)
{
    c->idle = idle;
    if (c->watch != NULL)
        atomic_store_explicit(&c->watch->idle_since, idle ? sks__now() : 0.0,
                              memory_order_relaxed);
}

/*
 * The request's deadline starts with its first byte when there is an idle
 * limit (before it, that limit applies), and with the wait for it when
 * there is none: a whole-request deadline, however the bytes trickle,
 * includes a client that sends none.
 */
void sks__conn_await_request(struct sks__conn *c, bool buffered)
{
    if (buffered || c->idle_timeout == INFINITY) {
        set_idle(c, false);
        c->deadline = sks__deadline_in(c->request_timeout);
    } else {
        set_idle(c, true);
        c->deadline = sks__deadline_in(c->idle_timeout);
    }
}

void sks__conn_limits(struct sks__conn *c, double request_timeout,
                      double idle_timeout)
{
    c->request_timeout = seconds_or_none(request_timeout);
    c->idle_timeout = seconds_or_none(idle_timeout);
    sks__conn_await_request(c, false);
}

void sks__conn_set_deadline(struct sks__conn *c, double seconds)
{
    set_idle(c, false);
    c->deadline = sks__deadline_in(seconds);
}

/* The first bytes of a request while idle: its own deadline starts. */
static void request_started(struct sks__conn *c)
{
    set_idle(c, false);
    c->deadline = sks__deadline_in(c->request_timeout);
}

/* An operation's -ETIMEDOUT: when the connection's deadline was the one
 * that passed (not the per-operation timeout), the connection is cut, and
 * finish_request will know why. */
static int expired(struct sks__conn *c, int err, double deadline)
{
    if (err == -ETIMEDOUT && deadline == c->deadline && c->cut == SKS__CUT_NONE)
        c->cut = c->idle || c->starting ? SKS__CUT_IDLE : SKS__CUT_REQUEST;
    return err;
}

double sks__conn_deadline(const struct sks__conn *c)
{
    if (c->timeout == INFINITY)
        return c->deadline;
    double per_op = sks__now() + c->timeout;
    return per_op < c->deadline ? per_op : c->deadline;
}

/* Before an attempt: -ETIMEDOUT once the deadline has passed (as Go, even
 * if the bytes are there: the deadline is the caller's word); else 0, the
 * backend having bounded an attempt that may block in the kernel. */
static int prepare(struct sks__conn *c, short events, double deadline,
                   bool may_block)
{
    if (deadline == INFINITY)
        return 0;
    double left = deadline - sks__now();
    if (left <= 0)
        return -ETIMEDOUT;
    return may_block ? sks__wait_prepare(c, events, left) : 0;
}

/*
 * After an attempt on fd failed with errno: 0 to attempt again (EINTR, or
 * fd became ready for `events`), or the error to return.  EAGAIN comes from
 * a non-blocking socket or a kernel timeout; either way the wait decides,
 * and only a deadline that has passed is a timeout.
 */
static int wait_ready(int fd, short events, double deadline)
{
    if (deadline != INFINITY && sks__now() >= deadline)
        return -ETIMEDOUT;
    struct pollfd p = { .fd = fd, .events = events };
    int r = sks__wait(&p, 1, deadline);
    if (r < 0)
        return r;
    if (r == 0)
        return -ETIMEDOUT;
    return (p.revents & POLLNVAL) ? -EBADF : 0;
}

static int after_failure(int fd, short events, double deadline)
{
    int e = errno;
    if (e == EINTR)
        return 0;
    if (e != EAGAIN && e != EWOULDBLOCK)
        return -e;
    return wait_ready(fd, events, deadline);
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                   */

/* One attempt of a stream operation, so that the loop in run() that keeps
 * its deadline is written once (and a second transport, such as TLS,
 * would replace attempt() alone). */
struct op {
    enum { OP_RECV, OP_PEEK, OP_SEND, OP_SENDFILE } kind;
    void *buf;          /* OP_RECV, OP_PEEK */
    const void *data;   /* OP_SEND */
    size_t n;
    int in_fd;          /* OP_SENDFILE: the file, at *offset */
    off_t *offset;
    /* OP_RECV into a lent buffer (sks__conn_recv_lent): *lent, not buf,
     * given back while the operation waits. */
    char **lent;
};

static ssize_t attempt(int fd, const struct op *op)
{
    switch (op->kind) {
    case OP_RECV:
        return recv(fd, op->lent != NULL ? *op->lent : op->buf, op->n, 0);
    case OP_PEEK:
        /* MSG_DONTWAIT: the socket stays blocking for the handler, and
         * this attempt must never block past the deadline. */
        return recv(fd, op->buf, op->n, MSG_PEEK | MSG_DONTWAIT);
    case OP_SEND:
        return sks__send_nosigpipe(fd, op->data, op->n, 0, NULL, 0);
    case OP_SENDFILE:
        /* compat.c blocks SIGPIPE, where it must, around the call only,
         * never across a wait, where another fiber of this thread may run. */
        return sks__sendfile_nosigpipe(fd, op->in_fd, op->offset, op->n);
    }
    errno = EINVAL;
    return -1;
}

/* Attempts op on c until it succeeds, fails, or its deadline passes.
 * Written once, compiled into each operation: there op->kind is a constant
 * and the switch folds away (make bench-syscalls: 434 user instructions
 * per echo round trip as a called function, 378 inlined, 348 before the
 * wait layer). */
__attribute__((always_inline)) static inline ssize_t
run(struct sks__conn *c, const struct op *op)
{
    short events = op->kind == OP_RECV || op->kind == OP_PEEK ? POLLIN
                                                              : POLLOUT;
    double deadline = sks__conn_deadline(c);
    for (;;) {
        int err = prepare(c, events, deadline, op->kind != OP_PEEK);
        if (err != 0)
            return expired(c, err, deadline);
        ssize_t r;
        if (op->kind == OP_RECV && sks__wait_empty(c->fd)) {
            /* The last read emptied the socket and no readiness has come
             * since: this attempt would fail, so wait first. */
            r = -1;
            errno = EAGAIN;
        } else {
            r = attempt(c->fd, op);
        }
        if (r > 0 && op->kind == OP_RECV) {
            if (c->idle)
                request_started(c);
            if ((size_t)r < op->n)
                sks__wait_drained(c->fd);
        }
        if (r >= 0)
            return r;
        if (op->lent != NULL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* after_failure reads errno, which free need not keep. */
            int e = errno;
            sks__wait_give(*op->lent, op->n);
            *op->lent = NULL;
            errno = e;
        }
        err = after_failure(c->fd, events, deadline);
        if (err == 0 && op->lent != NULL && *op->lent == NULL &&
            (*op->lent = sks__wait_take(op->n)) == NULL)
            err = -ENOMEM;
        if (err != 0)
            return expired(c, err, deadline);
    }
}

/*
 * The handler's reads and writes, seen by the admission layer: while one
 * runs, the connection waits on its client (a thread blocked in it is
 * held by the client), unless the bytes were there at once.
 */
__attribute__((always_inline)) static inline ssize_t
run_watched(struct sks__conn *c, const struct op *op)
{
    if (c->watch != NULL)
        atomic_store_explicit(&c->watch->waiting_since, sks__now(),
                              memory_order_relaxed);
    ssize_t r = run(c, op);
    if (c->watch != NULL)
        atomic_store_explicit(&c->watch->waiting_since, 0.0,
                              memory_order_relaxed);
    return r;
}

static ssize_t plain_recv(struct sks__conn *c, void *buf, size_t n)
{
    return run_watched(c, &(struct op){ .kind = OP_RECV, .buf = buf, .n = n });
}

/*
 * A connection that waits with nothing buffered need not hold a buffer: a
 * fiber parked between requests would otherwise keep rbufsize bytes per
 * idle connection.  Here the buffer is the wait backend's (wait.c): it is
 * given back while the operation waits and taken again to try once more,
 * from a per-loop pool under fibers (stream.c reads this way only where
 * the backend has one).
 */
ssize_t sks__conn_recv_lent(struct sks__conn *c, char **buf, size_t n)
{
    if (*buf == NULL && (*buf = sks__wait_take(n)) == NULL)
        return -ENOMEM;
    return run_watched(c, &(struct op){ .kind = OP_RECV, .n = n,
                                        .lent = buf });
}

static ssize_t plain_send(struct sks__conn *c, const void *buf, size_t n)
{
    return run_watched(c, &(struct op){ .kind = OP_SEND, .data = buf,
                                        .n = n });
}

ssize_t sks__conn_peek(struct sks__conn *c, void *buf, size_t n)
{
    return run(c, &(struct op){ .kind = OP_PEEK, .buf = buf, .n = n });
}

int sks__conn_send_all(struct sks__conn *c, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        /* Each step starts a new per-operation timeout: progress. */
        ssize_t w = c->transport->send(c, p, n);
        if (w < 0)
            return (int)w;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * A kernel send timeout does not bound sendfile(2): it splices the file in
 * pieces, each a send of its own with the whole timeout again, so a
 * reader that takes a few bytes now and then keeps one call blocked far
 * past any deadline (seen under slowhttptest -X).  With a deadline, the
 * socket is non-blocking for the call and the wait is run()'s; its flags
 * are put back after.
 */
static ssize_t plain_sendfile(struct sks__conn *c, int in_fd, off_t *offset,
                              size_t n)
{
    int flags = sks__conn_deadline(c) == INFINITY ? -1 : fcntl(c->fd, F_GETFL);
    bool own_wait = flags >= 0 && !(flags & O_NONBLOCK) &&
                    fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) == 0;
    ssize_t r = run_watched(c, &(struct op){ .kind = OP_SENDFILE, .n = n,
                                             .in_fd = in_fd,
                                             .offset = offset });
    if (own_wait)
        (void)fcntl(c->fd, F_SETFL, flags);
    return r;
}

const sks_transport sks_plain_transport = {
    .version = SKS_TRANSPORT_VERSION,
    .name = "plain",
    .recv = plain_recv,
    .send = plain_send,
    .send_file = plain_sendfile,
};

/*
 * What a layered transport (TLS) is built on: one system call each, as
 * run()'s attempt, so that the layer sees EAGAIN and says what it waits
 * for, and the wait is sks_conn_wait's.  Where the socket blocks (every
 * model but fibers) the call may block in the kernel, bounded by the
 * operation's deadline as the plain transport's are (prepare): one system
 * call per read or write instead of EAGAIN, poll and the call again.
 * Where it does not (fibers), EAGAIN comes at once and the fiber parks in
 * sks_conn_wait, between the layer's calls, never inside one.
 */
static ssize_t once(struct sks__conn *c, const struct op *op)
{
    short events = op->kind == OP_RECV ? POLLIN : POLLOUT;
    double deadline = sks__conn_deadline(c);
    c->attempt_deadline = deadline;
    int err = prepare(c, events, deadline, true);
    if (err != 0)
        return err == -ETIMEDOUT ? -EAGAIN : err; /* sks_conn_wait says */
    for (;;) {
        ssize_t r = attempt(c->fd, op);
        if (r > 0 && op->kind == OP_RECV && c->idle && !c->starting)
            request_started(c);
        if (r < 0 && errno == EINTR)
            continue;
        /* The deadline is kept for the sks_conn_wait that follows EAGAIN
         * only: a later wait with no attempt before takes its own. */
        if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            c->attempt_deadline = 0;
        if (r >= 0)
            return r;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

ssize_t sks_conn_recv_once(sks_conn *c, void *buf, size_t n)
{
    return once(c, &(struct op){ .kind = OP_RECV, .buf = buf, .n = n });
}

ssize_t sks_conn_send_once(sks_conn *c, const void *buf, size_t n)
{
    return once(c, &(struct op){ .kind = OP_SEND, .data = buf, .n = n });
}

int sks_conn_wait(sks_conn *c, short events)
{
    double deadline = c->attempt_deadline != 0 ? c->attempt_deadline
                                               : sks__conn_deadline(c);
    c->attempt_deadline = 0;
    if (c->watch != NULL)
        atomic_store_explicit(&c->watch->waiting_since, sks__now(),
                              memory_order_relaxed);
    int r = wait_ready(c->fd, events, deadline);
    if (c->watch != NULL)
        atomic_store_explicit(&c->watch->waiting_since, 0.0,
                              memory_order_relaxed);
    return expired(c, r, deadline);
}

int sks_conn_fd(const sks_conn *c)
{
    return c->fd;
}

int sks__recv_queued(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        } else if (r == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            return -EPROTO; /* the peeked bytes are gone: cannot happen */
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Datagrams and connections                                                 */

int sks__sendto(int fd, const void *buf, size_t n, const sks_addr *to,
                double deadline)
{
    /* An unnamed Unix peer (it never bound) cannot be answered. */
    if (to->len <= sizeof(sa_family_t))
        return -EDESTADDRREQ;
    /*
     * The server socket is shared by every request thread, so no kernel
     * timeout is set on it: each attempt is MSG_DONTWAIT, and EAGAIN waits
     * for room in the send buffer.  A Unix datagram waits instead for room
     * in the receiver's queue, which poll cannot see on an unconnected
     * socket, and a peer that never reads its replies would hold the
     * server for good: drop the reply (-EAGAIN), as a datagram may be.
     */
    bool unix_peer = to->u.sa.sa_family == AF_UNIX;
    for (;;) {
        ssize_t w = sks__send_nosigpipe(fd, buf, n, MSG_DONTWAIT, &to->u.sa,
                                        to->len);
        if (w >= 0)
            return 0;
        if (unix_peer && errno != EINTR)
            return -errno;
        int err = after_failure(fd, POLLOUT, deadline);
        if (err != 0)
            return err;
    }
}

ssize_t sks__recvfrom(int fd, void *buf, size_t cap, sks_addr *from,
                      bool *truncated)
{
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    for (;;) {
        struct msghdr msg = {
            .msg_name = &from->u.ss,
            .msg_namelen = sizeof(from->u.ss),
            .msg_iov = &iov,
            .msg_iovlen = 1,
        };
        /* MSG_DONTWAIT: the socket stays blocking for replies, but a
         * spurious wake-up (or a datagram another process took) must not
         * block the loop, which has waited already. */
        ssize_t r = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (r >= 0) {
            from->len = msg.msg_namelen;
            *truncated = (msg.msg_flags & MSG_TRUNC) != 0;
            return r;
        }
        if (errno != EINTR)
            return -errno;
    }
}

int sks__accept(int fd, sks_addr *peer)
{
    /* The listener is non-blocking, so a connection reset between the
     * loop's wait and here (or taken by another process sharing the
     * socket) is -EAGAIN, never a block. */
    peer->len = sizeof(peer->u.ss);
    return sks__accept_blocking(fd, &peer->u.sa, &peer->len);
}

void sks__close(int fd)
{
    /* Never retry close() on EINTR: on Linux the descriptor is already
     * gone, and a retry could close one another thread just opened. */
    if (fd >= 0)
        (void)close(fd);
}
