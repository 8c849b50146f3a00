/*
 * test_drain.c - graceful drain, overload and counters, for every server:
 * sks_server_drain lets requests in flight finish up to a deadline and
 * cuts the rest (handlers blocked on their connection see end of input);
 * shutdown wakes the loop at once whatever poll_interval; max_connections
 * applies backpressure or refuses ("busy", then end of input); the live
 * counters add up (accepted = completed + failed + active) through
 * verify_request refusals, overload refusals and failures.  And the
 * example servers: idle clients hold up nobody, and SIGTERM with idle
 * clients connected ends them with status 0 within the drain deadline.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The handler.  Lines:
 *   "sleep\n"  works 300 ms, answers "slept\n" and ends the connection;
 *   "hold\n"   answers "held\n", then waits for more input; at end of
 *              input it writes 'E' to eof_pipe (from a thread or a forked
 *              child alike) and ends;
 *   "fail\n"   fails the request (SKS_EHANDLER);
 *   "drainself\n" calls sks_server_drain from the handler, answers its rc;
 *   anything else is echoed.  End of input ends the handler. */

static int eof_pipe[2] = { -1, -1 };

static int drain_handle(sks_handler *h)
{
    sks_rfile *in = sks_handler_rfile(h);
    sks_wfile *out = sks_handler_wfile(h);
    char line[256];
    ssize_t n;
    while ((n = sks_rfile_readline(in, line, sizeof(line))) > 0) {
        if (n == 6 && memcmp(line, "sleep\n", 6) == 0) {
            sleep_ms(300);
            sks_wfile_write(out, "slept\n", 6);
            return 0;
        }
        if (n == 5 && memcmp(line, "fail\n", 5) == 0)
            return SKS_EHANDLER;
        if (n == 10 && memcmp(line, "drainself\n", 10) == 0) {
            char reply[32];
            int rc = sks_server_drain(sks_handler_server(h), 0.1, NULL, NULL);
            int len = snprintf(reply, sizeof(reply), "%d\n", rc);
            sks_wfile_write(out, reply, (size_t)len);
            return 0;
        }
        if (n == 5 && memcmp(line, "hold\n", 5) == 0) {
            sks_wfile_write(out, "held\n", 5);
            if (sks_wfile_flush(out) < 0)
                return SKS_EHANDLER;
            while ((n = sks_rfile_readline(in, line, sizeof(line))) > 0)
                ;
            if (n == 0)
                (void)!write(eof_pipe[1], "E", 1);
            return (int)n;
        }
        if (sks_wfile_write(out, line, (size_t)n) < 0 || sks_wfile_flush(out) < 0)
            return SKS_EHANDLER;
    }
    return (int)n;
}

static const sks_handler_class drain_handler = {
    .setup = sks_stream_setup,
    .handle = drain_handle,
    .finish = sks_stream_finish,
};

/* Datagrams: echoed, except "fail". */
static int dgram_handle(sks_handler *h)
{
    char buf[256];
    ssize_t n = sks_rfile_read(sks_handler_rfile(h), buf, sizeof(buf));
    if (n == 4 && memcmp(buf, "fail", 4) == 0)
        return SKS_EHANDLER;
    if (n > 0)
        sks_wfile_write(sks_handler_wfile(h), buf, (size_t)n);
    return 0;
}

static const sks_handler_class dgram_handler = {
    .setup = sks_datagram_setup,
    .handle = dgram_handle,
    .finish = sks_datagram_finish,
};

/* Hooks every variant below gets: verify_request denies while `deny` is
 * set; handle_error counts quietly; refuse_request answers "busy". */
static atomic_int deny;
static atomic_int errors;

static bool deny_verify(sks_server *srv, sks_request *req)
{
    return !atomic_load(&deny) && sks_base_verify_request(srv, req);
}

static void quiet_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    (void)err;
    atomic_fetch_add(&errors, 1);
}

static void busy_refuse(sks_server *srv, sks_request *req)
{
    sks_base_refuse_request(srv, req); /* super */
    (void)sks_request_reply(req, "busy\n", 5);
}

/* ------------------------------------------------------------------------ */
/* Variants */

