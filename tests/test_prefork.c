/*
 * test_prefork.c - PreForkMixIn: the parent binds and listens, `workers`
 * children run the loop on the shared socket.  Handlers answer with their
 * getpid(), so the tests see which child served: work spreads over more
 * than one child, a killed child is replaced, a child is recycled after
 * max_requests_per_child, and shutdown drains the children, then kills
 * stragglers after the deadline.  TCP, Unix stream and UDP.
 *
 * Clients hang up with shutdown(SHUT_WR), not close(): a child forked
 * after a client connected holds a copy of the client's descriptor, and
 * only shutdown() ends the stream whoever else holds the socket.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ThreadSanitizer cannot follow a child that starts threads after a fork
 * of a multi-threaded process (it dies with "starting new threads after
 * multi-threaded fork is not supported"): the tests whose children run
 * threads are skipped under it. */
static void skip_threaded_children_under_tsan(void)
{
    skip_under_tsan("these children start threads after a fork of a "
                    "multi-threaded process");
}

/* Every line gets "<pid>\n" back, until end of input. */
static int pid_handle(sks_handler *h)
{
    char line[256], reply[32];
    ssize_t n;
    int len = snprintf(reply, sizeof(reply), "%ld\n", (long)getpid());
    while ((n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line))) > 0) {
        if (sks_wfile_write(sks_handler_wfile(h), reply, (size_t)len) < 0)
            return SKS_EHANDLER;
        if (sks_wfile_flush(sks_handler_wfile(h)) < 0)
            return SKS_EHANDLER;
    }
    return (int)n;
}

static const sks_handler_class pid_handler = {
    .setup = sks_stream_setup,
    .handle = pid_handle,
    .finish = sks_stream_finish,
};

/* A datagram gets "<pid>" back after 50 ms of "work", so that a second
 * datagram sent meanwhile is taken by another child. */
static int pid_dgram_handle(sks_handler *h)
{
    char reply[32];
    int len = snprintf(reply, sizeof(reply), "%ld", (long)getpid());
    sleep_ms(50);
    return sks_wfile_write(sks_handler_wfile(h), reply, (size_t)len) < 0
               ? SKS_EHANDLER
               : 0;
}

static const sks_handler_class pid_dgram_handler = {
    .setup = sks_datagram_setup,
    .handle = pid_dgram_handle,
    .finish = sks_datagram_finish,
};

static sks_server *make_prefork(const sks_server_ops *ops, const char *address,
                                const sks_handler_class *cls, size_t workers,
                                size_t max_requests, double timeout)
{
    sks_server *srv = ts_new(ops, address, cls, NULL, SKS_NO_BIND);
    assert_int_equal(sks_server_set_prefork(srv, workers, max_requests,
                                            timeout), 0);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    return srv;
}

static pid_t parse_pid(const char *buf, ssize_t n)
{
    char tmp[32];
    assert_true(n > 0 && n < (ssize_t)sizeof(tmp));
    memcpy(tmp, buf, (size_t)n);
    tmp[n] = '\0';
    long pid = strtol(tmp, NULL, 10);
    assert_true(pid > 1);
    return (pid_t)pid;
}

/* Sends a line on an open connection; returns the pid that answered. */
static pid_t ask_pid(int fd)
{
    char buf[32];
    assert_int_equal(client_send_all(fd, "pid\n", 4), 0);
    ssize_t n = client_recv_line(fd, buf, sizeof(buf));
    assert_true(n > 1 && buf[n - 1] == '\n');
    return parse_pid(buf, n - 1);
}

/* One connection, one question, hang up: the pid that served it. */
static pid_t one_request(const char *address)
{
    int c = client_connect(address);
    assert_true(c >= 0);
    pid_t pid = ask_pid(c);
    shutdown(c, SHUT_WR);
    assert_eof(c);
    client_close(c);
    return pid;
}

