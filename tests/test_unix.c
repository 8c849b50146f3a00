/*
 * test_unix.c - UnixStreamServer and UnixDatagramServer: echo over AF_UNIX
 * paths and abstract names, unnamed peers, the socket-file policy (stale
 * files, unlink on close, never a file that is not ours or not a socket),
 * and servers that go on serving after every kind of failed request.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* A probing server                                                          */

typedef struct probe {
    probe_counts count;    /* first: probe_handle_error and the line echo */
    /* What the last handler saw; the reply (or a later request of the
     * same synchronous server) orders the write before the test's read. */
    char client[SKS_ADDRSTRLEN];
    bool truncated;
    size_t packet_len;
} probe;

static probe *probe_of(sks_server *srv)
{
    return sks_server_user(srv);
}

static sks_server_ops stream_ops, dgram_ops;

/* The test's servers and probe outlive a failed assertion's longjmp. */
static test_server ts, ts2;
static probe p;
static int mute = -1; /* a peer that never reads (closed before stopping) */

static int setup_ops(void **state)
{
    (void)state;
    stream_ops = sks_unix_stream_ops;
    stream_ops.handle_error = probe_handle_error;
    dgram_ops = sks_unix_dgram_ops;
    dgram_ops.handle_error = probe_handle_error;
    return 0;
}

static int reset(void **state)
{
    (void)state;
    memset(&p, 0, sizeof(p));
    memset(&ts, 0, sizeof(ts));
    memset(&ts2, 0, sizeof(ts2));
    mute = -1;
    return 0;
}

static int cleanup(void **state)
{
    (void)state;
    /* Closing the mute peer also wakes a server blocked on replying to it. */
    if (mute >= 0)
        client_close(mute);
    mute = -1;
    ts_stop_quietly(&ts);
    ts_stop_quietly(&ts2);
    return 0;
}

/* Records the client address; a packet or line starting "fail" fails the
 * handler; otherwise echoes: every line (stream) or the packet (dgram). */
static int probe_handle(sks_handler *h)
{
    probe *pr = probe_of(sks_handler_server(h));
    sks_request *req = sks_handler_request(h);
    sks_rfile *in = sks_handler_rfile(h);
    const char *line;
    size_t len;
    ssize_t n;

    sks_addr_format(sks_handler_client_address(h), pr->client,
                    sizeof(pr->client));
    sks_request_packet(req, &len);
    pr->packet_len = len;
    pr->truncated = sks_request_truncated(req);
    atomic_fetch_add(&pr->count.handled, 1);
    while ((n = sks_rfile_readline_view(in, &line, (size_t)-1)) > 0) {
        if (n >= 4 && memcmp(line, "fail", 4) == 0)
            return SKS_EHANDLER;
        if (sks_wfile_write(sks_handler_wfile(h), line, (size_t)n) < 0)
            return SKS_EHANDLER;
    }
    return (int)n;
}

static const sks_handler_class stream_echo = {
    .setup = sks_stream_setup,
    .handle = probe_handle,
    .finish = sks_stream_finish,
};

static const sks_handler_class dgram_echo_cls = {
    .setup = sks_datagram_setup,
    .handle = probe_handle,
    .finish = sks_datagram_finish,
};

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static const char *path_of(const char *address)
{
    return address + strlen("unix:");
}

static bool is_socket_file(const char *path, struct stat *st)
{
    return lstat(path, st) == 0 && S_ISSOCK(st->st_mode);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* A unique abstract name, "unix:@sks-test-PID-N". */
static void abstract_address(char *buf, size_t cap)
{
    static int n;
    snprintf(buf, cap, "unix:@sks-test-%ld-%d", (long)getpid(), n++);
}

/* An unbound (unnamed) Unix datagram socket connected to address. */
static int unnamed_dgram(const char *address)
{
    sks_addr a;
    assert_int_equal(sks_addr_parse(address, &a), 0);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, &a.u.sa, a.len), 0);
    return fd;
}

/* Leaves a stale socket file at address's path: bound, then closed. */
static void make_stale_socket(const char *address, int type)
{
    sks_addr a;
    assert_int_equal(sks_addr_parse(address, &a), 0);
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, &a.u.sa, a.len), 0);
    if (type == SOCK_STREAM)
        assert_int_equal(listen(fd, 1), 0);
    close(fd);
}

