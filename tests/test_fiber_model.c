/*
 * test_fiber_model.c - what the fiber model adds to the other models'
 * behaviour (which test_drain, test_faults, test_proxy and test_activation
 * check under the fiber tables too): how its mixin composes, its loops and
 * threads, a fiber staying on its thread, per-operation timeouts from the
 * timer heap, blocking work and sleeps that leave the loop free, the
 * watchdog, handle_request outside serve_forever, and idle connections
 * that hold no read buffer.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Tables                                                                    */

static void test_the_mixin_wraps_a_transport_and_refuses_a_second_model(void **state)
{
    (void)state;
    sks_server_ops ops;
    assert_int_equal(sks_fiber_mixin(&ops, &sks_tcp_ops), 0);
    assert_ptr_equal(ops.process_request, sks_fiber_process_request);
    assert_ptr_equal(ops.serve_forever, sks_fiber_serve_forever);
    assert_ptr_equal(ops.server_close, sks_fiber_server_close);
    /* Another model already runs the requests, or the loop. */
    assert_int_equal(sks_fiber_mixin(&ops, &sks_threading_tcp_ops), -EINVAL);
    assert_int_equal(sks_fiber_mixin(&ops, &sks_prefork_tcp_ops), -EINVAL);

    /* The mixed table serves, as the predefined one does. */
    static sks_server_ops mixed;
    assert_int_equal(sks_fiber_mixin(&mixed, &sks_unix_stream_ops), 0);
    char address[SKS_ADDRSTRLEN];
    unix_temp_address(address, sizeof(address));
    test_server ts;
    ts_start(&ts, &mixed, address, &echo_lines_stream, NULL, 0.05);
    assert_echo_once(ts.address, SOCK_STREAM, "mixed\n");
    ts_stop(&ts);
    unlink(address + 5);
}

static void test_setters_check_values_and_ignore_other_models(void **state)
{
    (void)state;
    sks_server *srv = ts_new(&sks_threading_tcp_ops, "127.0.0.1:0",
                             &echo_lines_stream, NULL, 0);
    assert_int_equal(sks_server_set_fiber_loops(srv, 3), 0);
    assert_int_equal(sks_server_set_fiber_stack_size(srv, 1024), -EINVAL);
    assert_int_equal(sks_server_set_fiber_stack_size(srv, 64 * 1024), 0);
    assert_int_equal(sks_server_set_fiber_watchdog(srv, -1), -EINVAL);
    assert_int_equal(sks_server_set_fiber_watchdog(srv, NAN), -EINVAL);
    assert_int_equal(sks_server_fiber_stalls(srv), 0);
    assert_int_equal(sks_server_fiber_read_buffers(srv), 0);
    sks_server_free(srv);
}

/* ------------------------------------------------------------------------ */
/* Loops and threads                                                         */

static atomic_int same_thread, calls;

/* Sleeps between two lines: the fiber parks and resumes on its thread. */
static int sleep_between_lines(sks_handler *h)
{
    pthread_t before = pthread_self();
    int err = sks_sleep(h, 0.02);
    if (err != 0)
        return err;
    if (pthread_equal(before, pthread_self()))
        atomic_fetch_add(&same_thread, 1);
    atomic_fetch_add(&calls, 1);
    return echo_lines_handle(h);
}

static const sks_handler_class sleeper_class = {
    .setup = sks_stream_setup,
    .handle = sleep_between_lines,
    .finish = sks_stream_finish,
};

/* `loops` threads serve, beside the serving thread and the helpers; many
 * requests sleeping at once do not hold each other up (20 ms each, 40 at
 * once, two loops: well under 40 x 20 ms); each fiber resumes on the thread
 * it started on. */
static void test_loops_serve_sleeping_fibers_side_by_side(void **state)
{
    (void)state;
    enum { N = 40 };
    int threads0 = count_threads();
    atomic_store(&same_thread, 0);
    atomic_store(&calls, 0);
    sks_server *srv = ts_new(&sks_fiber_tcp_ops, "127.0.0.1:0",
                             &sleeper_class, NULL, 0);
    assert_int_equal(sks_server_set_fiber_loops(srv, 2), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    int c[N];
    double t0 = now_seconds();
    for (int i = 0; i < N; i++) {
        c[i] = client_connect(ts.address);
        assert_true(c[i] >= 0);
        assert_int_equal(client_send_all(c[i], "zz\n", 3), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_line(c[i], "zz\n");
        client_close(c[i]);
    }
    double took = now_seconds() - t0;
    print_message("%d sleeping requests served in %.0f ms\n", N, took * 1000);
    assert_true(took < 0.5);
    /* serving thread (the test's) + 2 loops + the helper threads */
    int threads = count_threads();
    assert_true(threads >= threads0 + 1 + 2);
    assert_true(threads <= threads0 + 1 + 2 + 8);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&calls), N);
    assert_int_equal(atomic_load(&same_thread), N);
    assert_int_equal(count_threads(), threads0);
}