enum model { SYNC, THREADING, FORKING, POOL, FIBER };
static const char *const model_names[] = { "sync", "threading", "forking",
                                           "pool", "fiber" };

static const sks_server_ops *stream_table(enum model m)
{
    static const sks_server_ops *const t[] = {
        &sks_tcp_ops, &sks_threading_tcp_ops, &sks_forking_tcp_ops,
        &sks_pool_tcp_ops, &sks_fiber_tcp_ops,
    };
    return t[m];
}

/* A copy of base with the hooks above; static storage, one per slot, since
 * a table must outlive its server. */
static const sks_server_ops *with_hooks(const sks_server_ops *base, int slot)
{
    static sks_server_ops tables[40];
    sks_server_ops *ops = &tables[slot];
    *ops = *base;
    ops->verify_request = deny_verify;
    ops->handle_error = quiet_error;
    ops->refuse_request = busy_refuse;
    return ops;
}

static void reset_state(void)
{
    atomic_store(&deny, 0);
    atomic_store(&errors, 0);
    char buf[64];
    while (read(eof_pipe[0], buf, sizeof(buf)) > 0)
        ;
}

static sks_server *new_server(const sks_server_ops *ops, const char *address,
                              const sks_handler_class *cls,
                              size_t max_connections, int policy)
{
    sks_server *srv = ts_new(ops, address, cls, NULL, SKS_NO_BIND);
    assert_int_equal(sks_server_set_max_connections(srv, max_connections), 0);
    assert_int_equal(sks_server_set_overload_policy(srv, policy), 0);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    return srv;
}

/* Clients hang up with client_hang_up(): a forked child that inherited a
 * copy of the client's descriptor (it was forked from this process while
 * the client was open) would keep close() alone from ending the stream,
 * and its handler would wait for end of input. */

/* A client whose handler is running, blocked reading its next line. */
static int holding_client(const char *address)
{
    int c = client_connect(address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "hold\n", 5), 0);
    assert_line(c, "held\n");
    return c;
}

/* True when a handler reported end of input through eof_pipe within ms. */
static bool handler_saw_eof(int ms)
{
    char c;
    if (!readable_within(eof_pipe[0], ms))
        return false;
    return read(eof_pipe[0], &c, 1) == 1 && c == 'E';
}

/* ------------------------------------------------------------------------ */
/* Drain */

/* A request that needs 300 ms, drained with a 3 s deadline: it finishes
 * (its client gets the answer), finished 1, cut 0, and the drain returns
 * as soon as it has, not at the deadline. */
static void drain_lets_slow_request_finish(enum model m)
{
    reset_state();
    test_server ts;
    ts_serve(&ts, new_server(with_hooks(stream_table(m), (int)m),
                             "127.0.0.1:0", &drain_handler, 0,
                             SKS_OVERLOAD_BACKPRESSURE), 0.05);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "sleep\n", 6), 0);
    assert_true(wait_stat(ts.srv, active, 1, 5000));

    size_t finished = 99, cut = 99;
    double t0 = now_seconds();
    assert_int_equal(sks_server_drain(ts.srv, 3.0, &finished, &cut), 0);
    double took = now_seconds() - t0;
    print_message("%s: drained a 300 ms request in %.0f ms\n",
                  model_names[m], took * 1000);
    assert_int_equal(finished, 1);
    assert_int_equal(cut, 0);
    assert_true(took < 2.0);
    assert_line(c, "slept\n");
    assert_eof(c);
    client_hang_up(c);
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.active, 0);
    ts_stop(&ts);
}

static void test_drain_lets_a_slow_request_finish_sync(void **state)
{
    (void)state;
    drain_lets_slow_request_finish(SYNC);
}

static void test_drain_lets_a_slow_request_finish_threading(void **state)
{
    (void)state;
    drain_lets_slow_request_finish(THREADING);
}

static void test_drain_lets_a_slow_request_finish_forking(void **state)
{
    (void)state;
    drain_lets_slow_request_finish(FORKING);
}

static void test_drain_lets_a_slow_request_finish_pool(void **state)
{
    (void)state;
    drain_lets_slow_request_finish(POOL);
}

static void test_drain_lets_a_slow_request_finish_fiber(void **state)
{
    (void)state;
    drain_lets_slow_request_finish(FIBER);
}

