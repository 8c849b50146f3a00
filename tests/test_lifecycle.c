/*
 * test_lifecycle.c - serve_forever, shutdown and close: the server's life
 * from creation to release, as CPython's SocketServerTest exercises it,
 * plus the shutdown races Python has had bugs in (bpo-2302, bpo-35017).
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* Echoes every line until end of input. */
static const sks_handler_class *const echo = &echo_lines_stream;

/* One echo through a served server: proves its loop is running. */
static void assert_serving(const test_server *ts)
{
    assert_echo_once(ts->address, SOCK_STREAM, "hello world\n");
}

/* Python's test_TCPServer: three echoes through serve_forever(0.01), then
 * shutdown, join, server_close, and the socket is gone. */
static void test_echo_three_times_then_shutdown_join_close(void **state)
{
    (void)state;
    int fds = count_open_fds();
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", echo, NULL, 0.01);
    for (int i = 0; i < 3; i++)
        assert_serving(&ts);
    sks_server_shutdown(ts.srv);
    assert_int_equal(pthread_join(ts.thread, NULL), 0);
    assert_int_equal(ts.serve_rc, 0);
    int fd = sks_server_fileno(ts.srv);
    sks_server_close(ts.srv);
    assert_int_equal(sks_server_fileno(ts.srv), -1);
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* really closed */
    sks_server_free(ts.srv);
    assert_int_equal(count_open_fds(), fds);
}

/* Python's test_shutdown (bpo-2302): shutdown right after the thread
 * starts, often before its loop has, must not hang. */
static void test_twenty_servers_shut_down_right_after_start(void **state)
{
    (void)state;
    enum { N = 20 };
    test_server ts[N];
    int fds = count_open_fds();
    int threads = count_threads();
    for (int i = 0; i < N; i++) {
        ts_start(&ts[i], &sks_tcp_ops, "127.0.0.1:0", echo, NULL, 0.01);
        sks_server_shutdown(ts[i].srv);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(ts[i].thread, NULL), 0);
        assert_int_equal(ts[i].serve_rc, 0);
        sks_server_free(ts[i].srv);
    }
    assert_int_equal(count_threads(), threads);
    assert_int_equal(count_open_fds(), fds);
}

/* Python's test_context_manager: releasing the server closes it, once. */
static int closes;

static void counting_server_close(sks_server *srv)
{
    closes++;
    sks_tcp_ops.server_close(srv);
}

static void test_free_closes_the_server_exactly_once(void **state)
{
    (void)state;
    sks_server_ops ops = sks_tcp_ops;
    ops.server_close = counting_server_close;
    int fds = count_open_fds();
    sks_server *srv = NULL;

    closes = 0;
    assert_int_equal(sks_server_new(&srv, &ops, "127.0.0.1:0", echo, NULL,
                                     0), 0);
    assert_true(count_open_fds() > fds);
    sks_server_free(srv);
    assert_int_equal(closes, 1);
    assert_int_equal(count_open_fds(), fds);

    closes = 0;
    assert_int_equal(sks_server_new(&srv, &ops, "127.0.0.1:0", echo, NULL,
                                     0), 0);
    sks_server_close(srv);
    assert_int_equal(sks_server_fileno(srv), -1);
    sks_server_close(srv);
    sks_server_free(srv);
    assert_int_equal(closes, 1);
    assert_int_equal(count_open_fds(), fds);

    sks_server_free(NULL); /* a no-op */
}

/* Shuts a serving loop down, joins and frees it; fails unless shutdown
 * returned within 100 ms. */
static void assert_prompt_shutdown(test_server *ts)
{
    double t0 = now_seconds();
    sks_server_shutdown(ts->srv);
    double took = now_seconds() - t0;
    assert_int_equal(pthread_join(ts->thread, NULL), 0);
    assert_int_equal(ts->serve_rc, 0);
    sks_server_free(ts->srv);
    if (took >= 0.1)
        fail_msg("shutdown took %.3f s", took);
}

static void test_shutdown_returns_within_100ms_despite_10s_poll(void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", echo, NULL, 10.0);
    assert_serving(&ts); /* the loop has run; it now waits up to 10 s */
    assert_prompt_shutdown(&ts);
}

