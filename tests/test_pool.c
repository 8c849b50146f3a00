/*
 * test_pool.c - ThreadPoolMixIn: a pool of min..max worker threads fed by
 * a bounded queue.  The bound holds under load, the pool grows on demand
 * and shrinks after idle_timeout, the overload policy is seen from the
 * client side (backpressure: connected but unanswered; refuse: a "busy"
 * line, then end of input), and server_close finishes or drops queued
 * requests as block_on_close says.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The handler: echoes lines; counts handlers running at once; a line
 * "hold\n" waits at the gate (bounded) before it is echoed. */

static atomic_int running, max_running;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int held; /* handlers waiting at the gate (gate_lock) */
static atomic_int work_ms; /* each line takes this long to "process" */

static void gate_reset(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = false;
    held = 0;
    pthread_mutex_unlock(&gate_lock);
    atomic_store(&running, 0);
    atomic_store(&max_running, 0);
    atomic_store(&work_ms, 0);
}

static void gate_release(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static int gate_held(void)
{
    pthread_mutex_lock(&gate_lock);
    int n = held;
    pthread_mutex_unlock(&gate_lock);
    return n;
}

static void gate_wait(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10; /* a broken test must not hang the suite */
    pthread_mutex_lock(&gate_lock);
    held++;
    while (!gate_open)
        if (pthread_cond_timedwait(&gate_cond, &gate_lock, &until) != 0)
            break;
    held--;
    pthread_mutex_unlock(&gate_lock);
}

static void note_running(int delta)
{
    int now = atomic_fetch_add(&running, delta) + delta;
    int max = atomic_load(&max_running);
    while (now > max && !atomic_compare_exchange_weak(&max_running, &max, now))
        ;
}

static int pool_handle(sks_handler *h)
{
    char line[256];
    ssize_t n;
    note_running(1);
    while ((n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line))) > 0) {
        if (n >= 5 && memcmp(line, "hold\n", 5) == 0)
            gate_wait();
        int ms = atomic_load(&work_ms);
        if (ms > 0)
            sleep_ms(ms);
        if (sks_wfile_write(sks_handler_wfile(h), line, (size_t)n) < 0)
            break;
        if (sks_wfile_flush(sks_handler_wfile(h)) < 0)
            break;
    }
    note_running(-1);
    return n < 0 ? (int)n : 0;
}

static const sks_handler_class pool_handler = {
    .setup = sks_stream_setup,
    .handle = pool_handle,
    .finish = sks_stream_finish,
};

static int dgram_echo(sks_handler *h)
{
    char buf[512];
    ssize_t n = sks_rfile_read(sks_handler_rfile(h), buf, sizeof(buf));
    if (n > 0)
        sks_wfile_write(sks_handler_wfile(h), buf, (size_t)n);
    return 0;
}

static const sks_handler_class dgram_handler = {
    .setup = sks_datagram_setup,
    .handle = dgram_echo,
    .finish = sks_datagram_finish,
};

/* ------------------------------------------------------------------------ */
/* Helpers */

static sks_server *make_pool_server(const sks_server_ops *ops,
                                    const char *address,
                                    const sks_handler_class *cls,
                                    size_t min, size_t max, double idle,
                                    size_t queue)
{
    sks_server *srv = ts_new(ops, address, cls, NULL, SKS_NO_BIND);
    assert_int_equal(sks_server_set_pool(srv, min, max, idle, queue), 0);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    return srv;
}

static bool gate_held_is(void *arg)
{
    return gate_held() == (int)(intptr_t)arg;
}

static bool threads_back_to(void *arg)
{
    return count_threads() == (int)(intptr_t)arg;
}

/* A client that sent "hold\n" and whose handler now waits at the gate. */
static int held_client(const char *address, int nheld_after)
{
    int c = client_connect(address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "hold\n", 5), 0);
    assert_true(wait_until(gate_held_is, (void *)(intptr_t)nheld_after, 5000));
    return c;
}

/* A client that sent "queued\n" and whose request now waits in the queue,
 * nqueued_after requests in all. */
static int queued_client(test_server *ts, size_t nqueued_after)
{
    int c = client_connect(ts->address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "queued\n", 7), 0);
    assert_true(wait_stat(ts->srv, queued, nqueued_after, 5000));
    return c;
}

/* ------------------------------------------------------------------------ */
/* The bound under load */

