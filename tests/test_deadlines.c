/*
 * test_deadlines.c - a connection's deadlines in every model (sync,
 * threading, forking, pool, prefork): request_timeout cuts a client that
 * trickles, idle_timeout cuts a silent one quietly, sks_handler_await_request
 * re-arms them per request, sks_handler_set_deadline replaces them, and a
 * cut is counted in timed_out, reaches handle_error once with -ETIMEDOUT
 * (never for an idle cut), and leaks nothing.
 *
 * handle_error may run in a forked child, so it reports through a pipe
 * every model shares: one int per call.
 */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

static int errors[2] = { -1, -1 }; /* handle_error's pipe */

static void pipe_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    ssize_t w = write(errors[1], &err, sizeof(err));
    (void)w;
}

/* The handle_error calls reported within ms (then none more for a while). */
static int collect_errors(int *out, int cap, int ms)
{
    int n = 0;
    struct pollfd p = { .fd = errors[0], .events = POLLIN };
    while (n < cap && poll(&p, 1, ms) == 1) {
        int e;
        if (read(errors[0], &e, sizeof(e)) != (ssize_t)sizeof(e))
            break;
        out[n++] = e;
    }
    return n;
}

/* Echoes each line; after each, the request has ended. */
static int line_requests_handle(sks_handler *h)
{
    char line[256];
    for (;;) {
        ssize_t n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
        if (n <= 0)
            return (int)n;
        int err = sks_wfile_write(sks_handler_wfile(h), line, (size_t)n);
        if (err == 0)
            err = sks_wfile_flush(sks_handler_wfile(h));
        if (err < 0)
            return err;
        sks_handler_await_request(h);
    }
}

/* Sets its own deadline (0.3 s), then reads until end of input. */
static int set_deadline_handle(sks_handler *h)
{
    char buf[64];
    assert_int_equal(sks_handler_set_deadline(h, 0.3), 0);
    for (;;) {
        ssize_t n = sks_rfile_read(sks_handler_rfile(h), buf, sizeof(buf));
        if (n <= 0)
            return (int)n;
    }
}

static sks_handler_class deadline_class = {
    .version = SKS_HANDLER_VERSION,
    .setup = sks_stream_setup,
    .handle = line_requests_handle,
    .finish = sks_stream_finish,
    .timeout = 5.0,
};

static const struct model {
    const char *name;
    const sks_server_ops *base;
    bool prefork;
} models[] = {
    { "sync", &sks_tcp_ops, false },
    { "threading", &sks_threading_tcp_ops, false },
    { "forking", &sks_forking_tcp_ops, false },
    { "pool", &sks_pool_tcp_ops, false },
    { "prefork", &sks_prefork_tcp_ops, true },
};
#define NMODELS (sizeof(models) / sizeof(models[0]))

static sks_server_ops tables[NMODELS];

static void start_model(test_server *ts, size_t m, const sks_handler_class *cls)
{
    tables[m] = *models[m].base;
    tables[m].handle_error = pipe_handle_error;
    sks_server *srv = ts_new(&tables[m], "127.0.0.1:0", cls, NULL, SKS_NO_BIND);
    if (models[m].prefork)
        assert_int_equal(sks_server_set_prefork(srv, 2, 0, 5.0), 0);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    ts_serve(ts, srv, 0.05);
}

/* Waits (up to 5 s) for end of input on fd; the seconds it took. */
static double seconds_to_eof(int fd)
{
    double t0 = now_seconds();
    char buf[256];
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return now_seconds() - t0;
    }
}

struct timed_out_arg {
    sks_server *srv;
    size_t want;
};

static bool timed_out_reached(void *arg)
{
    struct timed_out_arg *a = arg;
    sks_stats st;
    sks_server_stats(a->srv, &st);
    return st.timed_out >= a->want && st.active == 0;
}

/* Pre-fork counters live in the children: only the others can be read. */
static void assert_timed_out(size_t m, sks_server *srv, size_t want)
{
    if (models[m].prefork)
        return;
    struct timed_out_arg a = { srv, want };
    bool ok = wait_until(timed_out_reached, &a, 3000);
    sks_stats st;
    sks_server_stats(srv, &st);
    if (!ok || st.timed_out != want)
        fail_msg("%s: timed_out %zu, want %zu", models[m].name, st.timed_out,
                 want);
}

/* One connection's cut, in every model: the client stays silent for
 * silent_ms, then trickles a byte every 50 ms (or stays silent); end of
 * input must come between lo and hi seconds after the silence, with
 * handle_error called `errors` times (with -ETIMEDOUT), timed_out 1, and
 * no descriptor left behind. */
struct cut_case {
    const sks_handler_class *cls;
    int silent_ms;
    bool trickle;
    double lo, hi;
    int errors;
};