/* A handler blocked reading from an idle client outlives a 0.3 s deadline:
 * the drain cuts it (cut 1, finished 0) and returns soon after the
 * deadline.  Its client sees end of input; a handler in a thread sees end
 * of input too (a forked child is sent SIGTERM instead). */
static void drain_cuts_request_outliving_deadline(enum model m)
{
    const double deadline = 0.3;
    reset_state();
    test_server ts;
    ts_serve(&ts, new_server(with_hooks(stream_table(m), (int)m),
                             "127.0.0.1:0", &drain_handler, 0,
                             SKS_OVERLOAD_BACKPRESSURE), 0.05);
    int c = holding_client(ts.address);

    size_t finished = 99, cut = 99;
    double t0 = now_seconds();
    assert_int_equal(sks_server_drain(ts.srv, deadline, &finished, &cut), 0);
    double took = now_seconds() - t0;
    print_message("%s: cut an idle client's request; drain took %.0f ms\n",
                  model_names[m], took * 1000);
    assert_int_equal(cut, 1);
    assert_int_equal(finished, 0);
    assert_true(took >= deadline - 0.01);
    assert_true(took < deadline + 1.0);
    assert_eof(c);
    if (m != FORKING)
        assert_true(handler_saw_eof(1000));
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.accepted, 1);
    /* A thread's handler ends normally at end of input; a child killed by
     * SIGTERM counts as failed. */
    assert_int_equal(st.completed + st.failed, 1);
    if (m == FORKING)
        assert_int_equal(st.failed, 1);
    client_hang_up(c);
    ts_stop(&ts);
}

static void test_drain_cuts_a_request_outliving_the_deadline_sync(void **state)
{
    (void)state;
    drain_cuts_request_outliving_deadline(SYNC);
}

static void test_drain_cuts_a_request_outliving_the_deadline_threading(void **state)
{
    (void)state;
    drain_cuts_request_outliving_deadline(THREADING);
}

static void test_drain_cuts_a_request_outliving_the_deadline_forking(void **state)
{
    (void)state;
    drain_cuts_request_outliving_deadline(FORKING);
}

static void test_drain_cuts_a_request_outliving_the_deadline_pool(void **state)
{
    (void)state;
    drain_cuts_request_outliving_deadline(POOL);
}

static void test_drain_cuts_a_request_outliving_the_deadline_fiber(void **state)
{
    (void)state;
    drain_cuts_request_outliving_deadline(FIBER);
}

/* One request of each kind at once: finished 1, cut 1; and the drain
 * stopped the loop, so a new client is not served. */
static void test_drain_reports_finished_and_cut_together(void **state)
{
    (void)state;
    reset_state();
    test_server ts;
    ts_serve(&ts, new_server(with_hooks(&sks_threading_tcp_ops, 8),
                             "127.0.0.1:0", &drain_handler, 0,
                             SKS_OVERLOAD_BACKPRESSURE), 0.05);
    int idle = holding_client(ts.address);
    int slow = client_connect(ts.address);
    assert_true(slow >= 0);
    assert_int_equal(client_send_all(slow, "sleep\n", 6), 0);
    assert_true(wait_stat(ts.srv, active, 2, 5000));

    size_t finished = 99, cut = 99;
    assert_int_equal(sks_server_drain(ts.srv, 1.0, &finished, &cut), 0);
    assert_int_equal(finished, 1);
    assert_int_equal(cut, 1);
    assert_line(slow, "slept\n");
    assert_eof(idle);
    assert_true(handler_saw_eof(1000));

    /* Stopped accepting: a newcomer waits in the backlog, unanswered. */
    int late = client_connect(ts.address);
    assert_true(late >= 0);
    assert_int_equal(client_send_all(late, "anyone?\n", 8), 0);
    assert_false(readable_within(late, 200));
    client_hang_up(late);
    client_hang_up(idle);
    client_hang_up(slow);
    ts_stop(&ts);
}

/* The loop's housekeeping, slowed down: each turn waits a little before
 * it reaps, so a drain that starts meanwhile cuts children while the loop
 * is about to reap them. */