struct monitor {
    sks_server *srv;
    atomic_bool stop;
    size_t max_workers, max_queued, max_active;
    bool sum_ok; /* accepted == completed + failed + active, every sample */
};

static void *monitor_main(void *arg)
{
    struct monitor *m = arg;
    while (!atomic_load(&m->stop)) {
        sks_stats st;
        sks_server_stats(m->srv, &st);
        if (st.workers > m->max_workers)
            m->max_workers = st.workers;
        if (st.queued > m->max_queued)
            m->max_queued = st.queued;
        if (st.active > m->max_active)
            m->max_active = st.active;
        if (st.accepted != st.completed + st.failed + st.active)
            m->sum_ok = false;
        sleep_ms(1);
    }
    return NULL;
}

/* 500 clients connect at once and each sends a line; every one is
 * answered, yet no more than max_workers handlers ever run together, no
 * more than max_workers + queue_size requests are ever in flight, and the
 * pool does grow to its maximum (so the bound is what limits it, not a
 * lack of load). */
static void test_pool_bound_never_exceeded_under_500_concurrent_clients(void **state)
{
    (void)state;
    enum { CLIENTS = 500, MAX = 8, QUEUE = 16 };
    static int fds[CLIENTS];
    gate_reset();
    atomic_store(&work_ms, 2);
    int threads = count_threads();
    int nfds = count_open_fds();
    test_server ts;
    ts_serve(&ts, make_pool_server(&sks_pool_tcp_ops, "127.0.0.1:0",
                                   &pool_handler, 2, MAX, 30.0, QUEUE),
             0.05);
    struct monitor m = { .srv = ts.srv, .sum_ok = true };
    pthread_t mon;
    assert_int_equal(pthread_create(&mon, NULL, monitor_main, &m), 0);

    double t0 = now_seconds();
    for (int i = 0; i < CLIENTS; i++) {
        char line[32];
        fds[i] = client_connect(ts.address);
        assert_true(fds[i] >= 0);
        int n = snprintf(line, sizeof(line), "client %d\n", i);
        assert_int_equal(client_send_all(fds[i], line, (size_t)n), 0);
    }
    for (int i = 0; i < CLIENTS; i++) {
        char line[32];
        snprintf(line, sizeof(line), "client %d\n", i);
        assert_line(fds[i], line);
        client_close(fds[i]);
    }
    double elapsed = now_seconds() - t0;
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    atomic_store(&m.stop, true);
    pthread_join(mon, NULL);

    sks_stats st;
    sks_server_stats(ts.srv, &st);
    print_message("500 clients in %.0f ms; max running %d, workers %zu, "
                  "queued %zu, active %zu\n", elapsed * 1000,
                  atomic_load(&max_running), m.max_workers, m.max_queued,
                  m.max_active);
    assert_true(atomic_load(&max_running) <= MAX);
    assert_int_equal(atomic_load(&max_running), MAX);
    assert_true(m.max_workers <= MAX);
    /* The loop bounds requests in flight, max_workers + queue_size; the
     * queue alone may hold more for the moment a worker that has just
     * finished takes to come back for the next one. */
    assert_true(m.max_queued <= MAX + QUEUE);
    assert_true(m.max_active <= MAX + QUEUE);
    assert_true(m.sum_ok);
    assert_int_equal(st.accepted, CLIENTS);
    assert_int_equal(st.completed, CLIENTS);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.refused, 0);
    assert_true(elapsed < 30.0);
    ts_stop(&ts);
    assert_int_equal(count_threads(), threads);
    assert_int_equal(count_open_fds(), nfds);
}

/* The pool starts min_workers threads, grows to max_workers while requests
 * wait, and shrinks back to min_workers (not below) after idle_timeout. */