static int new_server(sks_server **out, const sks_server_ops *ops,
                      const char *address, const sks_handler_class *cls,
                      bool unlink_stale, bool unlink_on_close)
{
    assert_int_equal(sks_server_new(out, ops, address, cls, &p, SKS_NO_BIND),
                     0);
    assert_int_equal(sks_server_set_unlink_stale(*out, unlink_stale), 0);
    assert_int_equal(sks_server_set_unlink_on_close(*out, unlink_on_close), 0);
    int err = sks_server_bind_and_activate(*out);
    if (err != 0) {
        sks_server_free(*out);
        *out = NULL;
    }
    return err;
}

static const sks_server_ops *both_ops[2] = { &stream_ops, &dgram_ops };

static const sks_handler_class *cls_for(const sks_server_ops *ops)
{
    return ops->socket_type == SOCK_STREAM ? &stream_echo : &dgram_echo_cls;
}

/* A server of ops on a fresh path (removed on close), serving in ts. */
static void serve_temp(const sks_server_ops *ops, char *address, size_t cap)
{
    sks_server *srv;
    unix_temp_address(address, cap);
    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), false,
                                true), 0);
    ts_serve(&ts, srv, 0.01);
}

/* One echo through a server of either type. */
static void echo_once(const sks_server_ops *ops, const char *address)
{
    assert_echo_once(address, ops->socket_type, "hello world\n");
}

/* ------------------------------------------------------------------------ */
/* CPython's scenarios                                                       */

static void run_cpython_scenario(const sks_server_ops *ops,
                                 const sks_handler_class *cls)
{
    char address[SKS_ADDRSTRLEN];
    unix_temp_address(address, sizeof(address));
    ts_start(&ts, ops, address, cls, &p, 0.01);
    assert_string_equal(ts.address, address);
    for (int i = 0; i < 3; i++)
        echo_once(ops, ts.address);
    ts_shutdown_close(&ts);
    sks_server_free(ts.srv);
    ts.srv = NULL;
    assert_int_equal(atomic_load(&p.count.handled), 3);
    assert_int_equal(atomic_load(&p.count.errors), 0);
    /* As Python, server_close leaves the socket file by default. */
    struct stat st;
    assert_true(is_socket_file(path_of(address), &st));
    unlink(path_of(address));
}

/* test_UnixStreamServer */
static void test_unix_stream_server_echoes_three_times_then_closes(
    void **state)
{
    (void)state;
    run_cpython_scenario(&stream_ops, &probe_line_echo_stream);
}

/* test_UnixDatagramServer, with a bound client */
static void test_unix_dgram_server_echoes_three_times_then_closes(
    void **state)
{
    (void)state;
    run_cpython_scenario(&dgram_ops, &probe_line_echo_dgram);
}

/* ------------------------------------------------------------------------ */
/* Addresses and peers                                                       */

static void test_unix_stream_abstract_name_round_trip(void **state)
{
    (void)state;
    ABSTRACT_NAMES_OR_REFUSED();
    char address[SKS_ADDRSTRLEN];
    abstract_address(address, sizeof(address));
    ts_start(&ts, &stream_ops, address, &stream_echo, &p, 0.01);
    assert_string_equal(ts.address, address);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_echo(c, "abstract one\n");
    assert_echo(c, "abstract two\n");
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&p.count.errors), 0);
}

static void test_unix_dgram_abstract_name_round_trip(void **state)
{
    (void)state;
    ABSTRACT_NAMES_OR_REFUSED();
    char address[SKS_ADDRSTRLEN], me[SKS_ADDRSTRLEN];
    abstract_address(address, sizeof(address));
    abstract_address(me, sizeof(me));
    ts_start(&ts, &dgram_ops, address, &dgram_echo_cls, &p, 0.01);
    assert_string_equal(ts.address, address);
    /* A client with an abstract name of its own can be answered. */
    sks_addr ma, sa;
    assert_int_equal(sks_addr_parse(me, &ma), 0);
    assert_int_equal(sks_addr_parse(address, &sa), 0);
    int c = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    assert_int_equal(bind(c, &ma.u.sa, ma.len), 0);
    assert_int_equal(connect(c, &sa.u.sa, sa.len), 0);
    assert_dgram_echo(c, "abstract\n", 9);
    assert_string_equal(p.client, me);
    close(c);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&p.count.errors), 0);
}

