/*
 * test_sendfile.c - sks_wfile_sendfile: a file body through the writer,
 * buffered behind the headers when it fits, by sendfile(2) when it does
 * not, copied where sendfile cannot read, collected for a datagram.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* What the handler does, and what it saw (read after ts_stop). */
struct job {
    const char *path;
    off_t offset;
    size_t count;
    const char *prefix;   /* written first (buffered if the class is) */
    int repeats;          /* sendfile calls (default 1) */
    bool wait_for_eof;    /* read until the client is gone, then send */
    int started_wr;       /* >= 0: a byte here as the handler starts */
    int ready_wr;         /* >= 0: a byte here once the calls are made, */
                          /* then wait for a line before returning */
    bool await_ack;       /* else flush, then wait for a line */
    ssize_t result[3];
    bool sigpipe_pending, sigpipe_blocked;
};

static int send_job(sks_handler *h)
{
    struct job *j = sks_server_user(sks_handler_server(h));
    sks_rfile *r = sks_handler_rfile(h);
    sks_wfile *w = sks_handler_wfile(h);
    char line[64];

    if (j->started_wr >= 0 && write(j->started_wr, "s", 1) != 1)
        return -errno;
    if (j->wait_for_eof)
        while (sks_rfile_readline(r, line, sizeof(line)) > 0)
            ;
    if (j->prefix != NULL)
        sks_wfile_write(w, j->prefix, strlen(j->prefix));
    int fd = open(j->path, O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < (j->repeats ? j->repeats : 1); i++)
        j->result[i] = fd < 0 ? -errno : sks_wfile_sendfile(w, fd, j->offset,
                                                            j->count);
    if (fd >= 0)
        close(fd);

    sigset_t pending, mask;
    sigpending(&pending);
    pthread_sigmask(SIG_SETMASK, NULL, &mask);
    j->sigpipe_pending = sigismember(&pending, SIGPIPE) == 1;
    j->sigpipe_blocked = sigismember(&mask, SIGPIPE) == 1;

    if (j->ready_wr >= 0) {
        /* No cmocka asserts off the test's thread: a failed write shows
         * as the client's poll timing out. */
        if (write(j->ready_wr, "r", 1) == 1)
            sks_rfile_readline(r, line, sizeof(line));
    } else if (j->await_ack && sks_wfile_flush(w) == 0) {
        sks_rfile_readline(r, line, sizeof(line));
    }
    return 0;
}

static const sks_handler_class buffered = {
    .setup = sks_stream_setup,
    .handle = send_job,
    .finish = sks_stream_finish,
    .wbufsize = 8192,
};

static const sks_handler_class unbuffered = {
    .setup = sks_stream_setup,
    .handle = send_job,
    .finish = sks_stream_finish,
};

static const sks_handler_class datagram = {
    .setup = sks_datagram_setup,
    .handle = send_job,
    .finish = sks_datagram_finish,
};

/* A temporary file of n pseudo-random bytes; its contents in *data. */
static char *temp_file(size_t n, unsigned char **data)
{
    char *path = strdup("/tmp/sks-sendfile-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unsigned char *d = malloc(n ? n : 1);
    assert_non_null(d);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        d[i] = (unsigned char)x;
    }
    for (size_t done = 0; done < n;) {
        ssize_t k = write(fd, d + done, n - done);
        assert_true(k > 0);
        done += (size_t)k;
    }
    close(fd);
    *data = d;
    return path;
}

static void remove_temp(char *path, unsigned char *data)
{
    unlink(path);
    free(path);
    free(data);
}

/*
 * Serves one connection with job; returns the bytes the client got.  The
 * client takes the `expect` bytes, says so, and reads on to the end; only
 * then does the handler return, so the connection ends with nothing left
 * to send.  Closed with megabytes queued, the end would be at the
 * kernel's mercy: short of TCP memory (tcp_mem, which other load on the
 * machine can exhaust), Linux resets a closing socket that still holds
 * data ("TCP: out of memory -- consider tuning tcp_mem").
 */
