/*
 * test_tables.c - tables a user builds: optional members left NULL run the
 * base behaviour, required ones are refused, versions are read (0 and 1
 * accepted, a future one refused); the same for handler classes; and the
 * models a table names hold their bounds from creation on.
 */
#define _GNU_SOURCE
#include "support.h"
#include "../src/internal.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Server tables                                                             */

/* Where a hook lives in sks_server_ops. */
#define MEMBER(m) offsetof(sks_server_ops, m)

static const size_t optional_members[] = {
    MEMBER(verify_request), MEMBER(process_request), MEMBER(finish_request),
    MEMBER(shutdown_request), MEMBER(handle_error), MEMBER(handle_timeout),
    MEMBER(service_actions), MEMBER(refuse_request), MEMBER(serve_forever),
};

static const size_t required_members[] = {
    MEMBER(server_bind), MEMBER(server_activate), MEMBER(get_request),
    MEMBER(close_request), MEMBER(server_close),
};

/* Sets the function pointer at `offset` in *ops to NULL. */
static void clear_member(sks_server_ops *ops, size_t offset)
{
    void (*none)(void) = NULL;
    memcpy((char *)ops + offset, &none, sizeof(none));
}

/* Each optional member left NULL: the server serves with the base
 * behaviour, and handle_request's timeout runs handle_timeout's. */
static void test_null_optional_members_run_base_behaviour(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(optional_members) / sizeof(*optional_members);
         i++) {
        sks_server_ops ops = sks_threading_tcp_ops;
        test_server ts;
        clear_member(&ops, optional_members[i]);
        ts_start(&ts, &ops, "127.0.0.1:0", &echo_lines_stream, NULL, 0.01);
        assert_echo_once(ts.address, SOCK_STREAM, "hello\n");
        ts_stop(&ts);

        sks_server *srv = ts_new(&ops, "127.0.0.1:0", &echo_lines_stream,
                                 NULL, 0);
        assert_int_equal(sks_server_set_timeout(srv, 0.01), 0);
        assert_int_equal(sks_server_handle_request(srv), -ETIMEDOUT);
        sks_server_free(srv);
    }
}

/* Holds its connection until the client sends a line. */
static int hold_until_line(sks_handler *h)
{
    char line[16];
    return (int)sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
}

static const sks_handler_class holder = {
    .setup = sks_stream_setup,
    .handle = hold_until_line,
    .finish = sks_stream_finish,
};

/* refuse_request left NULL: a request refused at the bound is closed
 * (it used to be called through NULL). */
static void test_null_refuse_request_refuses_at_the_bound(void **state)
{
    (void)state;
    sks_server_ops ops = sks_threading_tcp_ops;
    ops.refuse_request = NULL;
    sks_server *srv = ts_new(&ops, "127.0.0.1:0", &holder, NULL, 0);
    assert_int_equal(sks_server_set_max_connections(srv, 1), 0);
    assert_int_equal(sks_server_set_overload_policy(srv, SKS_OVERLOAD_REFUSE),
                     0);
    test_server ts;
    ts_serve(&ts, srv, 0.01);

    int held = client_connect(ts.address);
    assert_true(held >= 0);
    assert_true(wait_stat(srv, active, 1, 5000));
    int refused = client_connect(ts.address);
    assert_true(refused >= 0);
    assert_eof(refused);
    client_close(refused);
    assert_true(wait_stat(srv, refused, 1, 5000));
    assert_int_equal(client_send_all(held, "x\n", 2), 0);
    assert_true(wait_stat(srv, completed, 1, 5000));
    client_close(held);
    ts_stop(&ts);
}

static void test_null_required_member_is_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(required_members) / sizeof(*required_members);
         i++) {
        sks_server_ops ops = sks_tcp_ops;
        sks_server *srv = (sks_server *)&ops; /* must be reset to NULL */
        clear_member(&ops, required_members[i]);
        assert_int_equal(sks_server_new(&srv, &ops, "127.0.0.1:0",
                                        &echo_lines_stream, NULL, 0),
                         -EINVAL);
        assert_null(srv);
    }
    /* Inside a mixin's wrapped table too: its super is called. */
    sks_server_ops mine = sks_tcp_ops, ops;
    mine.server_close = NULL;
    assert_int_equal(sks_threading_mixin(&ops, &mine), 0);
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &ops, "127.0.0.1:0",
                                    &echo_lines_stream, NULL, 0),
                     -EINVAL);
    assert_null(srv);
}

static void test_future_table_version_is_refused(void **state)
{
    (void)state;
    sks_server_ops ops = sks_tcp_ops, wrapped;
    ops.version = SKS_OPS_VERSION + 1;
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &ops, "127.0.0.1:0",
                                    &echo_lines_stream, NULL, 0),
                     -EINVAL);
    assert_null(srv);
    assert_int_equal(sks_threading_mixin(&wrapped, &ops), -EINVAL);
}

/* Version 0 is read as version 1, and a version 1 table is read only as
 * far as version 1 goes: whatever lies where `model` would be is never
 * read (a table built against the older header is shorter), and the model
 * comes from its hooks. */
