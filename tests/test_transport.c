/*
 * test_transport.c - the transport seam under rfile and wfile
 * (sks_transport, sks_server_set_transport, sks_conn_*), with a toy
 * transport and no TLS library: where and when start runs, that bytes go
 * through the table both ways, the start's own deadline, a failed start,
 * the order against the PROXY header, and that shutdown and close come
 * once each.
 */
#include "support.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * The toy: start reads a 4-byte greeting ("HI!\n" accepts, anything else
 * is refused with -EPROTO) with the seam's own calls; recv upper-cases
 * what the plain transport read; send is the plain one; shutdown says
 * "BYE\n"; close counts.
 */
static atomic_int starts, shutdowns, closes;

static int toy_start(sks_conn *c, void *arg, void **state)
{
    char hello[4];
    size_t got = 0;
    atomic_fetch_add(&starts, 1);
    while (got < sizeof(hello)) {
        ssize_t r = sks_conn_recv_once(c, hello + got, sizeof(hello) - got);
        if (r == -EAGAIN) {
            int err = sks_conn_wait(c, POLLIN);
            if (err != 0)
                return err;
            continue;
        }
        if (r <= 0)
            return r == 0 ? -ECONNRESET : (int)r;
        got += (size_t)r;
    }
    if (memcmp(hello, "HI!\n", 4) != 0)
        return -EPROTO;
    *state = arg;
    return 0;
}

static ssize_t toy_recv(sks_conn *c, void *buf, size_t n)
{
    ssize_t r = sks_plain_transport.recv(c, buf, n);
    for (ssize_t i = 0; i < r; i++)
        ((char *)buf)[i] = (char)toupper(((unsigned char *)buf)[i]);
    return r;
}

static ssize_t toy_send(sks_conn *c, const void *buf, size_t n)
{
    return sks_plain_transport.send(c, buf, n);
}

static void toy_shutdown(sks_conn *c)
{
    atomic_fetch_add(&shutdowns, 1);
    (void)sks_plain_transport.send(c, "BYE\n", 4);
}

static void toy_close(sks_conn *c)
{
    assert_ptr_equal(sks_conn_state(c), &starts);
    atomic_fetch_add(&closes, 1);
}

static const sks_transport toy = {
    .version = SKS_TRANSPORT_VERSION,
    .name = "toy",
    .start = toy_start,
    .recv = toy_recv,
    .send = toy_send,
    .shutdown = toy_shutdown,
    .close = toy_close,
};

/* The transport a handler sees, reported as its first line. */
static int report_then_echo(sks_handler *h)
{
    sks_conn *c = sks_handler_conn(h);
    const char *name = c != NULL ? sks_conn_transport(c)->name : "none";
    sks_wfile_write(sks_handler_wfile(h), name, strlen(name));
    sks_wfile_write(sks_handler_wfile(h), "\n", 1);
    return echo_lines_handle(h);
}

static const sks_handler_class toy_echo = {
    .version = SKS_HANDLER_VERSION,
    .setup = sks_stream_setup,
    .handle = report_then_echo,
    .finish = sks_stream_finish,
};

struct fixture {
    probe_counts probe;          /* first: probe_handle_error's */
    test_server ts;
    sks_server_ops ops;
};

static void serve(struct fixture *f, const sks_server_ops *ops,
                  double start_timeout, unsigned proxy)
{
    memset(f, 0, sizeof(*f));
    atomic_store(&starts, 0);
    atomic_store(&shutdowns, 0);
    atomic_store(&closes, 0);
    f->ops = *ops;
    f->ops.handle_error = probe_handle_error;
    sks_server *srv = ts_new(&f->ops, "127.0.0.1:0", &toy_echo, f, 0);
    assert_int_equal(sks_server_set_transport(srv, &toy, &starts, start_timeout), 0);
    if (proxy)
        assert_int_equal(sks_server_set_proxy_protocol(srv, proxy), 0);
    ts_serve(&f->ts, srv, 0.05);
}

static bool request_ended(void *arg)
{
    struct fixture *f = arg;
    sks_stats st;
    sks_server_stats(f->ts.srv, &st);
    return st.completed + st.failed + st.timed_out >= 1 &&
           sks_server_active_requests(f->ts.srv) == 0;
}