/* The client address of a Unix peer: its bound path, or "unix:" when it
 * never bound.  Stream handlers work with both. */
static void test_unix_stream_client_address_bound_or_unnamed(void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN], me[SKS_ADDRSTRLEN];
    unix_temp_address(address, sizeof(address));
    unix_temp_address(me, sizeof(me));
    ts_start(&ts, &stream_ops, address, &stream_echo, &p, 0.01);

    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_echo(c, "unnamed\n");
    assert_string_equal(p.client, "unix:");
    client_close(c);

    sks_addr ma, sa;
    assert_int_equal(sks_addr_parse(me, &ma), 0);
    assert_int_equal(sks_addr_parse(address, &sa), 0);
    c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    assert_int_equal(bind(c, &ma.u.sa, ma.len), 0);
    assert_int_equal(connect(c, &sa.u.sa, sa.len), 0);
    assert_echo(c, "named\n");
    assert_string_equal(p.client, me);
    client_close(c);
    ts_stop(&ts);
    unlink(path_of(address));
    assert_int_equal(atomic_load(&p.count.errors), 0);
}

/* A datagram from an unnamed peer cannot be answered: the handler still
 * runs (and sees "unix:"), the failed reply goes to handle_error, and the
 * server serves the next client. */
static void test_unix_dgram_unnamed_peer_reported_through_handle_error(
    void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];
    unix_temp_address(address, sizeof(address));
    ts_start(&ts, &dgram_ops, address, &dgram_echo_cls, &p, 0.01);

    int anon = unnamed_dgram(ts.address);
    assert_int_equal(send(anon, "who am I\n", 9, 0), 9);
    /* The synchronous server handles in order: once the bound client has
     * its echo, the unnamed peer's request has ended. */
    int c = client_dgram(ts.address);
    assert_true(c >= 0);
    assert_dgram_echo(c, "named\n", 6);
    assert_int_equal(atomic_load(&p.count.handled), 2);
    assert_int_equal(atomic_load(&p.count.errors), 1);
    assert_int_equal(atomic_load(&p.count.last_error), -EDESTADDRREQ);
    assert_dgram_echo(c, "again\n", 6);
    assert_int_equal(atomic_load(&p.count.errors), 1);
    client_close(c);
    close(anon);
    ts_stop(&ts);
    unlink(path_of(address));
}

/* A bound peer that sent and went away (its socket closed, with or without
 * its file): the reply fails, handle_error says so, serving goes on. */
static void test_unix_dgram_peer_gone_reported_and_serving_goes_on(
    void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN], me[SKS_ADDRSTRLEN];
    sks_server *srv;
    unix_temp_address(address, sizeof(address));
    assert_int_equal(new_server(&srv, &dgram_ops, address, &dgram_echo_cls,
                                false, true), 0);
    /* Two peers leave before the server serves: one removes its file
     * (ENOENT at reply), one leaves it (ECONNREFUSED at reply). */
    int gone = client_dgram(address);
    assert_true(gone >= 0);
    assert_int_equal(send(gone, "bye\n", 4, 0), 4);
    client_close(gone);
    unix_temp_address(me, sizeof(me));
    sks_addr ma, sa;
    assert_int_equal(sks_addr_parse(me, &ma), 0);
    assert_int_equal(sks_addr_parse(address, &sa), 0);
    int left = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(left >= 0);
    assert_int_equal(bind(left, &ma.u.sa, ma.len), 0);
    assert_int_equal(sendto(left, "bye\n", 4, 0, &sa.u.sa, sa.len), 4);
    close(left);

    ts_serve(&ts, srv, 0.01);
    int c = client_dgram(ts.address);
    assert_true(c >= 0);
    assert_dgram_echo(c, "still\n", 6);
    assert_int_equal(atomic_load(&p.count.handled), 3);
    assert_int_equal(atomic_load(&p.count.errors), 2);
    client_close(c);
    ts_stop(&ts);
    unlink(path_of(me));
    assert_false(exists(path_of(address)));
}

/*
 * A bound peer that sends and never reads its replies fills its receive
 * queue.  The server must not block on it: the reply that does not fit is
 * dropped (handle_error), and other clients are served.
 */