static void test_shutdown_requested_before_serve_forever_ends_it_at_once(
    void **state)
{
    (void)state;
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0", echo,
                                     NULL, 0), 0);
    sks_server_request_shutdown(srv);
    double t0 = now_seconds();
    assert_int_equal(sks_server_serve_forever(srv, 10.0), 0);
    assert_true(now_seconds() - t0 < 1.0);

    /* The request was consumed: the next run serves until asked again. */
    test_server ts;
    ts_serve(&ts, srv, 10.0);
    assert_serving(&ts);
    ts_stop(&ts);
}

static void *shutdown_thread(void *srv)
{
    sks_server_shutdown(srv);
    return NULL;
}

/* sks_server_shutdown() on a server whose loop has not started waits for
 * that loop to start and return, as Python's does. */
static void test_blocking_shutdown_before_serve_forever_waits_for_it(
    void **state)
{
    (void)state;
    sks_server *srv = NULL;
    pthread_t t;
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0", echo,
                                     NULL, 0), 0);
    assert_int_equal(pthread_create(&t, NULL, shutdown_thread, srv), 0);
    /* Likely (not certainly) lets the shutdown come first; both orders
     * must end the same way, so nothing here depends on it. */
    sleep_ms(20);
    double t0 = now_seconds();
    assert_int_equal(sks_server_serve_forever(srv, 10.0), 0);
    assert_true(now_seconds() - t0 < 1.0);
    assert_int_equal(pthread_join(t, NULL), 0);
    sks_server_free(srv);
}

static void test_serve_forever_runs_again_after_shutdown(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    test_server ts;
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0", echo,
                                     NULL, 0), 0);
    for (int run = 0; run < 3; run++) {
        ts_serve(&ts, srv, 10.0);
        assert_serving(&ts);
        sks_server_shutdown(srv);
        assert_int_equal(pthread_join(ts.thread, NULL), 0);
        assert_int_equal(ts.serve_rc, 0);
    }
    sks_server_free(srv);
}

static void test_second_serve_forever_while_serving_is_ebusy(void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", echo, NULL, 10.0);
    assert_serving(&ts);
    assert_int_equal(sks_server_serve_forever(ts.srv, 0.01), -EBUSY);
    assert_serving(&ts); /* the first loop is undisturbed */
    ts_stop(&ts);
}

static void test_closed_server_reports_eclosed(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0", echo,
                                     NULL, 0), 0);
    sks_server_close(srv);
    assert_int_equal(sks_server_fileno(srv), -1);
    assert_int_equal(sks_server_serve_forever(srv, 0.01), SKS_ECLOSED);
    assert_int_equal(sks_server_handle_request(srv), SKS_ECLOSED);
    assert_int_equal(sks_server_bind_and_activate(srv), SKS_ECLOSED);
    sks_server_free(srv);
}

/* A handler of a synchronous server calls sks_server_shutdown(): it runs
 * in the serving thread, so it must only request the stop. */
static int handled;
static bool shutdown_returned;

static int shutdown_handle(sks_handler *h)
{
    char line[64];
    handled++;
    ssize_t n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    if (n <= 0)
        return (int)n;
    sks_server_shutdown(sks_handler_server(h));
    shutdown_returned = true;
    ssize_t w = sks_wfile_write(sks_handler_wfile(h), line, (size_t)n);
    return w < 0 ? (int)w : 0;
}

static const sks_handler_class shutdown_handler = {
    .setup = sks_stream_setup,
    .handle = shutdown_handle,
    .finish = sks_stream_finish,
};

static void test_shutdown_inside_handler_stops_loop_after_that_request(
    void **state)
{
    (void)state;
    test_server ts;
    handled = 0;
    shutdown_returned = false;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &shutdown_handler, NULL, 10.0);
    int c1 = client_connect(ts.address);
    int c2 = client_connect(ts.address); /* pending behind the first */
    assert_true(c1 >= 0 && c2 >= 0);
    assert_echo(c1, "stop\n");
    /* The loop ends by itself: no shutdown from here. */
    assert_int_equal(pthread_join(ts.thread, NULL), 0);
    assert_int_equal(ts.serve_rc, 0);
    assert_int_equal(handled, 1);
    assert_true(shutdown_returned);
    sks_server_free(ts.srv);
    client_close(c1);
    client_close(c2);
}

/* bpo-35017: once shutdown is requested, no pending connection is
 * accepted.  service_actions connects a client, so it is pending, and
 * requests the shutdown in the same turn. */
static int get_requests;
static int pending_client = -1;

static int counting_get_request(sks_server *srv, sks_request **out)
{
    get_requests++;
    return sks_tcp_ops.get_request(srv, out);
}