static void assert_bytes_pass_through(const sks_server_ops *ops)
{
    struct fixture f;
    serve(&f, ops, 5, 0);
    int fd = client_connect(f.ts.address);
    assert_true(fd >= 0);
    /* The greeting in two pieces: start waits through the seam. */
    assert_int_equal(client_send_all(fd, "HI", 2), 0);
    sleep_ms(50);
    assert_int_equal(client_send_all(fd, "!\nhello\n", 8), 0);
    assert_line(fd, "toy\n");
    assert_line(fd, "HELLO\n");
    shutdown(fd, SHUT_WR);
    assert_line(fd, "BYE\n");
    assert_eof(fd);
    client_close(fd);
    assert_true(wait_until(request_ended, &f, 5000));
    ts_stop(&f.ts);
    assert_int_equal(atomic_load(&starts), 1);
    assert_int_equal(atomic_load(&shutdowns), 1);
    assert_int_equal(atomic_load(&closes), 1);
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static void test_bytes_go_through_the_transport_threading(void **state)
{
    (void)state;
    assert_bytes_pass_through(&sks_threading_tcp_ops);
}

static void test_bytes_go_through_the_transport_fiber(void **state)
{
    (void)state;
    assert_bytes_pass_through(&sks_fiber_tcp_ops);
}

static void test_bytes_go_through_the_transport_sync(void **state)
{
    (void)state;
    assert_bytes_pass_through(&sks_tcp_ops);
}

static void assert_silent_start_cut(const sks_server_ops *ops)
{
    struct fixture f;
    serve(&f, ops, 0.2, 0);
    int fd = client_connect(f.ts.address);
    assert_true(fd >= 0);
    double t0 = now_seconds();
    assert_true(readable_within(fd, 3000));
    assert_eof(fd);
    double took = now_seconds() - t0;
    assert_true(took >= 0.15);
    assert_true(took < 1.5);
    client_close(fd);
    assert_true(wait_stat(f.ts.srv, timed_out, 1, 5000));
    ts_stop(&f.ts);
    /* Silent, and nothing of the transport left to close. */
    assert_int_equal(atomic_load(&f.probe.errors), 0);
    assert_int_equal(atomic_load(&closes), 0);
}

static void test_a_silent_start_is_cut_at_its_timeout_silently(void **state)
{
    (void)state;
    assert_silent_start_cut(&sks_threading_tcp_ops);
}

static void test_fiber_a_silent_start_is_cut_at_its_timeout_silently(void **state)
{
    (void)state;
    assert_silent_start_cut(&sks_fiber_tcp_ops);
}

static void test_a_failed_start_ends_the_request_with_its_error(void **state)
{
    (void)state;
    struct fixture f;
    serve(&f, &sks_threading_tcp_ops, 5, 0);
    int fd = client_connect(f.ts.address);
    assert_true(fd >= 0);
    assert_int_equal(client_send_all(fd, "NO!\nhello\n", 10), 0);
    assert_eof(fd); /* no handler: not even its first line */
    client_close(fd);
    assert_true(wait_until(request_ended, &f, 5000));
    ts_stop(&f.ts);
    assert_int_equal(atomic_load(&f.probe.errors), 1);
    assert_int_equal(atomic_load(&f.probe.last_error), -EPROTO);
    assert_int_equal(atomic_load(&closes), 0);
    assert_int_equal(atomic_load(&shutdowns), 0);
}

static void test_the_proxy_header_comes_before_the_start(void **state)
{
    (void)state;
    struct fixture f;
    serve(&f, &sks_threading_tcp_ops, 5, SKS_PROXY_V1);
    int fd = client_connect(f.ts.address);
    assert_true(fd >= 0);
    static const char msg[] = "PROXY TCP4 127.0.0.7 127.0.0.1 54321 8000\r\nHI!\nx\n";
    assert_int_equal(client_send_all(fd, msg, sizeof(msg) - 1), 0);
    assert_line(fd, "toy\n");
    assert_line(fd, "X\n");
    client_hang_up(fd);
    assert_true(wait_until(request_ended, &f, 5000));
    ts_stop(&f.ts);
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static void test_set_transport_refuses_what_it_cannot_use(void **state)
{
    (void)state;
    sks_server *srv = ts_new(&sks_tcp_ops, "127.0.0.1:0", &toy_echo, NULL, 0);
    sks_transport bad = toy;
    bad.recv = NULL;
    assert_int_equal(sks_server_set_transport(srv, &bad, NULL, 0), -EINVAL);
    bad = toy;
    bad.version = SKS_TRANSPORT_VERSION + 1;
    assert_int_equal(sks_server_set_transport(srv, &bad, NULL, 0), -EINVAL);
    assert_int_equal(sks_server_set_transport(srv, NULL, NULL, 0), 0);
    assert_int_equal(sks_server_set_transport(srv, &sks_plain_transport, NULL, 0), 0);
    sks_server_free(srv);
    srv = ts_new(&sks_udp_ops, "127.0.0.1:0", &sks_datagram_handler, NULL, 0);
    assert_int_equal(sks_server_set_transport(srv, &toy, NULL, 0), -EOPNOTSUPP);
    sks_server_free(srv);
}

/* Without a transport set, a handler's connection is the plain one. */
static void test_the_default_transport_is_plain(void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_threading_tcp_ops, "127.0.0.1:0", &toy_echo, NULL, 0.05);
    int fd = client_connect(ts.address);
    assert_true(fd >= 0);
    assert_line(fd, "plain\n");
    assert_echo(fd, "hello\n");
    client_hang_up(fd);
    ts_stop(&ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_go_through_the_transport_threading),
        cmocka_unit_test(test_bytes_go_through_the_transport_fiber),
        cmocka_unit_test(test_bytes_go_through_the_transport_sync),
        cmocka_unit_test(test_a_silent_start_is_cut_at_its_timeout_silently),
        cmocka_unit_test(test_fiber_a_silent_start_is_cut_at_its_timeout_silently),
        cmocka_unit_test(test_a_failed_start_ends_the_request_with_its_error),
        cmocka_unit_test(test_the_proxy_header_comes_before_the_start),
        cmocka_unit_test(test_set_transport_refuses_what_it_cannot_use),
        cmocka_unit_test(test_the_default_transport_is_plain),
    };
    alarm(60); /* a hung test fails the run instead of blocking it */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
