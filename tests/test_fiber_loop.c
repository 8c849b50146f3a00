/*
 * test_fiber_loop.c - the fiber loop: fibers parked on Unix socket pairs
 * and pipes (edge-triggered, registered once, or one-shot for descriptors
 * the loop was not told about), deadlines from the timer heap, sleeps in
 * deadline order, yield, and cancellation from another thread.  Every
 * wait is bounded by a deadline or by the peer fiber that ends it.
 */
#define _GNU_SOURCE
#include "support.h"
#include "../src/internal.h"
#include "../src/fiber_poller.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>


static struct sks__floop *loop;

static void new_loop(void)
{
    assert_int_equal(sks__floop_new(&loop, 64 * 1024, 8), 0);
}

static void run_and_free(void)
{
    assert_int_equal(sks__floop_run(loop), 0);
    assert_int_equal(sks__floop_fibers(loop), 0);
    sks__floop_free(loop);
    loop = NULL;
}

/* Two fibers, first and second in that order, on a new loop, run to the
 * end. */
static void run_two(void (*first)(void *), void (*second)(void *))
{
    new_loop();
    assert_int_equal(sks__floop_spawn(loop, first, NULL), 0);
    assert_int_equal(sks__floop_spawn(loop, second, NULL), 0);
    run_and_free();
}

static void nonblocking_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
                                SOCK_CLOEXEC, 0, sv), 0);
}

/* read(2) as a fiber does it: try, park on EAGAIN, try again. */
static ssize_t fiber_read(int fd, void *buf, size_t n, double deadline)
{
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        if (errno != EAGAIN)
            return -errno;
        int err = sks__floop_wait_fd(fd, false, deadline);
        if (err != 0)
            return err;
    }
}

