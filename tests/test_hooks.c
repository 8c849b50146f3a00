/*
 * test_hooks.c - the hook table: which hooks run, in which order, and how
 * errors travel (handle_error, shutdown_request, handle_timeout), with a
 * table whose every hook records its name and then calls sks_tcp_ops'
 * member as "super".
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The call log                                                              */

#define LOG_MAX 128

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *calls[LOG_MAX];
static int ncalls;

/* What the recording hooks and handler do; set before serving. */
static struct {
    bool verify;        /* verify_request's answer */
    int setup_err;      /* setup fails with this after the flavour's setup */
    int process_err;    /* process_request fails with this, without super */
    bool quiet;         /* handle_error does not call super (no stderr) */
    int handle_error_err;
    int handle_error_calls;
    bool handle_error_had_request;
} cfg;

static void rec(const char *name)
{
    pthread_mutex_lock(&log_lock);
    if (ncalls < LOG_MAX)
        calls[ncalls++] = name;
    pthread_mutex_unlock(&log_lock);
}

static int count_of(const char *name)
{
    int n = 0;
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < ncalls; i++)
        n += strcmp(calls[i], name) == 0;
    pthread_mutex_unlock(&log_lock);
    return n;
}

static void log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    ncalls = 0;
    pthread_mutex_unlock(&log_lock);
}

/* The log is exactly `want` (NULL-terminated). */
static void assert_log(const char *const *want)
{
    pthread_mutex_lock(&log_lock);
    int n = 0;
    bool same = true;
    for (; want[n] != NULL; n++)
        if (n >= ncalls || strcmp(calls[n], want[n]) != 0)
            same = false;
    same = same && n == ncalls;
    if (!same) {
        print_error("hook calls:");
        for (int i = 0; i < ncalls; i++)
            print_error(" %s", calls[i]);
        print_error("\nexpected:  ");
        for (int i = 0; want[i] != NULL; i++)
            print_error(" %s", want[i]);
        print_error("\n");
    }
    pthread_mutex_unlock(&log_lock);
    assert_true(same);
}

/*
 * The log of serve_forever is exactly `want`, once its empty turns are
 * left out: serve_forever may try get_request right after a request
 * without polling first (an "eager" turn, which saves a poll under load);
 * when nothing is waiting that try returns -EAGAIN and the turn ends with
 * service_actions and nothing else.  Python only ever calls get_request
 * after select() said a request is waiting, so the empty turns are the one
 * difference allowed; anything else after a get_request that found nothing
 * still fails the comparison.
 */
static void assert_log_of_loop(const char *const *want)
{
    pthread_mutex_lock(&log_lock);
    int kept = 0;
    for (int i = 0; i < ncalls; i++) {
        if (strcmp(calls[i], "get_request:none") == 0 && i + 1 < ncalls &&
            strcmp(calls[i + 1], "service_actions") == 0) {
            i++;
            continue;
        }
        calls[kept++] = calls[i];
    }
    ncalls = kept;
    pthread_mutex_unlock(&log_lock);
    assert_log(want);
}