static void test_unix_dgram_peer_not_reading_does_not_block_server(
    void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];
    unix_temp_address(address, sizeof(address));
    ts_start(&ts, &dgram_ops, address, &dgram_echo_cls, &p, 0.01);
    /* Unconnected to the server, so the kernel's per-receiver queue
     * length (net.unix.max_dgram_qlen) bounds what it can hold; small
     * replies, so the server's own send buffer never fills. */
    char me[SKS_ADDRSTRLEN];
    unix_temp_address(me, sizeof(me));
    sks_addr ma, sa;
    assert_int_equal(sks_addr_parse(me, &ma), 0);
    assert_int_equal(sks_addr_parse(address, &sa), 0);
    mute = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(mute >= 0);
    assert_int_equal(bind(mute, &ma.u.sa, ma.len), 0);
    /* Bounded even if the server blocks: then these sends would wait for
     * room in the server's queue for ever. */
    struct timeval tv = { .tv_sec = 2 };
    assert_int_equal(setsockopt(mute, SOL_SOCKET, SO_SNDTIMEO, &tv,
                                sizeof(tv)), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(sendto(mute, "x\n", 2, 0, &sa.u.sa, sa.len), 2);

    int c = client_dgram(ts.address);
    assert_true(c >= 0);
    double t0 = now_seconds();
    assert_dgram_echo(c, "served\n", 7);
    assert_true(now_seconds() - t0 < 2.0);
    assert_int_equal(atomic_load(&p.count.handled), 201);
    assert_true(atomic_load(&p.count.errors) > 0);
    assert_int_equal(atomic_load(&p.count.last_error), -EAGAIN);
    client_close(c);
    client_close(mute);
    mute = -1;
    assert_false(exists(path_of(me)));
    ts_stop(&ts);
    unlink(path_of(address));
}

/* ------------------------------------------------------------------------ */
/* Datagram handler details over AF_UNIX                                     */

static void test_unix_dgram_truncation_detected(void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN], data[100];
    sks_server *srv;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    unix_temp_address(address, sizeof(address));
    assert_int_equal(sks_server_new(&srv, &dgram_ops, address,
                                    &dgram_echo_cls, &p, SKS_NO_BIND), 0);
    assert_int_equal(sks_server_set_max_packet_size(srv, 16), 0);
    assert_int_equal(sks_server_set_unlink_on_close(srv, true), 0);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    ts_serve(&ts, srv, 0.01);
    int c = client_dgram(ts.address);
    assert_true(c >= 0);
    assert_dgram_reply(c, data, sizeof(data), 16);
    assert_true(p.truncated);
    assert_int_equal(p.packet_len, 16);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&p.count.errors), 0);
}

static void test_unix_dgram_zero_length_datagram_gets_zero_length_reply(
    void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];
    serve_temp(&dgram_ops, address, sizeof(address));
    int c = client_dgram(ts.address);
    assert_true(c >= 0);
    assert_dgram_echo(c, "", 0);
    assert_int_equal(p.packet_len, 0);
    assert_dgram_echo(c, "after\n", 6);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&p.count.handled), 2);
    assert_int_equal(atomic_load(&p.count.errors), 0);
}

/* handle fails: handle_error once with the handler's error, and serving
 * goes on, for both Unix variants. */
static void test_unix_handler_failure_reported_once_and_serving_goes_on(
    void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];

    serve_temp(&stream_ops, address, sizeof(address));
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "fail\n", 5), 0);
    assert_eof(c);
    client_close(c);
    echo_once(&stream_ops, ts.address);
    assert_int_equal(atomic_load(&p.count.errors), 1);
    assert_int_equal(atomic_load(&p.count.last_error), SKS_EHANDLER);
    ts_stop(&ts);

    memset(&p, 0, sizeof(p));
    serve_temp(&dgram_ops, address, sizeof(address));
    c = client_dgram(ts.address);
    assert_true(c >= 0);
    /* Python's finish sends what was collected even after a failure. */
    assert_dgram_reply(c, "fail\n", 5, 0);
    assert_dgram_echo(c, "fine\n", 5);
    assert_int_equal(atomic_load(&p.count.errors), 1);
    assert_int_equal(atomic_load(&p.count.last_error), SKS_EHANDLER);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&p.count.handled), 2);
}