static int fiber_write(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno != EAGAIN)
            return -errno;
        if (r < 0) {
            int err = sks__floop_wait_fd(fd, true, INFINITY);
            if (err != 0)
                return err;
            continue;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Echo                                                                      */

#define PAIRS 100
#define MSG 20000   /* more than a socket buffer takes at once: writers park */

struct pair {
    int sv[2];
    int server_ok, client_ok;
};

static void echo_server(void *arg)
{
    struct pair *p = arg;
    size_t total = 0;

    if (sks__floop_register(p->sv[0]) != 0)
        return;
    char local[4096];
    while (total < MSG) {
        ssize_t n = fiber_read(p->sv[0], local, sizeof local, INFINITY);
        if (n <= 0)
            break;
        if (fiber_write(p->sv[0], local, (size_t)n) != 0)
            break;
        total += (size_t)n;
    }
    sks__floop_forget(p->sv[0]);
    p->server_ok = total == MSG;
}

static void echo_client(void *arg)
{
    struct pair *p = arg;
    char *msg = malloc(MSG), *got = malloc(MSG);

    if (msg == NULL || got == NULL || sks__floop_register(p->sv[1]) != 0)
        goto end;
    for (size_t i = 0; i < MSG; i++)
        msg[i] = (char)(i * 7 + (size_t)p->sv[1]);
    /* Write in slices, reading the echo as it comes. */
    size_t sent = 0, recvd = 0;
    while (recvd < MSG) {
        if (sent < MSG) {
            size_t k = MSG - sent < 3000 ? MSG - sent : 3000;
            if (fiber_write(p->sv[1], msg + sent, k) != 0)
                goto end;
            sent += k;
        }
        ssize_t n = fiber_read(p->sv[1], got + recvd, MSG - recvd,
                               sks__now() + 10);
        if (n <= 0)
            goto end;
        recvd += (size_t)n;
    }
    p->client_ok = memcmp(msg, got, MSG) == 0;
end:
    sks__floop_forget(p->sv[1]);
    free(msg);
    free(got);
}

static void test_echo_between_many_fibers(void **state)
{
    (void)state;
    static struct pair pairs[PAIRS];
    new_loop();
    for (int i = 0; i < PAIRS; i++) {
        pairs[i] = (struct pair){ 0 };
        nonblocking_pair(pairs[i].sv);
        assert_int_equal(sks__floop_spawn(loop, echo_server, &pairs[i]), 0);
        assert_int_equal(sks__floop_spawn(loop, echo_client, &pairs[i]), 0);
    }
    assert_int_equal(sks__floop_fibers(loop), 2 * PAIRS);
    run_and_free();
    for (int i = 0; i < PAIRS; i++) {
        assert_true(pairs[i].server_ok);
        assert_true(pairs[i].client_ok);
        close(pairs[i].sv[0]);
        close(pairs[i].sv[1]);
    }
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                 */

struct waiter {
    int fd;
    double deadline;
    int result;
    double woke;
};

static void wait_read(void *arg)
{
    struct waiter *w = arg;
    char c;
    w->result = (int)fiber_read(w->fd, &c, 1, w->deadline);
    w->woke = sks__now();
}

static void test_wait_ends_at_its_deadline(void **state)
{
    (void)state;
    int sv[2];
    nonblocking_pair(sv);
    new_loop();
    double t0 = sks__now();
    struct waiter w = { .fd = sv[0], .deadline = t0 + 0.05 };
    assert_int_equal(sks__floop_spawn(loop, wait_read, &w), 0);
    run_and_free();
    assert_int_equal(w.result, -ETIMEDOUT);
    assert_true(w.woke >= t0 + 0.05);
    assert_true(w.woke < t0 + 2);
    close(sv[0]);
    close(sv[1]);
}

#define WAITERS 64

struct writer_plan {
    int *fds;
    int n;
};

/* Writes one byte to every other descriptor, after a short sleep. */
static void write_some(void *arg)
{
    struct writer_plan *p = arg;
    sks__floop_sleep(sks__now() + 0.02);
    for (int i = 0; i < p->n; i += 2)
        if (write(p->fds[i], "x", 1) != 1)
            return;
}

/* Woken by I/O before their deadlines, half the waiters leave the heap
 * from the middle; the other half time out in order. */
static void test_io_and_deadlines_mix(void **state)
{
    (void)state;
    static struct waiter w[WAITERS];
    static int peer[WAITERS];
    int sv[WAITERS][2];
    new_loop();
    double t0 = sks__now();
    for (int i = 0; i < WAITERS; i++) {
        nonblocking_pair(sv[i]);
        peer[i] = sv[i][1];
        w[i] = (struct waiter){ .fd = sv[i][0],
                                .deadline = t0 + 0.05 + 0.001 * (i % 7) };
        assert_int_equal(sks__floop_register(-1), -EINVAL);
        assert_int_equal(sks__floop_spawn(loop, wait_read, &w[i]), 0);
    }
    struct writer_plan plan = { peer, WAITERS };
    assert_int_equal(sks__floop_spawn(loop, write_some, &plan), 0);
    run_and_free();
    for (int i = 0; i < WAITERS; i++) {
        if (i % 2 == 0) {
            assert_int_equal(w[i].result, 1);
            assert_true(w[i].woke < w[i].deadline);
        } else {
            assert_int_equal(w[i].result, -ETIMEDOUT);
            assert_true(w[i].woke >= w[i].deadline);
        }
        close(sv[i][0]);
        close(sv[i][1]);
    }
}

#define SLEEPERS 200

static double sleep_deadline[SLEEPERS];
static int wake_order[SLEEPERS];
static int nwoken;

static int nlate;

/* A deadline already past when the sleep starts (a first turn slowed by a
 * loaded machine) returns at once, out of order by design: not counted. */
static void sleeper(void *arg)
{
    int i = (int)(intptr_t)arg;
    if (sks__now() >= sleep_deadline[i]) {
        nlate++;
        return;
    }
    if (sks__floop_sleep(sleep_deadline[i]) == 0)
        wake_order[nwoken++] = i;
}

static void test_sleepers_wake_in_deadline_order(void **state)
{
    (void)state;
    new_loop();
    double t0 = sks__now();
    unsigned seed = 12345;
    nwoken = 0;
    for (int i = 0; i < SLEEPERS; i++) {
        seed = seed * 1103515245u + 12345u;
        /* 100 to 160 ms, in 3 ms steps so that a turn wakes several. */
        sleep_deadline[i] = t0 + 0.1 + 0.003 * ((seed >> 16) % 21);
        assert_int_equal(sks__floop_spawn(loop, sleeper, (void *)(intptr_t)i), 0);
    }
    nlate = 0;
    run_and_free();
    assert_int_equal(nwoken + nlate, SLEEPERS);
    assert_true(nwoken >= SLEEPERS / 2);
    for (int i = 1; i < nwoken; i++)
        assert_true(sleep_deadline[wake_order[i - 1]] <=
                    sleep_deadline[wake_order[i]]);
    assert_true(sks__now() >= sleep_deadline[wake_order[nwoken - 1]]);
}

/* ------------------------------------------------------------------------ */
/* Edges, foreign descriptors, yield                                         */

static int edge_fd, edge_peer;
static char edge_got[3];
static int edge_ok;

/* The edge for "a" comes while the reader sleeps, and nobody waits for
 * it; the reader still reads "a" (without waiting), and its wait after
 * the EAGAIN that follows sees the edge of "b". */
static void edge_reader(void *arg)
{
    (void)arg;
    sks__floop_register(edge_fd);
    sks__floop_sleep(sks__now() + 0.02);
    ssize_t n = fiber_read(edge_fd, edge_got, 1, sks__now() + 5);
    ssize_t m = fiber_read(edge_fd, edge_got + 1, 1, sks__now() + 5);
    edge_ok = n == 1 && m == 1;
    sks__floop_forget(edge_fd);
}

static void edge_writer(void *arg)
{
    (void)arg;
    if (write(edge_peer, "a", 1) != 1)
        return;
    sks__floop_sleep(sks__now() + 0.05);
    if (write(edge_peer, "b", 1) != 1)
        return;
}

static void test_an_edge_nobody_waited_for_is_not_lost(void **state)
{
    (void)state;
    int sv[2];
    nonblocking_pair(sv);
    edge_fd = sv[0];
    edge_peer = sv[1];
    edge_ok = 0;
    run_two(edge_reader, edge_writer);
    assert_true(edge_ok);
    assert_int_equal(memcmp(edge_got, "ab", 2), 0);
    close(sv[0]);
    close(sv[1]);
}

/*
 * The read hint (sks__floop_read_drained): a read marked empty parks
 * before it tries; any readiness clears the mark, seen or not by a
 * waiter; and a mark that was wrong (bytes left behind, which no edge
 * will announce) costs a short wait, never the whole deadline.
 */
static int hint_fd, hint_peer, hint_ok;

static void hint_writer(void *arg)
{
    (void)arg;
    sks__floop_sleep(sks__now() + 0.01);
    if (write(hint_peer, "ab", 2) != 2)
        return;
}

static void hint_reader(void *arg)
{
    (void)arg;
    char c;
    if (sks__floop_register(hint_fd) != 0)
        return;
    /* Armed in epoll; the edge of "ab" wakes it and is then spent. */
    if (sks__floop_wait_fd(hint_fd, false, sks__now() + 5) != 0 ||
        read(hint_fd, &c, 1) != 1 || c != 'a')
        goto end;
    /* A wrong mark: "b" is queued. */
    sks__floop_read_drained(hint_fd);
    if (!SKS__POLLER_SEES_UNWAITED) {
        /* poll: no mark at all, as nothing would clear it. */
        if (!sks__floop_read_empty(hint_fd) && read(hint_fd, &c, 1) == 1)
            hint_ok = 3;
        goto end;
    }
    if (!sks__floop_read_empty(hint_fd))
        goto end;
    double t0 = sks__now();
    if (sks__floop_wait_fd(hint_fd, false, t0 + 5) != 0 ||
        sks__now() - t0 > 2 || sks__floop_read_empty(hint_fd) ||
        read(hint_fd, &c, 1) != 1 || c != 'b')
        goto end;
    hint_ok++;
    /* Readiness nobody waits for clears the mark. */
    sks__floop_read_drained(hint_fd);
    if (!sks__floop_read_empty(hint_fd) || write(hint_peer, "c", 1) != 1)
        goto end;
    sks__floop_sleep(sks__now() + 0.02);  /* the loop polls meanwhile */
    if (sks__floop_read_empty(hint_fd) || read(hint_fd, &c, 1) != 1 ||
        c != 'c')
        goto end;
    hint_ok++;
    /* A descriptor the loop was not told of takes no mark: its edges are
     * not watched while no fiber waits. */
    sks__floop_read_drained(hint_peer);
    if (!sks__floop_read_empty(hint_peer))
        hint_ok++;
end:
    sks__floop_forget(hint_fd);
}

static void test_the_read_hint_is_cleared_and_bounded(void **state)
{
    (void)state;
    int sv[2];
    nonblocking_pair(sv);
    hint_fd = sv[0];
    hint_peer = sv[1];
    hint_ok = 0;
    run_two(hint_reader, hint_writer);
    assert_int_equal(hint_ok, 3);
    close(sv[0]);
    close(sv[1]);
}

static int foreign_rd[2], foreign_ok;

static void foreign_reader(void *arg)
{
    (void)arg;
    char c;
    /* Never registered: armed one-shot for the wait, removed after. */
    foreign_ok = fiber_read(foreign_rd[0], &c, 1, sks__now() + 5) == 1;
    close(foreign_rd[0]);
    close(foreign_rd[1]);
    /* The same descriptor numbers, a new pipe: had the wait left the old
     * pipe registered, its close would have taken the registration along
     * and this wait would not be armed. */
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
        return;
    foreign_rd[0] = p[0];
    foreign_rd[1] = p[1];
    foreign_ok += fiber_read(p[0], &c, 1, sks__now() + 5) == 1;
}

static void foreign_writer(void *arg)
{
    (void)arg;
    sks__floop_sleep(sks__now() + 0.01);
    if (write(foreign_rd[1], "x", 1) != 1)
        return;
    /* By now the reader waits on its new pipe. */
    sks__floop_sleep(sks__now() + 0.02);
    if (write(foreign_rd[1], "y", 1) != 1)
        return;
}

static void test_descriptors_never_registered_wait_one_shot(void **state)
{
    (void)state;
    assert_int_equal(pipe2(foreign_rd, O_NONBLOCK | O_CLOEXEC), 0);
    foreign_ok = 0;
    run_two(foreign_reader, foreign_writer);
    assert_int_equal(foreign_ok, 2);
    close(foreign_rd[0]);
    close(foreign_rd[1]);
}

/* More descriptors ready at once than one wait of the loop reports
 * (BATCH, 256), in every round, woken in a different order each round,
 * half of them registered and half never registered: every reader gets
 * every byte, in order.  With poll, descriptors join and leave its array
 * as their readers park and wake, in an order that moves entries around. */
#define CROWD 300
#define CROWD_ROUNDS 4

static int crowd[CROWD][2];
static int crowd_got[CROWD];

static void crowd_reader(void *arg)
{
    int i = (int)(intptr_t)arg;
    int fd = crowd[i][0];
    if (i % 2 == 0 && sks__floop_register(fd) != 0)
        return;
    for (int round = 0; round < CROWD_ROUNDS; round++) {
        char c;
        if (fiber_read(fd, &c, 1, sks__now() + 10) != 1 || c != 'a' + round)
            break;
        crowd_got[i]++;
    }
    if (i % 2 == 0)
        sks__floop_forget(fd);
}

static void crowd_writer(void *arg)
{
    (void)arg;
    static const int step[CROWD_ROUNDS] = { 1, 7, 299, 151 };
    for (int round = 0; round < CROWD_ROUNDS; round++) {
        char c = (char)('a' + round);
        for (int k = 0; k < CROWD; k++) {
            int i = (k * step[round] + round) % CROWD;
            if (write(crowd[i][1], &c, 1) != 1)
                return;
        }
        /* Lets every reader park on its next byte before the next round. */
        if (sks__floop_sleep(sks__now() + 0.01) != 0)
            return;
    }
}

static void test_more_ready_at_once_than_one_wait_reports(void **state)
{
    (void)state;
    for (int i = 0; i < CROWD; i++) {
        nonblocking_pair(crowd[i]);
        crowd_got[i] = 0;
    }
    new_loop();
    for (int i = 0; i < CROWD; i++)
        assert_int_equal(sks__floop_spawn(loop, crowd_reader,
                                          (void *)(intptr_t)i), 0);
    assert_int_equal(sks__floop_spawn(loop, crowd_writer, NULL), 0);
    run_and_free();
    for (int i = 0; i < CROWD; i++) {
        assert_int_equal(crowd_got[i], CROWD_ROUNDS);
        close(crowd[i][0]);
        close(crowd[i][1]);
    }
}

static char yield_trace[8];
static int nyield;

static void yielder(void *arg)
{
    char id = *(char *)arg;
    for (int i = 0; i < 3; i++) {
        yield_trace[nyield++] = id;
        sks__floop_yield();
    }
}

static void test_yield_lets_the_others_run_first(void **state)
{
    (void)state;
    static char a = 'a', b = 'b';
    nyield = 0;
    new_loop();
    assert_int_equal(sks__floop_spawn(loop, yielder, &a), 0);
    assert_int_equal(sks__floop_spawn(loop, yielder, &b), 0);
    run_and_free();
    assert_int_equal(nyield, 6);
    assert_int_equal(memcmp(yield_trace, "ababab", 6), 0);
}

/* ------------------------------------------------------------------------ */
/* Cancellation                                                              */

static void *cancel_later(void *arg)
{
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    sks__floop_cancel(arg);
    return NULL;
}

static void test_cancel_from_another_thread_ends_every_wait(void **state)
{
    (void)state;
    static struct waiter w[8];
    int sv[8][2];
    new_loop();
    for (int i = 0; i < 8; i++) {
        nonblocking_pair(sv[i]);
        w[i] = (struct waiter){ .fd = sv[i][0], .deadline = INFINITY };
        assert_int_equal(sks__floop_spawn(loop, wait_read, &w[i]), 0);
    }
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_later, loop), 0);
    double t0 = sks__now();
    assert_int_equal(sks__floop_run(loop), 0);
    pthread_join(t, NULL);
    assert_true(sks__now() - t0 < 5);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(w[i].result, -ECANCELED);
        close(sv[i][0]);
        close(sv[i][1]);
    }
    sks__floop_free(loop);
}