static size_t run_stream(const sks_handler_class *cls, struct job *j,
                         char *out, size_t cap, size_t expect)
{
    test_server ts;
    j->await_ack = true;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", cls, j, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    ssize_t n = client_recv_all(c, out, expect < cap ? expect : cap);
    assert_true(n >= 0);
    assert_int_equal(client_send_all(c, "ok\n", 3), 0);
    ssize_t more = client_recv_all(c, out + n, cap - (size_t)n);
    assert_true(more >= 0);
    client_close(c);
    ts_stop(&ts);
    return (size_t)(n + more);
}

static void test_small_file_waits_in_the_buffer_behind_the_headers(void **state)
{
    (void)state;
    unsigned char *data;
    char *path = temp_file(1000, &data);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    struct job j = { .path = path, .count = 1000, .prefix = "HDR\n",
                     .ready_wr = ready[1], .started_wr = -1 };
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &buffered, &j, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);

    /* The calls are made: nothing may have left yet, both sit in the
     * buffer until the flush in finish. */
    struct pollfd p = { .fd = ready[0], .events = POLLIN };
    assert_int_equal(poll(&p, 1, 5000), 1);
    p = (struct pollfd){ .fd = c, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 100), 0);

    assert_int_equal(client_send_all(c, "go\n", 3), 0);
    static char got[2000];
    ssize_t n = client_recv_all(c, got, sizeof(got));
    client_close(c);
    ts_stop(&ts);
    close(ready[0]);
    close(ready[1]);

    assert_int_equal(j.result[0], 1000);
    assert_int_equal(n, 1004);
    assert_memory_equal(got, "HDR\n", 4);
    assert_memory_equal(got + 4, data, 1000);
    remove_temp(path, data);
}

static void test_large_file_follows_the_buffered_bytes_whole(void **state)
{
    (void)state;
    size_t size = 3u << 20;
    unsigned char *data;
    char *path = temp_file(size, &data);
    struct job j = { .path = path, .count = size, .prefix = "HDR\n",
                     .ready_wr = -1, .started_wr = -1 };
    char *got = malloc(size + 100);
    assert_non_null(got);

    size_t n = run_stream(&buffered, &j, got, size + 100, size + 4);
    assert_int_equal(j.result[0], (ssize_t)size);
    assert_int_equal(n, size + 4);
    assert_memory_equal(got, "HDR\n", 4);
    assert_memory_equal(got + 4, data, size);
    free(got);
    remove_temp(path, data);
}

static void test_range_from_offset_is_sent_by_either_path(void **state)
{
    (void)state;
    unsigned char *data;
    char *path = temp_file(200000, &data);
    static char got[200000];

    /* Unbuffered: sendfile(2). */
    struct job j = { .path = path, .offset = 1000, .count = 100000,
                     .ready_wr = -1, .started_wr = -1 };
    size_t n = run_stream(&unbuffered, &j, got, sizeof(got), 100000);
    assert_int_equal(j.result[0], 100000);
    assert_int_equal(n, 100000);
    assert_memory_equal(got, data + 1000, 100000);

    /* Fits the buffer: read into it. */
    j = (struct job){ .path = path, .offset = 150000, .count = 100,
                      .ready_wr = -1, .started_wr = -1 };
    n = run_stream(&buffered, &j, got, sizeof(got), 100);
    assert_int_equal(j.result[0], 100);
    assert_int_equal(n, 100);
    assert_memory_equal(got, data + 150000, 100);
    remove_temp(path, data);
}

static void test_short_count_when_the_file_ends_first(void **state)
{
    (void)state;
    unsigned char *data;
    char *path = temp_file(5000, &data);
    static char got[20000];

    struct job j = { .path = path, .offset = 1000, .count = 10000,
                     .ready_wr = -1, .started_wr = -1 };
    size_t n = run_stream(&unbuffered, &j, got, sizeof(got), 4000);
    assert_int_equal(j.result[0], 4000);
    assert_int_equal(n, 4000);
    assert_memory_equal(got, data + 1000, 4000);

    j = (struct job){ .path = path, .offset = 4900, .count = 1000,
                      .ready_wr = -1, .started_wr = -1 };
    n = run_stream(&buffered, &j, got, sizeof(got), 100);
    assert_int_equal(j.result[0], 100);
    assert_int_equal(n, 100);
    assert_memory_equal(got, data + 4900, 100);
    remove_temp(path, data);
}