static void assert_cut_in_every_model(const struct cut_case *k)
{
    for (size_t m = 0; m < NMODELS; m++) {
        test_server ts;
        int fds = count_open_fds();
        start_model(&ts, m, k->cls);
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        if (k->silent_ms > 0)
            sleep_ms(k->silent_ms);
        double t0 = now_seconds();
        while (k->trickle && !readable_within(c, 50) && now_seconds() - t0 < 4.0)
            assert_int_equal(client_send_all(c, "x", 1), 0);
        double took = seconds_to_eof(c) + (now_seconds() - t0);
        if (took < k->lo || took > k->hi)
            fail_msg("%s: cut after %.2f s, want %.1f..%.1f", models[m].name,
                     took, k->lo, k->hi);
        int e[4];
        int n = collect_errors(e, 4, 400);
        if (n != k->errors || (n > 0 && e[0] != -ETIMEDOUT))
            fail_msg("%s: handle_error %d times (first %d), want %d with "
                     "-ETIMEDOUT", models[m].name, n, n > 0 ? e[0] : 0,
                     k->errors);
        assert_timed_out(m, ts.srv, 1);
        client_close(c);
        ts_stop(&ts);
        assert_int_equal(count_open_fds(), fds);
    }
}

/* A byte every 50 ms, never a whole line: the per-operation timeout (5 s)
 * never passes, the request's deadline (0.5 s) does. */
static void test_request_timeout_cuts_a_trickling_client_in_every_model(void **state)
{
    (void)state;
    sks_handler_class cls = deadline_class;
    cls.request_timeout = 0.5;
    assert_cut_in_every_model(&(struct cut_case){
        .cls = &cls, .trickle = true, .lo = 0.4, .hi = 2.0, .errors = 1 });
}

/* With an idle limit, the request's deadline starts with its first byte:
 * idle 0.3 s (within idle_timeout 1 s), then trickling, cut 0.5 s after
 * that byte, as a request. */
static void test_request_deadline_starts_with_the_first_byte_in_every_model(void **state)
{
    (void)state;
    sks_handler_class cls = deadline_class;
    cls.request_timeout = 0.5;
    cls.idle_timeout = 1.0;
    assert_cut_in_every_model(&(struct cut_case){
        .cls = &cls, .silent_ms = 300, .trickle = true, .lo = 0.4,
        .hi = 1.5, .errors = 1 });
}

static void test_idle_timeout_cuts_a_silent_connection_quietly_in_every_model(void **state)
{
    (void)state;
    sks_handler_class cls = deadline_class;
    cls.request_timeout = 5.0;
    cls.idle_timeout = 0.3;
    assert_cut_in_every_model(&(struct cut_case){
        .cls = &cls, .lo = 0.2, .hi = 1.5, .errors = 0 });
}

static void test_await_request_rearms_the_deadline_per_request_in_every_model(void **state)
{
    (void)state;
    sks_handler_class cls = deadline_class;
    cls.request_timeout = 0.4;
    cls.idle_timeout = 0.4;
    for (size_t m = 0; m < NMODELS; m++) {
        test_server ts;
        start_model(&ts, m, &cls);
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        /* Eight requests 0.2 s apart: 1.6 s on one connection, four times
         * request_timeout, each request well inside its own. */
        for (int i = 0; i < 8; i++) {
            assert_echo(c, "ping\n");
            sleep_ms(200);
        }
        /* Two pipelined: the second's deadline starts at once. */
        assert_int_equal(client_send_all(c, "a\nb\n", 4), 0);
        assert_line(c, "a\n");
        assert_line(c, "b\n");
        double took = seconds_to_eof(c);
        if (took < 0.3 || took > 1.5)
            fail_msg("%s: idle cut after %.2f s, want about 0.4",
                     models[m].name, took);
        int e[4];
        if (collect_errors(e, 4, 300) != 0)
            fail_msg("%s: handle_error called (%d)", models[m].name, e[0]);
        assert_timed_out(m, ts.srv, 1);
        client_close(c);
        ts_stop(&ts);
    }
}

static void test_set_deadline_replaces_the_class_deadline_in_every_model(void **state)
{
    (void)state;
    sks_handler_class cls = deadline_class;
    cls.handle = set_deadline_handle;
    cls.idle_timeout = 10.0; /* replaced: the handler's deadline is 0.3 s */
    assert_cut_in_every_model(&(struct cut_case){
        .cls = &cls, .lo = 0.2, .hi = 1.5, .errors = 1 });
}

/* A bounded server of two slots, both held by idle keep-alive clients
 * (one idle longer): returns whether a third client is answered within
 * 1 s, and whether the first has been shed (end of input). */