/* A handler's per-operation timeout is kept by the loop's timer heap: a
 * silent client's read ends with -ETIMEDOUT at about the timeout, and
 * the loop meanwhile serves others. */
static void test_a_silent_client_times_out_and_others_are_served(void **state)
{
    (void)state;
    probe_counts pr = { 0 };
    static sks_server_ops ops;
    ops = sks_fiber_tcp_ops;
    ops.handle_error = probe_handle_error;
    static sks_handler_class cls;
    cls = probe_line_echo_stream;
    cls.timeout = 0.3;
    sks_server *srv = ts_new(&ops, "127.0.0.1:0", &cls, &pr, 0);
    assert_int_equal(sks_server_set_fiber_loops(srv, 1), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    double t0 = now_seconds();
    int silent = client_connect(ts.address);
    assert_true(silent >= 0);
    for (int i = 0; i < 3; i++) {
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_echo(c, "meanwhile\n");
        client_close(c);
    }
    assert_true(now_seconds() - t0 < 0.25);
    for (int i = 0; i < 500 && atomic_load(&pr.errors) == 0; i++)
        sleep_ms(10);
    double waited = now_seconds() - t0;
    assert_int_equal(atomic_load(&pr.errors), 1);
    assert_int_equal(atomic_load(&pr.last_error), -ETIMEDOUT);
    assert_true(waited >= 0.29);
    assert_true(waited < 2.0);
    assert_eof(silent);
    client_close(silent);
    ts_stop(&ts);
}

/* ------------------------------------------------------------------------ */
/* Blocking work, the watchdog                                               */

struct nap {
    int ms;
    pthread_t thread;
};

static void blocking_nap(void *arg)
{
    struct nap *n = arg;
    n->thread = pthread_self();
    sleep_ms(n->ms);     /* a blocking call: on a helper thread */
}

static atomic_int offloaded;

static int nap_then_echo(sks_handler *h)
{
    struct nap n = { 200, pthread_self() };
    int err = sks_run_blocking(h, blocking_nap, &n);
    if (err != 0)
        return err;
    if (!pthread_equal(n.thread, pthread_self()))
        atomic_fetch_add(&offloaded, 1);
    return echo_lines_handle(h);
}

static const sks_handler_class napping_class = {
    .setup = sks_stream_setup,
    .handle = nap_then_echo,
    .finish = sks_stream_finish,
};

/* One loop: while a request's blocking call runs on a helper thread, the
 * loop still answers another client at once. */
static void test_blocking_work_leaves_the_loop_free(void **state)
{
    (void)state;
    atomic_store(&offloaded, 0);
    sks_server *srv = ts_new(&sks_fiber_tcp_ops, "127.0.0.1:0",
                             &napping_class, NULL, 0);
    assert_int_equal(sks_server_set_fiber_loops(srv, 1), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    int slow = client_connect(ts.address);
    assert_true(slow >= 0);
    assert_int_equal(client_send_all(slow, "slow\n", 5), 0);
    sleep_ms(20);                 /* the slow one is in its nap */
    double t0 = now_seconds();
    int fast = client_connect(ts.address);
    assert_true(fast >= 0);
    assert_int_equal(client_send_all(fast, "fast\n", 5), 0);
    /* The fast one naps too, on another helper: both answer at about
     * 200 ms, not one after the other. */
    assert_line(fast, "fast\n");
    assert_line(slow, "slow\n");
    double took = now_seconds() - t0;
    print_message("two 200 ms blocking calls on one loop: %.0f ms\n",
                  took * 1000);
    assert_true(took < 0.39);
    client_close(fast);
    client_close(slow);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&offloaded), 2);
}

/* Under the threading model the same handler runs the call itself. */
static void test_blocking_work_under_threads_runs_in_the_thread(void **state)
{
    (void)state;
    atomic_store(&offloaded, 0);
    test_server ts;
    ts_start(&ts, &sks_threading_tcp_ops, "127.0.0.1:0", &napping_class,
             NULL, 0.05);
    assert_echo_once(ts.address, SOCK_STREAM, "threads\n");
    ts_stop(&ts);
    assert_int_equal(atomic_load(&offloaded), 0);
}

