/*
 * soak.c - the bounded soak (make soak; not part of make test): every
 * server variant in turn under mixed load for its share of SOAK_SECONDS
 * (default 60 in all), then checks that every reply was right and that
 * nothing grew: descriptors and children back to their starting counts,
 * resident memory within 10% of what it was after warm-up.
 *
 * The load runs in a client process of its own, forked before the server
 * serves (so no forked server child holds a copy of a client socket, and
 * a reset really resets).  Its worker threads mix, on stream servers:
 * persistent connections of many lines, one-line connections, garbage
 * (random bytes, newlines anywhere, lines over the limit), over-long
 * lines, and abrupt resets mid-line or before reading the reply; on
 * datagram servers: random packets (empty ones too), and clients that
 * leave before their reply.  The protocol: each line is echoed; a line
 * over LINE_MAX bytes gets "ERR too long\n" and the connection ends as a
 * failed request; a datagram is echoed whole.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINE_MAX_BYTES 1024
#define STREAM_WORKERS 4
#define DGRAM_WORKERS 3
#define TOO_LONG "ERR too long\n"

/* ------------------------------------------------------------------------ */
/* The server side                                                           */

static int soak_stream_handle(sks_handler *h)
{
    sks_rfile *r = sks_handler_rfile(h);
    sks_wfile *w = sks_handler_wfile(h);
    char line[LINE_MAX_BYTES];
    ssize_t n;

    while ((n = sks_rfile_readline(r, line, sizeof(line))) > 0) {
        if (n == LINE_MAX_BYTES && line[n - 1] != '\n') {
            (void)sks_wfile_write(w, TOO_LONG, strlen(TOO_LONG));
            return SKS_EHANDLER;
        }
        if ((n = sks_wfile_write(w, line, (size_t)n)) < 0)
            return (int)n;
    }
    return (int)n;
}

static int soak_dgram_handle(sks_handler *h)
{
    void *data;
    ssize_t n = sks_rfile_read_all(sks_handler_rfile(h), &data, 65536);
    if (n < 0)
        return (int)n;
    n = sks_wfile_write(sks_handler_wfile(h), data, (size_t)n);
    free(data);
    return n < 0 ? (int)n : 0;
}

static const sks_handler_class soak_stream_class = {
    .setup = sks_stream_setup,
    .handle = soak_stream_handle,
    .finish = sks_stream_finish,
    .timeout = 10.0, /* no request outlives a vanished client for long */
};

static const sks_handler_class soak_dgram_class = {
    .setup = sks_datagram_setup,
    .handle = soak_dgram_handle,
    .finish = sks_datagram_finish,
};

/* Failures are expected here (resets, over-long lines): counted by the
 * server's own counters, not printed. */
static void quiet_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    (void)err;
}

/* ------------------------------------------------------------------------ */
/* The client process                                                        */

typedef struct load_report {
    unsigned long connections, lines, garbage, too_long, resets;
    unsigned long datagrams, abandoned;
    unsigned long wrong, client_errors;
    char first_problem[160];
} load_report;

typedef struct worker {
    const char *address;
    bool dgram;
    double deadline;
    uint64_t rng;
    load_report r;
} worker;

static uint64_t rnd(worker *w)
{
    /* xorshift64*: each worker its own sequence, repeatable from its seed */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ULL;
}

static unsigned below(worker *w, unsigned n)
{
    return (unsigned)(rnd(w) % n);
}

static void problem(worker *w, bool wrong, const char *what, long detail)
{
    if (wrong)
        w->r.wrong++;
    else
        w->r.client_errors++;
    if (w->r.first_problem[0] == '\0')
        snprintf(w->r.first_problem, sizeof(w->r.first_problem), "%s (%ld)",
                 what, detail);
}

/* A line of 1..max bytes, any byte but '\n', ending in '\n'. */
static size_t make_line(worker *w, char *buf, size_t max)
{
    size_t n = 1 + below(w, (unsigned)max - 1);
    for (size_t i = 0; i + 1 < n; i++) {
        char c = (char)below(w, 256);
        buf[i] = c == '\n' ? 'n' : c;
    }
    buf[n - 1] = '\n';
    return n;
}

static void reset_close(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* Reads until end of input (or a reset after it); returns the bytes. */
static ssize_t read_to_end(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET && got > 0))
            return (ssize_t)got;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        got += (size_t)r;
        if (got == cap)
            return (ssize_t)got;
    }
}