/* ------------------------------------------------------------------------ */
/* Blocking work, watchdog                                                   */

static struct sks__helpers helpers;
static pthread_t loop_thread;

struct blocking {
    int ms;
    atomic_bool on_helper, done;   /* the ticker reads done meanwhile */
};

static void block_for(void *arg)
{
    struct blocking *b = arg;
    struct timespec ts = { 0, b->ms * 1000L * 1000L };
    b->on_helper = !pthread_equal(pthread_self(), loop_thread);
    nanosleep(&ts, NULL);
    b->done = true;
}

static struct blocking job_a;
static int ticks_during;

static void offloader(void *arg)
{
    (void)arg;
    sks__floop_offload(&helpers, block_for, &job_a);
}

static void ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200 && !job_a.done; i++) {
        sks__floop_sleep(sks__now() + 0.002);
        if (!job_a.done)
            ticks_during++;
    }
}

static void test_blocking_work_runs_on_a_helper_while_fibers_run(void **state)
{
    (void)state;
    loop_thread = pthread_self();
    assert_int_equal(sks__helpers_start(&helpers, 2), 0);
    job_a = (struct blocking){ .ms = 60 };
    ticks_during = 0;
    run_two(offloader, ticker);
    sks__helpers_stop(&helpers);
    assert_true(job_a.done);
    assert_true(job_a.on_helper);
    /* The loop kept running its other fiber meanwhile (2 ms ticks over
     * 60 ms: far more than one). */
    assert_true(ticks_during >= 5);
}