/* ------------------------------------------------------------------------ */
/* The socket-file policy                                                    */

/* Runs check(ops, address) for the stream and then the datagram server,
 * each time with a fresh path that nothing holds yet. */
static void for_both_types(void (*check)(const sks_server_ops *ops,
                                         char *address))
{
    for (int i = 0; i < 2; i++) {
        char address[SKS_ADDRSTRLEN];
        unix_temp_address(address, sizeof(address));
        check(both_ops[i], address);
    }
}

/* As Python: a socket file left behind makes bind fail, and stays. */
static void stale_socket_file_fails_with_eaddrinuse_by_default(
    const sks_server_ops *ops, char *address)
{
    struct stat before, after;
    sks_server *srv = NULL;
    make_stale_socket(address, ops->socket_type);
    assert_true(is_socket_file(path_of(address), &before));
    int fds = count_open_fds();
    assert_int_equal(sks_server_new(&srv, ops, address, cls_for(ops), &p,
                                    0),
                     -EADDRINUSE);
    assert_null(srv);
    assert_int_equal(count_open_fds(), fds);
    assert_true(is_socket_file(path_of(address), &after));
    assert_true(before.st_ino == after.st_ino);
    unlink(path_of(address));
}

static void test_unix_stale_socket_file_fails_with_eaddrinuse_by_default(
    void **state)
{
    (void)state;
    for_both_types(stale_socket_file_fails_with_eaddrinuse_by_default);
}

static void unlink_stale_replaces_stale_socket_file(
    const sks_server_ops *ops, char *address)
{
    struct stat st;
    sks_server *srv;
    make_stale_socket(address, ops->socket_type);
    assert_true(is_socket_file(path_of(address), &st));
    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), true,
                                false), 0);
    assert_true(is_socket_file(path_of(address), &st));
    ts_serve(&ts, srv, 0.01);
    echo_once(ops, ts.address);
    ts_stop(&ts);
    unlink(path_of(address));
}

static void test_unix_unlink_stale_replaces_stale_socket_file(void **state)
{
    (void)state;
    for_both_types(unlink_stale_replaces_stale_socket_file);
}

/* A live server's socket file is never removed, even with unlink_stale. */
static void unlink_stale_never_removes_live_socket(
    const sks_server_ops *ops, char *address)
{
    struct stat live, after;
    sks_server *srv, *second = NULL;
    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), false,
                                true), 0);
    ts_serve(&ts, srv, 0.01);
    assert_true(is_socket_file(path_of(address), &live));
    assert_int_equal(new_server(&second, ops, address, cls_for(ops),
                                true, true),
                     -EADDRINUSE);
    assert_null(second);
    assert_true(is_socket_file(path_of(address), &after));
    assert_true(live.st_ino == after.st_ino);
    echo_once(ops, ts.address);
    ts_stop(&ts);
    assert_false(exists(path_of(address)));
}

static void test_unix_unlink_stale_never_removes_live_socket(void **state)
{
    (void)state;
    for_both_types(unlink_stale_never_removes_live_socket);
}

/* A live stream server that is not accepting and whose backlog is full:
 * the stale check must not wait for it (a blocking connect would). */
static void *bind_stale(void *arg)
{
    const char *address = arg;
    sks_server *srv = NULL;
    intptr_t err = sks_server_new(&srv, &stream_ops, address, &stream_echo,
                                  &p, SKS_NO_BIND);
    if (err == 0) {
        sks_server_set_unlink_stale(srv, true);
        err = sks_server_bind_and_activate(srv);
        sks_server_free(srv);
    }
    return (void *)err;
}

static void test_unix_unlink_stale_does_not_block_on_busy_live_server(
    void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];
    sks_addr a;
    unix_temp_address(address, sizeof(address));
    assert_int_equal(sks_addr_parse(address, &a), 0);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, &a.u.sa, a.len), 0);
    assert_int_equal(listen(lfd, 0), 0);
    int fill[8], nfill = 0;
    while (nfill < 8) {
        int f = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(f >= 0);
        if (connect(f, &a.u.sa, a.len) != 0) {
            assert_int_equal(errno, EAGAIN);
            close(f);
            break;
        }
        fill[nfill++] = f;
    }
    assert_true(nfill < 8); /* the backlog is full */

    pthread_t t;
    void *res = NULL;
    double t0 = now_seconds();
    assert_int_equal(pthread_create(&t, NULL, bind_stale, address), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    int joined = pthread_timedjoin_np(t, &res, &until);
    if (joined != 0) {
        /* Closing the listener wakes the stuck connect; then fail. */
        close(lfd);
        lfd = -1;
        pthread_join(t, &res);
    }
    double took = now_seconds() - t0;
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    if (lfd >= 0)
        close(lfd);
    unlink(path_of(address));
    assert_int_equal(joined, 0);
    assert_true(took < 1.0);
    assert_int_equal((intptr_t)res, -EADDRINUSE);
}

