/*
 * fiber_loop.c - a fiber loop: one thread, one readiness backend
 * (fiber_poller.h: epoll on Linux, poll elsewhere), the fibers it runs,
 * and the timer heap that keeps their deadlines.  The fiber model runs one
 * per core; this file knows nothing of servers.
 *
 * A fiber that got EAGAIN parks in its descriptor's reader or writer slot,
 * and the backend is told the descriptor's new interest; the backend
 * decides what that costs (epoll: nothing for a registered descriptor
 * after its first wait).
 *
 * A turn runs every ready fiber until it parks or ends, then waits in the
 * backend until an event, the nearest deadline (the heap's minimum,
 * rounded up to a whole millisecond) or a post from another thread (the
 * backend's wake-up); events only mark fibers ready, which run in the next
 * turn, so no fiber closes a descriptor while events for it are still
 * being read.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "fiber_poller.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sks__fib {
    sks__fiber f;
    struct sks__floop *loop;
    struct sks__fib *next;              /* run queue */
    struct sks__fib *post_next;         /* posted list (l->lock) */
    struct sks__fib *taken_next;        /* list take_posted walks (loop) */
    bool on_posted, interrupt;          /* (l->lock) */
    bool interrupt_pending;             /* -EINTR for its next wait */
    struct sks__fib *all_prev, *all_next;
    double deadline;
    size_t heap_idx;                    /* NOT_IN_HEAP, or its slot */
    int wait_fd;                        /* -1, or the slot it parks in */
    bool wait_write;
    bool parked;
    int wake;                           /* what the last park returns */
    sks__floop_tag tag;                 /* what it runs (sks__floop_set_tag) */
};

struct fdwait {
    struct sks__fib *reader, *writer;
    bool registered;                    /* the loop's, until forget */
    bool empty;                         /* drained, no readiness since */
};

struct sks__floop {
    struct sks__poller *poller;
    sks__fiber sched;                   /* the loop thread's own context */
    struct sks__fib *current;           /* NULL: the scheduler runs */
    struct sks__fib *runq, *runq_tail;
    struct sks__fib *all;               /* every live fiber */
    size_t nfibers;
    struct sks__fib **heap;             /* min-heap on deadline */
    size_t nheap, heap_cap;
    struct fdwait *fds;                 /* by descriptor number */
    size_t nfds;
    struct sks__stack_cache stacks;
    bool cancelled;
    /* From other threads: fibers to make ready, and a cancel request. */
    pthread_mutex_t lock;
    struct sks__fib *posted;
    atomic_bool cancel_request;
    /* For a watchdog thread: fibers resumed so far, and whether one runs
     * now (a fiber that holds the loop leaves resumes unchanged). */
    atomic_ulong resumes;
    atomic_bool in_fiber;
    _Atomic(sks__floop_tag) running;    /* the tag of the one that runs */
    double now;                         /* sks__now() at the last poll */
};

#define NOT_IN_HEAP SIZE_MAX
#define BATCH 256
/* How long a read parks on the word of sks__floop_read_drained alone
 * before it tries anyway (see there). */
#define HINTED_WAIT 0.05

static _Thread_local struct sks__floop *here;

/* ------------------------------------------------------------------------ */
/* Timer heap                                                                */

static void heap_place(struct sks__floop *l, size_t i, struct sks__fib *f)
{
    l->heap[i] = f;
    f->heap_idx = i;
}

static void heap_up(struct sks__floop *l, size_t i)
{
    struct sks__fib *f = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->deadline <= f->deadline)
            break;
        heap_place(l, i, l->heap[parent]);
        i = parent;
    }
    heap_place(l, i, f);
}

static void heap_down(struct sks__floop *l, size_t i)
{
    struct sks__fib *f = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->deadline < l->heap[c]->deadline)
            c++;
        if (f->deadline <= l->heap[c]->deadline)
            break;
        heap_place(l, i, l->heap[c]);
        i = c;
    }
    heap_place(l, i, f);
}

static int heap_push(struct sks__floop *l, struct sks__fib *f, double deadline)
{
    if (l->nheap == l->heap_cap) {
        size_t cap = l->heap_cap ? 2 * l->heap_cap : 64;
        struct sks__fib **h = realloc(l->heap, cap * sizeof *h);
        if (h == NULL)
            return -ENOMEM;
        l->heap = h;
        l->heap_cap = cap;
    }
    f->deadline = deadline;
    l->heap[l->nheap++] = f;
    heap_up(l, l->nheap - 1);
    return 0;
}