static void test_pool_grows_to_max_then_idle_workers_leave_down_to_min(void **state)
{
    (void)state;
    enum { MIN = 1, MAX = 4 };
    gate_reset();
    int threads = count_threads();
    test_server ts;
    ts_serve(&ts, make_pool_server(&sks_pool_tcp_ops, "127.0.0.1:0",
                                   &pool_handler, MIN, MAX, 0.2, 4),
             0.05);
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.workers, 0); /* made lazily, at the first request */

    int c[MAX];
    for (int i = 0; i < MAX; i++)
        c[i] = held_client(ts.address, i + 1);
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.workers, MAX);
    assert_int_equal(st.active, MAX);
    assert_int_equal(st.queued, 0);
    gate_release();
    for (int i = 0; i < MAX; i++) {
        assert_line(c[i], "hold\n");
        client_close(c[i]);
    }
    assert_true(wait_stat(ts.srv, workers, MIN, 5000));
    /* and it stays there: min_workers never time out */
    sleep_ms(500);
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.workers, MIN);

    /* Still serving with the one worker left. */
    int d = client_connect(ts.address);
    assert_true(d >= 0);
    assert_echo(d, "after shrinking\n");
    client_close(d);
    ts_stop(&ts);
    assert_int_equal(count_threads(), threads);
}

/* Backpressure (the default): at max_workers busy with the queue full,
 * the next client's connect succeeds (the kernel backlog completes it) but
 * it gets no reply until a slot frees; nothing is refused. */
static void test_pool_backpressure_connects_but_replies_only_when_a_slot_frees(void **state)
{
    (void)state;
    gate_reset();
    test_server ts;
    ts_serve(&ts, make_pool_server(&sks_pool_tcp_ops, "127.0.0.1:0",
                                   &pool_handler, 1, 1, 30.0, 0),
             0.05);
    int a = held_client(ts.address, 1);

    int b = client_connect(ts.address);
    assert_true(b >= 0);
    assert_int_equal(client_send_all(b, "waiting\n", 8), 0);
    assert_false(readable_within(b, 300));
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.accepted, 1);
    assert_int_equal(st.refused, 0);

    gate_release();
    assert_line(a, "hold\n");
    client_close(a);
    double t0 = now_seconds();
    assert_true(readable_within(b, 2000));
    assert_line(b, "waiting\n");
    assert_true(now_seconds() - t0 < 1.0);
    client_close(b);
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.accepted, 2);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.refused, 0);
    ts_stop(&ts);
}

static atomic_int refuse_calls;

static void busy_refuse(sks_server *srv, sks_request *req)
{
    atomic_fetch_add(&refuse_calls, 1);
    sks_pool_tcp_ops.refuse_request(srv, req); /* super */
    (void)sks_request_reply(req, "busy\n", 5);
}

/* Refuse: at the bound, the next client is accepted, refuse_request runs
 * (here it writes "busy"), and the connection ends at once: the client
 * reads "busy\n", then end of input.  Counted in `refused`. */
static void test_pool_refuse_sends_busy_line_then_eof(void **state)
{
    (void)state;
    gate_reset();
    atomic_store(&refuse_calls, 0);
    sks_server_ops ops = sks_pool_tcp_ops;
    ops.refuse_request = busy_refuse;
    sks_server *srv = make_pool_server(&ops, "127.0.0.1:0", &pool_handler, 1,
                                       1, 30.0, 1);
    assert_int_equal(sks_server_set_overload_policy(srv, SKS_OVERLOAD_REFUSE), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    int a = held_client(ts.address, 1);
    /* The queue's one place: connected, sent, waiting unserved. */
    int q = queued_client(&ts, 1);

    for (int i = 0; i < 3; i++) {
        int b = client_connect(ts.address);
        assert_true(b >= 0);
        assert_line(b, "busy\n");
        assert_eof(b);
        client_close(b);
    }
    assert_int_equal(atomic_load(&refuse_calls), 3);
    sks_stats st;
    sks_server_stats(srv, &st);
    assert_int_equal(st.refused, 3);
    assert_int_equal(st.accepted, 2);
    assert_int_equal(st.queued, 1);

    gate_release();
    assert_line(a, "hold\n");
    client_close(a); /* its worker is the one the queued request waits for */
    assert_line(q, "queued\n");
    client_close(q);
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    /* Room again: served, not refused. */
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_echo(c, "served again\n");
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&refuse_calls), 3);
}

struct closer {
    sks_server *srv;
    atomic_bool done;
    double took;
};

static void *closer_main(void *arg)
{
    struct closer *c = arg;
    double t0 = now_seconds();
    sks_server_close(c->srv);
    c->took = now_seconds() - t0;
    atomic_store(&c->done, true);
    return NULL;
}

/* block_on_close (the default): server_close waits until the running
 * request and the two queued behind it have all been served. */
