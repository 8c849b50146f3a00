/*
 * compat.c - the platform differences (see compat.h).  Each section has
 * the native form first, then the portable fallback that SKS_PORTABLE
 * forces on Linux.
 */
#define _GNU_SOURCE
#include "compat.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__linux__) && !defined(SKS_PORTABLE)
#define HAVE_LINUX 1
#include <sys/sendfile.h>
#else
#define HAVE_LINUX 0
#endif

/* accept4, pipe2 and SOCK_CLOEXEC/SOCK_NONBLOCK: Linux and the BSDs, not
 * macOS.  Their accept4 takes the new socket's flags from its argument
 * only, never from the listener. */
#if !defined(SKS_PORTABLE) &&                                                \
    (defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) ||    \
     defined(__OpenBSD__) || defined(__DragonFly__))
#define HAVE_ATOMIC_CLOEXEC 1
#else
#define HAVE_ATOMIC_CLOEXEC 0
#endif

/* SIGPIPE: MSG_NOSIGNAL per call (Linux, the BSDs), else SO_NOSIGPIPE per
 * socket (macOS), else blocking the signal around the call.  Tested as
 * HAVE_MSG_NOSIGNAL, never as "NOSIGNAL_FLAG != 0": glibc defines
 * MSG_NOSIGNAL as itself (an enum constant), which #if reads as 0, so
 * every send on Linux took the signal-blocking path. */
#if defined(MSG_NOSIGNAL) && !defined(SKS_PORTABLE)
#define HAVE_MSG_NOSIGNAL 1
#define NOSIGNAL_FLAG MSG_NOSIGNAL
#else
#define HAVE_MSG_NOSIGNAL 0
#define NOSIGNAL_FLAG 0
#endif
#if !HAVE_MSG_NOSIGNAL && defined(SO_NOSIGPIPE)
#define HAVE_SO_NOSIGPIPE 1
#else
#define HAVE_SO_NOSIGPIPE 0
#endif

/* sigtimedwait is POSIX's realtime-signals option, which macOS lacks. */
#if defined(_POSIX_REALTIME_SIGNALS) && _POSIX_REALTIME_SIGNALS > 0 &&       \
    !defined(SKS_PORTABLE)
#define HAVE_SIGTIMEDWAIT 1
#else
#define HAVE_SIGTIMEDWAIT 0
#endif

/* ------------------------------------------------------------------------ */
/* Descriptor flags                                                          */

#if !HAVE_ATOMIC_CLOEXEC
/*
 * The fallback sets the flags after the call that made the descriptor:
 * a fork+exec in another thread in between inherits it.  No portable
 * call closes that window (macOS has none); a program that execs from
 * threads while serving should not rely on close-on-exec there.
 */
static int set_flags(int fd, bool nonblock)
{
    int fdfl = fcntl(fd, F_GETFD);
    int fl = fcntl(fd, F_GETFL);
    if (fdfl < 0 || fl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0 ||
        fcntl(fd, F_SETFL, nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) != 0)
        return -errno;
#if HAVE_SO_NOSIGPIPE
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one)) != 0 &&
        errno != ENOTSOCK)
        return -errno;
#endif
    return 0;
}

/* Sets the flags on fd, or closes it: fd, or -errno. */
static int flagged(int fd, bool nonblock)
{
    if (fd < 0)
        return -errno;
    int err = set_flags(fd, nonblock);
    if (err != 0) {
        close(fd);
        return err;
    }
    return fd;
}
#endif

int sks__socket(int domain, int type, bool nonblock)
{
#if HAVE_ATOMIC_CLOEXEC
    int fd = socket(domain, type | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    return fd < 0 ? -errno : fd;
#else
    return flagged(socket(domain, type, 0), nonblock);
#endif
}

int sks__pipe(int fds[2])
{
#if HAVE_ATOMIC_CLOEXEC
    return pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0 ? 0 : -errno;
#else
    if (pipe(fds) != 0)
        return -errno;
    int err = set_flags(fds[0], true);
    if (err == 0)
        err = set_flags(fds[1], true);
    if (err != 0) {
        close(fds[0]);
        close(fds[1]);
    }
    return err;
#endif
}

int sks__accept_blocking(int fd, struct sockaddr *peer, socklen_t *len)
{
    socklen_t cap = *len;
    int c;
    do {
        *len = cap;
#if HAVE_ATOMIC_CLOEXEC
        c = accept4(fd, peer, len, SOCK_CLOEXEC);
#else
        c = accept(fd, peer, len);
#endif
    } while (c < 0 && errno == EINTR);
#if HAVE_ATOMIC_CLOEXEC
    return c < 0 ? -errno : c;
#else
    /* Blocking, whatever the listener: a BSD accept copies its O_NONBLOCK. */
    return flagged(c, false);
#endif
}

/* ------------------------------------------------------------------------ */
/* SIGPIPE                                                                   */

#if HAVE_LINUX || (!HAVE_MSG_NOSIGNAL && !HAVE_SO_NOSIGPIPE)

/*
 * A call that may raise SIGPIPE and has no flag against it runs with the
 * signal blocked for this thread.  A SIGPIPE it raised is taken (unless
 * one was pending already) before unblocking: the process never sees it.
 */
typedef struct pipe_guard {
    sigset_t old;
    bool had_pipe;
} pipe_guard;

static void pipe_only(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGPIPE);
}

