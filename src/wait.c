/*
 * wait.c - the wait primitive and the blocking backend.  Everything in the
 * library that waits (a handler's read or write, the PROXY header, the
 * request loop, the pre-fork supervisor, a drain) waits here, to a
 * deadline on the monotonic clock.  Which backend a thread uses is chosen
 * per thread (sks__wait_use); the blocking backend below, every thread's
 * default, is the only code in src/ that calls poll(2) or sets a socket
 * timeout.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------------ */
/* Selection                                                                 */

/* Per thread: a fiber model's loop threads park, the threads of the other
 * models (and the helper threads a fiber model would block in) block. */
static _Thread_local const sks__wait_backend *current;

static const sks__wait_backend *backend(void)
{
    return current != NULL ? current : &sks__blocking_wait;
}

void sks__wait_use(const sks__wait_backend *b)
{
    current = b;
}

int sks__wait(struct pollfd *fds, size_t n, double deadline)
{
    return backend()->wait(fds, n, deadline);
}

int sks__wait_prepare(struct sks__conn *c, short events, double left)
{
    const sks__wait_backend *b = backend();
    return b->prepare != NULL ? b->prepare(c, events, left) : 0;
}

bool sks__wait_lends(void)
{
    return backend()->take != NULL;
}

void *sks__wait_take(size_t size)
{
    const sks__wait_backend *b = backend();
    return b->take != NULL ? b->take(size) : malloc(size);
}

void sks__wait_give(void *buf, size_t size)
{
    const sks__wait_backend *b = backend();
    if (buf == NULL)
        return;
    if (b->give != NULL)
        b->give(buf, size);
    else
        free(buf);
}

void sks__wait_drained(int fd)
{
    const sks__wait_backend *b = backend();
    if (b->drained != NULL)
        b->drained(fd);
}

bool sks__wait_empty(int fd)
{
    const sks__wait_backend *b = backend();
    return b->empty != NULL && b->empty(fd);
}

/* ------------------------------------------------------------------------ */
/* The blocking backend                                                      */

/*
 * How far a kernel timeout may run past an operation's deadline before it
 * is set again.  Without it, a per-operation timeout would be set anew
 * before every call: the time left is always a little less than the
 * timeout set a call earlier.  The kernel rounds the timeout up to its
 * clock tick (1 to 10 ms) in any case.
 */
#define OVERSHOOT 0.001

static int blocking_prepare(struct sks__conn *c, short events, double left)
{
    double *set = (events & POLLOUT) ? &c->snd_timeo : &c->rcv_timeo;

    /*
     * The kernel timeout in force is kept while it ends no later than the
     * deadline (give or take OVERSHOOT) and not before half the time left:
     * ending early is correct (io.c then waits out the rest on EAGAIN) but
     * costs two system calls each time, so a timeout left short by an
     * earlier, nearer deadline is raised again.
     */
    if (*set != 0 && *set <= left + OVERSHOOT && *set >= left / 2)
        return 0;
    if (!(left < (double)INT_MAX))
        left = (double)INT_MAX;
    struct timeval tv;
    tv.tv_sec = (time_t)left;
    tv.tv_usec = (suseconds_t)ceil((left - (double)tv.tv_sec) * 1e6);
    if (tv.tv_usec >= 1000000) {
        tv.tv_sec++;
        tv.tv_usec -= 1000000;
    }
    if (tv.tv_sec == 0 && tv.tv_usec == 0)
        tv.tv_usec = 1; /* 0 would mean "no timeout" to the kernel */
    int opt = (events & POLLOUT) ? SO_SNDTIMEO : SO_RCVTIMEO;
    if (setsockopt(c->fd, SOL_SOCKET, opt, &tv, sizeof(tv)) != 0)
        return -errno;
    *set = left;
    return 0;
}

static int blocking_wait(struct pollfd *fds, size_t n, double deadline)
{
    for (;;) {
        int r = poll(fds, (nfds_t)n, sks__ms_until(deadline));
        if (r > 0)
            return r;
        if (r < 0 && errno != EINTR)
            return -errno;
        /* A timeout, or a signal: over unless the deadline is still ahead
         * (a wait cut to a day, a signal that came first). */
        if (deadline != INFINITY && sks__now() >= deadline)
            return 0;
    }
}

const sks__wait_backend sks__blocking_wait = {
    .name = "blocking",
    .prepare = blocking_prepare,
    .wait = blocking_wait,
};