static void heap_remove(struct sks__floop *l, struct sks__fib *f)
{
    size_t i = f->heap_idx;
    if (i == NOT_IN_HEAP)
        return;
    f->heap_idx = NOT_IN_HEAP;
    struct sks__fib *last = l->heap[--l->nheap];
    if (last == f)
        return;
    heap_place(l, i, last);
    heap_up(l, i);
    heap_down(l, last->heap_idx);
}

/* ------------------------------------------------------------------------ */
/* Ready, park, wake                                                         */

static void make_ready(struct sks__floop *l, struct sks__fib *f)
{
    f->next = NULL;
    if (l->runq_tail != NULL)
        l->runq_tail->next = f;
    else
        l->runq = f;
    l->runq_tail = f;
}

static void wake(struct sks__fib *f, int why)
{
    struct sks__floop *l = f->loop;

    if (!f->parked)
        return;
    f->parked = false;
    f->wake = why;
    heap_remove(l, f);
    if (f->wait_fd >= 0) {
        struct fdwait *w = &l->fds[f->wait_fd];
        if (f->wait_write)
            w->writer = NULL;
        else
            w->reader = NULL;
        f->wait_fd = -1;
    }
    make_ready(l, f);
}

static void park_now(struct sks__floop *l, struct sks__fib *me)
{
    me->parked = true;
    sks__fiber_switch(&me->f, &l->sched);
}

/* Parks the running fiber until a wake; returns its reason. */
static int park(struct sks__floop *l, double deadline)
{
    struct sks__fib *me = l->current;

    if (l->cancelled)
        return -ECANCELED;
    if (me->interrupt_pending) {
        me->interrupt_pending = false;
        return -EINTR;
    }
    if (deadline != INFINITY && heap_push(l, me, deadline) != 0)
        return -ENOMEM;
    park_now(l, me);
    return me->wake;
}

/* ------------------------------------------------------------------------ */
/* Descriptors                                                               */

void *sks__fdtab_grow(void *tab, size_t *n, int fd, size_t elem)
{
    if ((size_t)fd < *n)
        return tab;
    size_t m = *n ? *n : 64;
    while (m <= (size_t)fd)
        m *= 2;
    char *t = realloc(tab, m * elem);
    if (t == NULL)
        return NULL;
    memset(t + *n * elem, 0, (m - *n) * elem);
    *n = m;
    return t;
}

static struct fdwait *slot(struct sks__floop *l, int fd)
{
    struct fdwait *t = sks__fdtab_grow(l->fds, &l->nfds, fd, sizeof *t);
    if (t == NULL)
        return NULL;
    l->fds = t;
    return &t[fd];
}

/* Tells the backend what fd's fibers now wait for. */
static int want(struct sks__floop *l, int fd, const struct fdwait *w)
{
    return sks__poller_want(l->poller, fd, w->registered, w->reader != NULL,
                            w->writer != NULL);
}

int sks__floop_register(int fd)
{
    struct sks__floop *l = here;
    if (l == NULL || fd < 0)
        return -EINVAL;
    struct fdwait *w = slot(l, fd);
    if (w == NULL)
        return -ENOMEM;
    if (!w->registered) {
        sks__poller_forget(l->poller, fd);
        *w = (struct fdwait){ .registered = true };
    }
    return 0;
}

void sks__floop_forget(int fd)
{
    struct sks__floop *l = here;
    if (l == NULL || fd < 0 || (size_t)fd >= l->nfds)
        return;
    sks__poller_forget(l->poller, fd);
    l->fds[fd] = (struct fdwait){ 0 };
}