static int setup(void **state)
{
    (void)state;
    log_reset();
    memset(&cfg, 0, sizeof(cfg));
    cfg.verify = true;
    cfg.quiet = true;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The recording table: each hook logs, then calls TCPServer's member.      */

static int rec_server_bind(sks_server *srv)
{
    rec("server_bind");
    return sks_tcp_ops.server_bind(srv);
}

static int rec_server_activate(sks_server *srv)
{
    rec("server_activate");
    return sks_tcp_ops.server_activate(srv);
}

/* A get_request that found nothing (-EAGAIN) logs itself apart: see
 * assert_log_of_loop. */
static int rec_get_request(sks_server *srv, sks_request **out)
{
    int err = sks_tcp_ops.get_request(srv, out);
    rec(err == 0 ? "get_request" : "get_request:none");
    return err;
}

static bool rec_verify_request(sks_server *srv, sks_request *req)
{
    rec("verify_request");
    return sks_tcp_ops.verify_request(srv, req) && cfg.verify;
}

static int rec_process_request(sks_server *srv, sks_request *req)
{
    rec("process_request");
    if (cfg.process_err != 0)
        return cfg.process_err; /* the request is not shut down */
    return sks_tcp_ops.process_request(srv, req);
}

static int rec_finish_request(sks_server *srv, sks_request *req)
{
    rec("finish_request");
    return sks_tcp_ops.finish_request(srv, req);
}

static void rec_shutdown_request(sks_server *srv, sks_request *req)
{
    rec("shutdown_request");
    sks_tcp_ops.shutdown_request(srv, req);
}

static void rec_close_request(sks_server *srv, sks_request *req)
{
    rec("close_request");
    sks_tcp_ops.close_request(srv, req);
}

static void rec_handle_error(sks_server *srv, sks_request *req, int err)
{
    rec("handle_error");
    pthread_mutex_lock(&log_lock);
    cfg.handle_error_calls++;
    cfg.handle_error_err = err;
    cfg.handle_error_had_request = req != NULL;
    pthread_mutex_unlock(&log_lock);
    if (!cfg.quiet)
        sks_tcp_ops.handle_error(srv, req, err);
}

static void rec_handle_timeout(sks_server *srv)
{
    rec("handle_timeout");
    sks_tcp_ops.handle_timeout(srv);
}

static void rec_service_actions(sks_server *srv)
{
    rec("service_actions");
    sks_tcp_ops.service_actions(srv);
}

static void rec_server_close(sks_server *srv)
{
    rec("server_close");
    sks_tcp_ops.server_close(srv);
}

static sks_server_ops rec_ops;

static void make_rec_ops(void)
{
    rec_ops = sks_tcp_ops;
    rec_ops.name = "RecordingTCPServer";
    rec_ops.server_bind = rec_server_bind;
    rec_ops.server_activate = rec_server_activate;
    rec_ops.get_request = rec_get_request;
    rec_ops.verify_request = rec_verify_request;
    rec_ops.process_request = rec_process_request;
    rec_ops.finish_request = rec_finish_request;
    rec_ops.shutdown_request = rec_shutdown_request;
    rec_ops.close_request = rec_close_request;
    rec_ops.handle_error = rec_handle_error;
    rec_ops.handle_timeout = rec_handle_timeout;
    rec_ops.service_actions = rec_service_actions;
    rec_ops.server_close = rec_server_close;
}

/* ------------------------------------------------------------------------ */
/* The recording handler: echoes one line.  The line says how to end:
 * "fail" makes handle fail with -EPROTO, "both" makes handle fail with
 * -EPROTO and finish with -EIO.                                            */

static char marker; /* the per-instance user pointer's value for "both" */

static int rec_setup(sks_handler *h)
{
    rec("setup");
    int err = sks_stream_setup(h);
    if (err != 0)
        return err;
    return cfg.setup_err;
}

static int rec_handle(sks_handler *h)
{
    char line[64];
    rec("handle");
    ssize_t n = sks_rfile_readline(sks_handler_rfile(h), line,
                                   sizeof(line) - 1);
    if (n < 0)
        return (int)n;
    if (sks_wfile_write(sks_handler_wfile(h), line, (size_t)n) != n)
        return SKS_EHANDLER;
    line[n] = '\0';
    if (strcmp(line, "both\n") == 0)
        sks_handler_set_user(h, &marker);
    if (strcmp(line, "fail\n") == 0 || strcmp(line, "both\n") == 0)
        return -EPROTO;
    return 0;
}

static int rec_finish(sks_handler *h)
{
    rec("finish");
    int err = sks_stream_finish(h);
    if (err == 0 && sks_handler_get_user(h) == &marker)
        err = -EIO;
    return err;
}

static const sks_handler_class rec_handler = {
    .name = "RecordingHandler",
    .setup = rec_setup,
    .handle = rec_handle,
    .finish = rec_finish,
};

/* A recording server on 127.0.0.1:0, its creation calls dropped from the
 * log; *addr gets its address. */
static sks_server *rec_server(char *addr, size_t cap)
{
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &rec_ops, "127.0.0.1:0",
                                     &rec_handler, NULL, 0), 0);
    assert_true(sks_addr_format(sks_server_address(srv), addr, cap) > 0);
    log_reset();
    return srv;
}

/* Sends line, expects it back and then end of input. */
static void assert_echo_then_eof(int c, const char *line)
{
    char buf[64];
    size_t n = strlen(line);
    assert_int_equal(client_send_all(c, line, n), 0);
    assert_int_equal(client_recv_all(c, buf, sizeof(buf)), (ssize_t)n);
    assert_memory_equal(buf, line, n);
}