static void cancelled_offloader(void *arg)
{
    (void)arg;
    sks__floop_offload(&helpers, block_for, &job_a);
    /* A cancel came meanwhile; the work still ran to its end. */
    atomic_store(&job_a.on_helper, job_a.on_helper && job_a.done);
}

static void test_cancel_waits_for_blocking_work(void **state)
{
    (void)state;
    loop_thread = pthread_self();
    assert_int_equal(sks__helpers_start(&helpers, 1), 0);
    job_a = (struct blocking){ .ms = 60 };
    new_loop();
    assert_int_equal(sks__floop_spawn(loop, cancelled_offloader, NULL), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_later, loop), 0);
    run_and_free();
    pthread_join(t, NULL);
    sks__helpers_stop(&helpers);
    assert_true(job_a.done);
    assert_true(job_a.on_helper);
}

static void test_blocking_work_outside_a_loop_runs_here(void **state)
{
    (void)state;
    loop_thread = pthread_self();
    assert_int_equal(sks__helpers_start(&helpers, 1), 0);
    job_a = (struct blocking){ .ms = 1 };
    assert_int_equal(sks__floop_offload(&helpers, block_for, &job_a), 0);
    sks__helpers_stop(&helpers);
    assert_true(job_a.done);
    assert_false(job_a.on_helper);
}

