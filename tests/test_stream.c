/*
 * test_stream.c - the Stream handler flavour (Python's
 * StreamRequestHandler): rfile's readline/read/read_all over real TCP
 * segments, wfile's buffering, errors from a vanished peer without
 * SIGPIPE, the handler timeout, TCP_NODELAY, and CPython's
 * SocketWriterTest (complete writes despite signals); and the wait layer
 * under them (src/io.c, src/wait.c): deadlines, EAGAIN told apart from a
 * timeout, kernel timeouts set only when a deadline moves.
 */
#define _GNU_SOURCE
#include "support.h"
#include "../src/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

/*
 * The kernel timeouts the library sets on one descriptor, counted: this
 * definition takes the place of libc's for the whole test program (the
 * library is linked in statically) and passes every call on.
 */
static atomic_int counted_fd = -1;
static atomic_int timeo_sets;

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    if (fd == atomic_load(&counted_fd) && level == SOL_SOCKET &&
        (name == SO_RCVTIMEO || name == SO_SNDTIMEO))
        atomic_fetch_add(&timeo_sets, 1);
    return (int)syscall(SYS_setsockopt, fd, level, name, val, len);
}

/* ------------------------------------------------------------------------ */
/* What the handlers saw (written by the serving thread, read after the
 * loop has been joined), and a handshake between handler and test.         */

#define MAXP 16

static struct {
    size_t cap;                 /* readline cap / readline_view max */
    bool view;                  /* readline_view instead of readline */
    int n;                      /* pieces read */
    ssize_t len[MAXP];
    char data[MAXP][128];       /* first bytes of each piece */
    bool all_x[MAXP];           /* piece is 'x'... then '\n' */
    ssize_t end;                /* the final return (0 or -errno) */
    ssize_t r[8];               /* assorted return values */
    bool ok[8];                 /* assorted checks */
    double took;
    int handle_errors;
} res;

static int to_test[2], to_handler[2];

static int setup(void **state)
{
    (void)state;
    memset(&res, 0, sizeof(res));
    assert_int_equal(pipe(to_test), 0);
    assert_int_equal(pipe(to_handler), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close(to_test[0]);
    close(to_test[1]);
    close(to_handler[0]);
    close(to_handler[1]);
    return 0;
}

static void notify(int fd)
{
    char c = 1;
    (void)!write(fd, &c, 1);
}

/* Waits up to 5 s for a notify. */
static bool await(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char c;
    return poll(&p, 1, 5000) == 1 && read(fd, &c, 1) == 1;
}

/* Handler side: tell the test, then wait for its go. */
static bool handler_sync(void)
{
    notify(to_test[1]);
    return await(to_handler[0]);
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + 3);
}

static bool is_pattern(const unsigned char *p, size_t n, size_t from)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(from + i))
            return false;
    return true;
}

static int connect_nodelay(const char *address)
{
    int c = client_connect(address);
    assert_true(c >= 0);
    int one = 1;
    assert_int_equal(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one,
                                sizeof(one)), 0);
    return c;
}

/* Ends the client's side, then waits for the server to end its side. */
static void finish_client(int c)
{
    char buf[256];
    shutdown(c, SHUT_WR);
    while (client_recv_all(c, buf, sizeof(buf)) == (ssize_t)sizeof(buf))
        ;
    client_close(c);
}

static void send_bytewise(int c, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(client_send_all(c, s + i, 1), 0);
}

/* ------------------------------------------------------------------------ */
/* Lines                                                                     */

/* Records every piece readline (or readline_view) returns, to the end. */
static int record_lines(sks_handler *h)
{
    sks_rfile *in = sks_handler_rfile(h);
    char buf[256];
    for (;;) {
        const char *p = buf;
        ssize_t n = res.view ? sks_rfile_readline_view(in, &p, res.cap)
                             : sks_rfile_readline(in, buf, res.cap);
        if (n <= 0 || res.n == MAXP) {
            res.end = n;
            return n < 0 ? (int)n : 0;
        }
        res.len[res.n] = n;
        memcpy(res.data[res.n], p, n < 128 ? (size_t)n : 128);
        res.all_x[res.n] = p[n - 1] == '\n';
        for (ssize_t i = 0; i < n - 1; i++)
            res.all_x[res.n] = res.all_x[res.n] && p[i] == 'x';
        res.n++;
    }
}

static const sks_handler_class lines = {
    .setup = sks_stream_setup,
    .handle = record_lines,
    .finish = sks_stream_finish,
};

static const sks_handler_class lines_rbuf16 = {
    .setup = sks_stream_setup,
    .handle = record_lines,
    .finish = sks_stream_finish,
    .rbufsize = 16,
};

static const sks_handler_class lines_rbuf64k = {
    .setup = sks_stream_setup,
    .handle = record_lines,
    .finish = sks_stream_finish,
    .rbufsize = 65536,
};

static void assert_piece(int i, const char *want)
{
    size_t n = strlen(want);
    assert_true(i < res.n);
    assert_int_equal(res.len[i], (ssize_t)n);
    assert_memory_equal(res.data[i], want, n < 128 ? n : 128);
}

/* Serves one client that sends `data` (bytewise: one TCP segment per
 * byte), then ends; the handler records the lines. */
