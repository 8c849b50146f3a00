/*
 * test_mixins.c - how the concurrency mixins compose: with a user's
 * overrides in a copy of a predefined table, with a user's own table
 * wrapped by sks_threading_mixin()/sks_forking_mixin(), and with overrides
 * in a copy of the mixin's output; the eight predefined tables; every pair
 * of stacked mixins; and the
 * threading and forking echo examples serving others while a client idles.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Where the hooks ran: counters for this process, a pipe for children       */

static struct {
    ts_sync sync;
    int verifies, refusals;      /* verify_request calls, falses returned */
    int finishes, errors, shutdowns, services, timeouts, closes;
    pthread_t verify_thread;     /* the serving thread, as verify saw it */
    pthread_t finish_threads[8];
    int nfinish_threads;
    pthread_t error_thread;
    bool close_saw_socket;       /* server_close override ran first */
} S = { .sync = TS_SYNC_INITIALIZER };

static void reset_state(void)
{
    pthread_mutex_lock(&S.sync.lock);
    S.verifies = S.refusals = S.finishes = S.errors = S.shutdowns = 0;
    S.services = S.timeouts = S.closes = S.nfinish_threads = 0;
    S.close_saw_socket = false;
    pthread_mutex_unlock(&S.sync.lock);
}

static void bump(int *counter)
{
    sync_add(&S.sync, counter, 1);
}

static bool shutdowns_at_least_3(void *arg)
{
    (void)arg;
    return sync_get(&S.sync, &S.shutdowns) >= 3;
}

/* Forked children report through support.h's report pipe, kind:
 * 'F' finish_request, 'E' handle_error, 'S' shutdown_request. */

/* In a forked child (a request of a forking server)? */
static pid_t test_pid;

static bool in_child(void)
{
    return getpid() != test_pid;
}

/* ------------------------------------------------------------------------ */
/* The user's overrides                                                      */

/* Refuses every second connection (the 2nd, the 4th...). */
static bool my_verify_request(sks_server *srv, sks_request *req)
{
    pthread_mutex_lock(&S.sync.lock);
    int n = ++S.verifies;
    S.verify_thread = pthread_self();
    if (n % 2 == 0)
        S.refusals++;
    pthread_mutex_unlock(&S.sync.lock);
    /* "super", then mine. */
    return sks_base_verify_request(srv, req) && n % 2 == 1;
}

static int my_finish_request(sks_server *srv, sks_request *req)
{
    if (in_child()) {
        report_send('F', 0);
    } else {
        pthread_mutex_lock(&S.sync.lock);
        S.finishes++;
        if (S.nfinish_threads < 8)
            S.finish_threads[S.nfinish_threads++] = pthread_self();
        pthread_mutex_unlock(&S.sync.lock);
    }
    return sks_base_finish_request(srv, req);
}

static void my_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    (void)err;
    if (in_child()) {
        report_send('E', 0);
        return;
    }
    pthread_mutex_lock(&S.sync.lock);
    S.errors++;
    S.error_thread = pthread_self();
    pthread_mutex_unlock(&S.sync.lock);
}

static void my_shutdown_request(sks_server *srv, sks_request *req)
{
    sks_tcp_shutdown_request(srv, req);
    if (in_child())
        report_send('S', 0);
    else
        bump(&S.shutdowns);
}

static void my_service_actions(sks_server *srv)
{
    sks_base_service_actions(srv);
    bump(&S.services);
}

static void my_handle_timeout(sks_server *srv)
{
    sks_base_handle_timeout(srv);
    bump(&S.timeouts);
}

static void my_server_close(sks_server *srv)
{
    pthread_mutex_lock(&S.sync.lock);
    S.closes++;
    S.close_saw_socket = sks_server_fileno(srv) >= 0;
    pthread_mutex_unlock(&S.sync.lock);
    sks_tcp_server_close(srv);
}

/* The user's own TCPServer "subclass", with every hook a mixin leaves to
 * it, and some it wraps, overridden. */