static bool service_actions_ran(void *arg)
{
    return count_of("service_actions") >= *(int *)arg;
}

/* A client of a serving recording server: line echoed, then end of input;
 * then waits for the loop's turn to end (the `turns`-th service_actions). */
static void echo_in_turn(const char *addr, const char *line, int turns)
{
    int c = client_connect(addr);
    assert_true(c >= 0);
    assert_echo_then_eof(c, line);
    client_close(c);
    assert_true(wait_until(service_actions_ran, &turns, 5000));
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void test_creation_binds_activates_and_free_closes_once(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &rec_ops, "127.0.0.1:0",
                                     &rec_handler, NULL, 0), 0);
    static const char *const created[] = { "server_bind", "server_activate",
                                           NULL };
    assert_log(created);
    sks_server_close(srv);
    sks_server_close(srv); /* a no-op */
    sks_server_free(srv);  /* closed already: no second server_close */
    static const char *const closed[] = { "server_bind", "server_activate",
                                          "server_close", NULL };
    assert_log(closed);
}

static void test_hook_order_of_a_request_served_by_serve_forever(void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    test_server ts;
    /* A long poll interval: service_actions runs once per request only. */
    ts_serve(&ts, rec_server(addr, sizeof(addr)), 10.0);
    echo_in_turn(addr, "ping\n", 1);
    ts_stop(&ts);

    static const char *const want[] = {
        "get_request", "verify_request", "process_request", "finish_request",
        "setup", "handle", "finish", "shutdown_request", "close_request",
        "service_actions", "server_close", NULL,
    };
    assert_log_of_loop(want);
}