static void serve_lines(const sks_handler_class *cls, const char *data,
                        size_t n, bool bytewise)
{
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", cls, NULL, 0.01);
    int c = connect_nodelay(ts.address);
    if (bytewise)
        send_bytewise(c, data, n);
    else
        for (size_t off = 0; off < n; off += 1000)
            assert_int_equal(client_send_all(c, data + off,
                                             n - off < 1000 ? n - off : 1000),
                             0);
    finish_client(c);
    ts_stop(&ts);
}

static void test_readline_assembles_lines_from_one_byte_segments(void **state)
{
    (void)state;
    static const char data[] = "first line\nsecond\n\nlast without newline";
    res.cap = 256;
    serve_lines(&lines, data, sizeof(data) - 1, true);
    assert_int_equal(res.n, 4);
    assert_piece(0, "first line\n");
    assert_piece(1, "second\n");
    assert_piece(2, "\n");
    assert_piece(3, "last without newline"); /* cut by end of input */
    assert_int_equal(res.end, 0);
}

static void test_readline_longer_than_cap_comes_in_cap_sized_pieces(
    void **state)
{
    (void)state;
    char data[64];
    memset(data, 'a', 40);
    strcpy(data + 40, "\nbb\n");
    res.cap = 16;
    serve_lines(&lines, data, strlen(data), true);
    assert_int_equal(res.n, 4);
    assert_piece(0, "aaaaaaaaaaaaaaaa"); /* no '\n': the line goes on */
    assert_piece(1, "aaaaaaaaaaaaaaaa");
    assert_piece(2, "aaaaaaaa\n");
    assert_piece(3, "bb\n");
}

static void test_readline_is_not_bounded_by_the_read_buffer(void **state)
{
    (void)state;
    char data[128];
    memset(data, 'x', 100);
    strcpy(data + 100, "\nz\n");
    res.cap = 256;
    serve_lines(&lines_rbuf16, data, strlen(data), false);
    assert_int_equal(res.n, 2);
    assert_int_equal(res.len[0], 101);
    assert_true(res.all_x[0]);
    assert_piece(1, "z\n");
}

static void test_readline_view_is_bounded_by_the_read_buffer(void **state)
{
    (void)state;
    char data[64];
    memset(data, 'x', 40);
    strcpy(data + 40, "\n");
    res.cap = (size_t)-1;
    res.view = true;
    serve_lines(&lines_rbuf16, data, strlen(data), true);
    assert_int_equal(res.n, 3);
    assert_int_equal(res.len[0], 16);
    assert_int_equal(res.len[1], 16);
    assert_int_equal(res.len[2], 9);
    assert_true(res.all_x[2]);
}

static void test_readline_view_returns_a_64k_line_whole(void **state)
{
    (void)state;
    size_t n = 65536 + 5;
    char *data = malloc(n);
    assert_non_null(data);
    memset(data, 'x', 65535);
    memcpy(data + 65535, "\ntail\n", 6);
    res.cap = (size_t)-1;
    res.view = true;
    serve_lines(&lines_rbuf64k, data, n, false);
    free(data);
    assert_int_equal(res.n, 2);
    assert_int_equal(res.len[0], 65536);
    assert_true(res.all_x[0]);
    assert_piece(1, "tail\n");
    assert_int_equal(res.end, 0);
}

/* Signals while readline waits (recv fails with EINTR): EINTR is retried,
 * nothing is lost. */
static int interrupted_read_handle(sks_handler *h)
{
    char line[64];
    notify(to_test[1]);
    ssize_t n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    res.r[0] = n;
    if (n > 0)
        n = sks_wfile_write(sks_handler_wfile(h), line, (size_t)n);
    return n < 0 ? (int)n : 0;
}

static const sks_handler_class interrupted_read = {
    .setup = sks_stream_setup,
    .handle = interrupted_read_handle,
    .finish = sks_stream_finish,
};

static void test_readline_survives_signals_while_waiting(void **state)
{
    (void)state;
    struct sigaction old;
    interruptions_begin(&old);

    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &interrupted_read, NULL,
             0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, "par", 3), 0);
    assert_true(await(to_test[0])); /* the handler is about to read */
    interrupt_thread(ts.thread, 5);
    assert_int_equal(client_send_all(c, "tial\n", 5), 0);
    char back[16];
    assert_int_equal(client_recv_all(c, back, sizeof(back)), 8);
    assert_memory_equal(back, "partial\n", 8);
    client_close(c);
    ts_stop(&ts);
    interruptions_end(&old);
    assert_int_equal(res.r[0], 8);
}

/* ------------------------------------------------------------------------ */
/* Bytes                                                                     */

/* read(4096) exactly, echoed; then a line with NULs, echoed. */
static int binary_handle(sks_handler *h)
{
    unsigned char buf[4096];
    ssize_t n = sks_rfile_read(sks_handler_rfile(h), buf, sizeof(buf));
    res.r[0] = n;
    if (n != (ssize_t)sizeof(buf) ||
        sks_wfile_write(sks_handler_wfile(h), buf, (size_t)n) != n)
        return SKS_EHANDLER;
    n = sks_rfile_readline(sks_handler_rfile(h), buf, sizeof(buf));
    res.r[1] = n;
    if (n <= 0 || sks_wfile_write(sks_handler_wfile(h), buf, (size_t)n) != n)
        return SKS_EHANDLER;
    return 0;
}

static const sks_handler_class binary = {
    .setup = sks_stream_setup,
    .handle = binary_handle,
    .finish = sks_stream_finish,
};