static atomic_int stall_reports;
static sks_fiber_stall stall_seen; /* as handle_error found it */

static void count_stalls(sks_server *srv, sks_request *req, int err)
{
    if (req == NULL && err == -ETIME) {
        assert_int_equal(sks_server_fiber_last_stall(srv, &stall_seen), 0);
        atomic_fetch_add(&stall_reports, 1);
    }
}

/* Spins without yielding, a handler that holds its loop, until the
 * watchdog has reported it (at most 5 s): under valgrind, which runs one
 * thread at a time, the watchdog's samples come late while a thread
 * spins. */
static pthread_t hog_thread;

static int hog_then_echo(sks_handler *h)
{
    double end = now_seconds() + 5;
    hog_thread = pthread_self();
    while (sks_server_fiber_stalls(sks_handler_server(h)) == 0 &&
           now_seconds() < end)
        ;
    return echo_lines_handle(h);
}

static const sks_handler_class hog_class = {
    .setup = sks_stream_setup,
    .handle = hog_then_echo,
    .finish = sks_stream_finish,
};

static void test_the_watchdog_reports_a_handler_holding_its_loop(void **state)
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
    atomic_store(&stall_reports, 0);
    static sks_server_ops ops;
    ops = sks_fiber_tcp_ops;
    ops.handle_error = count_stalls;
    sks_server *srv = ts_new(&ops, "127.0.0.1:0", &echo_lines_stream, NULL, 0);
    assert_int_equal(sks_server_set_fiber_watchdog(srv, 0.1), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    /* A polite request first: nothing to report. */
    assert_echo_once(ts.address, SOCK_STREAM, "polite\n");
    sleep_ms(150);
    assert_int_equal(sks_server_fiber_stalls(srv), 0);
    sks_fiber_stall none;
    assert_int_equal(sks_server_fiber_last_stall(srv, &none), -ENOENT);
    ts_stop(&ts);

    srv = ts_new(&ops, "127.0.0.1:0", &hog_class, NULL, 0);
    assert_int_equal(sks_server_set_fiber_watchdog(srv, 0.1), 0);
    assert_int_equal(sks_server_set_fiber_loops(srv, 1), 0);
    ts_serve(&ts, srv, 0.05);
    assert_echo_once(ts.address, SOCK_STREAM, "hog\n");
    /* One stall, reported once however many samples saw it, and where:
     * the one loop, and the handler that held it. */
    assert_int_equal(sks_server_fiber_stalls(srv), 1);
    assert_int_equal(atomic_load(&stall_reports), 1);
    assert_ptr_equal(stall_seen.handle, hog_then_echo);
    assert_int_equal(stall_seen.loop, 0);
    assert_true(pthread_equal(stall_seen.thread, hog_thread));
    ts_stop(&ts);
}

/* ------------------------------------------------------------------------ */
/* Datagrams                                                                 */

