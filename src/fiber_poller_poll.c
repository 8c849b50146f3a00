/*
 * fiber_poller_poll.c - the fiber loop's readiness backend where there is
 * no epoll (macOS, the BSDs), and on Linux with SKS_PORTABLE (see
 * fiber_poller.h): poll(2), and a pipe for wake-ups.
 *
 * poll is level-triggered and keeps no registrations, so only descriptors
 * a fiber waits on now are in the array: a descriptor joins it when its
 * first waiter parks and leaves when its last waiter wakes and runs (the
 * loop runs every woken fiber before it waits again, so a readable socket
 * whose reader was woken is not reported twice).  A table by descriptor
 * number gives each one's slot, so joining and leaving cost no search and
 * no system call; the array stays dense by moving the last entry into a
 * freed slot.
 *
 * Scaling: each wait hands the kernel the whole array, and the kernel
 * walks it, so a turn costs time linear in the number of descriptors
 * being waited on (epoll's is linear in those that are ready).  That is
 * fine for hundreds to a few thousand parked connections per loop; at
 * ten thousand idle connections every turn walks ten thousand entries,
 * and a kqueue backend (not written: it cannot be run here) is the fix.
 */
#include "fiber_poller.h"

#ifdef SKS__POLLER_POLL

#include "compat.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

struct sks__poller {
    int wake[2];                        /* a pipe: read end, write end */
    struct pollfd *pfd;                 /* [0]: wake[0]; then the waited */
    size_t npfd, cap;
    size_t *slot;                       /* by descriptor: index in pfd, 0 none */
    size_t nfds;
    size_t scan;                        /* where the next report starts */
};

int sks__poller_new(struct sks__poller **out)
{
    struct sks__poller *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    p->pfd = malloc(64 * sizeof *p->pfd);
    if (p->pfd == NULL) {
        free(p);
        return -ENOMEM;
    }
    int err = sks__pipe(p->wake);
    if (err != 0) {
        free(p->pfd);
        free(p);
        return err;
    }
    p->cap = 64;
    p->pfd[0] = (struct pollfd){ .fd = p->wake[0], .events = POLLIN };
    p->npfd = 1;
    *out = p;
    return 0;
}

void sks__poller_free(struct sks__poller *p)
{
    close(p->wake[0]);
    close(p->wake[1]);
    free(p->pfd);
    free(p->slot);
    free(p);
}

static void leave(struct sks__poller *p, int fd)
{
    size_t i = p->slot[fd];
    size_t last = --p->npfd;
    if (i != last) {
        p->pfd[i] = p->pfd[last];
        p->slot[p->pfd[i].fd] = i;
    }
    p->slot[fd] = 0;
}

int sks__poller_want(struct sks__poller *p, int fd, bool registered,
                     bool read, bool write)
{
    (void)registered;                   /* poll keeps no registrations */
    short events = (short)((read ? POLLIN : 0) | (write ? POLLOUT : 0));
    size_t *t = sks__fdtab_grow(p->slot, &p->nfds, fd, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    p->slot = t;
    if (t[fd] != 0) {
        if (events == 0)
            leave(p, fd);
        else
            p->pfd[t[fd]].events = events;
        return 0;
    }
    if (events == 0)
        return 0;
    if (p->npfd == p->cap) {
        struct pollfd *a = realloc(p->pfd, 2 * p->cap * sizeof *a);
        if (a == NULL)
            return -ENOMEM;
        p->pfd = a;
        p->cap *= 2;
    }
    p->pfd[p->npfd] = (struct pollfd){ .fd = fd, .events = events };
    t[fd] = p->npfd++;
    return 0;
}

void sks__poller_forget(struct sks__poller *p, int fd)
{
    if (fd >= 0 && (size_t)fd < p->nfds && p->slot[fd] != 0)
        leave(p, fd);
}

/* What a returned revents means for the descriptor's waiters: a hang-up,
 * an error or a descriptor closed under its waiter wakes both, whose
 * retried call then says which. */
static unsigned ready_of(short revents)
{
    const short both = POLLERR | POLLHUP | POLLNVAL;
    return ((revents & (POLLIN | both)) ? SKS__POLL_READ : 0u) |
           ((revents & (POLLOUT | both)) ? SKS__POLL_WRITE : 0u);
}

int sks__poller_wait(struct sks__poller *p, int timeout_ms,
                     struct sks__poll_event *ev, int max)
{
    int n = poll(p->pfd, (nfds_t)p->npfd, timeout_ms);
    if (n <= 0)
        return n == 0 || errno == EINTR ? 0 : -errno;
    /* Descriptors first, the wake-up last: epoll reports in the order
     * things happened, and a drain shuts a connection down before it
     * cancels the loop, so its handler sees the end of input first.  The
     * scan stops once it has found all n, and when more are ready than
     * max, the next wait's report starts where this one stopped, so the
     * first entries cannot starve the rest (nor the wake-up, which stays
     * pending until there is room for it). */
    bool woken = p->pfd[0].revents != 0;
    if (woken)
        n--;
    int out = 0;
    size_t m = p->npfd - 1;
    for (size_t k = 0; k < m && n > 0; k++) {
        size_t i = 1 + (p->scan + k) % m;
        if (p->pfd[i].revents == 0)
            continue;
        if (out == max) {
            p->scan = (p->scan + k) % m;
            return out;
        }
        ev[out++] = (struct sks__poll_event){
            .fd = p->pfd[i].fd, .ready = ready_of(p->pfd[i].revents) };
        n--;
    }
    if (woken && out < max) {
        char buf[64];
        while (read(p->wake[0], buf, sizeof buf) == (ssize_t)sizeof buf)
            ;
        ev[out++] = (struct sks__poll_event){ .fd = -1 };
    }
    return out;
}

void sks__poller_wake(struct sks__poller *p)
{
    char one = 1;
    ssize_t n = write(p->wake[1], &one, 1);
    (void)n;                            /* a full pipe has a wake-up pending */
}

#endif