static void test_binary_data_with_nul_bytes_round_trips(void **state)
{
    (void)state;
    unsigned char out[4096 + 5], back[sizeof(out) + 1];
    for (size_t i = 0; i < 4096; i++)
        out[i] = pattern(i); /* holds NULs and '\n's */
    memcpy(out + 4096, "a\0b\0\n", 5);

    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &binary, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, out, sizeof(out)), 0);
    assert_int_equal(client_recv_all(c, (char *)back, sizeof(back)),
                     (ssize_t)sizeof(out));
    assert_memory_equal(back, out, sizeof(out));
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(res.r[0], 4096);
    assert_int_equal(res.r[1], 5);
}

/* read(10) through the buffer, read(50000) around it, then a short read
 * at end of input, then 0. */
static int read_handle(sks_handler *h)
{
    sks_rfile *in = sks_handler_rfile(h);
    static unsigned char big[50000];
    unsigned char small[100];
    res.r[0] = sks_rfile_read(in, small, 10);
    res.ok[0] = is_pattern(small, 10, 0);
    res.r[1] = sks_rfile_read(in, big, sizeof(big));
    res.ok[1] = is_pattern(big, sizeof(big), 10);
    res.r[2] = sks_rfile_read(in, small, sizeof(small));
    res.ok[2] = is_pattern(small, 10, 50010);
    res.r[3] = sks_rfile_read(in, small, sizeof(small));
    return 0;
}

static const sks_handler_class reader = {
    .setup = sks_stream_setup,
    .handle = read_handle,
    .finish = sks_stream_finish,
};

static void test_read_returns_exactly_n_then_short_at_end_of_input(
    void **state)
{
    (void)state;
    enum { N = 10 + 50000 + 10 };
    unsigned char *data = malloc(N);
    assert_non_null(data);
    for (size_t i = 0; i < N; i++)
        data[i] = pattern(i);
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &reader, NULL, 0.01);
    int c = connect_nodelay(ts.address);
    /* Odd-sized segments, so no read lines up with one. */
    for (size_t off = 0; off < N; off += 997)
        assert_int_equal(client_send_all(c, data + off,
                                         N - off < 997 ? N - off : 997), 0);
    finish_client(c);
    ts_stop(&ts);
    free(data);
    assert_int_equal(res.r[0], 10);
    assert_int_equal(res.r[1], 50000);
    assert_int_equal(res.r[2], 10);
    assert_int_equal(res.r[3], 0);
    assert_true(res.ok[0] && res.ok[1] && res.ok[2]);
}

/*
 * read_all with res.cap as max; then reads what it left (res.r[1]: bytes,
 * or -errno) and replies with the result as text.  Reading the rest is
 * what lets the client send all its input: a connection closed with input
 * unread is reset, and the reset cuts short a client still sending.
 */
static int read_all_handle(sks_handler *h)
{
    void *data = (void *)&res; /* must be replaced */
    char reply[32], rest[4096];
    ssize_t n = sks_rfile_read_all(sks_handler_rfile(h), &data, res.cap);
    res.r[0] = n;
    res.ok[0] = n < 0 ? data == NULL : is_pattern(data, (size_t)n, 0);
    free(data);
    ssize_t got, left = 0;
    while ((got = sks_rfile_read(sks_handler_rfile(h), rest,
                                 sizeof(rest))) > 0)
        left += got;
    res.r[1] = got < 0 ? got : left;
    int len = snprintf(reply, sizeof(reply), "%zd\n", n);
    ssize_t w = sks_wfile_write(sks_handler_wfile(h), reply, (size_t)len);
    return w < 0 ? (int)w : 0;
}

static const sks_handler_class read_all = {
    .setup = sks_stream_setup,
    .handle = read_all_handle,
    .finish = sks_stream_finish,
};

static ssize_t run_read_all(size_t max, size_t n)
{
    unsigned char *data = malloc(n + 1);
    char reply[32] = "";
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = pattern(i);
    res.cap = max;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &read_all, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, data, n), 0);
    shutdown(c, SHUT_WR);
    assert_true(client_recv_line(c, reply, sizeof(reply) - 1) > 0);
    client_close(c);
    ts_stop(&ts);
    free(data);
    assert_true(res.ok[0]);
    assert_int_equal(atol(reply), res.r[0]);
    /* No more than max: once over it, read_all stopped reading. */
    if (res.r[0] == -EMSGSIZE)
        assert_true(res.r[1] >= (ssize_t)(n - max - 1));
    else
        assert_int_equal(res.r[1], 0);
    return res.r[0];
}

static void test_read_all_reads_to_end_of_input_and_no_more_than_max(
    void **state)
{
    (void)state;
    assert_int_equal(run_read_all(1 << 20, 100000), 100000);
    assert_int_equal(run_read_all(4096, 4096), 4096);
    assert_int_equal(run_read_all(4096, 4097), -EMSGSIZE);
    assert_int_equal(run_read_all(4096, 0), 0);
    assert_int_equal(run_read_all(10, 100000), -EMSGSIZE);
}

/* ------------------------------------------------------------------------ */
/* The writer                                                                */