int sks__floop_wait_fd(int fd, bool write, double deadline)
{
    struct sks__floop *l = here;
    if (l == NULL || l->current == NULL || fd < 0)
        return -EINVAL;
    if (deadline != INFINITY && sks__now() >= deadline)
        return -ETIMEDOUT;
    struct fdwait *w = slot(l, fd);
    if (w == NULL)
        return -ENOMEM;
    struct sks__fib **waiter = write ? &w->writer : &w->reader;
    if (*waiter != NULL)
        return -EBUSY;          /* one reader and one writer per descriptor */
    struct sks__fib *me = l->current;
    *waiter = me;
    int err = want(l, fd, w);
    if (err != 0) {
        *waiter = NULL;
        return err;
    }
    me->wait_fd = fd;
    me->wait_write = write;
    /* A read that did not try first (sks__floop_read_empty) parks for a
     * while at most: the short read that marked fd may have left bytes
     * behind that no readiness will announce. */
    bool hinted = !write && w->empty;
    double until = deadline;
    if (hinted) {
        /* The time of the loop's last poll: no clock read per wait, and a
         * bound that ends early at worst, costing one attempt. */
        double soon = l->now + HINTED_WAIT;
        if (soon < deadline)
            until = soon;
    }
    int r = park(l, until);
    /* Parking may have failed (cancelled, no memory), and the table may
     * have moved while this fiber was parked. */
    w = &l->fds[fd];
    waiter = write ? &w->writer : &w->reader;
    if (*waiter == me)
        *waiter = NULL;
    me->wait_fd = -1;
    (void)want(l, fd, w);
    if (hinted) {
        w->empty = false;
        if (r == -ETIMEDOUT && until != deadline)
            r = 0;                    /* try: the hint may have been wrong */
    }
    return r;
}

void sks__floop_read_drained(int fd)
{
    struct sks__floop *l = here;
    /* The mark is cleared by readiness (dispatch), so it is kept only
     * where readiness is seen while no fiber waits: a registered
     * descriptor, on a backend that watches those. */
    if (SKS__POLLER_SEES_UNWAITED && l != NULL && fd >= 0 &&
        (size_t)fd < l->nfds && l->fds[fd].registered)
        l->fds[fd].empty = true;
}

bool sks__floop_read_empty(int fd)
{
    struct sks__floop *l = here;
    return l != NULL && fd >= 0 && (size_t)fd < l->nfds && l->fds[fd].empty;
}

int sks__floop_sleep(double deadline)
{
    struct sks__floop *l = here;
    if (l == NULL || l->current == NULL)
        return -EINVAL;
    if (deadline != INFINITY && sks__now() >= deadline)
        return 0;
    int r = park(l, deadline);
    return r == -ETIMEDOUT ? 0 : r;
}

void sks__floop_yield(void)
{
    struct sks__floop *l = here;
    if (l == NULL || l->current == NULL)
        return;
    struct sks__fib *me = l->current;
    me->parked = true;
    wake(me, 0);                      /* to the back of the run queue */
    sks__fiber_switch(&me->f, &l->sched);
}

/* ------------------------------------------------------------------------ */
/* Blocking work on helper threads                                           */

struct sks__job {
    void (*fn)(void *);
    void *arg;
    struct sks__fib *fib;
    bool done;                        /* under fib->loop->lock */
    struct sks__job *next;
};

/* Any thread: f is made ready in the loop's next turn (with -EINTR if
 * interrupt); done, if not NULL, is set under the same lock.  The wake-up
 * is written under it too: once done is seen, the fiber may end, and its
 * loop be freed, poller and all (TSan saw a helper thread's write race
 * the eventfd's close). */
static void post(struct sks__fib *f, bool interrupt, bool *done)
{
    struct sks__floop *l = f->loop;

    pthread_mutex_lock(&l->lock);
    if (done != NULL)
        *done = true;
    f->interrupt |= interrupt;
    if (!f->on_posted) {
        f->on_posted = true;
        f->post_next = l->posted;
        l->posted = f;
    }
    sks__poller_wake(l->poller);
    pthread_mutex_unlock(&l->lock);
}

static void post_done(struct sks__job *j)
{
    post(j->fib, false, &j->done);
}

void sks__floop_interrupt(struct sks__fib *f)
{
    post(f, true, NULL);
}

struct sks__fib *sks__floop_self(void)
{
    return here != NULL ? here->current : NULL;
}

static void *helper_main(void *arg)
{
    struct sks__helpers *h = arg;

    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->queue == NULL && !h->stopping)
            pthread_cond_wait(&h->cond, &h->lock);
        if (h->queue == NULL)
            break;
        struct sks__job *j = h->queue;
        h->queue = j->next;
        pthread_mutex_unlock(&h->lock);
        j->fn(j->arg);
        post_done(j);
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

