/*
 * test_faults.c - fault injection: descriptor exhaustion, peers that reset,
 * slow clients, handlers that always fail, shutdown under load.  Each test
 * also checks that descriptors, threads and children return to their
 * starting counts.
 *
 * Every handler and handle_error reports what happened as one byte on a
 * pipe ("report pipe"), which works the same from the serving thread, a
 * request thread or a forked child: 'E' a handler started, 'F' it finished,
 * and one byte per handle_error call naming the error.  SIGPIPE is left at
 * its default action, so a send that raised it would kill this process (or
 * the forked child, whose report would then be missing).
 *
 * SKS_FAULT_REQUESTS=N overrides the failing-handler test's request count
 * (1000, and 300 for the forking servers, whose fork per request costs
 * seconds under the sanitizers and valgrind).  SKS_TEST_FILTER=PATTERN runs
 * only the matching tests.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Shared plumbing                                                           */

/* Stream handlers serve one line and return, as CPython's tests do: a
 * forked child then never waits for a client socket to close, which
 * would not happen while a later child holds an inherited copy of it. */
enum mode {
    MODE_ECHO,       /* echo one line */
    MODE_GATED_ECHO, /* report 'E', wait for a byte on the go pipe, echo */
    MODE_BIG_REPLY,  /* read a line, report 'E', write megabytes */
    MODE_FAIL,       /* consume the request, then fail */
};

typedef struct fault_ctx {
    atomic_int mode;          /* enum mode; changed while serving */
    pid_t pid;                /* the test process */
    int report_rd, report_wr; /* the report pipe */
    int go_rd, go_wr;         /* the gate of MODE_GATED_ECHO */
    int counts[256];          /* report bytes read so far, by kind */
} fault_ctx;

/* EINTR retried: under valgrind a child's SIGCHLD interrupts calls even
 * at its default disposition. */
static ssize_t recv_retry(int fd, void *buf, size_t n, int flags)
{
    ssize_t r;
    do
        r = recv(fd, buf, n, flags);
    while (r < 0 && errno == EINTR);
    return r;
}

static int poll_retry(struct pollfd *p, nfds_t n, int timeout_ms)
{
    int r;
    do
        r = poll(p, n, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r;
}

static void report(fault_ctx *c, char kind)
{
    ssize_t r;
    do
        r = write(c->report_wr, &kind, 1);
    while (r < 0 && errno == EINTR);
}

static char error_kind(int err)
{
    switch (err) {
    case SKS_EHANDLER:
        return 'H';
    case -ECONNRESET:
        return 'R';
    case -EPIPE:
        return 'P';
    case -ETIMEDOUT:
        return 'T';
    default:
        return '?';
    }
}

static void fault_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)req;
    report(sks_server_user(srv), error_kind(err));
}