/* Step by step, the test checking what arrived between steps. */
static int buffered_handle(sks_handler *h)
{
    sks_wfile *out = sks_handler_wfile(h);
    char big[5000];
    memset(big, 'z', sizeof(big));
    res.r[0] = sks_wfile_write(out, "abc", 3);
    if (!handler_sync())
        return SKS_EHANDLER;
    res.r[1] = sks_wfile_flush(out);
    if (!handler_sync())
        return SKS_EHANDLER;
    res.r[2] = sks_wfile_write(out, "def", 3);
    res.r[3] = sks_wfile_write(out, big, sizeof(big)); /* over wbufsize */
    if (!handler_sync())
        return SKS_EHANDLER;
    res.r[4] = sks_wfile_write(out, "end", 3);
    return 0; /* finish flushes */
}

static const sks_handler_class buffered = {
    .setup = sks_stream_setup,
    .handle = buffered_handle,
    .finish = sks_stream_finish,
    .wbufsize = 4096,
};

static const sks_handler_class unbuffered = {
    .setup = sks_stream_setup,
    .handle = buffered_handle,
    .finish = sks_stream_finish,
};

/* Nothing arrives on c within 100 ms. */
static void assert_nothing_arrives(int c)
{
    struct pollfd p = { .fd = c, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 100), 0);
}

static void assert_receives(int c, const char *want, size_t n)
{
    char *buf = malloc(n);
    assert_non_null(buf);
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(c, buf + got, n - got, 0);
        if (r <= 0)
            fail_msg("recv after %zu of %zu bytes: %zd", got, n, r);
        got += (size_t)r;
    }
    assert_memory_equal(buf, want, n);
    free(buf);
}

static void test_buffered_wfile_sends_only_at_flush_and_finish(void **state)
{
    (void)state;
    char tail[3 + 5000];
    memcpy(tail, "def", 3);
    memset(tail + 3, 'z', 5000);

    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &buffered, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_true(await(to_test[0]));
    assert_nothing_arrives(c);          /* "abc" sits in the buffer */
    notify(to_handler[1]);
    assert_true(await(to_test[0]));
    assert_receives(c, "abc", 3);       /* flushed */
    notify(to_handler[1]);
    assert_true(await(to_test[0]));
    assert_receives(c, tail, sizeof(tail)); /* overflow flushes and sends */
    assert_nothing_arrives(c);
    notify(to_handler[1]);
    assert_receives(c, "end", 3);       /* finish flushed */
    char buf[8];
    assert_int_equal(client_recv_all(c, buf, sizeof(buf)), 0);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(res.r[0], 3);
    assert_int_equal(res.r[1], 0);
    assert_int_equal(res.r[2], 3);
    assert_int_equal(res.r[3], 5000);
    assert_int_equal(res.r[4], 3);
}

static void test_unbuffered_wfile_sends_each_write_at_once(void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &unbuffered, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_true(await(to_test[0]));
    assert_receives(c, "abc", 3);   /* while the handler waits */
    notify(to_handler[1]);
    assert_true(await(to_test[0]));
    assert_nothing_arrives(c);      /* flush had nothing to send */
    notify(to_handler[1]);
    assert_true(await(to_test[0]));
    assert_receives(c, "def", 3);
    notify(to_handler[1]);
    char rest[5000 + 3 + 1];
    assert_int_equal(client_recv_all(c, rest, sizeof(rest)), 5003);
    assert_memory_equal(rest + 5000, "end", 3);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(res.r[1], 0);
}

/* Waits for the test to kill the connection, then writes until it fails.
 * With res.cap != 0 it reads to end of input instead of waiting.  The
 * writes are bounded in count, but enough to overflow any socket buffer:
 * a write then blocks until the peer's reset fails it. */
static int write_to_gone_peer_handle(sks_handler *h)
{
    char line[64];
    static char chunk[65536];
    ssize_t n;
    if (res.cap != 0) {
        notify(to_test[1]);
        while ((n = sks_rfile_readline(sks_handler_rfile(h), line,
                                       sizeof(line))) > 0)
            ;
        res.r[1] = n;
    } else if (!handler_sync()) {
        return SKS_EHANDLER;
    }
    for (int i = 0; i < 1024; i++) {
        n = sks_wfile_write(sks_handler_wfile(h), chunk, sizeof(chunk));
        if (n < 0) {
            res.r[0] = n;
            break;
        }
    }
    return 0;
}

static const sks_handler_class write_to_gone_peer = {
    .setup = sks_stream_setup,
    .handle = write_to_gone_peer_handle,
    .finish = sks_stream_finish,
};

/* Buffered: the write succeeds into the buffer; finish's flush fails,
 * which finish ignores (bpo-14574). */
static int buffered_gone_handle(sks_handler *h)
{
    if (!handler_sync())
        return SKS_EHANDLER;
    res.r[0] = sks_wfile_write(sks_handler_wfile(h), "late\n", 5);
    return 0;
}

static const sks_handler_class buffered_gone = {
    .setup = sks_stream_setup,
    .handle = buffered_gone_handle,
    .finish = sks_stream_finish,
    .wbufsize = 4096,
};

static void counting_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    (void)err;
    res.handle_errors++;
}

static void reset_connection(int c)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    assert_int_equal(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)),
                     0);
    client_close(c); /* RST */
}