int sks__helpers_start(struct sks__helpers *h, size_t n)
{
    *h = (struct sks__helpers){ .n = 0 };
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->threads = calloc(n, sizeof *h->threads);
    if (h->threads == NULL) {
        sks__helpers_stop(h);
        return -ENOMEM;
    }
    for (; h->n < n; h->n++) {
        int err = pthread_create(&h->threads[h->n], NULL, helper_main, h);
        if (err != 0) {
            sks__helpers_stop(h);
            return -err;
        }
    }
    return 0;
}

void sks__helpers_stop(struct sks__helpers *h)
{
    pthread_mutex_lock(&h->lock);
    h->stopping = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < h->n; i++)
        pthread_join(h->threads[i], NULL);
    free(h->threads);
    h->threads = NULL;
    h->n = 0;
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
}

int sks__floop_offload(struct sks__helpers *h, void (*fn)(void *), void *arg)
{
    struct sks__floop *l = here;
    if (l == NULL || l->current == NULL || h->n == 0) {
        fn(arg);
        return 0;
    }
    /* The job lives on this fiber's stack, which stays put until the
     * helper is done with it: a cancel does not end this wait. */
    struct sks__job j = { .fn = fn, .arg = arg, .fib = l->current };
    pthread_mutex_lock(&h->lock);
    struct sks__job **tail = &h->queue;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = &j;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
    for (;;) {
        park_now(l, j.fib);
        pthread_mutex_lock(&l->lock);
        bool done = j.done;
        pthread_mutex_unlock(&l->lock);
        if (done)
            return 0;
    }
}

static void dispatch(struct sks__floop *l, const struct sks__poll_event *ev)
{
    if ((size_t)ev->fd >= l->nfds)
        return;
    struct fdwait *w = &l->fds[ev->fd];
    if (ev->ready & SKS__POLL_READ) {
        w->empty = false;
        if (w->reader)
            wake(w->reader, 0);
    }
    if ((ev->ready & SKS__POLL_WRITE) && w->writer)
        wake(w->writer, 0);
}

/* ------------------------------------------------------------------------ */
/* Fibers                                                                    */

int sks__floop_spawn(struct sks__floop *l, void (*fn)(void *), void *arg)
{
    struct sks__fib *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -ENOMEM;
    int err = sks__fiber_make(&f->f, &l->stacks, fn, arg);
    if (err != 0) {
        free(f);
        return err;
    }
    f->loop = l;
    f->heap_idx = NOT_IN_HEAP;
    f->wait_fd = -1;
    f->all_next = l->all;
    if (l->all != NULL)
        l->all->all_prev = f;
    l->all = f;
    l->nfibers++;
    make_ready(l, f);
    return 0;
}

static void end_fiber(struct sks__floop *l, struct sks__fib *f)
{
    /* An interrupt posted just before the fiber ended must not outlive it. */
    pthread_mutex_lock(&l->lock);
    if (f->on_posted) {
        struct sks__fib **p = &l->posted;
        while (*p != f)
            p = &(*p)->post_next;
        *p = f->post_next;
    }
    pthread_mutex_unlock(&l->lock);
    if (f->all_prev != NULL)
        f->all_prev->all_next = f->all_next;
    else
        l->all = f->all_next;
    if (f->all_next != NULL)
        f->all_next->all_prev = f->all_prev;
    l->nfibers--;
    sks__fiber_release(&f->f, &l->stacks);
    free(f);
}

static void run_ready(struct sks__floop *l)
{
    /* Only what is ready now: a fiber that yields runs again next turn,
     * after the events that came meanwhile. */
    struct sks__fib *f = l->runq;
    struct sks__fib *last = l->runq_tail;
    l->runq = l->runq_tail = NULL;
    while (f != NULL) {
        struct sks__fib *next = f == last ? NULL : f->next;
        l->current = f;
        atomic_store_explicit(&l->running, f->tag, memory_order_relaxed);
        atomic_store_explicit(&l->in_fiber, true, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->resumes, 1, memory_order_relaxed);
        sks__fiber_switch(&l->sched, &f->f);
        atomic_store_explicit(&l->in_fiber, false, memory_order_relaxed);
        l->current = NULL;
        if (f->f.done)
            end_fiber(l, f);
        f = next;
    }
}