/* Persistent (many lines) or short (one line) connection. */
static void do_lines(worker *w, int count)
{
    char line[LINE_MAX_BYTES], back[LINE_MAX_BYTES];
    int fd = client_connect(w->address);
    if (fd < 0) {
        problem(w, false, "connect", fd);
        return;
    }
    w->r.connections++;
    for (int i = 0; i < count; i++) {
        size_t n = make_line(w, line, 200);
        if (client_send_all(fd, line, n) != 0) {
            problem(w, false, "send", errno);
            break;
        }
        ssize_t got = client_recv_line(fd, back, sizeof(back));
        if (got != (ssize_t)n || memcmp(back, line, n) != 0) {
            problem(w, true, "echo mismatch", (long)got);
            break;
        }
        w->r.lines++;
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* What the server answers to `in`, sent whole and then end of input. */
static size_t expected_reply(const char *in, size_t n, char *out)
{
    size_t o = 0, p = 0;
    while (p < n) {
        size_t rest = n - p, upto = rest < LINE_MAX_BYTES ? rest
                                                          : LINE_MAX_BYTES;
        const char *nl = memchr(in + p, '\n', upto);
        size_t len = nl ? (size_t)(nl - (in + p)) + 1 : upto;
        if (nl == NULL && len == LINE_MAX_BYTES) {
            memcpy(out + o, TOO_LONG, strlen(TOO_LONG));
            return o + strlen(TOO_LONG);
        }
        memcpy(out + o, in + p, len);
        o += len;
        p += len;
    }
    return o;
}

static void do_garbage(worker *w)
{
    static _Thread_local char in[4096], want[4096 + 64], got[4096 + 64];
    size_t n = 1 + below(w, sizeof(in) - 1);
    unsigned newline_every = 1 + below(w, 2000);
    for (size_t i = 0; i < n; i++)
        in[i] = below(w, newline_every) == 0 ? '\n' : (char)below(w, 256);
    size_t wn = expected_reply(in, n, want);
    int fd = client_connect(w->address);
    if (fd < 0) {
        problem(w, false, "connect", fd);
        return;
    }
    w->r.connections++;
    w->r.garbage++;
    if (client_send_all(fd, in, n) != 0) {
        /* The server may end the connection at an over-long line while
         * the rest is still being sent. */
        if (errno != ECONNRESET && errno != EPIPE)
            problem(w, false, "send garbage", errno);
    }
    shutdown(fd, SHUT_WR);
    ssize_t g = read_to_end(fd, got, sizeof(got));
    if (g != (ssize_t)wn || memcmp(got, want, wn) != 0)
        problem(w, true, "garbage reply mismatch", (long)g);
    close(fd);
}

static void do_too_long(worker *w)
{
    char buf[LINE_MAX_BYTES + 600], got[64];
    size_t n = LINE_MAX_BYTES + below(w, 500);
    memset(buf, 'x', n);
    buf[n++] = '\n';
    int fd = client_connect(w->address);
    if (fd < 0) {
        problem(w, false, "connect", fd);
        return;
    }
    w->r.connections++;
    w->r.too_long++;
    (void)client_send_all(fd, buf, n);
    ssize_t g = read_to_end(fd, got, sizeof(got));
    if (g != (ssize_t)strlen(TOO_LONG) || memcmp(got, TOO_LONG, (size_t)g))
        problem(w, true, "too-long reply mismatch", (long)g);
    close(fd);
}

static void do_reset(worker *w)
{
    char line[256];
    int fd = client_connect(w->address);
    if (fd < 0) {
        problem(w, false, "connect", fd);
        return;
    }
    w->r.connections++;
    w->r.resets++;
    size_t n = make_line(w, line, sizeof(line));
    /* Half a line, or a whole one whose reply is never read. */
    if (below(w, 2) == 0 && n > 1)
        n /= 2;
    (void)client_send_all(fd, line, n);
    reset_close(fd);
}

static void stream_turn(worker *w)
{
    unsigned pick = below(w, 100);
    if (pick < 35)
        do_lines(w, 2 + (int)below(w, 30));
    else if (pick < 65)
        do_lines(w, 1);
    else if (pick < 80)
        do_garbage(w);
    else if (pick < 88)
        do_too_long(w);
    else
        do_reset(w);
}

static void dgram_turn(worker *w, int fd)
{
    static _Thread_local char pkt[2048], got[2048 + 1];
    unsigned pick = below(w, 100);
    size_t n = below(w, 8) == 0 ? 0 : below(w, sizeof(pkt));
    for (size_t i = 0; i < n; i++)
        pkt[i] = (char)below(w, 256);
    if (pick < 8) {
        /* A client that leaves before its reply: the server's reply then
         * fails (Unix: no such socket; UDP: port unreachable later). */
        int once = client_dgram(w->address);
        if (once < 0) {
            problem(w, false, "socket", once);
            return;
        }
        (void)send(once, pkt, n, 0);
        client_close(once);
        w->r.abandoned++;
        return;
    }
    if (send(fd, pkt, n, 0) != (ssize_t)n) {
        problem(w, false, "send datagram", errno);
        return;
    }
    ssize_t g; /* 5 s client timeout */
    do
        g = recv(fd, got, sizeof(got), 0);
    while (g < 0 && errno == EINTR);
    if (g != (ssize_t)n || memcmp(got, pkt, n) != 0) {
        problem(w, g < 0, "datagram reply mismatch", (long)g);
        return;
    }
    w->r.datagrams++;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    int fd = -1;
    if (w->dgram && (fd = client_dgram(w->address)) < 0) {
        problem(w, false, "socket", fd);
        return NULL;
    }
    while (now_seconds() < w->deadline && w->r.wrong == 0) {
        if (w->dgram)
            dgram_turn(w, fd);
        else
            stream_turn(w);
    }
    if (fd >= 0)
        client_close(fd);
    return NULL;
}

/* The client process: runs the workers until the deadline, writes the
 * summed report to fd, exits 0 if every reply was right. */
static int load_main(const char *address, bool dgram, double deadline,
                     int fd, unsigned seed)
{
    int nw = dgram ? DGRAM_WORKERS : STREAM_WORKERS;
    worker ws[STREAM_WORKERS > DGRAM_WORKERS ? STREAM_WORKERS
                                             : DGRAM_WORKERS];
    pthread_t t[sizeof(ws) / sizeof(ws[0])];
    load_report sum;

    memset(ws, 0, sizeof(ws));
    memset(&sum, 0, sizeof(sum));
    for (int i = 0; i < nw; i++) {
        ws[i].address = address;
        ws[i].dgram = dgram;
        ws[i].deadline = deadline;
        ws[i].rng = 0x9E3779B97F4A7C15ULL * (seed + (unsigned)i + 1);
        if (pthread_create(&t[i], NULL, worker_main, &ws[i]) != 0)
            return 2;
    }
    for (int i = 0; i < nw; i++) {
        pthread_join(t[i], NULL);
        load_report *r = &ws[i].r;
        sum.connections += r->connections;
        sum.lines += r->lines;
        sum.garbage += r->garbage;
        sum.too_long += r->too_long;
        sum.resets += r->resets;
        sum.datagrams += r->datagrams;
        sum.abandoned += r->abandoned;
        sum.wrong += r->wrong;
        sum.client_errors += r->client_errors;
        if (sum.first_problem[0] == '\0')
            memcpy(sum.first_problem, r->first_problem,
                   sizeof(sum.first_problem));
    }
    if (write(fd, &sum, sizeof(sum)) != (ssize_t)sizeof(sum))
        return 3;
    return sum.wrong == 0 && sum.client_errors == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------------ */
/* One variant                                                               */

typedef struct variant {
    const char *name;
    const sks_server_ops *ops;
    bool unix_addr, dgram;
} variant;

static const variant variants[] = {
    { "TCPServer", &sks_tcp_ops, false, false },
    { "UDPServer", &sks_udp_ops, false, true },
    { "UnixStreamServer", &sks_unix_stream_ops, true, false },
    { "UnixDatagramServer", &sks_unix_dgram_ops, true, true },
    { "ThreadingTCPServer", &sks_threading_tcp_ops, false, false },
    { "ThreadingUDPServer", &sks_threading_udp_ops, false, true },
    { "ThreadingUnixStreamServer", &sks_threading_unix_stream_ops, true,
      false },
    { "ThreadingUnixDatagramServer", &sks_threading_unix_dgram_ops, true,
      true },
    { "ForkingTCPServer", &sks_forking_tcp_ops, false, false },
    { "ForkingUDPServer", &sks_forking_udp_ops, false, true },
    { "ForkingUnixStreamServer", &sks_forking_unix_stream_ops, true, false },
    { "ForkingUnixDatagramServer", &sks_forking_unix_dgram_ops, true, true },
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

static double seconds_each;

static long rss_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void run_variant(void **state)
{
    const variant *v = *state;
    static sks_server_ops ops;
    char address[SKS_ADDRSTRLEN], path[SKS_ADDRSTRLEN] = "";
    sks_server *srv = NULL;
    test_server ts;
    int rp[2];

    int fds0 = count_open_fds(), children0 = count_children();
    long rss0 = rss_kib();
    ops = *v->ops;
    ops.handle_error = quiet_handle_error;
    if (v->unix_addr) {
        unix_temp_address(address, sizeof(address));
        snprintf(path, sizeof(path), "%s", address + 5);
    } else {
        snprintf(address, sizeof(address), "127.0.0.1:0");
    }
    assert_int_equal(sks_server_new(&srv, &ops, address,
                                    v->dgram ? &soak_dgram_class
                                             : &soak_stream_class,
                                    NULL, SKS_NO_BIND), 0);
    sks_server_set_unlink_on_close(srv, true);
    sks_server_set_max_children(srv, 64);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    assert_true(sks_addr_format(sks_server_address(srv), address,
                                sizeof(address)) > 0);

    /* The load, in its own process, forked while this one has no other
     * thread. */
    double t0 = now_seconds(), end = t0 + seconds_each;
    assert_int_equal(pipe2(rp, O_CLOEXEC), 0);
    pid_t load = fork();
    assert_true(load >= 0);
    if (load == 0) {
        /* This process only connects to the server; the copies of the
         * server's descriptors it got are never used. */
        close(rp[0]);
        _exit(load_main(address, v->dgram, end, rp[1],
                        (unsigned)(v - variants)));
    }
    close(rp[1]);
    ts_serve(&ts, srv, 0.1);

    /* Until the load ends (its report comes at the deadline), sample the
     * server process: resident memory and descriptors.  Warm-up is the
     * first fifth (arenas, thread stacks and buffers settle). */
    double warm_end = t0 + seconds_each / 5;
    long rss_warm = -1, rss_peak = rss0;
    int fds_peak = fds0;
    struct pollfd pf = { .fd = rp[0], .events = POLLIN };
    while (poll(&pf, 1, 100) == 0 && now_seconds() < end + 30) {
        long rss = rss_kib();
        int fds = count_open_fds();
        if (rss > rss_peak)
            rss_peak = rss;
        if (fds > fds_peak)
            fds_peak = fds;
        if (rss_warm < 0 && now_seconds() >= warm_end)
            rss_warm = rss;
    }
    if (rss_warm < 0)
        rss_warm = rss_kib();

    load_report rep;
    memset(&rep, 0, sizeof(rep));
    int status = 0;
    ssize_t got = read(rp[0], &rep, sizeof(rep));
    assert_int_equal(waitpid(load, &status, 0), load);
    close(rp[0]);
    long rss_end = rss_kib();
    sks_stats st;
    sks_server_stats(srv, &st);
    ts_stop(&ts);
    double took = now_seconds() - t0;
    int fds1 = count_open_fds(), children1 = count_children();

    print_message("  %-28s %5.1f s  requests %7zu served %7zu failed %5zu | "
                  "client: conns %6lu lines %7lu dgrams %7lu garbage %5lu "
                  "too-long %4lu resets %5lu abandoned %4lu wrong %lu "
                  "errors %lu | RSS KiB start %ld warm %ld end %ld peak %ld "
                  "| fds %d -> %d (peak %d) | children %d -> %d\n",
                  v->name, took, st.accepted, st.completed, st.failed,
                  rep.connections, rep.lines, rep.datagrams, rep.garbage,
                  rep.too_long, rep.resets, rep.abandoned, rep.wrong,
                  rep.client_errors, rss0, rss_warm, rss_end, rss_peak,
                  fds0, fds1, fds_peak, children0, children1);
    if (rep.first_problem[0] != '\0')
        print_message("    first problem: %s\n", rep.first_problem);

    assert_int_equal(got, (ssize_t)sizeof(rep));
    assert_true(WIFEXITED(status));
    assert_int_equal(rep.wrong, 0);
    assert_int_equal(rep.client_errors, 0);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(st.accepted > 0);
    assert_int_equal(fds1, fds0);
    assert_int_equal(children1, children0);
    if (path[0] != '\0')
        assert_int_equal(access(path, F_OK), -1);
    /* No growth after warm-up: within 10%. */
    assert_true(rss_end * 10 <= rss_warm * 11);
}

int main(void)
{
    const char *env = getenv("SOAK_SECONDS");
    double total = env != NULL ? atof(env) : 60.0;
    if (total < NVARIANTS * 0.5)
        total = NVARIANTS * 0.5;
    seconds_each = total / NVARIANTS;
    signal(SIGPIPE, SIG_DFL); /* the library must never raise it */
    print_message("soak: %zu variants, %.1f s each\n", NVARIANTS,
                  seconds_each);

    struct CMUnitTest tests[NVARIANTS];
    for (size_t i = 0; i < NVARIANTS; i++) {
        struct CMUnitTest t = cmocka_unit_test_prestate(run_variant,
                                                        (void *)&variants[i]);
        t.name = variants[i].name;
        tests[i] = t;
    }
    return cmocka_run_group_tests_name("soak", tests, NULL, NULL);
}