static void test_write_to_vanished_peer_fails_without_sigpipe(void **state)
{
    (void)state;
    sks_server_ops ops = sks_tcp_ops;
    ops.handle_error = counting_handle_error;

    /* If the library let the kernel raise SIGPIPE, this process would die
     * here: the default disposition, unblocked. */
    struct sigaction dfl, old;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &dfl, &old), 0);
    sigset_t pipe_set, old_mask;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    assert_int_equal(pthread_sigmask(SIG_UNBLOCK, &pipe_set, &old_mask), 0);

    /* The peer resets the connection. */
    test_server ts;
    ts_start(&ts, &ops, "127.0.0.1:0", &write_to_gone_peer, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_true(await(to_test[0]));
    reset_connection(c);
    notify(to_handler[1]);
    ts_stop(&ts);
    if (res.r[0] != -EPIPE && res.r[0] != -ECONNRESET)
        fail_msg("write after reset: %s", sks_errname((int)res.r[0]));

    /* The peer closes normally: the first writes may still be taken, then
     * the peer's reset makes them fail. */
    memset(&res, 0, sizeof(res));
    res.cap = 1;
    ts_start(&ts, &ops, "127.0.0.1:0", &write_to_gone_peer, NULL, 0.01);
    c = client_connect(ts.address);
    assert_true(c >= 0);
    client_close(c);
    assert_true(await(to_test[0])); /* accepted: it will be handled */
    ts_stop(&ts);
    assert_int_equal(res.r[1], 0); /* end of input */
    if (res.r[0] != -EPIPE && res.r[0] != -ECONNRESET)
        fail_msg("write after close: %s", sks_errname((int)res.r[0]));

    /* Buffered: finish's failed flush is not an error of the request. */
    memset(&res, 0, sizeof(res));
    ts_start(&ts, &ops, "127.0.0.1:0", &buffered_gone, NULL, 0.01);
    c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_true(await(to_test[0]));
    reset_connection(c);
    notify(to_handler[1]);
    ts_stop(&ts);
    assert_int_equal(res.r[0], 5);
    assert_int_equal(res.handle_errors, 0);

    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    sigaction(SIGPIPE, &old, NULL);
}

/* ------------------------------------------------------------------------ */
/* Handler attributes                                                        */

static int timed_read_handle(sks_handler *h)
{
    char line[64];
    double t0 = now_seconds();
    res.r[0] = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    res.took = now_seconds() - t0;
    return 0;
}

static const sks_handler_class timed_read = {
    .setup = sks_stream_setup,
    .handle = timed_read_handle,
    .finish = sks_stream_finish,
    .timeout = 0.1,
};

static void test_handler_timeout_ends_readline_from_a_silent_client(
    void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &timed_read, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    char buf[8];
    /* Silent: the server ends the connection after its timeout. */
    assert_int_equal(client_recv_all(c, buf, sizeof(buf)), 0);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(res.r[0], -ETIMEDOUT);
    if (res.took < 0.08 || res.took > 2.0)
        fail_msg("readline gave up after %.3f s, timeout 0.1 s", res.took);
}

/* An infinite timeout is no timeout: the socket keeps the default. */
static int untimed_handle(sks_handler *h)
{
    struct timeval rcv = { 1, 1 }, snd = { 1, 1 };
    socklen_t len = sizeof(rcv);
    int fd = sks_request_fd(sks_handler_request(h));
    if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, &len) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, &len) != 0)
        return -errno;
    res.ok[0] = rcv.tv_sec == 0 && rcv.tv_usec == 0 && snd.tv_sec == 0 &&
                snd.tv_usec == 0;
    return 0;
}

static const sks_handler_class untimed = {
    .setup = sks_stream_setup,
    .handle = untimed_handle,
    .finish = sks_stream_finish,
    .timeout = INFINITY,
};

static void test_infinite_handler_timeout_means_none(void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &untimed, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    finish_client(c);
    ts_stop(&ts);
    assert_true(res.ok[0]);
}

static int timed_write_handle(sks_handler *h)
{
    static char chunk[1 << 20];
    double t0 = now_seconds();
    notify(to_test[1]);
    for (int i = 0; i < 64; i++) {
        res.r[0] = sks_wfile_write(sks_handler_wfile(h), chunk,
                                   sizeof(chunk));
        if (res.r[0] < 0)
            break;
    }
    res.took = now_seconds() - t0;
    return 0;
}

static const sks_handler_class timed_write = {
    .setup = sks_stream_setup,
    .handle = timed_write_handle,
    .finish = sks_stream_finish,
    .timeout = 0.1,
};

static void test_handler_timeout_ends_write_to_a_client_not_reading(
    void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &timed_write, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_true(await(to_test[0])); /* accepted: it will be handled */
    ts_stop(&ts); /* waits for the handler, which returns by itself */
    reset_connection(c);
    assert_int_equal(res.r[0], -ETIMEDOUT);
    assert_true(res.took < 5.0);
}

/* A socket the handler made non-blocking: EAGAIN means "not yet", and the
 * read waits for the bytes (as the kernel's timeouts would not: they do
 * nothing on a non-blocking socket). */
static int nonblocking_read_handle(sks_handler *h)
{
    char line[64];
    int fd = sks_request_fd(sks_handler_request(h));
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        return -errno;
    notify(to_test[1]);
    double t0 = now_seconds();
    res.r[0] = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    res.took = now_seconds() - t0;
    res.r[1] = sks_wfile_write(sks_handler_wfile(h), "ok\n", 3);
    return 0;
}

static const sks_handler_class nonblocking_5s = {
    .setup = sks_stream_setup,
    .handle = nonblocking_read_handle,
    .finish = sks_stream_finish,
    .timeout = 5.0,
};