static atomic_int held_seen, watching;
static _Atomic(sks__floop_tag) held_tag; /* the tag of the last one held */

static void *watchdog(void *arg)
{
    unsigned long resumes = 0;
    while (atomic_load(&watching)) {
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        sks__floop_tag tag;
        if (sks__floop_held(arg, &resumes, &tag)) {
            atomic_store(&held_tag, tag);
            atomic_fetch_add(&held_seen, 1);
        }
    }
    return NULL;
}

static void spin_for(double seconds, bool yielding)
{
    double end = sks__now() + seconds;
    while (sks__now() < end)
        if (yielding)
            sks__floop_yield();
}

static void polite(void *arg)
{
    (void)arg;
    spin_for(0.15, true);
}

/* Holds the loop until the watchdog has seen it twice (at most 5 s):
 * under valgrind, which runs one thread at a time, the watchdog's turns
 * come seldom while a thread spins. */
static void hog(void *arg)
{
    (void)arg;
    double end = sks__now() + 5;
    sks__floop_set_tag((sks__floop_tag)hog);
    while (atomic_load(&held_seen) < 2 && sks__now() < end)
        ;
}

static void watch_loop(void (*fn)(void *))
{
    new_loop();
    atomic_store(&held_seen, 0);
    atomic_store(&watching, 1);
    assert_int_equal(sks__floop_spawn(loop, fn, NULL), 0);
    assert_int_equal(sks__floop_spawn(loop, polite, NULL), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, watchdog, loop), 0);
    assert_int_equal(sks__floop_run(loop), 0);
    atomic_store(&watching, 0);
    pthread_join(t, NULL);
    sks__floop_free(loop);
}

