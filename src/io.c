/*
 * io.c - the system-call layer under the readers, writers and datagram
 * transports.  Every byte a handler reads or writes, and every datagram
 * the servers receive or send, passes through these few functions: EINTR
 * is retried here, SIGPIPE is suppressed here (MSG_NOSIGNAL), and a
 * socket timeout (SO_RCVTIMEO/SO_SNDTIMEO) surfaces here as -ETIMEDOUT.
 * Keeping them in one place is what lets a later event-loop backend wait
 * on readiness here instead of blocking.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

static int io_error(void)
{
    /* With a socket timeout set, a blocking call that times out reports
     * EAGAIN; callers want to know it timed out. */
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return -ETIMEDOUT;
    return -errno;
}

ssize_t sks__recv(int fd, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return io_error();
    }
}

int sks__send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return io_error();
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t sks__sendfile(int fd, int in_fd, off_t *offset, size_t n)
{
    /* sendfile(2) takes no MSG_NOSIGNAL: when the peer has gone, the kernel
     * sends SIGPIPE to this thread.  Block it around the call, and if the
     * call failed with EPIPE, take the signal it raised (unless one was
     * pending already) before unblocking: the process never sees it. */
    sigset_t pipe_only, old, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    sigpending(&pending);
    bool had_pipe = sigismember(&pending, SIGPIPE) == 1;

    ssize_t r;
    do
        r = sendfile(fd, in_fd, offset, n);
    while (r < 0 && errno == EINTR);
    int err = r < 0 ? io_error() : 0;

    if (err == -EPIPE && !had_pipe) {
        static const struct timespec no_wait = { 0, 0 };
        while (sigtimedwait(&pipe_only, NULL, &no_wait) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r < 0 ? err : r;
}

int sks__sendto(int fd, const void *buf, size_t n, const sks_addr *to)
{
    /* An unnamed Unix peer (it never bound) cannot be answered. */
    if (to->len <= sizeof(sa_family_t))
        return -EDESTADDRREQ;
    /* A Unix datagram waits for room in the receiver's queue: a peer that
     * never reads its replies would block the server for good.  Drop the
     * reply instead (-EAGAIN), as a datagram may be.  UDP waits only for
     * the local send buffer to drain, which it always does. */
    bool unix_peer = to->u.sa.sa_family == AF_UNIX;
    int flags = MSG_NOSIGNAL | (unix_peer ? MSG_DONTWAIT : 0);
    for (;;) {
        ssize_t w = sendto(fd, buf, n, flags, &to->u.sa, to->len);
        if (w >= 0)
            return 0;
        if (errno == EINTR)
            continue;
        return unix_peer ? -errno : io_error();
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
         * block the loop. */
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

ssize_t sks__peek(int fd, void *buf, size_t n, double deadline)
{
    /* poll bounds the wait (the socket itself stays blocking for the
     * handler); MSG_DONTWAIT makes a spurious wake-up a retry, not a
     * block past the deadline. */
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, sks__ms_until(deadline));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0) {
            ssize_t k = recv(fd, buf, n, MSG_PEEK | MSG_DONTWAIT);
            if (k >= 0)
                return k;
            if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
                return -errno;
        }
        if (sks__now() >= deadline)
            return -ETIMEDOUT;
    }
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

void sks__close(int fd)
{
    /* Never retry close() on EINTR: on Linux the descriptor is already
     * gone, and a retry could close one another thread just opened. */
    if (fd >= 0)
        (void)close(fd);
}