static void test_eagain_on_a_nonblocking_socket_is_not_a_timeout(void **state)
{
    (void)state;
    test_server ts;
    char buf[8];
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &nonblocking_5s, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_true(await(to_test[0])); /* the read is about to start */
    sleep_ms(150);
    assert_int_equal(client_send_all(c, "late\n", 5), 0);
    assert_int_equal(client_recv_line(c, buf, sizeof(buf)), 3);
    finish_client(c);
    ts_stop(&ts);
    assert_int_equal(res.r[0], 5);
    assert_int_equal(res.r[1], 3);
    assert_true(res.took >= 0.1);
}

static const sks_handler_class nonblocking_100ms = {
    .setup = sks_stream_setup,
    .handle = nonblocking_read_handle,
    .finish = sks_stream_finish,
    .timeout = 0.1,
};

/* ... and the handler's timeout still ends a wait on it. */
static void test_timeout_holds_on_a_nonblocking_socket(void **state)
{
    (void)state;
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &nonblocking_100ms, NULL,
             0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_true(await(to_test[0]));
    char buf[8];
    /* Silent: the answer comes after the timeout, then the end. */
    assert_int_equal(client_recv_all(c, buf, sizeof(buf)), 3);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(res.r[0], -ETIMEDOUT);
    if (res.took < 0.08 || res.took > 2.0)
        fail_msg("readline gave up after %.3f s, timeout 0.1 s", res.took);
}

static int set_timeout_handle(sks_handler *h)
{
    char line[64];
    res.r[1] = sks_handler_set_timeout(h, -1.0);
    res.r[2] = sks_handler_set_timeout(h, NAN);
    res.r[3] = sks_handler_set_timeout(h, 0.1);
    double t0 = now_seconds();
    res.r[0] = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    res.took = now_seconds() - t0;
    return 0;
}

static int set_timeout_early_setup(sks_handler *h)
{
    res.r[4] = sks_handler_set_timeout(h, 1.0); /* no rfile/wfile yet */
    return sks_stream_setup(h);
}

static const sks_handler_class untimed_then_set = {
    .setup = set_timeout_early_setup,
    .handle = set_timeout_handle,
    .finish = sks_stream_finish,
};

static void test_set_timeout_shortens_the_reads_that_follow(void **state)
{
    (void)state;
    test_server ts;
    char buf[8];
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &untimed_then_set, NULL, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    /* Silent: without the new timeout the handler would wait for good. */
    assert_int_equal(client_recv_all(c, buf, sizeof(buf)), 0);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(res.r[4], -EINVAL);
    assert_int_equal(res.r[1], -EINVAL);
    assert_int_equal(res.r[2], -EINVAL);
    assert_int_equal(res.r[3], 0);
    assert_int_equal(res.r[0], -ETIMEDOUT);
    if (res.took < 0.08 || res.took > 2.0)
        fail_msg("readline gave up after %.3f s, timeout 0.1 s", res.took);
}

/* The connection's deadline, when nearer than now + timeout, ends a read
 * and a write; the kernel's timeout is brought down to it. */
static void test_nearer_deadline_wins_over_the_per_operation_timeout(
    void **state)
{
    (void)state;
    int sv[2];
    char b[64];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    struct sks__conn c = sks__conn_make(sv[0], 5.0);

    c.deadline = sks__now() + 0.1;
    double t0 = now_seconds();
    assert_int_equal(sks__conn_recv(&c, b, sizeof(b)), -ETIMEDOUT);
    double took = now_seconds() - t0;
    if (took < 0.09 || took > 2.0)
        fail_msg("read gave up after %.3f s, deadline 0.1 s", took);
    struct timeval tv;
    socklen_t len = sizeof(tv);
    assert_int_equal(getsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, &len),
                     0);
    assert_true(tv.tv_sec == 0 && tv.tv_usec > 0 && tv.tv_usec <= 100000);

    /* The peer never reads: the send buffer fills, then the deadline. */
    static char chunk[1 << 22];
    c.deadline = sks__now() + 0.1;
    t0 = now_seconds();
    assert_int_equal(sks__conn_send_all(&c, chunk, sizeof(chunk)),
                     -ETIMEDOUT);
    took = now_seconds() - t0;
    if (took < 0.09 || took > 2.0)
        fail_msg("write gave up after %.3f s, deadline 0.1 s", took);

    /* A deadline already passed: no attempt at all. */
    c.deadline = sks__now() - 1.0;
    assert_int_equal(sks__conn_send_all(&c, "x", 1), -ETIMEDOUT);
    close(sv[0]);
    close(sv[1]);
}

/* A steady per-operation timeout costs one kernel timeout per direction
 * for the connection's life, not one per call; no timeout costs none. */
static void test_steady_timeout_is_set_in_the_kernel_once_per_direction(
    void **state)
{
    (void)state;
    int sv[2];
    char b[4];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    atomic_store(&timeo_sets, 0);
    atomic_store(&counted_fd, sv[0]);

    struct sks__conn c = sks__conn_make(sv[0], 5.0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(write(sv[1], "x", 1), 1);
        assert_int_equal(sks__conn_recv(&c, b, sizeof(b)), 1);
        assert_int_equal(sks__conn_send_all(&c, "y", 1), 0);
        assert_int_equal(read(sv[1], b, sizeof(b)), 1);
    }
    assert_int_equal(atomic_load(&timeo_sets), 2);

    struct sks__conn none = sks__conn_make(sv[0], 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(write(sv[1], "x", 1), 1);
        assert_int_equal(sks__conn_recv(&none, b, sizeof(b)), 1);
        assert_int_equal(sks__conn_send_all(&none, "y", 1), 0);
        assert_int_equal(read(sv[1], b, sizeof(b)), 1);
    }
    assert_int_equal(atomic_load(&timeo_sets), 2);
    atomic_store(&counted_fd, -1);
    close(sv[0]);
    close(sv[1]);
}

