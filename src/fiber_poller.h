/*
 * fiber_poller.h - how a fiber loop (fiber_loop.c) learns that a
 * descriptor is ready: one small interface, one file per backend, as
 * Redis's ae.c has ae_epoll.c and its siblings.  Exactly one backend file
 * compiles to code; the others compile to nothing:
 *
 *   fiber_poller_epoll.c   Linux: epoll, edge-triggered, and an eventfd
 *   fiber_poller_poll.c    elsewhere (macOS, the BSDs), and on Linux with
 *                          SKS_PORTABLE (make test-portable): poll(2) and
 *                          a pipe; see there for how far it scales
 *
 * The loop keeps which fibers wait on what; a backend keeps only what its
 * kernel interface needs per descriptor.  A backend belongs to the loop's
 * thread, except sks__poller_wake, which any thread may call.
 */
#ifndef SKS_FIBER_POLLER_H
#define SKS_FIBER_POLLER_H

#include <stdbool.h>
#include <stddef.h>

#if defined(__linux__) && !defined(SKS_PORTABLE)
#define SKS__POLLER_EPOLL 1
#else
#define SKS__POLLER_POLL 1
#endif

/* Whether a registered descriptor's readiness is reported while no fiber
 * waits on it, as epoll's standing registration does (poll's array holds
 * only the descriptors waited on): the loop's read hint needs it. */
#ifdef SKS__POLLER_EPOLL
#define SKS__POLLER_SEES_UNWAITED 1
#else
#define SKS__POLLER_SEES_UNWAITED 0
#endif

struct sks__poller;

/* A ready descriptor: which of its waiters to wake.  fd -1 is a wake-up
 * (sks__poller_wake), already consumed. */
#define SKS__POLL_READ  1u
#define SKS__POLL_WRITE 2u
struct sks__poll_event {
    int fd;
    unsigned ready;
};

/* A backend and its wake-up channel, close-on-exec: 0 or -errno. */
int sks__poller_new(struct sks__poller **out);
void sks__poller_free(struct sks__poller *p);

/* Sets fd's interest to what its fibers now wait for (read, write; both
 * false: nothing).  registered: the loop owns fd until sks__poller_forget,
 * so a backend may keep a standing registration; otherwise fd may be
 * closed by its owner once its wait ends, and nothing of it may be left
 * behind once the interest is nothing.  0 or -errno. */
int sks__poller_want(struct sks__poller *p, int fd, bool registered,
                     bool read, bool write);

/* fd was closed (or is about to be taken over as registered): drop
 * whatever the backend keeps for it, with no system call on a closed
 * descriptor. */
void sks__poller_forget(struct sks__poller *p, int fd);

/* Waits up to timeout_ms (-1: no limit, 0: none) for readiness or a
 * wake-up, and fills up to max events: their number (0 on a timeout or a
 * signal), or -errno. */
int sks__poller_wait(struct sks__poller *p, int timeout_ms,
                     struct sks__poll_event *ev, int max);

/* Any thread: makes the loop's current or next sks__poller_wait return
 * with a wake-up event. */
void sks__poller_wake(struct sks__poller *p);

/* tab (*n elements of elem bytes) grown so that index fd exists, new
 * elements zeroed and the size doubling from 64: the table (moved, or tab
 * itself when it is big enough), or NULL (no memory) with tab and *n
 * unchanged.  For the loop's and the backends' tables by descriptor number. */
void *sks__fdtab_grow(void *tab, size_t *n, int fd, size_t elem);

#endif