static void test_hook_order_of_a_request_served_by_handle_request(void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    sks_server *srv = rec_server(addr, sizeof(addr));
    int c = client_handled(srv, "ping\n");

    static const char *const want[] = {
        "get_request", "verify_request", "process_request", "finish_request",
        "setup", "handle", "finish", "shutdown_request", "close_request",
        NULL,
    };
    assert_log(want);
    char buf[16];
    assert_int_equal(client_recv_all(c, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "ping\n", 5);
    client_close(c);
    sks_server_free(srv);
}

/* bpo-26309 */
static void test_verify_request_false_shuts_down_once_without_handler(
    void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    sks_server *srv = rec_server(addr, sizeof(addr));
    cfg.verify = false;
    int c = client_handled(srv, NULL);

    static const char *const want[] = { "get_request", "verify_request",
                                        "shutdown_request", "close_request",
                                        NULL };
    assert_log(want);
    assert_int_equal(count_of("shutdown_request"), 1);
    assert_eof(c);
    client_close(c);
    sks_server_free(srv);
}

static void test_handler_error_is_reported_once_and_server_keeps_serving(
    void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    test_server ts;
    ts_serve(&ts, rec_server(addr, sizeof(addr)), 10.0);
    echo_in_turn(addr, "fail\n", 1);
    /* The next client is served normally. */
    echo_in_turn(addr, "ok\n", 2);
    ts_stop(&ts);

    static const char *const want[] = {
        "get_request", "verify_request", "process_request", "finish_request",
        "setup", "handle", "finish", "handle_error", "shutdown_request",
        "close_request", "service_actions",
        "get_request", "verify_request", "process_request", "finish_request",
        "setup", "handle", "finish", "shutdown_request", "close_request",
        "service_actions", "server_close", NULL,
    };
    assert_log_of_loop(want);
    assert_int_equal(cfg.handle_error_calls, 1);
    assert_int_equal(cfg.handle_error_err, -EPROTO);
    assert_true(cfg.handle_error_had_request);
}

static void test_finish_error_is_reported_rather_than_handle_error(
    void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    sks_server *srv = rec_server(addr, sizeof(addr));
    int c = client_handled(srv, "both\n");
    assert_int_equal(cfg.handle_error_calls, 1);
    assert_int_equal(cfg.handle_error_err, -EIO);
    assert_int_equal(count_of("shutdown_request"), 1);
    client_close(c);
    sks_server_free(srv);
}

static void test_setup_failure_runs_neither_handle_nor_finish(void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    sks_server *srv = rec_server(addr, sizeof(addr));
    cfg.setup_err = -EACCES;
    int c = client_handled(srv, NULL);

    static const char *const want[] = {
        "get_request", "verify_request", "process_request", "finish_request",
        "setup", "handle_error", "shutdown_request", "close_request", NULL,
    };
    assert_log(want);
    assert_int_equal(cfg.handle_error_calls, 1);
    assert_int_equal(cfg.handle_error_err, -EACCES);
    assert_eof(c);
    client_close(c);
    sks_server_free(srv);
}

static void test_process_request_error_is_reported_then_shut_down(
    void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    sks_server *srv = rec_server(addr, sizeof(addr));
    cfg.process_err = -EAGAIN;
    int c = client_handled(srv, NULL);

    static const char *const want[] = {
        "get_request", "verify_request", "process_request", "handle_error",
        "shutdown_request", "close_request", NULL,
    };
    assert_log(want);
    assert_int_equal(cfg.handle_error_err, -EAGAIN);
    assert_eof(c);
    client_close(c);
    sks_server_free(srv);
}

static void test_handle_request_timeout_calls_handle_timeout(void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    sks_server *srv = rec_server(addr, sizeof(addr));
    assert_int_equal(sks_server_set_timeout(srv, 0.05), 0);
    assert_true(sks_server_timeout(srv) == 0.05);

    double t0 = now_seconds();
    assert_int_equal(sks_server_handle_request(srv), -ETIMEDOUT);
    double took = now_seconds() - t0;
    static const char *const want[] = { "handle_timeout", NULL };
    assert_log(want);
    if (took < 0.045 || took > 1.0)
        fail_msg("handle_request waited %.3f s for a 0.05 s timeout", took);

    /* With a client waiting, the same call serves it and no timeout runs. */
    log_reset();
    int c = client_handled(srv, "x\n");
    assert_int_equal(count_of("handle_timeout"), 0);
    assert_int_equal(count_of("close_request"), 1);
    client_close(c);

    assert_int_equal(sks_server_set_timeout(srv, 0.0 / 0.0), -EINVAL);
    assert_true(sks_server_timeout(srv) == 0.05);

    /* No timeout (negative): the default. */
    assert_int_equal(sks_server_set_timeout(srv, -3), 0);
    assert_true(sks_server_timeout(srv) < 0);
    sks_server_free(srv);
}

static void test_service_actions_runs_every_poll_interval(void **state)
{
    (void)state;
    char addr[SKS_ADDRSTRLEN];
    test_server ts;
    ts_serve(&ts, rec_server(addr, sizeof(addr)), 0.01);
    int five = 5;
    /* Five turns of 10 ms, with no request at all. */
    assert_true(wait_until(service_actions_ran, &five, 5000));
    ts_stop(&ts);
    assert_int_equal(count_of("get_request") + count_of("get_request:none"),
                     0);
}

/* ------------------------------------------------------------------------ */
/* The default handle_error's output                                         */

static int fail_reset_handle(sks_handler *h)
{
    (void)h;
    return -ECONNRESET;
}

static const sks_handler_class fail_reset = {
    .setup = sks_stream_setup,
    .handle = fail_reset_handle,
    .finish = sks_stream_finish,
};

/* Runs fn(arg) with stderr going to a temporary file; returns what was
 * written (malloc'd, NUL-terminated). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char path[] = "/tmp/sks-stderr-XXXXXX";
    int tmp = mkstemp(path);
    assert_true(tmp >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(tmp, 2), 2);
    fn(arg);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);

    off_t size = lseek(tmp, 0, SEEK_END);
    assert_true(size >= 0 && size < 65536);
    char *out = malloc((size_t)size + 1);
    assert_non_null(out);
    assert_int_equal(pread(tmp, out, (size_t)size, 0), size);
    out[size] = '\0';
    close(tmp);
    return out;
}

static void handle_one(void *srv)
{
    assert_int_equal(sks_server_handle_request(srv), 0);
}

static void report_without_request(void *srv)
{
    sks_server_handle_error(srv, NULL, SKS_EHANDLER);
}

static void test_default_handle_error_prints_the_python_block(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    char addr[SKS_ADDRSTRLEN], want[512];
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0",
                                     &fail_reset, NULL, 0), 0);
    sks_addr_format(sks_server_address(srv), addr, sizeof(addr));
    int c = client_connect(addr);
    assert_true(c >= 0);
    sks_addr me;
    me.len = sizeof(me.u.ss);
    assert_int_equal(getsockname(c, &me.u.sa, &me.len), 0);

    char *got = capture_stderr(handle_one, srv);
    snprintf(want, sizeof(want),
             "----------------------------------------\n"
             "Exception occurred during processing of request from "
             "127.0.0.1:%d\n"
             "Error: Connection reset by peer (ECONNRESET)\n"
             "----------------------------------------\n",
             ntohs(me.u.in.sin_port));
    assert_string_equal(got, want);
    free(got);

    got = capture_stderr(report_without_request, srv);
    assert_string_equal(got,
                        "----------------------------------------\n"
                        "Exception occurred during processing of request "
                        "from unknown\n"
                        "Error: request handler failed (SKS_EHANDLER)\n"
                        "----------------------------------------\n");
    free(got);
    client_close(c);
    sks_server_free(srv);
}

/* ------------------------------------------------------------------------ */
/* The handler instance                                                      */

static struct {
    bool user_null_at_setup, files_null_before_flavour, files_after_flavour;
    bool server_ok, request_ok, fd_ok;
    void *user_in_handle, *user_in_finish;
} seen;

static char instance_state;

static int fields_setup(sks_handler *h)
{
    seen.user_null_at_setup = sks_handler_get_user(h) == NULL;
    seen.files_null_before_flavour =
        sks_handler_rfile(h) == NULL && sks_handler_wfile(h) == NULL;
    int err = sks_stream_setup(h);
    seen.files_after_flavour =
        sks_handler_rfile(h) != NULL && sks_handler_wfile(h) != NULL;
    sks_handler_set_user(h, &instance_state);
    return err;
}

static int fields_handle(sks_handler *h)
{
    seen.server_ok = sks_server_user(sks_handler_server(h)) == &seen;
    seen.request_ok = sks_handler_request(h) != NULL;
    seen.fd_ok = sks_request_fd(sks_handler_request(h)) >= 0 &&
                 sks_request_packet(sks_handler_request(h), NULL) == NULL;
    seen.user_in_handle = sks_handler_get_user(h);
    return 0;
}

static int fields_finish(sks_handler *h)
{
    seen.user_in_finish = sks_handler_get_user(h);
    return sks_stream_finish(h);
}

static const sks_handler_class fields = {
    .setup = fields_setup,
    .handle = fields_handle,
    .finish = fields_finish,
};

static void test_handler_instance_fields_and_user_state(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    char addr[SKS_ADDRSTRLEN];
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0",
                                     &fields, &seen, 0), 0);
    sks_addr_format(sks_server_address(srv), addr, sizeof(addr));
    /* Twice: the second instance starts with a NULL user pointer again. */
    for (int i = 0; i < 2; i++) {
        int c = client_connect(addr);
        assert_true(c >= 0);
        assert_int_equal(sks_server_handle_request(srv), 0);
        client_close(c);
        assert_true(seen.user_null_at_setup);
        assert_true(seen.files_null_before_flavour);
        assert_true(seen.files_after_flavour);
        assert_true(seen.server_ok);
        assert_true(seen.request_ok);
        assert_true(seen.fd_ok);
        assert_ptr_equal(seen.user_in_handle, &instance_state);
        assert_ptr_equal(seen.user_in_finish, &instance_state);
        memset(&seen, 0, sizeof(seen));
    }
    sks_server_free(srv);
}

int main(void)
{
    make_rec_ops();
#define T(name) cmocka_unit_test_setup(name, setup)
    const struct CMUnitTest tests[] = {
        T(test_creation_binds_activates_and_free_closes_once),
        T(test_hook_order_of_a_request_served_by_serve_forever),
        T(test_hook_order_of_a_request_served_by_handle_request),
        T(test_verify_request_false_shuts_down_once_without_handler),
        T(test_handler_error_is_reported_once_and_server_keeps_serving),
        T(test_finish_error_is_reported_rather_than_handle_error),
        T(test_setup_failure_runs_neither_handle_nor_finish),
        T(test_process_request_error_is_reported_then_shut_down),
        T(test_handle_request_timeout_calls_handle_timeout),
        T(test_service_actions_runs_every_poll_interval),
        T(test_default_handle_error_prints_the_python_block),
        T(test_handler_instance_fields_and_user_state),
    };
#undef T
    alarm(60); /* a hung test fails the run instead of blocking it */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