static void slow_service_actions(sks_server *srv)
{
    sleep_ms(20);
    sks_forking_service_actions(srv);
}

/*
 * A drain with no grace (timeout 0) while a forking server is busy: client
 * processes keep arriving, so the drain signals the children while the
 * loop is still forking and reaping them (each loop turn waits 20 ms
 * before it reaps, so the two overlap).  Every child ends (cut or done),
 * and under ThreadSanitizer the child list is never read while it changes
 * (make tsan runs this).
 */
static void test_drain_at_timeout_0_under_forking_load(void **state)
{
    (void)state;
    enum { HOLDERS = 4, LOAD = 16 };
    if (!example_exists("echo_client")) {
        print_message("echo_client is not built: skipped\n");
        skip();
    }
    reset_state();
    static sks_server_ops slow;
    slow = *with_hooks(&sks_forking_tcp_ops, 20);
    slow.service_actions = slow_service_actions;
    test_server ts;
    ts_serve(&ts, new_server(&slow, "127.0.0.1:0", &drain_handler, 0,
                             SKS_OVERLOAD_BACKPRESSURE), 0.01);
    int held[HOLDERS];
    for (int i = 0; i < HOLDERS; i++)
        held[i] = holding_client(ts.address);
    test_proc load[LOAD];
    for (int i = 0; i < LOAD; i++) {
        char *argv[] = { "echo_client", ts.address, "x", NULL };
        load[i] = (test_proc)TEST_PROC_NONE;
        proc_spawn(&load[i], argv);
    }
    /* Some of the load taken (the rest still arriving). */
    sks_stats st;
    for (int i = 0; i < 5000; i++) {
        sks_server_stats(ts.srv, &st);
        if (st.accepted >= HOLDERS + 2)
            break;
        sleep_ms(2);
    }
    assert_true(st.accepted >= HOLDERS + 2);

    size_t finished = 99, cut = 99;
    assert_int_equal(sks_server_drain(ts.srv, 0, &finished, &cut), 0);
    assert_true(cut >= HOLDERS);
    assert_int_equal(sks_server_active_children(ts.srv), 0);
    assert_int_equal(sks_server_active_requests(ts.srv), 0);

    for (int i = 0; i < LOAD; i++)
        proc_kill(&load[i]); /* some wait in the backlog, unanswered */
    for (int i = 0; i < HOLDERS; i++)
        client_hang_up(held[i]);
    ts_stop(&ts);
    assert_int_equal(count_children(), 0);
}

/* From the serving thread (a synchronous server's handler) a drain would
 * wait for its own request: it refuses with -EDEADLK at once. */
static void test_drain_from_the_serving_thread_fails_with_edeadlk(void **state)
{
    (void)state;
    reset_state();
    test_server ts;
    ts_serve(&ts, new_server(with_hooks(&sks_tcp_ops, 9), "127.0.0.1:0",
                             &drain_handler, 0, SKS_OVERLOAD_BACKPRESSURE),
             0.05);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "drainself\n", 10), 0);
    char want[32];
    snprintf(want, sizeof(want), "%d\n", -EDEADLK);
    assert_line(c, want);
    client_hang_up(c);
    /* And the server is still serving. */
    c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_echo(c, "still here\n");
    client_hang_up(c);
    ts_stop(&ts);
}

/* ------------------------------------------------------------------------ */
/* Shutdown latency */

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* poll_interval 10 s: shutdown from another thread still returns within
 * 5 ms (median of 5 tries), for every concurrency model and a datagram
 * server. */