static void test_version_0_and_1_tables_serve(void **state)
{
    (void)state;
    for (unsigned v = 0; v <= 1; v++) {
        sks_server_ops ops = sks_pool_tcp_ops;
        ops.version = v;
        memset(&ops.model, 0xa5, sizeof(ops.model)); /* not a pointer */
        test_server ts;
        ts_start(&ts, &ops, "127.0.0.1:0", &echo_lines_stream, NULL, 0.01);
        assert_echo_once(ts.address, SOCK_STREAM, "hello\n");
        sks_stats st;
        sks_server_stats(ts.srv, &st);
        assert_true(st.workers > 0); /* a pool server after all */
        ts_stop(&ts);
    }
}

/* What the server calls is its own filled copy; sks_server_ops_of still
 * gives the table passed. */
static void test_ops_of_is_the_table_passed(void **state)
{
    (void)state;
    sks_server_ops ops = sks_tcp_ops;
    ops.verify_request = NULL;
    sks_server *srv = ts_new(&ops, "127.0.0.1:0", &echo_lines_stream, NULL,
                             SKS_NO_BIND);
    assert_ptr_equal(sks_server_ops_of(srv), &ops);
    sks_server_free(srv);
}

/* ------------------------------------------------------------------------ */
/* Handler classes                                                           */

static void test_handler_class_null_members_and_versions(void **state)
{
    (void)state;
    /* Nothing at all: each request completes, no reply. */
    for (unsigned v = 0; v <= SKS_HANDLER_VERSION; v++) {
        sks_handler_class empty = { .version = v };
        test_server ts;
        ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &empty, NULL, 0.01);
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_eof(c);
        client_close(c);
        assert_true(wait_stat(ts.srv, completed, 1, 5000));
        ts_stop(&ts);
    }
    sks_handler_class future = echo_lines_stream;
    future.version = SKS_HANDLER_VERSION + 1;
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0",
                                    &future, NULL, 0),
                     -EINVAL);
    assert_null(srv);
}

/* ------------------------------------------------------------------------ */
/* The handler's return value                                                */

/* Answers with a write and returns what sks_wfile_write returned. */
static int answer_with_count(sks_handler *h)
{
    return (int)sks_wfile_write(sks_handler_wfile(h), "ok\n", 3);
}

static const sks_handler_class counting = {
    .setup = sks_stream_setup,
    .handle = answer_with_count,
    .finish = sks_stream_finish,
};

static void test_positive_handler_return_is_success(void **state)
{
    (void)state;
    probe_counts pr = { 0 };
    sks_server_ops ops = sks_tcp_ops;
    ops.handle_error = probe_handle_error;
    test_server ts;
    ts_start(&ts, &ops, "127.0.0.1:0", &counting, &pr, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_line(c, "ok\n");
    client_close(c);
    assert_true(wait_stat(ts.srv, completed, 1, 5000));
    sks_stats st;
    sks_server_stats(ts.srv, &st);
    assert_int_equal(st.failed, 0);
    assert_int_equal(atomic_load(&pr.errors), 0);
    ts_stop(&ts);
}

/* ------------------------------------------------------------------------ */
/* Models hold their bounds from creation                                    */

static void test_model_bound_holds_before_first_request(void **state)
{
    (void)state;
    static const struct {
        const sks_server_ops *ops;
        size_t bound;
    } cases[] = {
        { &sks_tcp_ops, 0 },
        { &sks_threading_tcp_ops, 1024 },
        { &sks_forking_tcp_ops, 40 },
        { &sks_pool_tcp_ops, 64 + 64 },
        { &sks_prefork_tcp_ops, 0 },
        { &sks_prefork_threading_tcp_ops, 1024 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        sks_server *srv = ts_new(cases[i].ops, "127.0.0.1:0",
                                 &echo_lines_stream, NULL, SKS_NO_BIND);
        assert_int_equal(sks__models_limit(srv), cases[i].bound);
        sks_server_free(srv);
    }
    /* And the model's setters change it before any request. */
    sks_server *srv = ts_new(&sks_threading_tcp_ops, "127.0.0.1:0",
                             &echo_lines_stream, NULL, SKS_NO_BIND);
    assert_int_equal(sks_server_set_max_threads(srv, 3), 0);
    assert_int_equal(sks__models_limit(srv), 3);
    sks_server_free(srv);
    srv = ts_new(&sks_pool_tcp_ops, "127.0.0.1:0", &echo_lines_stream, NULL,
                 SKS_NO_BIND);
    assert_int_equal(sks_server_set_pool(srv, 1, 2, 1.0, 5), 0);
    assert_int_equal(sks__models_limit(srv), 7);
    sks_stats st;
    sks_server_stats(srv, &st);
    assert_int_equal(st.workers, 0);
    assert_int_equal(st.queued, 0);
    sks_server_free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_optional_members_run_base_behaviour),
        cmocka_unit_test(test_null_refuse_request_refuses_at_the_bound),
        cmocka_unit_test(test_null_required_member_is_refused),
        cmocka_unit_test(test_future_table_version_is_refused),
        cmocka_unit_test(test_version_0_and_1_tables_serve),
        cmocka_unit_test(test_ops_of_is_the_table_passed),
        cmocka_unit_test(test_handler_class_null_members_and_versions),
        cmocka_unit_test(test_positive_handler_return_is_success),
        cmocka_unit_test(test_model_bound_holds_before_first_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