/* The seam: a backend selected for a thread is the one its waits use. */
static atomic_int backend_waits;

static int counting_wait(struct pollfd *fds, size_t n, double deadline)
{
    atomic_fetch_add(&backend_waits, 1);
    return sks__blocking_wait.wait(fds, n, deadline);
}

static const sks__wait_backend counting = {
    .name = "counting",
    .wait = counting_wait, /* no prepare: as for non-blocking sockets */
};

static void test_a_thread_waits_through_the_backend_it_selected(void **state)
{
    (void)state;
    int sv[2];
    char b[4];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC |
                                             SOCK_NONBLOCK, 0, sv), 0);
    atomic_store(&backend_waits, 0);
    sks__wait_use(&counting);
    struct sks__conn c = sks__conn_make(sv[0], 0.05);
    assert_int_equal(sks__conn_recv(&c, b, sizeof(b)), -ETIMEDOUT);
    assert_true(atomic_load(&backend_waits) >= 1);
    int before = atomic_load(&backend_waits);
    assert_int_equal(write(sv[1], "x", 1), 1);
    assert_int_equal(sks__conn_recv(&c, b, sizeof(b)), 1); /* no wait */
    assert_int_equal(atomic_load(&backend_waits), before);
    sks__wait_use(NULL);
    assert_int_equal(sks__conn_recv(&c, b, sizeof(b)), -ETIMEDOUT);
    assert_int_equal(atomic_load(&backend_waits), before);
    close(sv[0]);
    close(sv[1]);
}

static int nodelay_handle(sks_handler *h)
{
    int v = -1;
    socklen_t len = sizeof(v);
    int fd = sks_request_fd(sks_handler_request(h));
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) != 0)
        return -errno;
    res.r[res.n++] = v;
    return 0;
}

static const sks_handler_class nagle_on = {
    .setup = sks_stream_setup,
    .handle = nodelay_handle,
    .finish = sks_stream_finish,
};

static const sks_handler_class nagle_off = {
    .setup = sks_stream_setup,
    .handle = nodelay_handle,
    .finish = sks_stream_finish,
    .disable_nagle_algorithm = true,
};

static void test_disable_nagle_algorithm_sets_tcp_nodelay(void **state)
{
    (void)state;
    const sks_handler_class *cls[2] = { &nagle_on, &nagle_off };
    for (int i = 0; i < 2; i++) {
        test_server ts;
        ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", cls[i], NULL, 0.01);
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        finish_client(c);
        ts_stop(&ts);
    }
    assert_int_equal(res.n, 2);
    assert_int_equal(res.r[0], 0);
    assert_int_not_equal(res.r[1], 0);
}

/* CPython's SocketWriterTest.test_basics. */
static int fileno_handle(sks_handler *h)
{
    res.ok[0] = sks_handler_wfile(h) != NULL && sks_handler_rfile(h) != NULL;
    res.r[0] = sks_wfile_fileno(sks_handler_wfile(h));
    res.r[1] = sks_request_fd(sks_handler_request(h));
    /* A zero-length line cannot be asked for. */
    char c;
    const char *view;
    res.r[2] = sks_rfile_readline(sks_handler_rfile(h), &c, 0);
    res.r[3] = sks_rfile_readline_view(sks_handler_rfile(h), &view, 0);
    return 0;
}

static const sks_handler_class fileno_class = {
    .setup = sks_stream_setup,
    .handle = fileno_handle,
    .finish = sks_stream_finish,
};

static void test_wfile_fileno_is_the_request_socket(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    char addr[SKS_ADDRSTRLEN];
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0",
                                     &fileno_class, NULL, 0), 0);
    sks_addr_format(sks_server_address(srv), addr, sizeof(addr));
    int c = client_connect(addr);
    assert_true(c >= 0);
    client_close(c);
    assert_int_equal(sks_server_handle_request(srv), 0);
    sks_server_free(srv);
    assert_true(res.ok[0]);
    assert_true(res.r[0] >= 0);
    assert_int_equal(res.r[0], res.r[1]);
    assert_int_equal(res.r[2], -EINVAL);
    assert_int_equal(res.r[3], -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* CPython's SocketWriterTest.test_write: writes are immediate and
 * complete, even when signals interrupt them.                               */

#define SOCK_MAX_SIZE (16 * 1024 * 1024 + 1)

static atomic_bool got_usr1;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_store(&got_usr1, true);
}

static int writer_handle(sks_handler *h)
{
    char line[64];
    res.r[0] = sks_wfile_write(sks_handler_wfile(h), "write data\n", 11);
    res.r[1] = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    res.ok[1] = res.r[1] == 16 && memcmp(line, "client response\n", 16) == 0;
    char *zeros = calloc(1, SOCK_MAX_SIZE);
    if (zeros == NULL)
        return -ENOMEM;
    res.r[2] = sks_wfile_write(sks_handler_wfile(h), zeros, SOCK_MAX_SIZE);
    free(zeros);
    /*
     * The connection ends once the client says it has every byte, with
     * nothing left to send.  Closed with megabytes still queued, the end
     * would be at the kernel's mercy: short of TCP memory (tcp_mem, which
     * other load on the machine can exhaust), Linux resets a closing
     * socket that still holds data ("TCP: out of memory -- consider tuning
     * tcp_mem"), and the client loses what was queued.
     */
    res.r[3] = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    return 0;
}