static void cancel_all(struct sks__floop *l)
{
    l->cancelled = true;
    for (struct sks__fib *f = l->all; f != NULL; f = f->all_next)
        wake(f, -ECANCELED);
}

void sks__floop_cancel(struct sks__floop *l)
{
    atomic_store(&l->cancel_request, true);
    sks__poller_wake(l->poller);
}

static void take_posted(struct sks__floop *l)
{
    /* The walk follows taken_next, not post_next: once on_posted is clear
     * another thread may post f again and rewrite post_next. */
    pthread_mutex_lock(&l->lock);
    struct sks__fib *f = l->posted;
    l->posted = NULL;
    for (struct sks__fib *p = f; p != NULL; p = p->post_next) {
        p->on_posted = false;
        p->taken_next = p->post_next;
    }
    pthread_mutex_unlock(&l->lock);
    while (f != NULL) {
        struct sks__fib *next = f->taken_next;
        pthread_mutex_lock(&l->lock);
        bool intr = f->interrupt;
        f->interrupt = false;
        pthread_mutex_unlock(&l->lock);
        if (intr && !f->parked)
            f->interrupt_pending = true;
        wake(f, intr ? -EINTR : 0);
        f = next;
    }
    if (atomic_exchange(&l->cancel_request, false))
        cancel_all(l);
}

static void expire(struct sks__floop *l)
{
    while (l->nheap > 0 && l->heap[0]->deadline <= l->now)
        wake(l->heap[0], -ETIMEDOUT);
}

int sks__floop_run(struct sks__floop *l)
{
    struct sks__poll_event ev[BATCH];

    here = l;
    sks__fiber_thread(&l->sched);
    l->now = sks__now();
    while (l->nfibers > 0) {
        run_ready(l);
        if (l->nfibers == 0)
            break;
        int timeout = -1;
        if (l->runq != NULL)
            timeout = 0;
        else if (l->nheap > 0)
            timeout = sks__ms_until(l->heap[0]->deadline);
        int n = sks__poller_wait(l->poller, timeout, ev, BATCH);
        if (n < 0) {
            here = NULL;
            return n;
        }
        l->now = sks__now();
        for (int i = 0; i < n; i++) {
            if (ev[i].fd < 0)
                take_posted(l);
            else
                dispatch(l, &ev[i]);
        }
        expire(l);
    }
    here = NULL;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Life                                                                      */

int sks__floop_new(struct sks__floop **out, size_t stack_size,
                   unsigned cached_stacks)
{
    struct sks__floop *l = calloc(1, sizeof *l);
    if (l == NULL)
        return -ENOMEM;
    int err = sks__poller_new(&l->poller);
    if (err != 0) {
        free(l);
        return err;
    }
    pthread_mutex_init(&l->lock, NULL);
    sks__stack_cache_init(&l->stacks, stack_size, cached_stacks);
    *out = l;
    return 0;
}

void sks__floop_free(struct sks__floop *l)
{
    if (l == NULL)
        return;
    /* Fibers never run (sks__floop_run returns only once all ended). */
    while (l->all != NULL)
        end_fiber(l, l->all);
    sks__stack_cache_fini(&l->stacks);
    pthread_mutex_destroy(&l->lock);
    sks__poller_free(l->poller);
    free(l->heap);
    free(l->fds);
    free(l);
}

struct sks__floop *sks__floop_here(void)
{
    return here != NULL && here->current != NULL ? here : NULL;
}

size_t sks__floop_fibers(const struct sks__floop *l)
{
    return l->nfibers;
}

void sks__floop_set_tag(sks__floop_tag tag)
{
    struct sks__floop *l = here;
    if (l == NULL || l->current == NULL)
        return;
    l->current->tag = tag;
    atomic_store_explicit(&l->running, tag, memory_order_relaxed);
}

bool sks__floop_held(struct sks__floop *l, unsigned long *resumes,
                     sks__floop_tag *tag)
{
    unsigned long now = atomic_load_explicit(&l->resumes, memory_order_relaxed);
    bool held = atomic_load_explicit(&l->in_fiber, memory_order_relaxed) &&
                now == *resumes;
    *resumes = now;
    *tag = atomic_load_explicit(&l->running, memory_order_relaxed);
    return held;
}