static void test_reset_peer_fails_with_an_error_and_no_sigpipe(void **state)
{
    (void)state;
    unsigned char *data;
    char *path = temp_file(1u << 20, &data);
    /* The default action: a SIGPIPE would kill this test binary. */
    signal(SIGPIPE, SIG_DFL);
    int started[2];
    assert_int_equal(pipe(started), 0);
    struct job j = { .path = path, .count = 1u << 20, .repeats = 3,
                     .wait_for_eof = true, .started_wr = started[1],
                     .ready_wr = -1 };
    test_server ts;
    ts_start(&ts, &sks_tcp_ops, "127.0.0.1:0", &unbuffered, &j, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    /* Reset only once accepted: a reset connection still in the listen
     * queue may never be accepted at all. */
    struct pollfd p = { .fd = started[0], .events = POLLIN };
    assert_int_equal(poll(&p, 1, 5000), 1);
    /* Close with RST: the handler's next sends meet a dead connection. */
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    assert_int_equal(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    client_close(c);
    ts_stop(&ts);
    close(started[0]);
    close(started[1]);

    for (int i = 0; i < 3; i++)
        assert_true(j.result[i] < 0);
    /* After the reset is reported once, the kernel says EPIPE and raises
     * SIGPIPE: that path ran, and left nothing pending or blocked. */
    assert_true(j.result[1] == -EPIPE || j.result[2] == -EPIPE);
    assert_false(j.sigpipe_pending);
    assert_false(j.sigpipe_blocked);
    remove_temp(path, data);
}

static void test_file_sendfile_cannot_read_is_copied(void **state)
{
    (void)state;
    /* sendfile(2) refuses seq files such as /proc/self/maps (EINVAL);
     * their first line (the program's own text mapping) does not move. */
    char want[64], got[256];
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0 && !proc_mounted())
        skip_because("needs /proc for a seq file (/proc/self/maps)");
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, want, sizeof(want), 0), (ssize_t)sizeof(want));
    close(fd);

    struct job j = { .path = "/proc/self/maps", .count = sizeof(want),
                     .ready_wr = -1, .started_wr = -1 };
    size_t n = run_stream(&unbuffered, &j, got, sizeof(got), sizeof(want));
    assert_int_equal(j.result[0], (ssize_t)sizeof(want));
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(got, want, sizeof(want));
}

static void test_datagram_reply_collects_the_file(void **state)
{
    (void)state;
    unsigned char *data;
    char *path = temp_file(3000, &data);
    struct job j = { .path = path, .offset = 500, .count = 2000,
                     .ready_wr = -1, .started_wr = -1 };
    test_server ts;
    ts_start(&ts, &sks_udp_ops, "127.0.0.1:0", &datagram, &j, 0.01);
    int c = client_dgram(ts.address);
    assert_true(c >= 0);
    assert_int_equal(send(c, "x", 1, 0), 1);
    char got[4000];
    ssize_t n = recv(c, got, sizeof(got), 0);
    client_close(c);
    ts_stop(&ts);

    assert_int_equal(j.result[0], 2000);
    assert_int_equal(n, 2000);
    assert_memory_equal(got, data + 500, 2000);
    remove_temp(path, data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_file_waits_in_the_buffer_behind_the_headers),
        cmocka_unit_test(test_large_file_follows_the_buffered_bytes_whole),
        cmocka_unit_test(test_range_from_offset_is_sent_by_either_path),
        cmocka_unit_test(test_short_count_when_the_file_ends_first),
        cmocka_unit_test(test_reset_peer_fails_with_an_error_and_no_sigpipe),
        cmocka_unit_test(test_file_sendfile_cannot_read_is_copied),
        cmocka_unit_test(test_datagram_reply_collects_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