static void connect_then_shut_down(sks_server *srv)
{
    char addr[SKS_ADDRSTRLEN];
    if (pending_client < 0) {
        sks_addr_format(sks_server_address(srv), addr, sizeof(addr));
        pending_client = client_connect(addr);
        sks_server_request_shutdown(srv);
    }
}

static int count_handle(sks_handler *h)
{
    (void)h;
    handled++;
    return 0;
}

static const sks_handler_class counting = {
    .setup = sks_stream_setup,
    .handle = count_handle,
    .finish = sks_stream_finish,
};

static void test_no_pending_connection_accepted_after_shutdown_request(
    void **state)
{
    (void)state;
    sks_server_ops ops = sks_tcp_ops;
    sks_server *srv = NULL;
    ops.get_request = counting_get_request;
    ops.service_actions = connect_then_shut_down;
    handled = get_requests = 0;
    pending_client = -1;

    assert_int_equal(sks_server_new(&srv, &ops, "127.0.0.1:0", &counting,
                                     NULL, 0), 0);
    assert_int_equal(sks_server_serve_forever(srv, 0.01), 0);
    assert_true(pending_client >= 0);
    assert_int_equal(get_requests, 0);
    assert_int_equal(handled, 0);

    /* It was pending indeed: the next handle_request takes it at once. */
    assert_int_equal(sks_server_set_timeout(srv, 5.0), 0);
    assert_int_equal(sks_server_handle_request(srv), 0);
    assert_int_equal(get_requests, 1);
    assert_int_equal(handled, 1);
    client_close(pending_client);
    sks_server_free(srv);
}

/* SIGINT/SIGTERM: a real signal handler asks for the shutdown. */
static sks_server *volatile signalled_server;

static void on_stop_signal(int sig)
{
    (void)sig;
    sks_server_request_shutdown(signalled_server);
}

static void test_signal_handler_request_shutdown_stops_serve_forever(
    void **state)
{
    (void)state;
    struct sigaction sa, old_term, old_int;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGTERM, &sa, &old_term), 0);
    assert_int_equal(sigaction(SIGINT, &sa, &old_int), 0);

    /* SIGTERM to the serving thread: interrupts its wait. */
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", echo, NULL, 10.0);
    signalled_server = ts.srv;
    assert_serving(&ts);
    double t0 = now_seconds();
    assert_int_equal(pthread_kill(ts.thread, SIGTERM), 0);
    assert_int_equal(pthread_join(ts.thread, NULL), 0);
    assert_true(now_seconds() - t0 < 1.0);
    assert_int_equal(ts.serve_rc, 0);

    /* SIGINT raised in another thread (this one): the wake-up reaches the
     * serving thread's wait. */
    ts_serve(&ts, ts.srv, 10.0);
    assert_serving(&ts);
    t0 = now_seconds();
    assert_int_equal(raise(SIGINT), 0);
    assert_int_equal(pthread_join(ts.thread, NULL), 0);
    assert_true(now_seconds() - t0 < 1.0);
    assert_int_equal(ts.serve_rc, 0);

    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    signalled_server = NULL;
    sks_server_free(ts.srv);
}

/* A negative or NaN poll interval means no timer: the loop still serves
 * and still stops at once on shutdown. */
static void test_negative_or_nan_poll_interval_serves_and_stops(void **state)
{
    (void)state;
    const double intervals[] = { -1.0, NAN };
    for (int i = 0; i < 2; i++) {
        test_server ts;
        ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", echo, NULL,
                 intervals[i]);
        assert_serving(&ts);
        double t0 = now_seconds();
        ts_stop(&ts);
        assert_true(now_seconds() - t0 < 1.0);
    }
}

/* bpo-7978: a signal interrupting the loop's wait (poll fails with
 * EINTR) is not an error. */
static void test_signals_interrupting_the_wait_do_not_stop_the_loop(
    void **state)
{
    (void)state;
    struct sigaction old;
    interruptions_begin(&old);

    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", echo, NULL, 10.0);
    assert_serving(&ts); /* now in its 10 s wait */
    interrupt_thread(ts.thread, 5);
    assert_serving(&ts);
    ts_stop(&ts); /* asserts serve_forever returned 0 */
    interruptions_end(&old);
}

/* ------------------------------------------------------------------------ */
/* Async-signal safety                                                       */

static sks_server *signalled;

static void on_usr1(int sig)
{
    (void)sig;
    sks_server_request_shutdown(signalled);
}