static sks_server_ops my_tcp_table(void)
{
    sks_server_ops ops = sks_tcp_ops;
    ops.name = "MyTCPServer";
    ops.verify_request = my_verify_request;
    ops.finish_request = my_finish_request;
    ops.handle_error = my_handle_error;
    ops.shutdown_request = my_shutdown_request;
    ops.service_actions = my_service_actions;
    ops.handle_timeout = my_handle_timeout;
    ops.server_close = my_server_close;
    return ops;
}

/* ------------------------------------------------------------------------ */
/* Clients                                                                   */

static void expect_echo(const char *address)
{
    assert_echo_once(address, SOCK_STREAM, "hello\n");
}

/* The server closes without answering (refused, or failed).  A refused
 * client sends nothing: closing a socket with unread input resets it. */
static void expect_closed(const char *address, const char *line)
{
    char buf[16];
    int c = client_connect(address);
    assert_true(c >= 0);
    if (line != NULL)
        assert_int_equal(client_send_all(c, line, strlen(line)), 0);
    assert_int_equal(client_recv_all(c, buf, sizeof(buf)), 0);
    client_close(c);
}

/* ------------------------------------------------------------------------ */
/* Threading                                                                 */

/* Copy sks_threading_tcp_ops, override verify_request: both apply. */
static void test_threading_table_copy_keeps_verify_request_override(void **state)
{
    (void)state;
    sks_server_ops ops = sks_threading_tcp_ops;
    ops.verify_request = my_verify_request;
    ops.finish_request = my_finish_request;
    test_server ts;

    reset_state();
    ts_start(&ts, &ops, "127.0.0.1:0", &echo_line_or_fail, NULL, 0.01);
    expect_echo(ts.address);              /* 1st: served */
    expect_closed(ts.address, NULL);      /* 2nd: refused */
    expect_echo(ts.address);              /* 3rd: served */
    ts_stop(&ts);

    assert_int_equal(S.verifies, 3);
    assert_int_equal(S.refusals, 1);
    assert_int_equal(S.finishes, 2); /* no handler for the refused one */
    assert_true(pthread_equal(S.verify_thread, ts.thread));
    for (int i = 0; i < S.nfinish_threads; i++)
        assert_false(pthread_equal(S.finish_threads[i], ts.thread));
}

/*
 * sks_threading_mixin over the user's own table: every override of the
 * user's runs (verify in the serving thread; finish, handle_error and
 * shutdown in request threads; service_actions every turn; server_close
 * first, then the mixin's wait), and the requests run in threads.
 */
static void test_threading_mixin_over_user_table_keeps_every_override(void **state)
{
    (void)state;
    sks_server_ops mine = my_tcp_table();
    sks_server_ops ops;
    test_server ts;

    assert_int_equal(sks_threading_mixin(&ops, &mine), 0);
    assert_ptr_equal(ops.parent, &mine);
    assert_ptr_equal(ops.process_request, sks_threading_process_request);
    assert_ptr_equal(ops.service_actions, sks_threading_service_actions);
    assert_ptr_equal(ops.server_close, sks_threading_server_close);
    assert_ptr_equal(ops.verify_request, my_verify_request);
    assert_ptr_equal(ops.finish_request, my_finish_request);
    assert_ptr_equal(ops.handle_error, my_handle_error);
    assert_ptr_equal(ops.shutdown_request, my_shutdown_request);
    assert_ptr_equal(ops.handle_timeout, my_handle_timeout);

    reset_state();
    ts_start(&ts, &ops, "127.0.0.1:0", &echo_line_or_fail, NULL, 0.01);
    expect_echo(ts.address);              /* 1st: served */
    expect_closed(ts.address, NULL);      /* 2nd: refused */
    expect_closed(ts.address, "fail\n");  /* 3rd: fails in its thread */
    /* Every request has been shut down through the user's hook. */
    assert_true(wait_until(shutdowns_at_least_3, NULL, 5000));
    ts_stop(&ts);

    assert_int_equal(S.verifies, 3);
    assert_int_equal(S.finishes, 2);
    assert_int_equal(S.errors, 1);
    assert_int_equal(S.shutdowns, 3);
    assert_true(S.services > 0);
    assert_int_equal(S.closes, 1);
    assert_true(S.close_saw_socket);
    assert_true(pthread_equal(S.verify_thread, ts.thread));
    assert_false(pthread_equal(S.error_thread, ts.thread));
    for (int i = 0; i < S.nfinish_threads; i++)
        assert_false(pthread_equal(S.finish_threads[i], ts.thread));
}