static void test_shutdown_wakes_the_loop_at_once_despite_10s_poll_interval(void **state)
{
    (void)state;
    enum { TRIES = 5 };
    struct {
        const sks_server_ops *ops;
        const sks_handler_class *cls;
    } v[] = {
        { &sks_tcp_ops, &drain_handler },
        { &sks_threading_tcp_ops, &drain_handler },
        { &sks_forking_tcp_ops, &drain_handler },
        { &sks_pool_tcp_ops, &drain_handler },
        { &sks_fiber_tcp_ops, &drain_handler },
        { &sks_udp_ops, &dgram_handler },
        { &sks_fiber_udp_ops, &dgram_handler },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        double took[TRIES];
        for (int t = 0; t < TRIES; t++) {
            test_server ts;
            ts_start(&ts, v[i].ops, "127.0.0.1:0", v[i].cls, NULL, 10.0);
            bool stream = v[i].ops->socket_type == SOCK_STREAM;
            /* One request proves the loop runs; then let it go back to its
             * 10 s wait. */
            int c = stream ? client_connect(ts.address)
                           : client_dgram(ts.address);
            assert_true(c >= 0);
            if (stream) {
                assert_echo(c, "ping\n");
            } else {
                char buf[8];
                assert_int_equal(send(c, "ping", 4, 0), 4);
                assert_int_equal(recv_once(c, buf, sizeof(buf)), 4);
            }
            client_hang_up(c);
            sleep_ms(30);
            double t0 = now_seconds();
            sks_server_shutdown(ts.srv);
            took[t] = now_seconds() - t0;
            assert_int_equal(pthread_join(ts.thread, NULL), 0);
            assert_int_equal(ts.serve_rc, 0);
            sks_server_free(ts.srv);
        }
        qsort(took, TRIES, sizeof(took[0]), by_value);
        print_message("%s: shutdown median %.3f ms (max %.3f ms)\n",
                      v[i].ops->name, took[TRIES / 2] * 1000,
                      took[TRIES - 1] * 1000);
        assert_true(took[TRIES / 2] < 0.005);
    }
}

/* ------------------------------------------------------------------------ */
/* Overload and counters */

static void expect_stats(sks_server *srv, size_t accepted, size_t completed,
                         size_t failed, size_t refused)
{
    sks_stats st;
    sks_server_stats(srv, &st);
    assert_int_equal(st.accepted, accepted);
    assert_int_equal(st.completed, completed);
    assert_int_equal(st.failed, failed);
    assert_int_equal(st.refused, refused);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.accepted, st.completed + st.failed + st.active);
}

/*
 * 4 echoes, 2 clients denied by verify_request (end of input, no handler),
 * 1 failing request; then, for the concurrent models, max_connections 2
 * with the refuse policy: 2 clients held, 2 more turned away with "busy"
 * and end of input.  At every step accepted = completed + failed + active,
 * with active the requests really running.
 */
static void counters_add_up(enum model m)
{
    reset_state();
    test_server ts;
    ts_serve(&ts, new_server(with_hooks(stream_table(m), 10 + (int)m),
                             "127.0.0.1:0", &drain_handler,
                             m == SYNC ? 0 : 2, SKS_OVERLOAD_REFUSE), 0.05);
    for (int i = 0; i < 4; i++) {
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_echo(c, "count me\n");
        client_hang_up(c);
        /* A request is in flight until its end is counted (a forked one
         * until its child is reaped), which may be a little after its
         * client has had the answer: at the bound, with refuse, the next
         * client could be refused meanwhile. */
        assert_true(wait_stat(ts.srv, active, 0, 5000));
    }
    atomic_store(&deny, 1);
    for (int i = 0; i < 2; i++) {
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_eof(c); /* denied: closed without a handler or a "busy" */
        client_hang_up(c);
    }
    atomic_store(&deny, 0);
    int f = client_connect(ts.address);
    assert_true(f >= 0);
    assert_int_equal(client_send_all(f, "fail\n", 5), 0);
    assert_eof(f);
    client_hang_up(f);
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    expect_stats(ts.srv, 5, 4, 1, 2);
    if (m != FORKING) /* a child's handle_error runs in the child */
        assert_int_equal(atomic_load(&errors), 1);

    if (m != SYNC) {
        int h1 = holding_client(ts.address);
        int h2 = holding_client(ts.address);
        sks_stats st;
        sks_server_stats(ts.srv, &st);
        assert_int_equal(st.active, 2);
        assert_int_equal(st.accepted, st.completed + st.failed + 2);
        for (int i = 0; i < 2; i++) {
            int b = client_connect(ts.address);
            assert_true(b >= 0);
            assert_line(b, "busy\n");
            assert_eof(b);
            client_hang_up(b);
        }
        sks_server_stats(ts.srv, &st);
        assert_int_equal(st.refused, 4);
        assert_int_equal(st.active, 2);
        shutdown(h1, SHUT_WR);
        shutdown(h2, SHUT_WR);
        assert_eof(h1);
        assert_eof(h2);
        client_hang_up(h1);
        client_hang_up(h2);
        assert_true(wait_stat(ts.srv, active, 0, 5000));
        expect_stats(ts.srv, 7, 6, 1, 4);
        /* Below the limit again: served. */
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_echo(c, "room again\n");
        client_hang_up(c);
        assert_true(wait_stat(ts.srv, active, 0, 5000));
        expect_stats(ts.srv, 8, 7, 1, 4);
    }
    ts_stop(&ts);
}