/*
 * A signal handler that asks for a shutdown runs between the interrupted
 * code's failing call and its read of errno: errno must be what that call
 * set.  Driven deterministically: the wake-up pipe is filled first (every
 * request writes a byte and nobody serves), so the handler's write fails
 * with EAGAIN; the signal is raised synchronously.
 */
static void test_request_shutdown_from_signal_handler_keeps_errno(void **state)
{
    (void)state;
    signalled = ts_new(&sks_tcp_ops, "127.0.0.1:0", &echo_lines_stream, NULL,
                       0);
    /* A pipe holds 64 KiB by default: more requests than that fill it. */
    for (int i = 0; i < 70000; i++)
        sks_server_request_shutdown(signalled);
    struct sigaction sa = { .sa_handler = on_usr1 }, old;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);

    errno = EDOM; /* what a failing call set, about to be read */
    raise(SIGUSR1);
    int seen = errno;
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
    assert_int_equal(seen, EDOM);

    /* And the shutdown it asked for holds: serve_forever returns at once. */
    assert_int_equal(sks_server_serve_forever(signalled, 10.0), 0);
    sks_server_free(signalled);
}

/* A loop waiting with no deadline at all (no poll_interval), interrupted
 * by signals (the wait goes on to the same deadline), still wakes at once
 * on shutdown. */
static void test_shutdown_wakes_a_loop_waiting_without_deadline(void **state)
{
    (void)state;
    struct sigaction old;
    interruptions_begin(&old);

    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", echo, NULL, -1.0);
    assert_serving(&ts); /* now in a wait with no end but a wake-up */
    interrupt_thread(ts.thread, 5);
    assert_serving(&ts);
    assert_prompt_shutdown(&ts);
    interruptions_end(&old);
}

/* Signals the thread *arg five times, 40 ms apart (inside its 0.3 s
 * wait). */
static void *interrupter(void *arg)
{
    pthread_t target = *(pthread_t *)arg;
    for (int i = 0; i < 5; i++) {
        sleep_ms(40);
        (void)pthread_kill(target, SIGUSR2);
    }
    return NULL;
}

/* handle_request's timeout is one deadline: signals during the wait
 * neither end it early nor push it back. */
static void test_handle_request_timeout_holds_despite_signals(void **state)
{
    (void)state;
    struct sigaction old;
    interruptions_begin(&old);
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0", echo,
                                    NULL, 0), 0);
    assert_int_equal(sks_server_set_timeout(srv, 0.3), 0);
    pthread_t self = pthread_self();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, interrupter, &self), 0);
    double t0 = now_seconds();
    assert_int_equal(sks_server_handle_request(srv), -ETIMEDOUT);
    double took = now_seconds() - t0;
    assert_int_equal(pthread_join(t, NULL), 0);
    sks_server_free(srv);
    interruptions_end(&old);
    if (took < 0.29 || took > 2.0)
        fail_msg("handle_request gave up after %.3f s, timeout 0.3 s", took);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_three_times_then_shutdown_join_close),
        cmocka_unit_test(test_request_shutdown_from_signal_handler_keeps_errno),
        cmocka_unit_test(test_twenty_servers_shut_down_right_after_start),
        cmocka_unit_test(test_free_closes_the_server_exactly_once),
        cmocka_unit_test(test_shutdown_returns_within_100ms_despite_10s_poll),
        cmocka_unit_test(
            test_shutdown_requested_before_serve_forever_ends_it_at_once),
        cmocka_unit_test(
            test_blocking_shutdown_before_serve_forever_waits_for_it),
        cmocka_unit_test(test_serve_forever_runs_again_after_shutdown),
        cmocka_unit_test(test_second_serve_forever_while_serving_is_ebusy),
        cmocka_unit_test(test_closed_server_reports_eclosed),
        cmocka_unit_test(
            test_shutdown_inside_handler_stops_loop_after_that_request),
        cmocka_unit_test(
            test_no_pending_connection_accepted_after_shutdown_request),
        cmocka_unit_test(
            test_signal_handler_request_shutdown_stops_serve_forever),
        cmocka_unit_test(test_shutdown_wakes_a_loop_waiting_without_deadline),
        cmocka_unit_test(test_handle_request_timeout_holds_despite_signals),
        cmocka_unit_test(
            test_negative_or_nan_poll_interval_serves_and_stops),
        cmocka_unit_test(
            test_signals_interrupting_the_wait_do_not_stop_the_loop),
    };
    alarm(60); /* a hung test fails the run instead of blocking it */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