static int other_errors;

static void other_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    (void)err;
    bump(&other_errors);
}

/* An override made in a copy of the mixin's output applies too: the mixin
 * runs each request through the server's table. */
static void test_override_in_copy_of_mixin_output_applies(void **state)
{
    (void)state;
    sks_server_ops mine = my_tcp_table();
    sks_server_ops wrapped, ops;
    test_server ts;

    assert_int_equal(sks_threading_mixin(&wrapped, &mine), 0);
    ops = wrapped;
    ops.handle_error = other_handle_error;
    reset_state();
    other_errors = 0;
    ts_start(&ts, &ops, "127.0.0.1:0", &echo_line_or_fail, NULL, 0.01);
    expect_closed(ts.address, "fail\n");
    ts_stop(&ts); /* joins the request thread */
    assert_int_equal(other_errors, 1);
    assert_int_equal(S.errors, 0);
    assert_int_equal(S.finishes, 1); /* the user's, from the base table */
}

/* ------------------------------------------------------------------------ */
/* Forking                                                                   */

/* Copy sks_forking_tcp_ops, override verify_request: it runs in the
 * parent, the handler in children, and a refused client gets no child. */
static void test_forking_table_copy_keeps_verify_request_override(void **state)
{
    (void)state;
    sks_server_ops ops = sks_forking_tcp_ops;
    ops.verify_request = my_verify_request;
    ops.finish_request = my_finish_request;
    test_server ts;
    child_report r;

    reset_state();
    reports_open();
    ts_start(&ts, &ops, "127.0.0.1:0", &echo_line_or_fail, NULL, 0.01);
    expect_echo(ts.address);
    expect_closed(ts.address, NULL);
    expect_echo(ts.address);
    ts_stop(&ts);

    assert_int_equal(S.verifies, 3);
    assert_int_equal(S.refusals, 1);
    assert_true(pthread_equal(S.verify_thread, ts.thread)); /* parent */
    for (int i = 0; i < 2; i++) {
        assert_true(report_next(&r, 0));
        assert_int_equal(r.kind, 'F');
        assert_int_not_equal(r.pid, getpid());
    }
    assert_false(report_next(&r, 0)); /* no child for the refused one */
    assert_int_equal(S.finishes, 0);
    assert_int_equal(count_children(), 0);
    reports_close();
}

/*
 * sks_forking_mixin over the user's own table: finish_request,
 * handle_error and shutdown_request overrides run in the child;
 * verify_request, service_actions, handle_timeout and server_close in the
 * parent (the mixin's handle_timeout reaps, then calls the user's).
 */