static void test_counters_add_up_with_refusals_and_failures_sync(void **state)
{
    (void)state;
    counters_add_up(SYNC);
}

static void test_counters_add_up_with_refusals_and_failures_threading(void **state)
{
    (void)state;
    counters_add_up(THREADING);
}

static void test_counters_add_up_with_refusals_and_failures_forking(void **state)
{
    (void)state;
    counters_add_up(FORKING);
}

static void test_counters_add_up_with_refusals_and_failures_pool(void **state)
{
    (void)state;
    counters_add_up(POOL);
}

static void test_counters_add_up_with_refusals_and_failures_fiber(void **state)
{
    (void)state;
    counters_add_up(FIBER);
}

/* max_connections 1 with backpressure: a second client connects (the
 * backlog completes the handshake) but gets no answer until the first
 * request ends; nothing is refused. */
static void max_connections_backpressure(enum model m)
{
    reset_state();
    test_server ts;
    ts_serve(&ts, new_server(with_hooks(stream_table(m), 14 + (int)m),
                             "127.0.0.1:0", &drain_handler, 1,
                             SKS_OVERLOAD_BACKPRESSURE), 0.05);
    int a = holding_client(ts.address);
    int b = client_connect(ts.address);
    assert_true(b >= 0);
    assert_int_equal(client_send_all(b, "next\n", 5), 0);
    assert_false(readable_within(b, 300));
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.accepted, 1);
    assert_int_equal(st.active, 1);
    assert_int_equal(st.refused, 0);

    shutdown(a, SHUT_WR); /* the first request ends */
    assert_eof(a);
    double t0 = now_seconds();
    assert_line(b, "next\n");
    assert_true(now_seconds() - t0 < 1.0);
    client_hang_up(a);
    client_hang_up(b);
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    expect_stats(ts.srv, 2, 2, 0, 0);
    ts_stop(&ts);
}

static void test_max_connections_backpressure_threading(void **state)
{
    (void)state;
    max_connections_backpressure(THREADING);
}

static void test_max_connections_backpressure_forking(void **state)
{
    (void)state;
    max_connections_backpressure(FORKING);
}

static void test_max_connections_backpressure_pool(void **state)
{
    (void)state;
    max_connections_backpressure(POOL);
}

static void test_max_connections_backpressure_fiber(void **state)
{
    (void)state;
    max_connections_backpressure(FIBER);
}

/* Every predefined table (4 transports x sync, threading, forking, pool):
 * 3 requests served, 1 denied by verify_request; accepted 3, completed 3,
 * refused 1, active 0. */