static void guard_begin(pipe_guard *g)
{
    sigset_t set, pending;
    pipe_only(&set);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
    sigpending(&pending);
    g->had_pipe = sigismember(&pending, SIGPIPE) == 1;
}

static void guard_end(pipe_guard *g)
{
    int saved = errno;
    sigset_t set, pending;
    pipe_only(&set);
    /* Not only after EPIPE: a sendfile that moved some bytes before the
     * peer went returns their count, and the kernel may have raised
     * SIGPIPE all the same (seen on Linux 6.18 under slow readers).  A
     * SIGPIPE pending now that was not before is the call's. */
    if (!g->had_pipe && sigpending(&pending) == 0 &&
        sigismember(&pending, SIGPIPE) == 1) {
#if HAVE_SIGTIMEDWAIT
        static const struct timespec no_wait = { 0, 0 };
        while (sigtimedwait(&set, NULL, &no_wait) < 0 && errno == EINTR)
            ;
#else
        /* sigwait blocks, but the signal is pending. */
        int sig;
        sigwait(&set, &sig);
#endif
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    errno = saved;
}
#endif

ssize_t sks__send_nosigpipe(int fd, const void *buf, size_t n, int flags,
                            const struct sockaddr *to, socklen_t tolen)
{
#if HAVE_MSG_NOSIGNAL || HAVE_SO_NOSIGPIPE
    flags |= NOSIGNAL_FLAG;
    return to != NULL ? sendto(fd, buf, n, flags, to, tolen)
                      : send(fd, buf, n, flags);
#else
    pipe_guard g;
    guard_begin(&g);
    ssize_t r = to != NULL ? sendto(fd, buf, n, flags, to, tolen)
                           : send(fd, buf, n, flags);
    guard_end(&g);
    return r;
#endif
}

ssize_t sks__sendfile_nosigpipe(int fd, int in_fd, off_t *offset, size_t n)
{
#if HAVE_LINUX
    /* sendfile takes no MSG_NOSIGNAL. */
    pipe_guard g;
    ssize_t r;
    guard_begin(&g);
    do
        r = sendfile(fd, in_fd, offset, n);
    while (r < 0 && errno == EINTR);
    guard_end(&g);
    return r;
#else
    /* The BSDs' and macOS's sendfile take other arguments and report
     * partial sends otherwise: the caller's copy loop serves instead. */
    (void)fd;
    (void)in_fd;
    (void)offset;
    (void)n;
    errno = ENOSYS;
    return -1;
#endif
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */

void sks__thread_ended(atomic_bool *ended)
{
    atomic_store_explicit(ended, true, memory_order_release);
}

int sks__thread_tryjoin(pthread_t tid, const atomic_bool *ended)
{
    if (!atomic_load_explicit(ended, memory_order_acquire))
        return EBUSY;
#if HAVE_LINUX
    /* Past its flag, the thread may still be returning: do not wait. */
    return pthread_tryjoin_np(tid, NULL);
#else
    /* Past its flag, it has only its return left to run. */
    return pthread_join(tid, NULL);
#endif
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                   */

int sks__socket_family(int fd)
{
#if defined(SO_DOMAIN) && !defined(SKS_PORTABLE)
    int domain;
    socklen_t len = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
        return -errno;
    return domain;
#else
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -errno;
    return ss.ss_family;
#endif
}

void sks__drain_error_queue(int fd)
{
#if defined(MSG_ERRQUEUE) && !defined(SKS_PORTABLE)
    char buf[512], ctl[512];
    for (int i = 0; i < 64; i++) {
        struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
        struct msghdr msg = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = ctl,
            .msg_controllen = sizeof(ctl),
        };
        if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0 &&
            errno != EINTR)
            return;
    }
#else
    /* No error queue: an ICMP error is reported once, by the next call. */
    (void)fd;
#endif
}

bool sks__abstract_names(void)
{
    return HAVE_LINUX;
}