static void test_pool_close_with_block_on_close_serves_queued_and_running(void **state)
{
    (void)state;
    gate_reset();
    int threads = count_threads();
    test_server ts;
    ts_serve(&ts, make_pool_server(&sks_pool_tcp_ops, "127.0.0.1:0",
                                   &pool_handler, 1, 1, 30.0, 4),
             0.05);
    int a = held_client(ts.address, 1);
    int q[2];
    for (int i = 0; i < 2; i++)
        q[i] = queued_client(&ts, (size_t)i + 1);
    /* The queued clients hang up after their line: their handlers end at
     * end of input instead of waiting for more. */
    for (int i = 0; i < 2; i++)
        shutdown(q[i], SHUT_WR);
    shutdown(a, SHUT_WR);

    sks_server_shutdown(ts.srv);
    assert_int_equal(pthread_join(ts.thread, NULL), 0);
    struct closer cl = { .srv = ts.srv };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, closer_main, &cl), 0);
    sleep_ms(200);
    assert_false(atomic_load(&cl.done)); /* still waiting for the requests */
    gate_release();
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_line(a, "hold\n");
    for (int i = 0; i < 2; i++) {
        assert_line(q[i], "queued\n");
        client_close(q[i]);
    }
    client_close(a);
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.completed, 3);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.workers, 0);
    sks_server_free(ts.srv);
    assert_int_equal(count_threads(), threads);
}

/* Without block_on_close: server_close returns at once; the queued
 * requests are closed unserved (end of input, counted as failed) and the
 * running one finishes on its own later. */
static void test_pool_close_without_block_on_close_closes_queued_unserved(void **state)
{
    (void)state;
    gate_reset();
    int threads = count_threads();
    sks_server *srv = make_pool_server(&sks_pool_tcp_ops, "127.0.0.1:0",
                                       &pool_handler, 1, 1, 30.0, 4);
    assert_int_equal(sks_server_set_block_on_close(srv, false), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);
    int a = held_client(ts.address, 1);
    int q = queued_client(&ts, 1);

    sks_server_shutdown(srv);
    assert_int_equal(pthread_join(ts.thread, NULL), 0);
    double t0 = now_seconds();
    sks_server_close(srv);
    assert_true(now_seconds() - t0 < 0.5);
    assert_eof(q);
    client_close(q);
    sks_stats st;
    sks_server_stats(srv, &st);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.active, 1); /* the one still at the gate */

    gate_release();
    assert_line(a, "hold\n");
    client_close(a);
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    sks_server_free(srv); /* the detached worker keeps it alive if need be */
    assert_true(wait_until(threads_back_to, (void *)(intptr_t)threads, 5000));
}

/* server_close without block_on_close while workers are just finishing
 * their requests: a worker not waited for frees its own record as it
 * leaves, so close must not touch it after handing it over (a
 * use-after-free that AddressSanitizer reports within a few dozen
 * rounds).  100 rounds of 8 requests; every worker thread ends. */
static void test_pool_close_without_block_on_close_races_finishing_workers(void **state)
{
    (void)state;
    enum { ROUNDS = 100, CLIENTS = 8 };
    gate_reset();
    int threads = count_threads();
    for (int r = 0; r < ROUNDS; r++) {
        sks_server *srv = make_pool_server(&sks_pool_tcp_ops, "127.0.0.1:0",
                                           &pool_handler, 2, CLIENTS, 30.0,
                                           CLIENTS);
        assert_int_equal(sks_server_set_block_on_close(srv, false), 0);
        test_server ts;
        ts_serve(&ts, srv, 0.01);
        int c[CLIENTS];
        for (int i = 0; i < CLIENTS; i++) {
            c[i] = client_connect(ts.address);
            assert_true(c[i] >= 0);
            assert_int_equal(client_send_all(c[i], "x\n", 2), 0);
        }
        for (int i = 0; i < CLIENTS; i++) {
            assert_line(c[i], "x\n");
            shutdown(c[i], SHUT_WR); /* the handlers end now, during close */
        }
        sks_server_shutdown(srv);
        assert_int_equal(pthread_join(ts.thread, NULL), 0);
        sks_server_free(srv);
        for (int i = 0; i < CLIENTS; i++)
            client_close(c[i]);
    }
    assert_true(wait_until(threads_back_to, (void *)(intptr_t)threads, 5000));
}