static void test_forking_mixin_over_user_table_keeps_every_override(void **state)
{
    (void)state;
    sks_server_ops mine = my_tcp_table();
    sks_server_ops ops;
    child_report r;

    assert_int_equal(sks_forking_mixin(&ops, &mine), 0);
    assert_ptr_equal(ops.parent, &mine);
    assert_ptr_equal(ops.process_request, sks_forking_process_request);
    assert_ptr_equal(ops.service_actions, sks_forking_service_actions);
    assert_ptr_equal(ops.handle_timeout, sks_forking_handle_timeout);
    assert_ptr_equal(ops.server_close, sks_forking_server_close);
    assert_ptr_equal(ops.verify_request, my_verify_request);
    assert_ptr_equal(ops.finish_request, my_finish_request);
    assert_ptr_equal(ops.handle_error, my_handle_error);
    assert_ptr_equal(ops.shutdown_request, my_shutdown_request);

    reset_state();
    reports_open();
    sks_server *srv = ts_new(&ops, "127.0.0.1:0", &echo_line_or_fail, NULL,
                             0);
    assert_int_equal(sks_server_set_timeout(srv, 0.05), 0);

    /* Driven by handle_request: served, refused, failed. */
    int c = client_handled(srv, NULL);
    assert_echo(c, "hello\n");
    client_close(c);

    c = client_handled(srv, NULL);
    assert_eof(c);
    client_close(c);

    c = client_handled(srv, "fail\n");
    assert_eof(c);
    client_close(c);

    /* The children's reports, in order for each child: "FS" from the
     * one served, "FES" from the one that failed. */
    pid_t pids[2] = { 0, 0 };
    char seq[2][4] = { "", "" };
    for (int i = 0; i < 5; i++) {
        assert_true(report_next(&r, 5000));
        assert_int_not_equal(r.pid, getpid());
        int k = pids[0] == 0 || pids[0] == r.pid ? 0 : 1;
        pids[k] = r.pid;
        assert_true(strlen(seq[k]) < 3);
        seq[k][strlen(seq[k])] = r.kind;
    }
    assert_int_not_equal(pids[0], pids[1]);
    assert_true((strcmp(seq[0], "FS") == 0 && strcmp(seq[1], "FES") == 0) ||
                (strcmp(seq[0], "FES") == 0 && strcmp(seq[1], "FS") == 0));
    /* In the parent: only the refused request's shutdown, no error. */
    assert_int_equal(S.shutdowns, 1);
    assert_int_equal(S.errors, 0);
    assert_int_equal(S.verifies, 3);

    /* A timeout reaches the user's handle_timeout through the mixin's. */
    assert_int_equal(sks_server_handle_request(srv), -ETIMEDOUT);
    assert_int_equal(S.timeouts, 1);
    sks_server_free(srv);
    assert_int_equal(S.closes, 1);
    assert_true(S.close_saw_socket);
    assert_int_equal(count_children(), 0);
    assert_false(report_next(&r, 0));
    reports_close();
}

/* ------------------------------------------------------------------------ */
/* The predefined tables                                                     */

static void assert_mixin_of(const sks_server_ops *t, const sks_server_ops *base,
                            bool threading)
{
    assert_int_equal(t->version, SKS_OPS_VERSION);
    assert_ptr_equal(t->parent, base);
    assert_int_equal(t->address_family, base->address_family);
    assert_int_equal(t->socket_type, base->socket_type);
    /* The transport's own hooks... */
    assert_ptr_equal(t->server_bind, base->server_bind);
    assert_ptr_equal(t->server_activate, base->server_activate);
    assert_ptr_equal(t->get_request, base->get_request);
    assert_ptr_equal(t->verify_request, base->verify_request);
    assert_ptr_equal(t->finish_request, base->finish_request);
    assert_ptr_equal(t->shutdown_request, base->shutdown_request);
    assert_ptr_equal(t->close_request, base->close_request);
    assert_ptr_equal(t->handle_error, base->handle_error);
    /* ...and the mixin's. */
    if (threading) {
        assert_ptr_equal(t->process_request, sks_threading_process_request);
        assert_ptr_equal(t->service_actions, sks_threading_service_actions);
        assert_ptr_equal(t->server_close, sks_threading_server_close);
        assert_ptr_equal(t->handle_timeout, base->handle_timeout);
    } else {
        assert_ptr_equal(t->process_request, sks_forking_process_request);
        assert_ptr_equal(t->service_actions, sks_forking_service_actions);
        assert_ptr_equal(t->server_close, sks_forking_server_close);
        assert_ptr_equal(t->handle_timeout, sks_forking_handle_timeout);
    }
}

static const struct {
    const sks_server_ops *table, *base;
    const char *name;
    bool threading;
} predefined[] = {
    { &sks_threading_tcp_ops, &sks_tcp_ops, "ThreadingTCPServer", true },
    { &sks_threading_udp_ops, &sks_udp_ops, "ThreadingUDPServer", true },
    { &sks_threading_unix_stream_ops, &sks_unix_stream_ops,
      "ThreadingUnixStreamServer", true },
    { &sks_threading_unix_dgram_ops, &sks_unix_dgram_ops,
      "ThreadingUnixDatagramServer", true },
    { &sks_forking_tcp_ops, &sks_tcp_ops, "ForkingTCPServer", false },
    { &sks_forking_udp_ops, &sks_udp_ops, "ForkingUDPServer", false },
    { &sks_forking_unix_stream_ops, &sks_unix_stream_ops,
      "ForkingUnixStreamServer", false },
    { &sks_forking_unix_dgram_ops, &sks_unix_dgram_ops,
      "ForkingUnixDatagramServer", false },
};