static bool in_children(sks_server *srv, pid_t pid)
{
    pid_t pids[64];
    size_t n = sks_server_prefork_children(srv, pids, 64);
    for (size_t i = 0; i < n && i < 64; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

struct which {
    sks_server *srv;
    pid_t pid;
};

static bool which_is_child(void *arg)
{
    struct which *w = arg;
    return in_children(w->srv, w->pid);
}

/* A child can answer before the parent's fork() has returned and recorded
 * its pid: allow the parent a moment. */
static bool is_child(sks_server *srv, pid_t pid)
{
    struct which w = { srv, pid };
    return wait_until(which_is_child, &w, 2000);
}

struct want_children {
    sks_server *srv;
    size_t n;
    pid_t gone; /* must not be among them (0: any) */
};

static bool children_are(void *arg)
{
    struct want_children *w = arg;
    pid_t pids[64];
    size_t n = sks_server_prefork_children(w->srv, pids, 64);
    if (n != w->n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (pids[i] == w->gone)
            return false;
    return true;
}

static bool no_children(void *arg)
{
    (void)arg;
    return count_children() == 0;
}

/* ------------------------------------------------------------------------ */

/* Synchronous children: a child busy with a held connection cannot accept,
 * so the next connection must be taken by another child.  Bounded: at most
 * 8 connections; a server with one child would leave the second
 * unanswered and fail on the client's 5 s timeout. */
static void spread_over_children(const sks_server_ops *ops,
                                 const char *address)
{
    enum { TRIES = 8 };
    int fds[TRIES];
    pid_t seen[TRIES];
    int n = 0, distinct = 0;
    int nfds = count_open_fds();
    test_server ts;
    ts_serve(&ts, make_prefork(ops, address, &pid_handler, 2, 0, 1.0), 0.05);
    while (n < TRIES && distinct < 2) {
        fds[n] = client_connect(ts.address);
        assert_true(fds[n] >= 0);
        seen[n] = ask_pid(fds[n]);
        assert_true(seen[n] != getpid());
        assert_true(is_child(ts.srv, seen[n]));
        distinct = 1;
        for (int i = 0; i < n; i++)
            if (seen[i] != seen[0])
                distinct = 2;
        if (seen[n] != seen[0])
            distinct = 2;
        n++;
    }
    print_message("%s: %d connection(s) to see 2 children\n", ops->name, n);
    assert_int_equal(distinct, 2);
    for (int i = 0; i < n; i++) {
        client_hang_up(fds[i]);
    }
    sks_stats st;
    sks_server_stats(ts.srv, &st); /* the parent's own: it accepts nothing */
    assert_int_equal(st.accepted, 0);
    ts_stop(&ts);
    assert_true(wait_until(no_children, NULL, 5000));
    assert_int_equal(count_open_fds(), nfds);
}

static void test_prefork_tcp_spreads_work_over_more_than_one_child(void **state)
{
    (void)state;
    spread_over_children(&sks_prefork_tcp_ops, "127.0.0.1:0");
}

static void test_prefork_unix_stream_spreads_work_over_more_than_one_child(void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];
    unix_temp_address(address, sizeof(address));
    spread_over_children(&sks_prefork_unix_stream_ops, address);
    /* The children never remove the parent's socket file. */
    assert_int_equal(access(address + 5, F_OK), 0);
    unlink(address + 5);
}

/* Threading children take connections whenever they are free: the herd
 * decides who wins each accept.  Rounds of 32 held connections, at most
 * 4 rounds, until two children have served. */
static void test_prefork_threading_children_share_the_connections(void **state)
{
    (void)state;
    skip_threaded_children_under_tsan();
    enum { ROUND = 32, ROUNDS = 4 };
    int fds[ROUND];
    pid_t first = 0;
    bool two = false;
    test_server ts;
    ts_serve(&ts, make_prefork(&sks_prefork_threading_tcp_ops, "127.0.0.1:0",
                               &pid_handler, 2, 0, 1.0), 0.05);
    for (int r = 0; r < ROUNDS && !two; r++) {
        for (int i = 0; i < ROUND; i++) {
            fds[i] = client_connect(ts.address);
            assert_true(fds[i] >= 0);
            assert_int_equal(client_send_all(fds[i], "pid\n", 4), 0);
        }
        for (int i = 0; i < ROUND; i++) {
            char buf[32];
            ssize_t n = client_recv_line(fds[i], buf, sizeof(buf));
            assert_true(n > 1);
            pid_t pid = parse_pid(buf, n - 1);
            assert_true(is_child(ts.srv, pid));
            if (first == 0)
                first = pid;
            else if (pid != first)
                two = true;
            client_hang_up(fds[i]);
        }
    }
    assert_true(two);
    ts_stop(&ts);
    assert_true(wait_until(no_children, NULL, 5000));
}

/* UDP: every child reads the shared socket.  Two datagrams sent together
 * while each takes 50 ms: the second is read by another child. */
static void test_prefork_udp_children_read_the_shared_socket(void **state)
{
    (void)state;
    enum { ROUNDS = 10 };
    test_server ts;
    ts_serve(&ts, make_prefork(&sks_prefork_udp_ops, "127.0.0.1:0",
                               &pid_dgram_handler, 2, 0, 1.0), 0.05);
    int a = client_dgram(ts.address), b = client_dgram(ts.address);
    assert_true(a >= 0 && b >= 0);
    bool two = false;
    for (int r = 0; r < ROUNDS && !two; r++) {
        char buf[32];
        assert_int_equal(send(a, "pid", 3, 0), 3);
        assert_int_equal(send(b, "pid", 3, 0), 3);
        ssize_t na = recv_once(a, buf, sizeof(buf));
        pid_t pa = parse_pid(buf, na);
        ssize_t nb = recv_once(b, buf, sizeof(buf));
        pid_t pb = parse_pid(buf, nb);
        assert_true(is_child(ts.srv, pa) && is_child(ts.srv, pb));
        two = pa != pb;
    }
    assert_true(two);
    client_close(a);
    client_close(b);
    ts_stop(&ts);
    assert_true(wait_until(no_children, NULL, 5000));
}

/* A child killed with SIGKILL is replaced (a new pid, the count restored)
 * and the server keeps answering, from live children only. */
static void test_prefork_replaces_a_killed_child_and_keeps_answering(void **state)
{
    (void)state;
    test_server ts;
    ts_serve(&ts, make_prefork(&sks_prefork_tcp_ops, "127.0.0.1:0",
                               &pid_handler, 2, 0, 1.0), 0.05);
    struct want_children w = { .srv = ts.srv, .n = 2 };
    assert_true(wait_until(children_are, &w, 5000));
    pid_t pids[2];
    assert_int_equal(sks_server_prefork_children(ts.srv, pids, 2), 2);
    pid_t victim = pids[0];
    (void)one_request(ts.address);

    double t0 = now_seconds();
    assert_int_equal(kill(victim, SIGKILL), 0);
    w.gone = victim;
    assert_true(wait_until(children_are, &w, 5000));
    print_message("replaced in %.0f ms\n", (now_seconds() - t0) * 1000);
    assert_true(kill(victim, 0) != 0); /* reaped: no zombie left */

    for (int i = 0; i < 6; i++) {
        pid_t pid = one_request(ts.address);
        assert_true(pid != victim);
        assert_true(is_child(ts.srv, pid));
    }
    ts_stop(&ts);
    assert_true(wait_until(no_children, NULL, 5000));
}

/* max_requests_per_child 3, one worker: requests 1-3 share a pid, 4-6
 * another, 7-9 a third; the parent keeps one child throughout. */
static void test_prefork_recycles_a_child_after_max_requests_per_child(void **state)
{
    (void)state;
    enum { N = 3 };
    pid_t pid[3 * N];
    test_server ts;
    ts_serve(&ts, make_prefork(&sks_prefork_tcp_ops, "127.0.0.1:0",
                               &pid_handler, 1, N, 1.0), 0.05);
    for (int i = 0; i < 3 * N; i++)
        pid[i] = one_request(ts.address);
    for (int gen = 0; gen < 3; gen++) {
        for (int i = 1; i < N; i++)
            assert_int_equal(pid[gen * N + i], pid[gen * N]);
        if (gen > 0)
            assert_true(pid[gen * N] != pid[(gen - 1) * N]);
    }
    assert_true(pid[0] != pid[2 * N]);
    struct want_children w = { .srv = ts.srv, .n = 1 };
    assert_true(wait_until(children_are, &w, 5000));
    ts_stop(&ts);
    assert_true(wait_until(no_children, NULL, 5000));
}

/* Shutdown with a synchronous child blocked on an idle client: SIGTERM
 * cannot end its handler, so the parent waits timeout + 1 s and then
 * kills it.  shutdown returns within that (plus a margin), every child is
 * reaped and the idle client sees its connection end. */
static void test_prefork_shutdown_kills_a_straggler_after_the_deadline(void **state)
{
    (void)state;
    const double timeout = 0.3;
    test_server ts;
    ts_serve(&ts, make_prefork(&sks_prefork_tcp_ops, "127.0.0.1:0",
                               &pid_handler, 2, 0, timeout), 0.05);
    int idle = client_connect(ts.address);
    assert_true(idle >= 0);
    pid_t straggler = ask_pid(idle);

    double t0 = now_seconds();
    ts_stop(&ts);
    double took = now_seconds() - t0;
    print_message("shutdown with a straggler took %.0f ms\n", took * 1000);
    assert_true(took >= timeout);
    assert_true(took < timeout + 1.0 + 1.5);
    assert_int_equal(count_children(), 0);
    assert_true(kill(straggler, 0) != 0);
    char buf[8];
    assert_int_equal(client_recv_all(idle, buf, sizeof(buf)), 0);
    client_close(idle);
}

/* Threading children drain at shutdown: handlers blocked on idle clients
 * are cut after the timeout (they see end of input) and the children
 * leave on their own, well before the SIGKILL deadline. */
static void test_prefork_shutdown_drains_threading_children_within_timeout(void **state)
{
    (void)state;
    skip_threaded_children_under_tsan();
    enum { IDLE = 8 };
    const double timeout = 0.5;
    int fds[IDLE];
    test_server ts;
    ts_serve(&ts, make_prefork(&sks_prefork_threading_tcp_ops, "127.0.0.1:0",
                               &pid_handler, 2, 0, timeout), 0.05);
    for (int i = 0; i < IDLE; i++) {
        fds[i] = client_connect(ts.address);
        assert_true(fds[i] >= 0);
        (void)ask_pid(fds[i]);
    }
    double t0 = now_seconds();
    ts_stop(&ts);
    double took = now_seconds() - t0;
    print_message("drained %d idle clients in %.0f ms\n", IDLE, took * 1000);
    assert_true(took >= timeout - 0.05);
    assert_true(took < timeout + 0.9); /* before the SIGKILL at timeout + 1 */
    assert_int_equal(count_children(), 0);
    for (int i = 0; i < IDLE; i++) {
        char buf[8];
        assert_int_equal(client_recv_all(fds[i], buf, sizeof(buf)), 0);
        client_close(fds[i]);
    }
}

/* workers 0 means one child per online CPU. */
static void test_prefork_default_is_one_child_per_cpu(void **state)
{
    (void)state;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_true(ncpu >= 1);
    test_server ts;
    ts_serve(&ts, make_prefork(&sks_prefork_tcp_ops, "127.0.0.1:0",
                               &pid_handler, 0, 0, 1.0), 0.05);
    struct want_children w = { .srv = ts.srv, .n = (size_t)ncpu };
    assert_true(wait_until(children_are, &w, 5000));
    assert_true(is_child(ts.srv, one_request(ts.address)));
    sks_server_shutdown(ts.srv);
    assert_int_equal(pthread_join(ts.thread, NULL), 0);
    assert_int_equal(ts.serve_rc, 0);
    assert_int_equal(sks_server_prefork_children(ts.srv, NULL, 0), 0);
    assert_int_equal(count_children(), 0);
    sks_server_free(ts.srv);
}

/* sks_prefork_mixin over the pool table: each child runs a thread pool. */
static void test_prefork_mixin_over_a_pool_serves_from_the_children(void **state)
{
    (void)state;
    skip_threaded_children_under_tsan();
    static sks_server_ops ops;
    assert_int_equal(sks_prefork_mixin(&ops, &sks_pool_tcp_ops), 0);
    assert_ptr_equal(ops.serve_forever, sks_prefork_serve_forever);
    assert_ptr_equal(ops.process_request, sks_pool_process_request);
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &ops, "127.0.0.1:0", &pid_handler,
                                     NULL, SKS_NO_BIND), 0);
    assert_int_equal(sks_server_set_prefork(srv, 2, 0, 1.0), 0);
    assert_int_equal(sks_server_set_pool(srv, 1, 4, 5.0, 4), 0);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    for (int i = 0; i < 4; i++)
        assert_true(is_child(srv, one_request(ts.address)));
    ts_stop(&ts);
    assert_true(wait_until(no_children, NULL, 5000));
}

