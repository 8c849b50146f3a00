/*
 * test_lifecycle.c - serve_forever, shutdown and close: the server's life
 * from creation to release.
 */
#include "support.h"

#include <unistd.h>

static int echo_handle(sks_handler *h)
{
    char line[256];
    ssize_t n;
    while ((n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line))) > 0)
        if (sks_wfile_write(sks_handler_wfile(h), line, (size_t)n) < 0)
            return SKS_EHANDLER;
    return (int)n;
}

static const sks_handler_class echo = {
    .setup = sks_stream_setup,
    .handle = echo_handle,
    .finish = sks_stream_finish,
};

static void test_echo_round_trips_and_close_releases_fds(void **state)
{
    (void)state;
    int fds = count_open_fds();
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &echo, NULL, 0.01);
    for (int i = 0; i < 3; i++) {
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_echo(c, "hello world\n");
        client_close(c);
    }
    ts_stop(&ts);
    assert_int_equal(count_open_fds(), fds);
}

static void test_shutdown_wakes_loop_at_once(void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &echo, NULL, 10.0);
    sleep_ms(50); /* let the loop enter its 10 s wait */
    double t0 = now_seconds();
    sks_server_shutdown(ts.srv);
    double took = now_seconds() - t0;
    pthread_join(ts.thread, NULL);
    sks_server_free(ts.srv);
    assert_true(took < 0.1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_round_trips_and_close_releases_fds),
        cmocka_unit_test(test_shutdown_wakes_loop_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