static void ctx_init(fault_ctx *c, enum mode mode)
{
    int p[2];
    memset(c, 0, sizeof(*c));
    atomic_init(&c->mode, mode);
    c->pid = getpid();
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    c->report_rd = p[0];
    c->report_wr = p[1];
    assert_int_equal(fcntl(c->report_rd, F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    c->go_rd = p[0];
    c->go_wr = p[1];
}

static void ctx_close(fault_ctx *c)
{
    close(c->report_rd);
    close(c->report_wr);
    close(c->go_rd);
    close(c->go_wr);
}

/* Reads report bytes until `want` of `kind` have arrived in all, or the
 * time is up; returns the count of `kind`.  want 0: just drain. */
static int await_reports(fault_ctx *c, char kind, int want, int timeout_ms)
{
    double end = now_seconds() + timeout_ms / 1000.0;
    for (;;) {
        char buf[512];
        ssize_t n;
        while ((n = read(c->report_rd, buf, sizeof(buf))) > 0)
            for (ssize_t i = 0; i < n; i++)
                c->counts[(unsigned char)buf[i]]++;
        double left = end - now_seconds();
        if (c->counts[(unsigned char)kind] >= want || left <= 0)
            return c->counts[(unsigned char)kind];
        struct pollfd p = { .fd = c->report_rd, .events = POLLIN };
        poll(&p, 1, (int)(left * 1000) + 1);
    }
}

/* The error reports received so far, all kinds. */
static int error_reports(const fault_ctx *c)
{
    return c->counts['H'] + c->counts['R'] + c->counts['P'] + c->counts['T'] +
           c->counts['?'];
}

/* Waits until n error reports, of any kind, have arrived in all (they
 * come after the handler's 'F'); returns the count. */
static int await_errors(fault_ctx *c, int n, int timeout_ms)
{
    double end = now_seconds() + timeout_ms / 1000.0;
    for (;;) {
        await_reports(c, 'F', 0, 0);
        if (error_reports(c) >= n || now_seconds() >= end)
            return error_reports(c);
        sleep_ms(2);
    }
}

static bool wait_go(fault_ctx *c)
{
    struct pollfd p = { .fd = c->go_rd, .events = POLLIN };
    char b;
    /* Bounded: a test that never opens the gate still ends. */
    if (poll_retry(&p, 1, 20000) != 1)
        return false;
    return read(c->go_rd, &b, 1) == 1;
}

/* The gate's wait blocks: through sks_run_blocking, which under the fiber
 * model runs it on a helper thread (a fiber must not block its loop) and
 * under the other models simply calls it. */
typedef struct gate_wait {
    fault_ctx *c;
    bool open;
} gate_wait;

static void wait_go_blocking(void *arg)
{
    gate_wait *g = arg;
    g->open = wait_go(g->c);
}

static bool pass_gate(sks_handler *h, fault_ctx *c)
{
    gate_wait g = { c, false };
    return sks_run_blocking(h, wait_go_blocking, &g) == 0 && g.open;
}

static void open_gate(fault_ctx *c, int n)
{
    char buf[256];
    memset(buf, 'g', sizeof(buf));
    while (n > 0) {
        int k = n < (int)sizeof(buf) ? n : (int)sizeof(buf);
        assert_int_equal(write(c->go_wr, buf, (size_t)k), k);
        n -= k;
    }
}

static int echo_line(sks_handler *h)
{
    char line[512];
    ssize_t n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    if (n > 0)
        n = sks_wfile_write(sks_handler_wfile(h), line, (size_t)n);
    return n < 0 ? (int)n : 0;
}

static int fault_handle(sks_handler *h)
{
    fault_ctx *c = sks_server_user(sks_handler_server(h));
    sks_rfile *r = sks_handler_rfile(h);
    sks_wfile *w = sks_handler_wfile(h);
    char line[512];
    int err = 0;

    /* A forked child outlives no test, even if the library under test
     * lost its timeouts: SIGALRM's default action ends it. */
    if (getpid() != c->pid)
        alarm(60);
    switch ((enum mode)atomic_load(&c->mode)) {
    case MODE_ECHO:
        err = echo_line(h);
        break;
    case MODE_GATED_ECHO:
        report(c, 'E');
        err = pass_gate(h, c) ? echo_line(h) : SKS_EHANDLER;
        break;
    case MODE_BIG_REPLY: {
        static char chunk[65536];
        ssize_t n = sks_rfile_readline(r, line, sizeof(line));
        report(c, 'E');
        /* 64 MiB at most: far more than socket buffers hold, so a peer
         * that stops reading and resets is noticed by a send. */
        for (int i = 0; n > 0 && i < 1024; i++)
            n = sks_wfile_write(w, chunk, sizeof(chunk));
        /* A careless handler writes again after the failure: on a reset
         * TCP connection that send meets EPIPE, which must not raise
         * SIGPIPE either. */
        if (n < 0)
            (void)sks_wfile_write(w, chunk, 1);
        err = n < 0 ? (int)n : 0;
        break;
    }
    case MODE_FAIL:
        if (sks_server_socket_type(sks_handler_server(h)) == SOCK_STREAM)
            (void)sks_rfile_readline(r, line, sizeof(line));
        err = SKS_EHANDLER;
        break;
    }
    report(c, 'F');
    return err;
}

/* Counts of this process's descriptors, threads and children. */
typedef struct census {
    int fds, threads, children;
} census;

static census census_now(void)
{
    census a = { count_open_fds(), count_threads(), count_children() };
    return a;
}

static bool threads_back(void *arg)
{
    return count_threads() <= *(int *)arg;
}

/* Everything back to where it started: no descriptor, thread or child
 * left behind. */
static void assert_census(const census *start)
{
    int t = start->threads;
    /* A joined thread leaves /proc a moment after its join returns. */
    wait_until(threads_back, &t, 2000);
    assert_int_equal(count_threads(), start->threads);
    assert_int_equal(count_children(), start->children);
    assert_int_equal(count_open_fds(), start->fds);
}

/* The variants under test. */
typedef struct variant {
    const char *name;
    const sks_server_ops *ops;
    bool unix_addr, dgram, forking;
} variant;

static const variant all_variants[] = {
    { "TCPServer", &sks_tcp_ops, false, false, false },
    { "UDPServer", &sks_udp_ops, false, true, false },
    { "UnixStreamServer", &sks_unix_stream_ops, true, false, false },
    { "UnixDatagramServer", &sks_unix_dgram_ops, true, true, false },
    { "ThreadingTCPServer", &sks_threading_tcp_ops, false, false, false },
    { "ThreadingUDPServer", &sks_threading_udp_ops, false, true, false },
    { "ThreadingUnixStreamServer", &sks_threading_unix_stream_ops, true,
      false, false },
    { "ThreadingUnixDatagramServer", &sks_threading_unix_dgram_ops, true,
      true, false },
    { "ForkingTCPServer", &sks_forking_tcp_ops, false, false, true },
    { "ForkingUDPServer", &sks_forking_udp_ops, false, true, true },
    { "ForkingUnixStreamServer", &sks_forking_unix_stream_ops, true, false,
      true },
    { "ForkingUnixDatagramServer", &sks_forking_unix_dgram_ops, true, true,
      true },
    { "FiberTCPServer", &sks_fiber_tcp_ops, false, false, false },
    { "FiberUDPServer", &sks_fiber_udp_ops, false, true, false },
    { "FiberUnixStreamServer", &sks_fiber_unix_stream_ops, true, false,
      false },
    { "FiberUnixDatagramServer", &sks_fiber_unix_dgram_ops, true, true,
      false },
};

static const variant *find_variant(const char *name)
{
    for (size_t i = 0; i < sizeof(all_variants) / sizeof(all_variants[0]); i++)
        if (strcmp(all_variants[i].name, name) == 0)
            return &all_variants[i];
    fail_msg("no variant %s", name);
    return NULL;
}

/* A running server of variant v whose handle_error reports to c.  `ops`
 * is storage for the table, which must outlive the server. */
typedef struct fault_server {
    test_server ts;
    sks_server_ops ops;
    char path[SKS_ADDRSTRLEN]; /* a Unix socket file, or "" */
} fault_server;

static const sks_handler_class stream_class = {
    .setup = sks_stream_setup,
    .handle = fault_handle,
    .finish = sks_stream_finish,
};

static const sks_handler_class dgram_class = {
    .setup = sks_datagram_setup,
    .handle = fault_handle,
    .finish = sks_datagram_finish,
};

static void fs_start(fault_server *fs, const variant *v, fault_ctx *c,
                     const sks_handler_class *cls, size_t max_children)
{
    char address[SKS_ADDRSTRLEN];
    sks_server *srv = NULL;

    fs->ops = *v->ops;
    fs->ops.handle_error = fault_handle_error;
    fs->path[0] = '\0';
    if (v->unix_addr) {
        unix_temp_address(address, sizeof(address));
        snprintf(fs->path, sizeof(fs->path), "%s", address + 5);
    } else {
        snprintf(address, sizeof(address), "127.0.0.1:0");
    }
    if (cls == NULL)
        cls = v->dgram ? &dgram_class : &stream_class;
    int err = sks_server_new(&srv, &fs->ops, address, cls, c, SKS_NO_BIND);
    if (err != 0)
        fail_msg("%s: %s", v->name, sks_strerror(err));
    assert_int_equal(sks_server_set_unlink_on_close(srv, true), 0);
    if (max_children != 0)
        assert_int_equal(sks_server_set_max_children(srv, max_children), 0);
    assert_int_equal(sks_server_bind_and_activate(srv), 0);
    ts_serve(&fs->ts, srv, 0.05);
}

static void fs_stop(fault_server *fs)
{
    ts_stop(&fs->ts);
    if (fs->path[0] != '\0')
        assert_int_equal(access(fs->path, F_OK), -1);
}

static double thread_cpu_seconds(pthread_t t)
{
    clockid_t cid;
    struct timespec ts;
    assert_int_equal(pthread_getcpuclockid(t, &cid), 0);
    assert_int_equal(clock_gettime(cid, &ts), 0);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *nothing(void *arg)
{
    return arg;
}

static int group_setup(void **state)
{
    (void)state;
    /* A sanitizer runtime may start a helper thread at the first
     * pthread_create (TSan does): let it happen before any count. */
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0)
        pthread_join(t, NULL);
    /* A SIGPIPE raised by the library must kill the test, not be ignored
     * by chance of an inherited disposition. */
    signal(SIGPIPE, SIG_DFL);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Descriptor exhaustion                                                     */

/*
 * With every descriptor in use, a pending connection makes the listening
 * socket readable while accept() fails with EMFILE.  A loop that retried at
 * once would spin at 100% CPU; the library pauses accepting for a back-off
 * instead.  The serving thread's CPU time over one second of exhaustion
 * must stay small, the server must keep running, and once descriptors are
 * free the waiting clients are served.
 */
static void exhaustion_case(const char *name)
{
    const variant *v = find_variant(name);
    census start = census_now();
    fault_ctx c;
    fault_server fs;
    enum { NCLIENTS = 3 };
    int cl[NCLIENTS];
    sks_addr a;

    ctx_init(&c, MODE_ECHO);
    fs_start(&fs, v, &c, NULL, 0);
    assert_int_equal(sks_addr_parse(fs.ts.address, &a), 0);
    /* The clients' sockets exist before the descriptors run out. */
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i] = socket(a.u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(cl[i] >= 0);
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(cl[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(cl[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }

    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)count_open_fds() + 16;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    size_t nfill = 0, capfill = 64;
    int *fill = malloc(capfill * sizeof(*fill));
    int dup_errno = 0;
    assert_non_null(fill);
    for (;;) {
        int fd = fcntl(c.report_rd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            dup_errno = errno;
            break;
        }
        if (nfill == capfill) {
            capfill *= 2;
            int *p = realloc(fill, capfill * sizeof(*fill));
            if (p == NULL) {
                close(fd);
                dup_errno = ENOMEM;
                break;
            }
            fill = p;
        }
        fill[nfill++] = fd;
    }

    /* The handshakes complete in the listen backlog; accept cannot take
     * them.  Only time passes here: nothing to synchronise with. */
    int conn_err = 0;
    for (int i = 0; i < NCLIENTS; i++)
        if (connect(cl[i], &a.u.sa, a.len) != 0)
            conn_err = errno;
    double cpu0 = thread_cpu_seconds(fs.ts.thread);
    sleep_ms(1000);
    double cpu = thread_cpu_seconds(fs.ts.thread) - cpu0;
    sks_stats st;
    sks_server_stats(fs.ts.srv, &st);

    for (size_t i = 0; i < nfill; i++)
        close(fill[i]);
    free(fill);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    double t_free = now_seconds();

    assert_int_equal(dup_errno, EMFILE);
    assert_int_equal(conn_err, 0);
    assert_int_equal(st.accepted, 0); /* nothing could be accepted ... */
    print_message("    %s: serving thread CPU %.3f s in 1 s of EMFILE\n",
                  v->name, cpu);
    assert_true(cpu < 0.2);           /* ... and the loop did not spin */

    /* Descriptors are back: every waiting client is served (under
     * valgrind, a new one: valgrind only emulates a lowered RLIMIT_NOFILE,
     * so the kernel accepted each waiting connection and valgrind closed
     * it and reported EMFILE, dropping the client). */
    for (int i = 0; i < NCLIENTS; i++) {
        if (under_valgrind()) {
            client_close(cl[i]);
            cl[i] = client_connect(fs.ts.address);
            assert_true(cl[i] >= 0);
        }
        assert_echo(cl[i], "served after exhaustion\n");
        client_close(cl[i]);
    }
    print_message("    %s: first reply %.0f ms after descriptors freed\n",
                  v->name, (now_seconds() - t_free) * 1000);
    assert_true(now_seconds() - t_free < 3.0);
    fs_stop(&fs);
    assert_int_equal(error_reports(&c), 0);
    ctx_close(&c);
    assert_census(&start);
}

static void test_emfile_does_not_spin_and_recovers_tcp(void **state)
{
    (void)state;
    exhaustion_case("TCPServer");
}

static void test_emfile_does_not_spin_and_recovers_threading(void **state)
{
    (void)state;
    exhaustion_case("ThreadingTCPServer");
}

static void test_emfile_does_not_spin_and_recovers_fiber(void **state)
{
    (void)state;
    exhaustion_case("FiberTCPServer");
}

static void test_emfile_does_not_spin_and_recovers_forking(void **state)
{
    (void)state;
    exhaustion_case("ForkingTCPServer");
}

static void test_emfile_does_not_spin_and_recovers_unix_stream(void **state)
{
    (void)state;
    exhaustion_case("UnixStreamServer");
}

/* ------------------------------------------------------------------------ */
/* Peers that reset                                                          */

/* A fresh client is served normally: the server is still up. */
static void assert_serves(fault_server *fs)
{
    int fd = client_connect(fs->ts.address);
    assert_true(fd >= 0);
    assert_echo(fd, "next client\n");
    client_close(fd);
}

/*
 * A client in a process of its own, as a real peer is: a forked server
 * child then holds no copy of its socket, so its close really closes, and
 * a reset really resets.  It connects, sends `send1`, waits for the
 * test's go byte if `wait`, sends `send2`, reads `take` bytes of the reply,
 * then closes, with an RST if `reset`.  Exit status 0 when all went so.
 *
 * The peer is this program again (posix_spawn, "--peer" arguments), a new
 * process image: a fork of this multi-threaded process would show valgrind
 * blocks that only the threads it lost referred to, as leaks.
 */
typedef struct peer_script {
    const char *send1;
    bool wait;
    const char *send2;
    size_t take;
    bool reset;
} peer_script;

typedef struct peer {
    pid_t pid;
    int go_wr;
} peer;

#define PEER_GO_FD 3 /* where the peer finds the go pipe */

/* argv: --peer ADDRESS SEND1 WAIT SEND2 TAKE RESET ("-": nothing). */
static int peer_main(char **argv)
{
    char buf[8192];
    const char *send1 = strcmp(argv[3], "-") ? argv[3] : NULL;
    const char *send2 = strcmp(argv[5], "-") ? argv[5] : NULL;
    size_t take = (size_t)atoi(argv[6]);
    int fd = client_connect(argv[2]);
    if (fd < 0)
        return 10;
    if (send1 != NULL && client_send_all(fd, send1, strlen(send1)) != 0)
        return 11;
    if (strcmp(argv[4], "1") == 0) {
        struct pollfd p = { .fd = PEER_GO_FD, .events = POLLIN };
        if (poll_retry(&p, 1, 20000) != 1 || read(PEER_GO_FD, buf, 1) != 1)
            return 12;
    }
    if (send2 != NULL && client_send_all(fd, send2, strlen(send2)) != 0)
        return 13;
    if (take > sizeof(buf) ||
        (take > 0 &&
         recv_retry(fd, buf, take, MSG_WAITALL) != (ssize_t)take))
        return 14;
    if (strcmp(argv[7], "1") == 0) {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0)
            return 15;
    }
    close(fd);
    return 0;
}

static void peer_start(peer *pe, const char *address, const peer_script *s)
{
    char self[4096], take[32];
    int p[2];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0 && !proc_mounted())
        skip_because("needs /proc/self/exe to re-execute this test as the peer");
    assert_true(n > 0);
    self[n] = '\0';
    snprintf(take, sizeof(take), "%zu", s->take);
    char *argv[] = { self, "--peer", (char *)address,
                     (char *)(s->send1 ? s->send1 : "-"),
                     s->wait ? "1" : "0",
                     (char *)(s->send2 ? s->send2 : "-"), take,
                     s->reset ? "1" : "0", NULL };
    /* Every descriptor of this process is close-on-exec (the library's
     * too): the peer gets only the go pipe, as descriptor 3. */
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, p[0], PEER_GO_FD),
                     0);
    assert_int_equal(posix_spawn(&pe->pid, self, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(p[0]);
    pe->go_wr = p[1];
}

static void peer_go(peer *pe)
{
    assert_int_equal(write(pe->go_wr, "g", 1), 1);
}

/* Waits for the peer to finish its script; it must have succeeded. */
static void peer_end(peer *pe)
{
    int status = 0;
    close(pe->go_wr);
    assert_int_equal(waitpid(pe->pid, &status, 0), pe->pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The peer sends half a line and resets while the handler waits in
 * readline: the read fails with ECONNRESET, reported once. */
static void reset_mid_line_case(const char *name)
{
    const variant *v = find_variant(name);
    census start = census_now();
    fault_ctx c;
    fault_server fs;
    peer pe;
    const peer_script script = { .wait = true, .send2 = "half a li",
                                 .reset = true };

    ctx_init(&c, MODE_GATED_ECHO);
    fs_start(&fs, v, &c, NULL, 0);
    peer_start(&pe, fs.ts.address, &script);
    assert_int_equal(await_reports(&c, 'E', 1, 5000), 1);
    open_gate(&c, 1); /* the handler goes on to readline */
    peer_go(&pe);     /* the peer sends half a line and resets */
    peer_end(&pe);
    assert_int_equal(await_reports(&c, 'F', 1, 5000), 1);
    assert_int_equal(await_errors(&c, 1, 5000), 1);
    assert_int_equal(c.counts['R'], 1);

    /* Shared with request threads; later forked children copy it. */
    atomic_store(&c.mode, MODE_ECHO);
    assert_serves(&fs);
    fs_stop(&fs);
    await_reports(&c, 'F', 0, 0);
    assert_int_equal(error_reports(&c), 1); /* and no second report */
    ctx_close(&c);
    assert_census(&start);
}

static void test_reset_mid_line_reported_once_tcp(void **state)
{
    (void)state;
    reset_mid_line_case("TCPServer");
}

static void test_reset_mid_line_reported_once_threading(void **state)
{
    (void)state;
    reset_mid_line_case("ThreadingTCPServer");
}

static void test_reset_mid_line_reported_once_fiber(void **state)
{
    (void)state;
    reset_mid_line_case("FiberTCPServer");
}

static void test_reset_mid_line_reported_once_forking(void **state)
{
    (void)state;
    reset_mid_line_case("ForkingTCPServer");
}

/* The peer takes a little of a large reply, then resets (TCP) or closes
 * with unread data (Unix): the next send fails with EPIPE or ECONNRESET,
 * never SIGPIPE, and the failure is reported once. */
static void reset_mid_reply_case(const char *name)
{
    const variant *v = find_variant(name);
    census start = census_now();
    fault_ctx c;
    fault_server fs;
    peer pe;
    const peer_script script = { .send1 = "send me a lot\n", .take = 4096,
                                 .reset = !v->unix_addr };

    ctx_init(&c, MODE_BIG_REPLY);
    fs_start(&fs, v, &c, NULL, 0);
    peer_start(&pe, fs.ts.address, &script);
    peer_end(&pe);
    assert_int_equal(await_reports(&c, 'F', 1, 10000), 1);
    assert_int_equal(await_errors(&c, 1, 5000), 1);
    assert_int_equal(c.counts['P'] + c.counts['R'], 1);

    atomic_store(&c.mode, MODE_ECHO);
    assert_serves(&fs);
    fs_stop(&fs);
    await_reports(&c, 'F', 0, 0);
    assert_int_equal(error_reports(&c), 1); /* and no second report */
    ctx_close(&c);
    assert_census(&start);
}

static void test_reset_mid_reply_no_sigpipe_tcp(void **state)
{
    (void)state;
    reset_mid_reply_case("TCPServer");
}

static void test_reset_mid_reply_no_sigpipe_threading(void **state)
{
    (void)state;
    reset_mid_reply_case("ThreadingTCPServer");
}

static void test_reset_mid_reply_no_sigpipe_fiber(void **state)
{
    (void)state;
    reset_mid_reply_case("FiberTCPServer");
}

static void test_reset_mid_reply_no_sigpipe_forking(void **state)
{
    (void)state;
    reset_mid_reply_case("ForkingTCPServer");
}

static void test_reset_mid_reply_no_sigpipe_unix_stream(void **state)
{
    (void)state;
    reset_mid_reply_case("UnixStreamServer");
}

/* The peer sends a whole line and resets before the handler has read
 * anything: the handler still gets the line or the error, its echo fails,
 * and exactly one failure is reported. */
static void reset_before_read_case(const char *name)
{
    const variant *v = find_variant(name);
    census start = census_now();
    fault_ctx c;
    fault_server fs;
    peer pe;
    const peer_script script = { .send1 = "never read in time\n",
                                 .wait = true, .reset = true };

    ctx_init(&c, MODE_GATED_ECHO);
    fs_start(&fs, v, &c, NULL, 0);
    peer_start(&pe, fs.ts.address, &script);
    assert_int_equal(await_reports(&c, 'E', 1, 5000), 1);
    peer_go(&pe);
    peer_end(&pe);
    sleep_ms(20); /* the RST crosses loopback: no event to wait on */
    open_gate(&c, 1);
    assert_int_equal(await_reports(&c, 'F', 1, 5000), 1);
    assert_int_equal(await_errors(&c, 1, 5000), 1);
    assert_int_equal(c.counts['R'] + c.counts['P'], 1);

    atomic_store(&c.mode, MODE_ECHO);
    assert_serves(&fs);
    fs_stop(&fs);
    await_reports(&c, 'F', 0, 0);
    assert_int_equal(error_reports(&c), 1); /* and no second report */
    ctx_close(&c);
    assert_census(&start);
}

static void test_reset_before_read_reported_once_tcp(void **state)
{
    (void)state;
    reset_before_read_case("TCPServer");
}

static void test_reset_before_read_reported_once_threading(void **state)
{
    (void)state;
    reset_before_read_case("ThreadingTCPServer");
}

static void test_reset_before_read_reported_once_fiber(void **state)
{
    (void)state;
    reset_before_read_case("FiberTCPServer");
}

static void test_reset_before_read_reported_once_forking(void **state)
{
    (void)state;
    reset_before_read_case("ForkingTCPServer");
}

/* ------------------------------------------------------------------------ */
/* Slow clients                                                              */

#define SLOW_CLIENTS 200
#define SLOW_TIMEOUT 3.0

static const sks_handler_class slow_class = {
    .setup = sks_stream_setup,
    .handle = fault_handle,
    .finish = sks_stream_finish,
    .timeout = SLOW_TIMEOUT,
};

static bool all_accepted(void *arg)
{
    sks_stats st;
    sks_server_stats(arg, &st);
    return st.accepted >= SLOW_CLIENTS;
}

/*
 * 200 clients send half a line and stall.  With a handler timeout, they
 * hold a thread or child each but do not stop a fresh client from being
 * served within the timeout; each stalled connection is then closed by
 * the server once the timeout has passed, not before, and reported once
 * as ETIMEDOUT.
 */
static void slow_clients_case(const char *name)
{
    const variant *v = find_variant(name);
    fault_ctx c;
    fault_server fs;
    int stalled[SLOW_CLIENTS];
    double sent_at[SLOW_CLIENTS];
    struct rlimit nproc;

    if (v->forking && getrlimit(RLIMIT_NPROC, &nproc) == 0 &&
        nproc.rlim_cur != RLIM_INFINITY && nproc.rlim_cur < 2 * SLOW_CLIENTS) {
        print_message("    RLIMIT_NPROC %ld is too low: skipped\n",
                      (long)nproc.rlim_cur);
        skip();
    }
    census start = census_now();
    ctx_init(&c, MODE_ECHO);
    fs_start(&fs, v, &c, &slow_class, SLOW_CLIENTS + 50);
    for (int i = 0; i < SLOW_CLIENTS; i++) {
        stalled[i] = client_connect(fs.ts.address);
        assert_true(stalled[i] >= 0);
        assert_int_equal(client_send_all(stalled[i], "half a li", 9), 0);
        sent_at[i] = now_seconds();
    }
    /* All 200 are in handlers (threads or children) before the fresh
     * client comes: with fewer, it could take a freed slot. */
    assert_true(wait_until(all_accepted, fs.ts.srv, 30000));
    double setup = now_seconds() - sent_at[0];

    double t0 = now_seconds();
    int fresh = client_connect(fs.ts.address);
    assert_true(fresh >= 0);
    assert_echo(fresh, "fresh client\n");
    double fresh_s = now_seconds() - t0;
    client_close(fresh);

    /* Each stalled connection ends with EOF from the server, seen as it
     * comes: the time of each is measured. */
    struct pollfd pf[SLOW_CLIENTS];
    int closed = 0, early = 0, left = SLOW_CLIENTS;
    double latest = 0, deadline = now_seconds() + SLOW_TIMEOUT + 15;
    for (int i = 0; i < SLOW_CLIENTS; i++)
        pf[i] = (struct pollfd){ .fd = stalled[i], .events = POLLIN };
    while (left > 0 && now_seconds() < deadline) {
        if (poll(pf, SLOW_CLIENTS, 100) <= 0)
            continue;
        double t = now_seconds();
        for (int i = 0; i < SLOW_CLIENTS; i++) {
            char b;
            if (pf[i].fd < 0 || pf[i].revents == 0)
                continue;
            if (recv_retry(stalled[i], &b, 1, 0) == 0)
                closed++;
            if (t - sent_at[i] < SLOW_TIMEOUT - 0.2)
                early++;
            if (t - sent_at[i] > latest)
                latest = t - sent_at[i];
            pf[i].fd = -1;
            left--;
        }
    }
    for (int i = 0; i < SLOW_CLIENTS; i++)
        client_close(stalled[i]);
    print_message("    %s: %d stalled clients admitted in %.2f s; fresh "
                  "client served in %.0f ms; all closed %.2f s after their "
                  "half line at the latest\n",
                  v->name, SLOW_CLIENTS, setup, fresh_s * 1000, latest);
    assert_true(fresh_s < SLOW_TIMEOUT);
    assert_int_equal(closed, SLOW_CLIENTS);
    assert_int_equal(early, 0);
    assert_int_equal(await_reports(&c, 'T', SLOW_CLIENTS, 10000),
                     SLOW_CLIENTS);
    fs_stop(&fs);
    assert_int_equal(error_reports(&c), SLOW_CLIENTS);
    ctx_close(&c);
    assert_census(&start);
}

static void test_slow_clients_do_not_block_fresh_one_threading(void **state)
{
    (void)state;
    slow_clients_case("ThreadingTCPServer");
}

static void test_slow_clients_do_not_block_fresh_one_fiber(void **state)
{
    (void)state;
    slow_clients_case("FiberTCPServer");
}

static void test_slow_clients_do_not_block_fresh_one_forking(void **state)
{
    (void)state;
    slow_clients_case("ForkingTCPServer");
}

/* ------------------------------------------------------------------------ */
/* A handler that fails on every request                                     */

static int failing_requests(const variant *v)
{
    const char *env = getenv("SKS_FAULT_REQUESTS");
    int n = env != NULL ? atoi(env) : 0;
    if (n > 0)
        return n;
    /* A fork per request costs more: fewer, to keep the suite quick. */
    return v->forking ? 300 : 1000;
}

/*
 * Every request fails; the server goes on serving the next, and each
 * failure reaches handle_error exactly once (counted through the report
 * pipe, written by the thread or child that ran it).
 */
static void failing_handler_case(const variant *v)
{
    census start = census_now();
    fault_ctx c;
    fault_server fs;
    int n = failing_requests(v);
    double t0 = now_seconds();

    ctx_init(&c, MODE_FAIL);
    fs_start(&fs, v, &c, NULL, 0);
    int dg = v->dgram ? client_dgram(fs.ts.address) : -1;
    if (v->dgram)
        assert_true(dg >= 0);
    for (int i = 0; i < n; i++) {
        char buf[64];
        if (v->dgram) {
            /* The Datagram flavour replies even after a failure: an empty
             * datagram, which says the request has been handled. */
            assert_int_equal(send(dg, "x\n", 2, 0), 2);
            ssize_t r = recv_retry(dg, buf, sizeof(buf), 0);
            if (r != 0)
                fail_msg("%s: request %d: reply %zd (%s)", v->name, i, r,
                         r < 0 ? strerror(errno) : "");
        } else {
            int fd = client_connect(fs.ts.address);
            if (fd < 0)
                fail_msg("%s: request %d: connect %s", v->name, i,
                         sks_strerror(fd));
            assert_int_equal(client_send_all(fd, "x\n", 2), 0);
            /* End of input: the server shut the failed request down. */
            ssize_t r = client_recv_all(fd, buf, sizeof(buf));
            if (r != 0)
                fail_msg("%s: request %d: got %zd", v->name, i, r);
            client_close(fd);
        }
    }
    if (dg >= 0)
        client_close(dg);
    /* A datagram's reply leaves before handle_error runs: wait for the
     * reports, then make sure no extra one comes after close. */
    await_reports(&c, 'H', n, 10000);
    fs_stop(&fs);
    await_reports(&c, 'H', 0, 0);
    print_message("    %-28s %4d failing requests, %4d reports, %.2f s\n",
                  v->name, n, c.counts['H'], now_seconds() - t0);
    assert_int_equal(c.counts['H'], n);
    assert_int_equal(error_reports(&c), n);
    assert_int_equal(c.counts['F'], n);
    ctx_close(&c);
    assert_census(&start);
}

static void test_failing_handler_keeps_serving_every_variant(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(all_variants) / sizeof(all_variants[0]); i++)
        failing_handler_case(&all_variants[i]);
}

/* ------------------------------------------------------------------------ */
/* Shutdown under load                                                       */

#define INFLIGHT 100

/* The watchdog: a call that hangs kills the test (SIGALRM's default)
 * instead of the suite's time. */
static void watchdog(unsigned seconds)
{
    signal(SIGALRM, SIG_DFL);
    alarm(seconds);
}

typedef struct releaser {
    fault_ctx *c;
    int n, delay_ms;
} releaser;

static void *release_later(void *arg)
{
    releaser *r = arg;
    sleep_ms(r->delay_ms);
    open_gate(r->c, r->n);
    return NULL;
}

/*
 * 100 requests are inside their handlers, held at a gate.  shutdown()
 * returns without waiting for them; server_close() with block_on_close
 * (the default) then waits until every one has finished, so that nothing
 * is left: every client got its reply, and no thread, child or descriptor
 * remains.
 */
static void shutdown_under_load_case(const char *name)
{
    const variant *v = find_variant(name);
    census start = census_now();
    fault_ctx c;
    fault_server fs;
    int cl[INFLIGHT];

    ctx_init(&c, MODE_GATED_ECHO);
    fs_start(&fs, v, &c, NULL, INFLIGHT + 10);
    for (int i = 0; i < INFLIGHT; i++) {
        cl[i] = client_connect(fs.ts.address);
        assert_true(cl[i] >= 0);
        assert_int_equal(client_send_all(cl[i], "in flight\n", 10), 0);
        /* The echo handler then ends after its one line. */
        assert_int_equal(shutdown(cl[i], SHUT_WR), 0);
    }
    assert_int_equal(await_reports(&c, 'E', INFLIGHT, 30000), INFLIGHT);

    watchdog(60);
    double t0 = now_seconds();
    sks_server_shutdown(fs.ts.srv);
    double shut = now_seconds() - t0;
    pthread_join(fs.ts.thread, NULL);
    assert_int_equal(fs.ts.serve_rc, 0);
    sks_stats st;
    sks_server_stats(fs.ts.srv, &st);
    assert_int_equal(st.active, INFLIGHT); /* shutdown did not wait */

    /* The gate opens while close runs: a close that did not wait would
     * return before the handlers have finished.  The delay is the point:
     * close must be under way when the requests end. */
    releaser rel = { &c, INFLIGHT, 200 };
    pthread_t rt;
    assert_int_equal(pthread_create(&rt, NULL, release_later, &rel), 0);
    t0 = now_seconds();
    sks_server_close(fs.ts.srv);
    double closing = now_seconds() - t0;
    pthread_join(rt, NULL);
    /* Straight after close: every handler has finished and every child
     * has been reaped (a close that did not wait would leave some). */
    int finished = await_reports(&c, 'F', 0, 0);
    int children = count_children();
    sks_server_stats(fs.ts.srv, &st);
    alarm(0);
    print_message("    %s: shutdown returned in %.0f ms with %d requests "
                  "in flight; close waited %.0f ms for them\n",
                  v->name, shut * 1000, INFLIGHT, closing * 1000);
    assert_int_equal(finished, INFLIGHT);
    assert_int_equal(children, start.children);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.completed, INFLIGHT);
    for (int i = 0; i < INFLIGHT; i++) {
        char buf[32];
        ssize_t r = client_recv_line(cl[i], buf, sizeof(buf));
        assert_int_equal(r, 10);
        assert_memory_equal(buf, "in flight\n", 10);
        client_close(cl[i]);
    }
    sks_server_free(fs.ts.srv);
    if (fs.path[0] != '\0')
        assert_int_equal(access(fs.path, F_OK), -1);
    assert_int_equal(error_reports(&c), 0);
    ctx_close(&c);
    assert_census(&start);
}

static void test_shutdown_under_load_leaves_nothing_threading(void **state)
{
    (void)state;
    shutdown_under_load_case("ThreadingTCPServer");
}

static void test_shutdown_under_load_leaves_nothing_fiber(void **state)
{
    (void)state;
    shutdown_under_load_case("FiberTCPServer");
}

static void test_shutdown_under_load_leaves_nothing_forking(void **state)
{
    (void)state;
    shutdown_under_load_case("ForkingTCPServer");
}

static void test_shutdown_under_load_leaves_nothing_unix_stream(void **state)
{
    (void)state;
    shutdown_under_load_case("ThreadingUnixStreamServer");
}

int main(int argc, char **argv)
{
    if (argc == 8 && strcmp(argv[1], "--peer") == 0)
        return peer_main(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emfile_does_not_spin_and_recovers_tcp),
        cmocka_unit_test(test_emfile_does_not_spin_and_recovers_threading),
        cmocka_unit_test(test_emfile_does_not_spin_and_recovers_fiber),
        cmocka_unit_test(test_emfile_does_not_spin_and_recovers_forking),
        cmocka_unit_test(test_emfile_does_not_spin_and_recovers_unix_stream),
        cmocka_unit_test(test_reset_mid_line_reported_once_tcp),
        cmocka_unit_test(test_reset_mid_line_reported_once_threading),
        cmocka_unit_test(test_reset_mid_line_reported_once_fiber),
        cmocka_unit_test(test_reset_mid_line_reported_once_forking),
        cmocka_unit_test(test_reset_mid_reply_no_sigpipe_tcp),
        cmocka_unit_test(test_reset_mid_reply_no_sigpipe_threading),
        cmocka_unit_test(test_reset_mid_reply_no_sigpipe_fiber),
        cmocka_unit_test(test_reset_mid_reply_no_sigpipe_forking),
        cmocka_unit_test(test_reset_mid_reply_no_sigpipe_unix_stream),
        cmocka_unit_test(test_reset_before_read_reported_once_tcp),
        cmocka_unit_test(test_reset_before_read_reported_once_threading),
        cmocka_unit_test(test_reset_before_read_reported_once_fiber),
        cmocka_unit_test(test_reset_before_read_reported_once_forking),
        cmocka_unit_test(test_slow_clients_do_not_block_fresh_one_threading),
        cmocka_unit_test(test_slow_clients_do_not_block_fresh_one_fiber),
        cmocka_unit_test(test_slow_clients_do_not_block_fresh_one_forking),
        cmocka_unit_test(test_failing_handler_keeps_serving_every_variant),
        cmocka_unit_test(test_shutdown_under_load_leaves_nothing_threading),
        cmocka_unit_test(test_shutdown_under_load_leaves_nothing_fiber),
        cmocka_unit_test(test_shutdown_under_load_leaves_nothing_forking),
        cmocka_unit_test(test_shutdown_under_load_leaves_nothing_unix_stream),
    };
    if (getenv("SKS_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SKS_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