/* Not a socket: never removed, whatever the options. */
static void unlink_stale_never_removes_non_socket(
    const sks_server_ops *ops, char *address)
{
    char stale[SKS_ADDRSTRLEN], buf[8];
    sks_server *srv = NULL;
    struct stat st;

    /* A regular file. */
    int f = open(path_of(address), O_CREAT | O_EXCL | O_WRONLY, 0600);
    assert_true(f >= 0);
    assert_int_equal(write(f, "data", 4), 4);
    close(f);
    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), true,
                                true),
                     -EADDRINUSE);
    f = open(path_of(address), O_RDONLY);
    assert_true(f >= 0);
    assert_int_equal(read(f, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "data", 4);
    close(f);
    unlink(path_of(address));

    /* A symbolic link to a stale socket: neither is touched. */
    unix_temp_address(stale, sizeof(stale));
    make_stale_socket(stale, ops->socket_type);
    unix_temp_address(address, SKS_ADDRSTRLEN);
    assert_int_equal(symlink(path_of(stale), path_of(address)), 0);
    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), true,
                                true),
                     -EADDRINUSE);
    assert_int_equal(lstat(path_of(address), &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_true(is_socket_file(path_of(stale), &st));
    unlink(path_of(address));
    unlink(path_of(stale));
}

static void test_unix_unlink_stale_never_removes_non_socket(void **state)
{
    (void)state;
    for_both_types(unlink_stale_never_removes_non_socket);
}

static void unlink_on_close_removes_own_file(
    const sks_server_ops *ops, char *address)
{
    struct stat st;
    sks_server *srv;
    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), false,
                                true), 0);
    assert_true(is_socket_file(path_of(address), &st));
    sks_server_close(srv);
    assert_false(exists(path_of(address)));
    sks_server_free(srv);

    /* Off (the default): the file stays, as Python leaves it. */
    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), false,
                                false), 0);
    sks_server_free(srv);
    assert_true(is_socket_file(path_of(address), &st));
    unlink(path_of(address));
}

static void test_unix_unlink_on_close_removes_own_file(void **state)
{
    (void)state;
    for_both_types(unlink_on_close_removes_own_file);
}

/* The path now names another file (another server's socket, a regular
 * file): close leaves it. */
static void unlink_on_close_leaves_file_it_did_not_create(
    const sks_server_ops *ops, char *address)
{
    struct stat other, after;
    sks_server *srv;

    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), false,
                                true), 0);
    unlink(path_of(address));
    make_stale_socket(address, ops->socket_type);
    assert_true(is_socket_file(path_of(address), &other));
    sks_server_free(srv);
    assert_true(is_socket_file(path_of(address), &after));
    assert_true(other.st_ino == after.st_ino);
    unlink(path_of(address));

    assert_int_equal(new_server(&srv, ops, address, cls_for(ops), false,
                                true), 0);
    unlink(path_of(address));
    int f = open(path_of(address), O_CREAT | O_EXCL | O_WRONLY, 0600);
    assert_true(f >= 0);
    close(f);
    sks_server_free(srv);
    assert_true(lstat(path_of(address), &after) == 0 &&
                S_ISREG(after.st_mode));
    unlink(path_of(address));
}

static void test_unix_unlink_on_close_leaves_file_it_did_not_create(
    void **state)
{
    (void)state;
    for_both_types(unlink_on_close_leaves_file_it_did_not_create);
}

/* Abstract names have no file: the options change nothing, and a second
 * server on a live name fails as for a path. */
