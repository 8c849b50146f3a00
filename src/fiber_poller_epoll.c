/*
 * fiber_poller_epoll.c - the fiber loop's readiness backend on Linux (see
 * fiber_poller.h): one epoll instance and an eventfd for wake-ups.
 *
 * Parking is Go's netpoller: a registered descriptor is added to epoll
 * once, at its first wait, edge-triggered for both directions (EPOLLET,
 * no epoll_ctl per wait).  An edge that comes while nobody waits needs no
 * memory: a fiber waits only after its system call said EAGAIN, and the
 * loop's one thread reads events only once that fiber has parked, so any
 * byte that comes after the EAGAIN is a new edge it will see.
 * Descriptors the loop was not told about (a handler's own socket) are
 * registered one-shot for the one wait and removed after: their owner may
 * close them at any time, and a registration left behind would silently
 * swallow the events of the next descriptor with that number.
 */
#define _GNU_SOURCE
#include "fiber_poller.h"

#ifdef SKS__POLLER_EPOLL

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct sks__poller {
    int epfd, evfd;
    bool *in_epoll;                     /* by descriptor number */
    size_t nfds;
};

#define EVFD_TAG UINT64_MAX
#define BATCH 256

static int epoll_set(struct sks__poller *p, int op, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)fd };
    return epoll_ctl(p->epfd, op, fd, &ev) == 0 ? 0 : -errno;
}

int sks__poller_new(struct sks__poller **out)
{
    struct sks__poller *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EVFD_TAG };
    if (p->epfd < 0 || p->evfd < 0 ||
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) != 0) {
        int err = -errno;
        if (p->epfd >= 0)
            close(p->epfd);
        if (p->evfd >= 0)
            close(p->evfd);
        free(p);
        return err;
    }
    *out = p;
    return 0;
}

void sks__poller_free(struct sks__poller *p)
{
    close(p->epfd);
    close(p->evfd);
    free(p->in_epoll);
    free(p);
}

int sks__poller_want(struct sks__poller *p, int fd, bool registered,
                     bool read, bool write)
{
    bool *t = sks__fdtab_grow(p->in_epoll, &p->nfds, fd, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    p->in_epoll = t;
    bool *in = &p->in_epoll[fd];
    if (registered) {
        /* Added at the first wait, not at registration: a connection
         * whose every read finds its bytes already there never costs an
         * epoll_ctl.  Once in, it stays until the close. */
        if (*in || (!read && !write))
            return 0;
        int err = epoll_set(p, EPOLL_CTL_ADD, fd,
                            EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
        if (err == 0)
            *in = true;
        return err;
    }
    uint32_t ev = (read ? EPOLLIN | EPOLLRDHUP : 0u) | (write ? EPOLLOUT : 0u);
    if (ev == 0) {
        if (!*in)
            return 0;
        *in = false;
        return epoll_set(p, EPOLL_CTL_DEL, fd, 0);
    }
    ev |= EPOLLONESHOT;
    int err = epoll_set(p, *in ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, ev);
    if (err == -EEXIST)
        err = epoll_set(p, EPOLL_CTL_MOD, fd, ev);
    if (err == 0)
        *in = true;
    return err;
}

void sks__poller_forget(struct sks__poller *p, int fd)
{
    /* Closing fd took it out of epoll; nothing to tell the kernel. */
    if (fd >= 0 && (size_t)fd < p->nfds)
        p->in_epoll[fd] = false;
}

int sks__poller_wait(struct sks__poller *p, int timeout_ms,
                     struct sks__poll_event *out, int max)
{
    struct epoll_event ev[BATCH];

    int n = epoll_wait(p->epfd, ev, max < BATCH ? max : BATCH, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = ev[i].events;
        if (ev[i].data.u64 == EVFD_TAG) {
            uint64_t count;
            ssize_t r = read(p->evfd, &count, sizeof count);
            (void)r;
            out[i] = (struct sks__poll_event){ .fd = -1 };
            continue;
        }
        out[i] = (struct sks__poll_event){
            .fd = (int)ev[i].data.u64,
            .ready = ((e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
                          ? SKS__POLL_READ : 0u) |
                     ((e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                          ? SKS__POLL_WRITE : 0u),
        };
    }
    return n;
}

void sks__poller_wake(struct sks__poller *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->evfd, &one, sizeof one);
    (void)n;                          /* a full counter has a wake-up pending */
}

#endif