/* Each predefined table is its mixin over its transport, with Python's
 * name; and applying the mixin to the transport gives the same hooks. */
static void test_eight_predefined_tables_are_mixin_over_transport(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(predefined) / sizeof(predefined[0]); i++) {
        const sks_server_ops *t = predefined[i].table;
        assert_string_equal(t->name, predefined[i].name);
        assert_mixin_of(t, predefined[i].base, predefined[i].threading);

        sks_server_ops made;
        if (predefined[i].threading)
            assert_int_equal(sks_threading_mixin(&made, predefined[i].base), 0);
        else
            assert_int_equal(sks_forking_mixin(&made, predefined[i].base), 0);
        assert_mixin_of(&made, predefined[i].base, predefined[i].threading);
    }
}

/* ------------------------------------------------------------------------ */
/* Stacking mixins                                                           */

typedef int (*mixin_fn)(sks_server_ops *out, const sks_server_ops *base);

static const struct {
    const char *name;
    mixin_fn wrap;
    bool loop; /* prefork: runs the loop; the others run requests */
} mixins[] = {
    { "threading", sks_threading_mixin, false },
    { "forking", sks_forking_mixin, false },
    { "pool", sks_pool_mixin, false },
    { "prefork", sks_prefork_mixin, true },
};

#define NMIXINS (sizeof(mixins) / sizeof(mixins[0]))

/*
 * Every ordered pair, each over itself too, applied to sks_tcp_ops: a
 * pair of one model that runs requests and prefork (which runs the loop)
 * serves, in either order, as pre-forked children running that model; any
 * other pair is refused by the outer constructor with -EINVAL.  Each pair
 * that is made is run: it serves a request and shuts down.  Under
 * ThreadSanitizer, which cannot follow a child that starts threads after a
 * fork of a multi-threaded process, the pairs whose children run threads
 * (prefork with threading or pool) are made but not run.
 */
static void test_every_pair_of_stacked_mixins_serves_or_is_refused(void **state)
{
    (void)state;
    for (size_t outer = 0; outer < NMIXINS; outer++) {
        for (size_t inner = 0; inner < NMIXINS; inner++) {
            sks_server_ops in, ops;
            bool composes = mixins[outer].loop != mixins[inner].loop;
            print_message("%s over %s\n", mixins[outer].name,
                          mixins[inner].name);
            assert_int_equal(mixins[inner].wrap(&in, &sks_tcp_ops), 0);
            int rc = mixins[outer].wrap(&ops, &in);
            if (!composes) {
                assert_int_equal(rc, -EINVAL);
                continue;
            }
            assert_int_equal(rc, 0);
            bool forks_only = mixins[outer].wrap == sks_forking_mixin ||
                              mixins[inner].wrap == sks_forking_mixin;
            if (UNDER_TSAN && !forks_only)
                continue;
            sks_server *srv = ts_new(&ops, "127.0.0.1:0", &echo_lines_stream,
                                     NULL, 0);
            assert_int_equal(sks_server_set_prefork(srv, 1, 0, 1.0), 0);
            test_server ts;
            ts_serve(&ts, srv, 0.01);
            expect_echo(ts.address);
            ts_stop(&ts);
        }
    }
}

/* A "subclass" built by hand: a copy of the threading table that names no
 * model and whose parent is the threading table itself.  Its hooks are
 * threading's, found twice along the chain; their super is still the
 * transport (a super that is threading's own table would call itself). */