static void test_set_prefork_rejects_bad_values(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &sks_prefork_tcp_ops, "127.0.0.1:0",
                                     &pid_handler, NULL, SKS_NO_BIND), 0);
    assert_int_equal(sks_server_set_prefork(srv, 2, 0, -1.0), -EINVAL);
    assert_int_equal(sks_server_set_prefork(srv, 100000, 0, 1.0), -EINVAL);
    assert_int_equal(sks_server_set_prefork(srv, 2, 10, 0.0), 0);
    sks_server_free(srv);
}

int main(void)
{
    /* A first thread, so that runtime threads started lazily with it
     * (ThreadSanitizer's background thread) are in every baseline. */
    warm_up_threads();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefork_tcp_spreads_work_over_more_than_one_child),
        cmocka_unit_test(test_prefork_unix_stream_spreads_work_over_more_than_one_child),
        cmocka_unit_test(test_prefork_threading_children_share_the_connections),
        cmocka_unit_test(test_prefork_udp_children_read_the_shared_socket),
        cmocka_unit_test(test_prefork_replaces_a_killed_child_and_keeps_answering),
        cmocka_unit_test(test_prefork_recycles_a_child_after_max_requests_per_child),
        cmocka_unit_test(test_prefork_shutdown_kills_a_straggler_after_the_deadline),
        cmocka_unit_test(test_prefork_shutdown_drains_threading_children_within_timeout),
        cmocka_unit_test(test_prefork_default_is_one_child_per_cpu),
        cmocka_unit_test(test_prefork_mixin_over_a_pool_serves_from_the_children),
        cmocka_unit_test(test_set_prefork_rejects_bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