static const sks_handler_class writer = {
    .setup = sks_stream_setup,
    .handle = writer_handle,
    .finish = sks_stream_finish,
};

struct writer_client {
    char address[SKS_ADDRSTRLEN];
    pthread_t main_thread;
    char response1[64];
    ssize_t n1;
    int kills;
    ssize_t received2;
    bool zeros;
};

/* Receives (and checks) zeros until `upto` in all or the end of input;
 * each recv is bounded by the client socket's receive timeout. */
static void receive_zeros(int c, struct writer_client *wc, size_t upto)
{
    char buf[65536];
    while ((size_t)wc->received2 < upto) {
        size_t room = upto - (size_t)wc->received2;
        ssize_t r = recv(c, buf, room < sizeof(buf) ? room : sizeof(buf), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            wc->zeros = wc->zeros && buf[i] == 0;
        wc->received2 += r;
    }
}

static void *writer_client_thread(void *arg)
{
    struct writer_client *wc = arg;
    int c = client_connect(wc->address);
    if (c < 0)
        return NULL;
    wc->n1 = client_recv_line(c, wc->response1, sizeof(wc->response1));
    client_send_all(c, "client response\n", 16);
    char buf[100];
    ssize_t got = 0;
    while (got < 100) {
        ssize_t r = recv(c, buf, (size_t)(100 - got), 0);
        if (r <= 0)
            break;
        got += r;
    }
    /* Interrupt the serving thread's write until its handler has run. */
    double end = now_seconds() + 5.0;
    while (!atomic_load(&got_usr1) && now_seconds() < end) {
        pthread_kill(wc->main_thread, SIGUSR1);
        wc->kills++;
        for (int i = 0; i < 10 && !atomic_load(&got_usr1); i++)
            sleep_ms(1);
    }
    wc->received2 = 0;
    wc->zeros = got == 100;
    /* What the server wrote, then the word that it all came, then
     * nothing more until the end. */
    receive_zeros(c, wc, SOCK_MAX_SIZE - 100);
    client_send_all(c, "received\n", 9);
    receive_zeros(c, wc, SIZE_MAX);
    client_close(c);
    return NULL;
}

static void test_write_is_complete_despite_signals(void **state)
{
    (void)state;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1; /* no SA_RESTART: calls fail with EINTR */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
    atomic_store(&got_usr1, false);

    sks_server *srv = NULL;
    struct writer_client wc;
    memset(&wc, 0, sizeof(wc));
    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0",
                                     &writer, NULL, 0), 0);
    sks_addr_format(sks_server_address(srv), wc.address, sizeof(wc.address));
    wc.main_thread = pthread_self();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_client_thread, &wc), 0);
    assert_int_equal(sks_server_handle_request(srv), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    sks_server_free(srv);
    sigaction(SIGUSR1, &old, NULL);

    assert_int_equal(res.r[0], 11);
    assert_int_equal(wc.n1, 11);
    assert_memory_equal(wc.response1, "write data\n", 11);
    assert_true(res.ok[1]);
    assert_true(atomic_load(&got_usr1));
    assert_int_equal(res.r[2], SOCK_MAX_SIZE);
    assert_int_equal(wc.received2, SOCK_MAX_SIZE - 100);
    assert_true(wc.zeros);
    assert_int_equal(res.r[3], 9);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_readline_assembles_lines_from_one_byte_segments),
        T(test_readline_longer_than_cap_comes_in_cap_sized_pieces),
        T(test_readline_is_not_bounded_by_the_read_buffer),
        T(test_readline_view_is_bounded_by_the_read_buffer),
        T(test_readline_view_returns_a_64k_line_whole),
        T(test_readline_survives_signals_while_waiting),
        T(test_binary_data_with_nul_bytes_round_trips),
        T(test_read_returns_exactly_n_then_short_at_end_of_input),
        T(test_read_all_reads_to_end_of_input_and_no_more_than_max),
        T(test_buffered_wfile_sends_only_at_flush_and_finish),
        T(test_unbuffered_wfile_sends_each_write_at_once),
        T(test_write_to_vanished_peer_fails_without_sigpipe),
        T(test_handler_timeout_ends_readline_from_a_silent_client),
        T(test_handler_timeout_ends_write_to_a_client_not_reading),
        T(test_infinite_handler_timeout_means_none),
        T(test_eagain_on_a_nonblocking_socket_is_not_a_timeout),
        T(test_timeout_holds_on_a_nonblocking_socket),
        T(test_set_timeout_shortens_the_reads_that_follow),
        T(test_nearer_deadline_wins_over_the_per_operation_timeout),
        T(test_steady_timeout_is_set_in_the_kernel_once_per_direction),
        T(test_a_thread_waits_through_the_backend_it_selected),
        T(test_disable_nagle_algorithm_sets_tcp_nodelay),
        T(test_wfile_fileno_is_the_request_socket),
        T(test_write_is_complete_despite_signals),
    };
#undef T
    alarm(60); /* a hung test fails the run instead of blocking it */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