static void test_a_fiber_holding_its_loop_is_seen(void **state)
{
    (void)state;
    if (under_valgrind()) {
        /* memcheck runs one thread at a time: the watchdog's sampling
         * thread then cannot tell a yielding fiber from one holding its
         * loop. */
        print_message("  skipped under valgrind: it runs one thread at a "
                      "time, so a sampling watchdog sees every fiber held\n");
        skip();
    }
    /* Sampled every 20 ms: the polite fibers (150 ms of yielding) are
     * seen only if the machine stalled the loop's thread for a whole
     * interval, at most once here; the hog in every sample once the
     * first has passed. */
    watch_loop(polite);
    int polite_seen = atomic_load(&held_seen);
    watch_loop(hog);
    int hog_seen = atomic_load(&held_seen);
    printf("held in samples: polite %d, hog %d\n", polite_seen, hog_seen);
    assert_true(polite_seen <= 1);
    assert_true(hog_seen >= 2);
    /* And which fiber: the tag it gave itself. */
    assert_true(atomic_load(&held_tag) == (sks__floop_tag)hog);
}

static struct sks__fib *intr_target;
static int intr_first, intr_second;
static atomic_int intr_ready;

static void *interrupt_later(void *arg)
{
    (void)arg;
    while (!atomic_load(&intr_ready))
        sched_yield();
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    sks__floop_interrupt(intr_target);
    return NULL;
}