static void test_unix_abstract_name_ignores_file_policy(void **state)
{
    (void)state;
    ABSTRACT_NAMES_OR_REFUSED();
    for (int i = 0; i < 2; i++) {
        const sks_server_ops *ops = both_ops[i];
        char address[SKS_ADDRSTRLEN];
        sks_server *srv, *second = NULL;
        abstract_address(address, sizeof(address));
        assert_int_equal(new_server(&srv, ops, address, cls_for(ops), true,
                                    true), 0);
        assert_int_equal(new_server(&second, ops, address, cls_for(ops),
                                    true, true),
                         -EADDRINUSE);
        ts_serve(&ts, srv, 0.01);
        echo_once(ops, ts.address);
        ts_stop(&ts);
        /* The name is free again once closed. */
        assert_int_equal(new_server(&srv, ops, address, cls_for(ops), false,
                                    false), 0);
        sks_server_free(srv);
    }
}

/* ------------------------------------------------------------------------ */
/* Leaks                                                                     */

struct ended_arg {
    sks_server *srv;
    size_t n;
};

static bool requests_ended(void *arg)
{
    struct ended_arg *a = arg;
    sks_stats st;
    sks_server_stats(a->srv, &st);
    return st.completed + st.failed == a->n;
}

/* The client has its echo before the server has closed its end: wait for
 * the server to count n requests ended (their sockets closed). */
static void wait_ended(sks_server *srv, size_t n)
{
    struct ended_arg a = { srv, n };
    assert_true(wait_until(requests_ended, &a, 5000));
}

static void test_unix_stream_no_fd_leak_over_1000_requests(void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];
    int before = count_open_fds();
    serve_temp(&stream_ops, address, sizeof(address));
    echo_once(&stream_ops, ts.address);
    wait_ended(ts.srv, 1);
    int serving = count_open_fds();
    for (int i = 0; i < 1000; i++) {
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_echo(c, "ping\n");
        client_close(c);
    }
    wait_ended(ts.srv, 1001);
    assert_int_equal(count_open_fds(), serving);
    ts_stop(&ts);
    assert_int_equal(count_open_fds(), before);
    assert_int_equal(atomic_load(&p.count.handled), 1001);
    assert_int_equal(atomic_load(&p.count.errors), 0);
    assert_false(exists(path_of(address)));
}

static void test_unix_dgram_no_fd_leak_over_1000_requests(void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN];
    int before = count_open_fds();
    serve_temp(&dgram_ops, address, sizeof(address));
    assert_dgram_echoes_keep_fds(ts.address, 1000);
    ts_stop(&ts);
    assert_int_equal(count_open_fds(), before);
    assert_int_equal(atomic_load(&p.count.handled), 1001);
    assert_int_equal(atomic_load(&p.count.errors), 0);
    assert_false(exists(path_of(address)));
}

#define T(name) cmocka_unit_test_setup_teardown(name, reset, cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_unix_stream_server_echoes_three_times_then_closes),
        T(test_unix_dgram_server_echoes_three_times_then_closes),
        T(test_unix_stream_abstract_name_round_trip),
        T(test_unix_dgram_abstract_name_round_trip),
        T(test_unix_stream_client_address_bound_or_unnamed),
        T(test_unix_dgram_unnamed_peer_reported_through_handle_error),
        T(test_unix_dgram_peer_gone_reported_and_serving_goes_on),
        T(test_unix_dgram_peer_not_reading_does_not_block_server),
        T(test_unix_dgram_truncation_detected),
        T(test_unix_dgram_zero_length_datagram_gets_zero_length_reply),
        T(test_unix_handler_failure_reported_once_and_serving_goes_on),
        T(test_unix_stale_socket_file_fails_with_eaddrinuse_by_default),
        T(test_unix_unlink_stale_replaces_stale_socket_file),
        T(test_unix_unlink_stale_never_removes_live_socket),
        T(test_unix_unlink_stale_does_not_block_on_busy_live_server),
        T(test_unix_unlink_stale_never_removes_non_socket),
        T(test_unix_unlink_on_close_removes_own_file),
        T(test_unix_unlink_on_close_leaves_file_it_did_not_create),
        T(test_unix_abstract_name_ignores_file_policy),
        T(test_unix_stream_no_fd_leak_over_1000_requests),
        T(test_unix_dgram_no_fd_leak_over_1000_requests),
    };
    return cmocka_run_group_tests(tests, setup_ops, NULL);
}