static void test_counters_on_every_predefined_server(void **state)
{
    (void)state;
    const sks_server_ops *tables[] = {
        &sks_tcp_ops, &sks_threading_tcp_ops, &sks_forking_tcp_ops,
        &sks_pool_tcp_ops,
        &sks_unix_stream_ops, &sks_threading_unix_stream_ops,
        &sks_forking_unix_stream_ops, &sks_pool_unix_stream_ops,
        &sks_udp_ops, &sks_threading_udp_ops, &sks_forking_udp_ops,
        &sks_pool_udp_ops,
        &sks_unix_dgram_ops, &sks_threading_unix_dgram_ops,
        &sks_forking_unix_dgram_ops, &sks_pool_unix_dgram_ops,
        &sks_fiber_tcp_ops, &sks_fiber_unix_stream_ops, &sks_fiber_udp_ops,
        &sks_fiber_unix_dgram_ops,
    };
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        const sks_server_ops *base = tables[i];
        bool stream = base->socket_type == SOCK_STREAM;
        char address[SKS_ADDRSTRLEN] = "127.0.0.1:0";
        if (base->address_family == AF_UNIX)
            unix_temp_address(address, sizeof(address));
        reset_state();
        test_server ts;
        ts_serve(&ts, new_server(with_hooks(base, 16 + (int)i), address,
                                 stream ? &drain_handler : &dgram_handler, 0,
                                 SKS_OVERLOAD_BACKPRESSURE), 0.05);
            for (int r = 0; r < 4; r++) {
            if (r == 2)
                atomic_store(&deny, 1);
            int c = stream ? client_connect(ts.address)
                           : client_dgram(ts.address);
            assert_true(c >= 0);
            if (stream) {
                if (r == 2) {
                    assert_eof(c);
                } else {
                    assert_echo(c, "hello\n");
                }
            } else {
                char buf[16];
                assert_int_equal(send(c, "hello", 5, 0), 5);
                if (r == 2)
                    assert_true(wait_stat(ts.srv, refused, 1, 5000));
                else
                    assert_int_equal(recv_once(c, buf, sizeof(buf)), 5);
            }
            atomic_store(&deny, 0);
            client_hang_up(c);
        }
        assert_true(wait_stat(ts.srv, active, 0, 5000));
        sks_stats st;
        sks_server_stats(ts.srv, &st);
        if (st.accepted != 3 || st.completed != 3 || st.refused != 1 ||
            st.failed != 0)
            fail_msg("%s: accepted %zu completed %zu failed %zu refused %zu",
                     base->name, st.accepted, st.completed, st.failed,
                     st.refused);
        ts_stop(&ts);
        if (base->address_family == AF_UNIX)
            unlink(address + 5);
    }
}

/* ------------------------------------------------------------------------ */
/* The example servers */

/* The example and its children (a pre-fork parent's): one process group. */
static test_proc example = TEST_PROC_NONE;

static int example_teardown(void **state)
{
    (void)state;
    proc_kill(&example);
    return 0;
}

/*
 * `idle` clients connect and say nothing; another client is still echoed
 * at once, and so is every idle one afterwards (each is being served).
 * Then SIGTERM with all of them connected: the server exits 0 within
 * 2.5 s (its drain deadline is 1 s), leaving no process behind, and the
 * idle clients see end of input.
 */
static void example_idle_clients_then_sigterm(const char *name, int idle)
{
    enum { MAX_IDLE = 64 };
    int fds[MAX_IDLE];
    char address[SKS_ADDRSTRLEN];
    assert_true(idle <= MAX_IDLE);
    if (!example_exists(name)) {
        print_message("%s is not built: skipped\n", name);
        skip();
    }
    example_start(&example, name, "127.0.0.1:0", address, sizeof(address));
    /* Under valgrind (which traces the example too) everything is several
     * times slower: the bounds scale there, and only there. */
    int reply_ms = (int)(valgrind_scaled(1.0) * 1000);
    int exit_ms = (int)(valgrind_scaled(2.5) * 1000);

    for (int i = 0; i < idle; i++) {
        fds[i] = client_connect(address);
        assert_true(fds[i] >= 0);
    }
    int c = client_connect(address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "not held up\n", 12), 0);
    assert_true(readable_within(c, reply_ms));
    assert_line(c, "not held up\n");
    client_close(c);
    for (int i = 0; i < idle; i++) {
        assert_int_equal(client_send_all(fds[i], "me too\n", 7), 0);
        assert_true(readable_within(fds[i], reply_ms));
        assert_line(fds[i], "me too\n");
    }

    pid_t group = example.group;
    assert_int_equal(kill(example.pid, SIGTERM), 0);
    double took;
    int status = proc_wait_exit(&example, exit_ms, &took);
    print_message("%s: %d idle clients; exit %d after SIGTERM in %.0f ms\n",
                  name, idle, status == -1 ? -1 : WEXITSTATUS(status),
                  took * 1000);
    assert_true(status != -1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* Nothing of it is left: a pre-fork parent reaped its children. */
    assert_true(kill(-group, 0) != 0 && errno == ESRCH);
    for (int i = 0; i < idle; i++) {
        assert_eof(fds[i]);
        client_close(fds[i]);
    }
    proc_kill(&example);
}