static void test_hand_built_subclass_of_threading_table_serves(void **state)
{
    (void)state;
    static sks_server_ops sub;
    sub = sks_threading_tcp_ops;
    sub.name = "MyThreadingTCPServer";
    sub.model = NULL;
    sub.parent = &sks_threading_tcp_ops;
    test_server ts;
    ts_start(&ts, &sub, "127.0.0.1:0", &echo_lines_stream, NULL, 0.01);
    expect_echo(ts.address);
    ts_stop(&ts);
}

/* The crash a review found: forking over the predefined threading table
 * recursed through srv->ops->parent until the stack ran out.  Now
 * refused; and a mixin cannot wrap its own output in place. */
static void test_forking_over_threading_table_is_refused(void **state)
{
    (void)state;
    sks_server_ops ops = sks_tcp_ops;
    assert_int_equal(sks_forking_mixin(&ops, &sks_threading_tcp_ops), -EINVAL);
    assert_int_equal(sks_threading_mixin(&ops, &ops), -EINVAL);
    assert_int_equal(sks_threading_mixin(NULL, &sks_tcp_ops), -EINVAL);
    assert_int_equal(sks_threading_mixin(&ops, NULL), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* The examples: an idle client holds up nobody                              */

static test_proc example = TEST_PROC_NONE;

static int stop_example(void **state)
{
    (void)state;
    proc_kill(&example);
    return 0;
}

static void idle_clients_hold_up_nobody(const char *name)
{
    enum { IDLE = 3, ACTIVE = 5 };
    char address[SKS_ADDRSTRLEN];
    int idle[IDLE];

    example_start(&example, name, "127.0.0.1:0", address, sizeof(address));
    /* Connected, one says half a line, none ends a line. */
    for (int i = 0; i < IDLE; i++) {
        idle[i] = client_connect(address);
        assert_true(idle[i] >= 0);
    }
    assert_int_equal(client_send_all(idle[0], "half a li", 9), 0);

    double t0 = now_seconds();
    for (int i = 0; i < ACTIVE; i++) {
        int c = client_connect(address);
        assert_true(c >= 0);
        assert_echo(c, "served while others idle\n");
        client_close(c);
    }
    double took = now_seconds() - t0;
    assert_true(took < 1.0);

    /* The idle ones were being served all along. */
    assert_int_equal(client_send_all(idle[0], "ne\n", 3), 0);
    char buf[32];
    assert_int_equal(client_recv_line(idle[0], buf, sizeof(buf)), 12);
    assert_memory_equal(buf, "half a line\n", 12);
    for (int i = 0; i < IDLE; i++)
        client_close(idle[i]);

    /* Idle again: SIGTERM ends it with status 0 within 1 s. */
    assert_int_equal(kill(example.pid, SIGTERM), 0);
    int status = proc_wait_exit(&example, 5000, &took);
    assert_true(status != -1);
    assert_true(took < 1.0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_threading_example_serves_others_while_clients_idle(void **state)
{
    (void)state;
    idle_clients_hold_up_nobody("echo_threading_server");
}

static void test_forking_example_serves_others_while_clients_idle(void **state)
{
    (void)state;
    idle_clients_hold_up_nobody("echo_forking_server");
}

int main(void)
{
    test_pid = getpid();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threading_table_copy_keeps_verify_request_override),
        cmocka_unit_test(test_threading_mixin_over_user_table_keeps_every_override),
        cmocka_unit_test(test_override_in_copy_of_mixin_output_applies),
        cmocka_unit_test(test_forking_table_copy_keeps_verify_request_override),
        cmocka_unit_test(test_forking_mixin_over_user_table_keeps_every_override),
        cmocka_unit_test(test_eight_predefined_tables_are_mixin_over_transport),
        cmocka_unit_test(test_every_pair_of_stacked_mixins_serves_or_is_refused),
        cmocka_unit_test(test_forking_over_threading_table_is_refused),
        cmocka_unit_test(test_hand_built_subclass_of_threading_table_serves),
        cmocka_unit_test_teardown(test_threading_example_serves_others_while_clients_idle,
                                  stop_example),
        cmocka_unit_test_teardown(test_forking_example_serves_others_while_clients_idle,
                                  stop_example),
    };
    /* TEST_FILTER=pattern runs only the matching tests. */
    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