static void at_bound(const sks_server_ops *ops, bool pool, int policy,
                     bool *third_served, bool *first_shed, bool *second_ok)
{
    sks_handler_class cls = deadline_class;
    cls.idle_timeout = 30.0;
    sks_server_ops t = *ops;
    t.handle_error = pipe_handle_error;
    sks_server *srv = ts_new(&t, "127.0.0.1:0", &cls, NULL, 0);
    if (pool)
        assert_int_equal(sks_server_set_pool(srv, 1, 2, 30.0, 0), 0);
    else
        assert_int_equal(sks_server_set_max_threads(srv, 2), 0);
    assert_int_equal(sks_server_set_overload_policy(srv, policy), 0);
    test_server ts;
    ts_serve(&ts, srv, 0.05);

    int a = client_connect(ts.address), b = client_connect(ts.address);
    assert_true(a >= 0 && b >= 0);
    assert_echo(a, "a\n");
    sleep_ms(50);
    assert_echo(b, "b\n");
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "c\n", 2), 0);
    *third_served = readable_within(c, 1000);
    if (*third_served)
        assert_line(c, "c\n");
    *first_shed = readable_within(a, 200);
    if (*first_shed)
        assert_eof(a);
    assert_int_equal(client_send_all(b, "b2\n", 3), 0);
    *second_ok = readable_within(b, 2000);
    if (*second_ok)
        assert_line(b, "b2\n");
    /* Under backpressure the third is served once the first leaves;
     * read its answer, so that no reply meets a closed socket. */
    client_close(a);
    if (!*third_served) {
        assert_true(readable_within(c, 3000));
        assert_line(c, "c\n");
    }
    client_close(b);
    client_close(c);
    ts_stop(&ts);
    int e[2];
    int n = collect_errors(e, 2, 100);
    if (n != 0)
        fail_msg("%s policy %d: handle_error %d", ops->name, policy, e[0]);
}

static void test_shed_idle_admits_past_idle_keep_alive_connections(void **state)
{
    (void)state;
    static const struct {
        const sks_server_ops *ops;
        bool pool;
    } v[] = { { &sks_threading_tcp_ops, false }, { &sks_pool_tcp_ops, true } };
    for (size_t i = 0; i < 2; i++) {
        bool served, shed, ok;
        at_bound(v[i].ops, v[i].pool, SKS_OVERLOAD_SHED_IDLE, &served, &shed,
                 &ok);
        if (!served || !shed || !ok)
            fail_msg("%s shedding: third served %d, first shed %d, second "
                     "served %d; want 1 1 1", v[i].ops->name, served, shed, ok);
        /* The default, for contrast: the third waits behind both. */
        at_bound(v[i].ops, v[i].pool, SKS_OVERLOAD_BACKPRESSURE, &served,
                 &shed, &ok);
        if (served || shed || !ok)
            fail_msg("%s backpressure: third served %d, first shed %d, "
                     "second served %d; want 0 0 1", v[i].ops->name, served,
                     shed, ok);
    }
}

/* A version-1 class has no deadline members: whatever follows its last
 * member is not read. */
static void test_version_1_class_keeps_no_deadline(void **state)
{
    (void)state;
    sks_handler_class cls = deadline_class;
    cls.version = 1;
    cls.request_timeout = 0.1;
    cls.idle_timeout = 0.1;
    test_server ts;
    start_model(&ts, 1, &cls);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_false(readable_within(c, 400));
    assert_echo(c, "still here\n");
    client_close(c);
    ts_stop(&ts);
    int e[2];
    assert_int_equal(collect_errors(e, 2, 100), 0);
}

static void test_deadline_calls_refuse_bad_arguments(void **state)
{
    (void)state;
    assert_true(fabs(sks_deadline_for_rate(1000, 100, 2) - 12.0) < 1e-9);
    assert_true(isinf(sks_deadline_for_rate(1000, 0, 2)));
    assert_true(isinf(sks_deadline_for_rate(1000, NAN, 2)));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (pipe(errors) != 0 || fcntl(errors[0], F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(errors[1], F_SETFD, FD_CLOEXEC) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_timeout_cuts_a_trickling_client_in_every_model),
        cmocka_unit_test(test_request_deadline_starts_with_the_first_byte_in_every_model),
        cmocka_unit_test(test_idle_timeout_cuts_a_silent_connection_quietly_in_every_model),
        cmocka_unit_test(test_await_request_rearms_the_deadline_per_request_in_every_model),
        cmocka_unit_test(test_set_deadline_replaces_the_class_deadline_in_every_model),
        cmocka_unit_test(test_shed_idle_admits_past_idle_keep_alive_connections),
        cmocka_unit_test(test_version_1_class_keeps_no_deadline),
        cmocka_unit_test(test_deadline_calls_refuse_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