static void test_example_pool_serves_64_idle_clients_and_exits_0_on_sigterm(void **state)
{
    (void)state;
    example_idle_clients_then_sigterm("echo_pool_server", 64);
}

static void test_example_prefork_serves_64_idle_clients_and_exits_0_on_sigterm(void **state)
{
    (void)state;
    example_idle_clients_then_sigterm("echo_prefork_server", 64);
}

static void test_example_threading_serves_64_idle_clients_and_exits_0_on_sigterm(void **state)
{
    (void)state;
    example_idle_clients_then_sigterm("echo_threading_server", 64);
}

static void test_example_fiber_serves_64_idle_clients_and_exits_0_on_sigterm(void **state)
{
    (void)state;
    example_idle_clients_then_sigterm("echo_fiber_server", 64);
}

/* The forking example serves at most max_children (40) at once: 16 idle
 * clients stay within it. */
static void test_example_forking_serves_16_idle_clients_and_exits_0_on_sigterm(void **state)
{
    (void)state;
    example_idle_clients_then_sigterm("echo_forking_server", 16);
}

int main(void)
{
    /* A first thread, so that runtime threads started lazily with it
     * (ThreadSanitizer's background thread) are in every baseline. */
    warm_up_threads();
    if (pipe2(eof_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return 1;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_lets_a_slow_request_finish_sync),
        cmocka_unit_test(test_drain_lets_a_slow_request_finish_threading),
        cmocka_unit_test(test_drain_lets_a_slow_request_finish_forking),
        cmocka_unit_test(test_drain_lets_a_slow_request_finish_pool),
        cmocka_unit_test(test_drain_lets_a_slow_request_finish_fiber),
        cmocka_unit_test(test_drain_cuts_a_request_outliving_the_deadline_sync),
        cmocka_unit_test(test_drain_cuts_a_request_outliving_the_deadline_threading),
        cmocka_unit_test(test_drain_cuts_a_request_outliving_the_deadline_forking),
        cmocka_unit_test(test_drain_cuts_a_request_outliving_the_deadline_pool),
        cmocka_unit_test(test_drain_cuts_a_request_outliving_the_deadline_fiber),
        cmocka_unit_test(test_drain_reports_finished_and_cut_together),
        cmocka_unit_test(test_drain_at_timeout_0_under_forking_load),
        cmocka_unit_test(test_drain_from_the_serving_thread_fails_with_edeadlk),
        cmocka_unit_test(test_shutdown_wakes_the_loop_at_once_despite_10s_poll_interval),
        cmocka_unit_test(test_counters_add_up_with_refusals_and_failures_sync),
        cmocka_unit_test(test_counters_add_up_with_refusals_and_failures_threading),
        cmocka_unit_test(test_counters_add_up_with_refusals_and_failures_forking),
        cmocka_unit_test(test_counters_add_up_with_refusals_and_failures_pool),
        cmocka_unit_test(test_counters_add_up_with_refusals_and_failures_fiber),
        cmocka_unit_test(test_max_connections_backpressure_threading),
        cmocka_unit_test(test_max_connections_backpressure_forking),
        cmocka_unit_test(test_max_connections_backpressure_pool),
        cmocka_unit_test(test_max_connections_backpressure_fiber),
        cmocka_unit_test(test_counters_on_every_predefined_server),
        cmocka_unit_test_teardown(test_example_pool_serves_64_idle_clients_and_exits_0_on_sigterm,
                                  example_teardown),
        cmocka_unit_test_teardown(test_example_prefork_serves_64_idle_clients_and_exits_0_on_sigterm,
                                  example_teardown),
        cmocka_unit_test_teardown(test_example_threading_serves_64_idle_clients_and_exits_0_on_sigterm,
                                  example_teardown),
        cmocka_unit_test_teardown(test_example_fiber_serves_64_idle_clients_and_exits_0_on_sigterm,
                                  example_teardown),
        cmocka_unit_test_teardown(test_example_forking_serves_16_idle_clients_and_exits_0_on_sigterm,
                                  example_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    close(eof_pipe[0]);
    close(eof_pipe[1]);
    return rc;
}