/* Parked with no deadline: only the interrupt ends the first wait.  The
 * second is interrupted before it starts (while the fiber still runs),
 * and returns at once. */
static void interrupted(void *arg)
{
    int *fd = arg;
    intr_target = sks__floop_self();
    atomic_store(&intr_ready, 1);
    intr_first = sks__floop_wait_fd(*fd, false, INFINITY);
    sks__floop_interrupt(sks__floop_self());
    sks__floop_yield();                   /* the post is taken meanwhile */
    intr_second = sks__floop_wait_fd(*fd, false, sks__now() + 5);
}

static void test_an_interrupt_ends_one_fibers_wait(void **state)
{
    (void)state;
    int sv[2];
    nonblocking_pair(sv);
    atomic_store(&intr_ready, 0);
    new_loop();
    assert_null(sks__floop_self());
    assert_int_equal(sks__floop_spawn(loop, interrupted, &sv[0]), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, interrupt_later, NULL), 0);
    double t0 = sks__now();
    run_and_free();
    pthread_join(t, NULL);
    assert_int_equal(intr_first, -EINTR);
    assert_int_equal(intr_second, -EINTR);
    assert_true(sks__now() - t0 < 4);
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */

#define PARKED 5000

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

static long parked_rss;
static int nparked;

static void parked(void *arg)
{
    (void)arg;
    nparked++;
    (void)sks__floop_sleep(sks__now() + 60);
}

/* Runs once every other fiber has parked (it was spawned last): reads the
 * RSS, then ends them all. */
static void measure_then_cancel(void *arg)
{
    (void)arg;
    parked_rss = rss_kib();
    sks__floop_cancel(sks__floop_here());
}

/* What a parked fiber costs without its connection: its stack's touched
 * pages and its loop record.  The model's target, buffers and request
 * included, is 16 KiB. */
static void test_a_parked_fiber_costs_a_few_kib(void **state)
{
    (void)state;
    new_loop();
    nparked = 0;
    long before = rss_kib();
    for (int i = 0; i < PARKED; i++)
        assert_int_equal(sks__floop_spawn(loop, parked, NULL), 0);
    assert_int_equal(sks__floop_spawn(loop, measure_then_cancel, NULL), 0);
    run_and_free();
    assert_int_equal(nparked, PARKED);
    double per = (double)(parked_rss - before) / PARKED;
    printf("%d parked fibers: %.1f KiB of RSS each\n", PARKED, per);
    if (!UNDER_TSAN && !under_valgrind())
        assert_true(per <= 12);
}

static void test_calls_outside_a_fiber_are_refused(void **state)
{
    (void)state;
    assert_null(sks__floop_here());
    assert_int_equal(sks__floop_wait_fd(0, false, INFINITY), -EINVAL);
    assert_int_equal(sks__floop_sleep(INFINITY), -EINVAL);
    assert_int_equal(sks__floop_register(0), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_between_many_fibers),
        cmocka_unit_test(test_wait_ends_at_its_deadline),
        cmocka_unit_test(test_io_and_deadlines_mix),
        cmocka_unit_test(test_sleepers_wake_in_deadline_order),
        cmocka_unit_test(test_an_edge_nobody_waited_for_is_not_lost),
        cmocka_unit_test(test_the_read_hint_is_cleared_and_bounded),
        cmocka_unit_test(test_descriptors_never_registered_wait_one_shot),
        cmocka_unit_test(test_more_ready_at_once_than_one_wait_reports),
        cmocka_unit_test(test_yield_lets_the_others_run_first),
        cmocka_unit_test(test_cancel_from_another_thread_ends_every_wait),
        cmocka_unit_test(test_blocking_work_runs_on_a_helper_while_fibers_run),
        cmocka_unit_test(test_cancel_waits_for_blocking_work),
        cmocka_unit_test(test_blocking_work_outside_a_loop_runs_here),
        cmocka_unit_test(test_a_fiber_holding_its_loop_is_seen),
        cmocka_unit_test(test_an_interrupt_ends_one_fibers_wait),
        cmocka_unit_test(test_a_parked_fiber_costs_a_few_kib),
        cmocka_unit_test(test_calls_outside_a_fiber_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