/* Echoes a datagram; one that starts "slow" after a 0.3 s sleep. */
static int slow_or_fast_dgram(sks_handler *h)
{
    char buf[64];
    ssize_t n = sks_rfile_read(sks_handler_rfile(h), buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    if (n >= 4 && memcmp(buf, "slow", 4) == 0) {
        int err = sks_sleep(h, 0.3);
        if (err != 0)
            return err;
    }
    return sks_wfile_write(sks_handler_wfile(h), buf, (size_t)n) < 0
               ? SKS_EHANDLER : 0;
}

static const sks_handler_class slow_or_fast_dgram_class = {
    .setup = sks_datagram_setup,
    .handle = slow_or_fast_dgram,
    .finish = sks_datagram_finish,
};

static void recv_reply(int fd, char *buf, size_t cap)
{
    ssize_t n;
    do
        n = recv(fd, buf, cap - 1, 0);
    while (n < 0 && errno == EINTR);
    assert_true(n > 0);
    buf[n] = '\0';
}

/* A datagram handler runs in its loop's acceptor; one that parks hands
 * the acceptor's role on and keeps its fiber: with one loop, four
 * handlers asleep at once do not hold up a fifth datagram, nor each
 * other (0.3 s each, well under 4 x 0.3 s in all). */
static void test_a_parking_datagram_handler_leaves_the_loop_accepting(void **state)
{
    (void)state;
    sks_server *srv = ts_new(&sks_fiber_udp_ops, "127.0.0.1:0",
                             &slow_or_fast_dgram_class, NULL, 0);
    assert_int_equal(sks_server_set_fiber_loops(srv, 1), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    int c = client_dgram(ts.address);
    assert_true(c >= 0);
    struct timeval tv = { 5, 0 };
    assert_int_equal(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    assert_dgram_echo(c, "warm-up", 7);

    double t0 = now_seconds();
    for (int i = 0; i < 4; i++)
        assert_int_equal(send(c, "slow", 4, 0), 4);
    assert_int_equal(send(c, "fast", 4, 0), 4);
    char buf[64];
    recv_reply(c, buf, sizeof(buf));
    assert_string_equal(buf, "fast");
    for (int i = 0; i < 4; i++) {
        recv_reply(c, buf, sizeof(buf));
        assert_string_equal(buf, "slow");
    }
    double took = now_seconds() - t0;
    print_message("4 sleeping datagram handlers and 1 more in %.0f ms\n",
                  took * 1000);
    assert_true(took < 0.9);
    /* The loop still takes datagrams, with its acceptor handed on. */
    assert_dgram_echo(c, "after", 5);
    client_close(c);
    assert_true(wait_stat_at(srv, offsetof(sks_stats, completed), 7, 5000));
    sks_stats st;
    sks_server_stats(srv, &st);
    assert_int_equal(st.failed, 0);
    ts_stop(&ts);
}

/* ------------------------------------------------------------------------ */
/* Idle memory                                                               */

struct buffers_at {
    sks_server *srv;
    size_t want;
};

static bool read_buffers_at(void *arg)
{
    struct buffers_at *b = arg;
    return sks_server_fiber_read_buffers(b->srv) == b->want;
}

static void assert_read_buffers(sks_server *srv, size_t want)
{
    struct buffers_at b = { srv, want };
    if (!wait_until(read_buffers_at, &b, 5000))
        fail_msg("%zu read buffers held, not %zu",
                 sks_server_fiber_read_buffers(srv), want);
}

/* A fiber parked in readline with nothing buffered holds no read buffer:
 * neither before its first byte nor between requests; a partial line
 * keeps one until the line is complete. */
static void test_idle_connections_hold_no_read_buffer(void **state)
{
    (void)state;
    enum { N = 50 };
    sks_server *srv = ts_new(&sks_fiber_tcp_ops, "127.0.0.1:0",
                             &echo_lines_stream, NULL, 0);
    assert_int_equal(sks_server_set_fiber_loops(srv, 2), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    int c[N];
    for (int i = 0; i < N; i++) {
        c[i] = client_connect(ts.address);
        assert_true(c[i] >= 0);
    }
    assert_true(wait_stat_at(srv, offsetof(sks_stats, active), N, 5000));
    assert_read_buffers(srv, 0);
    for (int i = 0; i < N; i++)
        assert_echo(c[i], "first\n");
    assert_read_buffers(srv, 0);

    assert_int_equal(client_send_all(c[7], "part", 4), 0);
    assert_read_buffers(srv, 1);
    assert_echo(c[8], "other\n");
    assert_read_buffers(srv, 1);
    assert_int_equal(client_send_all(c[7], "ial\n", 4), 0);
    assert_line(c[7], "partial\n");
    assert_read_buffers(srv, 0);

    for (int i = 0; i < N; i++)
        client_close(c[i]);
    ts_stop(&ts);
}

/* handle_request from an ordinary thread runs the request there. */
static void test_handle_request_outside_the_loops_runs_in_place(void **state)
{
    (void)state;
    probe_counts pr = { 0 };
    sks_server *srv = ts_new(&sks_fiber_tcp_ops, "127.0.0.1:0",
                             &probe_line_echo_stream, &pr, 0);
    int c = client_handled(srv, "in place\n");
    assert_line(c, "in place\n");
    client_close(c);
    sks_stats st;
    sks_server_stats(srv, &st);
    assert_int_equal(st.completed, 1);
    assert_int_equal(atomic_load(&pr.handled), 1);
    sks_server_free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_mixin_wraps_a_transport_and_refuses_a_second_model),
        cmocka_unit_test(test_setters_check_values_and_ignore_other_models),
        cmocka_unit_test(test_loops_serve_sleeping_fibers_side_by_side),
        cmocka_unit_test(test_a_silent_client_times_out_and_others_are_served),
        cmocka_unit_test(test_blocking_work_leaves_the_loop_free),
        cmocka_unit_test(test_blocking_work_under_threads_runs_in_the_thread),
        cmocka_unit_test(test_the_watchdog_reports_a_handler_holding_its_loop),
        cmocka_unit_test(test_handle_request_outside_the_loops_runs_in_place),
        cmocka_unit_test(test_idle_connections_hold_no_read_buffer),
        cmocka_unit_test(test_a_parking_datagram_handler_leaves_the_loop_accepting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