/* The four pooled tables serve their transports. */
static void echo_through(const sks_server_ops *ops, const char *address,
                         bool stream)
{
    test_server ts;
    ts_serve(&ts, make_pool_server(ops, address,
                                   stream ? &pool_handler : &dgram_handler, 1,
                                   2, 30.0, 2),
             0.05);
    for (int i = 0; i < 3; i++)
        assert_echo_once(ts.address, ops->socket_type,
                         stream ? "pooled\n" : "pooled");
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.accepted, 3);
    assert_int_equal(st.completed, 3);
    assert_true(st.workers >= 1 && st.workers <= 2);
    ts_stop(&ts);
}

static void test_pool_tables_serve_every_transport(void **state)
{
    (void)state;
    char unix_addr[SKS_ADDRSTRLEN];
    gate_reset();
    echo_through(&sks_pool_tcp_ops, "127.0.0.1:0", true);
    echo_through(&sks_pool_tcp_ops, "[::1]:0", true);
    unix_temp_address(unix_addr, sizeof(unix_addr));
    echo_through(&sks_pool_unix_stream_ops, unix_addr, true);
    unlink(unix_addr + 5);
    echo_through(&sks_pool_udp_ops, "127.0.0.1:0", false);
    unix_temp_address(unix_addr, sizeof(unix_addr));
    echo_through(&sks_pool_unix_dgram_ops, unix_addr, false);
    unlink(unix_addr + 5);
}

/* sks_pool_mixin wraps a user's table: its verify_request override
 * survives, and refused requests never reach a worker. */
static atomic_int verified;

static bool deny_second(sks_server *srv, sks_request *req)
{
    return atomic_fetch_add(&verified, 1) != 1 &&
           sks_tcp_ops.verify_request(srv, req);
}

static void test_pool_mixin_keeps_a_users_verify_request(void **state)
{
    (void)state;
    static sks_server_ops mine, pooled;
    gate_reset();
    atomic_store(&verified, 0);
    mine = sks_tcp_ops;
    mine.verify_request = deny_second;
    assert_int_equal(sks_pool_mixin(&pooled, &mine), 0);
    assert_ptr_equal(pooled.parent, &mine);
    test_server ts;
    ts_serve(&ts, make_pool_server(&pooled, "127.0.0.1:0", &pool_handler, 1,
                                   2, 30.0, 2),
             0.05);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_echo(c, "first\n");
    client_close(c);
    c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_eof(c);
    client_close(c);
    c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_echo(c, "third\n");
    client_close(c);
    assert_true(wait_stat(ts.srv, active, 0, 5000));
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.accepted, 2);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.completed, 2);
    ts_stop(&ts);
}

static void test_set_pool_rejects_bad_sizes(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &sks_pool_tcp_ops, "127.0.0.1:0",
                                     &pool_handler, NULL, SKS_NO_BIND), 0);
    assert_int_equal(sks_server_set_pool(srv, 1, 0, 1.0, 4), -EINVAL);
    assert_int_equal(sks_server_set_pool(srv, 5, 4, 1.0, 4), -EINVAL);
    assert_int_equal(sks_server_set_pool(srv, 1, 4, 0.0, 4), -EINVAL);
    assert_int_equal(sks_server_set_pool(srv, 1, 4, -1.0, 4), -EINVAL);
    assert_int_equal(sks_server_set_pool(srv, 0, 4, 1.0, 0), 0);
    sks_server_free(srv);
}

int main(void)
{
    /* A first thread, so that runtime threads started lazily with it
     * (ThreadSanitizer's background thread) are in every baseline. */
    warm_up_threads();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_bound_never_exceeded_under_500_concurrent_clients),
        cmocka_unit_test(test_pool_grows_to_max_then_idle_workers_leave_down_to_min),
        cmocka_unit_test(test_pool_backpressure_connects_but_replies_only_when_a_slot_frees),
        cmocka_unit_test(test_pool_refuse_sends_busy_line_then_eof),
        cmocka_unit_test(test_pool_close_with_block_on_close_serves_queued_and_running),
        cmocka_unit_test(test_pool_close_without_block_on_close_closes_queued_unserved),
        cmocka_unit_test(test_pool_close_without_block_on_close_races_finishing_workers),
        cmocka_unit_test(test_pool_tables_serve_every_transport),
        cmocka_unit_test(test_pool_mixin_keeps_a_users_verify_request),
        cmocka_unit_test(test_set_pool_rejects_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
