/*
 * loadgen - the benchmarks' load generator: non-blocking sockets on epoll,
 * optionally several threads, every run bounded in time.
 *
 *   loadgen --mode MODE --addr ADDRESS [options]
 *
 * Modes (TCP or Unix, from the address: 127.0.0.1:PORT or unix:/path):
 *   echo     C persistent connections; each sends a message (SIZE bytes,
 *            the last one '\n') and waits for its exact echo, then the next.
 *   connect  C concurrent clients, each opening a new connection per
 *            request: connect, send, read the echo, SHUT_WR, wait for the
 *            server's end of file, close.  A request is counted when the
 *            server has closed.
 *   connect-close  as connect, but the client closes as soon as it has
 *            read the echo, without waiting for the server's end of file
 *            (as most HTTP/1.0-style clients do); counted at the echo.
 *   dgram    C outstanding datagrams (one socket each, UDP or Unix
 *            datagram); a reply that does not come within --timeout-ms
 *            counts as lost and a new datagram is sent.
 *   idle     opens C connections one after another (each proven served by
 *            one echo), prints "READY", holds them --hold seconds, closes.
 *
 * Options: --conns C (16)  --size BYTES (16)  --seconds S (2)
 *          --warmup S (0.2)  --requests N (stop after N requests; then no
 *          warm-up)  --threads T (1)  --timeout-ms MS (200)  --hold S (2)
 *          --tmpdir DIR (for Unix datagram client paths; /tmp)
 *
 * Output: a human line on stderr, then one line on stdout:
 *   RESULT mode=echo conns=16 size=16 seconds=2.000 requests=N total=N
 *          rps=R p50_us=X p99_us=X max_us=X errors=N lost=N
 * `requests` and the latencies cover the measured window (after warm-up);
 * `total` counts every request completed, warm-up included, for dividing
 * the server's CPU time.  Exit status 0, or 1 when nothing completed.
 */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

enum mode { M_ECHO, M_CONNECT, M_CONNECT_CLOSE, M_DGRAM, M_IDLE };

static struct {
    enum mode mode;
    const char *mode_name;
    bench_addr addr;
    int conns;
    size_t size;
    double seconds, warmup, hold;
    long requests;      /* 0: run for --seconds */
    int threads;
    int timeout_ms;
    const char *tmpdir;
} opt = {
    .conns = 16, .size = 16, .seconds = 2, .warmup = 0.2, .hold = 2,
    .threads = 1, .timeout_ms = 200, .tmpdir = "/tmp",
};

/* Requests still in flight at t_end may complete within this grace. */
#define GRACE_NS 2000000000u

static uint64_t t_start, t_warm, t_end;
static atomic_long issued;

/* ------------------------------------------------------------------------ */
/* Latency histogram: 64 linear buckets, then 32 per power of two (error
 * under 3 %), fixed memory whatever the run length. */

#define HBUCKETS 1920

typedef struct hist {
    uint64_t n[HBUCKETS];
    uint64_t count, max;
} hist;

static int hindex(uint64_t v)
{
    if (v < 64)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 5;
    return 64 + (shift - 1) * 32 + (int)((v >> shift) - 32);
}

static double hvalue(int i)
{
    if (i < 64)
        return i;
    int shift = (i - 64) / 32 + 1;
    uint64_t m = (uint64_t)((i - 64) % 32 + 32);
    return (double)(m << shift) + (double)(1ull << shift) / 2.0;
}

static void hadd(hist *h, uint64_t v)
{
    h->n[hindex(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
}

static double hquantile(const hist *h, double q)
{
    uint64_t want = (uint64_t)((double)h->count * q);
    uint64_t seen = 0;
    if (h->count == 0)
        return 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += h->n[i];
        if (seen > want)
            return hvalue(i) < (double)h->max ? hvalue(i) : (double)h->max;
    }
    return (double)h->max;
}

/* ------------------------------------------------------------------------ */
/* Slots: one connection or datagram socket with one request in flight. */

enum state {
    S_OFF,         /* no socket; reopen at retry_at */
    S_CONNECTING,  /* waiting for a non-blocking connect */
    S_SENDING,     /* a short send left bytes; waiting for EPOLLOUT */
    S_RECEIVING,   /* request sent; reading the echo */
    S_DRAINING,    /* connect mode: echo read, SHUT_WR sent, awaiting EOF */
    S_FINISHED,    /* --requests reached: nothing more to send */
};

typedef struct slot {
    int fd;
    enum state state;
    size_t sent, rcvd;
    uint64_t t0, retry_at;
    uint64_t seq;
    uint32_t events;
    char *tx;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} slot;

typedef struct worker {
    pthread_t tid;
    int id, ep;
    slot *slots;
    int nslots;
    hist h;
    uint64_t window, total, errors, lost;
    char rx[65536];
} worker;

static void fail_slot(worker *w, slot *s);

static void watch(worker *w, slot *s, uint32_t events)
{
    if (s->events == events)
        return;
    struct epoll_event ev = { .events = events, .data.ptr = s };
    epoll_ctl(w->ep, s->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->fd, &ev);
    s->events = events;
}

static void close_slot(slot *s)
{
    if (s->fd >= 0)
        close(s->fd); /* leaves the epoll set with it */
    s->fd = -1;
    s->events = 0;
    if (s->path[0])
        unlink(s->path);
    s->path[0] = '\0';
}

/* Writes the request number into the message, so a stale or misrouted
 * reply cannot pass for the right one. */
static void stamp(slot *s)
{
    size_t body = opt.size - 1;
    size_t digits = body < 16 ? body : 16;
    uint64_t v = s->seq;
    for (size_t i = digits; i-- > 0;) {
        s->tx[i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    }
}

/* Sends what is left of the request.  Returns -1 on a dead socket. */
static int push(worker *w, slot *s)
{
    while (s->sent < opt.size) {
        ssize_t n = send(s->fd, s->tx + s->sent, opt.size - s->sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                s->state = S_SENDING;
                watch(w, s, EPOLLOUT);
                return 0;
            }
            return -1;
        }
        s->sent += (size_t)n;
    }
    s->state = S_RECEIVING;
    watch(w, s, EPOLLIN);
    return 0;
}

/* True once no new request may start: the time is up, or --requests
 * have all been issued. */
static bool stopping(void)
{
    return bench_now_ns() >= t_end ||
           (opt.requests > 0 && atomic_load(&issued) >= opt.requests);
}

static void start_request(worker *w, slot *s, bool keep_t0)
{
    /* At the end a connection is closed between requests, never with an
     * echo in flight: that would reset it and the server would see an
     * error that is the load generator's doing. */
    if (bench_now_ns() >= t_end ||
        (opt.requests > 0 && atomic_fetch_add(&issued, 1) >= opt.requests)) {
        s->state = S_FINISHED;
        close_slot(s);
        return;
    }
    s->seq += 1;
    stamp(s);
    s->sent = s->rcvd = 0;
    if (!keep_t0)
        s->t0 = bench_now_ns();
    if (push(w, s) != 0)
        fail_slot(w, s);
}

static void complete(worker *w, slot *s)
{
    uint64_t now = bench_now_ns();
    w->total++;
    if (now >= t_warm && now <= t_end) {
        w->window++;
        hadd(&w->h, now - s->t0);
    }
}

static void open_slot(worker *w, slot *s, int index)
{
    int type = opt.mode == M_DGRAM ? SOCK_DGRAM : SOCK_STREAM;
    int family = opt.addr.u.sa.sa_family;

    s->state = S_OFF;
    s->fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        fail_slot(w, s);
        return;
    }
    if (family == AF_INET && type == SOCK_STREAM) {
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (family == AF_UNIX && type == SOCK_DGRAM) {
        /* A Unix datagram server can only answer a bound client. */
        bench_addr me = { 0 };
        me.u.un.sun_family = AF_UNIX;
        snprintf(s->path, sizeof(s->path), "%s/lg-%d-%d-%d.sock", opt.tmpdir,
                 (int)getpid(), w->id, index);
        unlink(s->path);
        strcpy(me.u.un.sun_path, s->path);
        if (bind(s->fd, &me.u.sa, sizeof(me.u.un)) != 0) {
            fail_slot(w, s);
            return;
        }
    }
    s->t0 = bench_now_ns(); /* connect mode: the connection is timed too */
    if (connect(s->fd, &opt.addr.u.sa, opt.addr.len) == 0) {
        start_request(w, s, opt.mode == M_CONNECT ||
                                opt.mode == M_CONNECT_CLOSE);
    } else if (errno == EINPROGRESS) {
        s->state = S_CONNECTING;
        watch(w, s, EPOLLOUT);
    } else if (errno == EAGAIN && family == AF_UNIX) {
        /* A full Unix listen backlog: not an error, try again soon. */
        close_slot(s);
        s->state = S_OFF;
        s->retry_at = bench_now_ns() + 200000;
    } else {
        fail_slot(w, s);
    }
}

/* An error on a slot: count it, drop the socket, reopen it 10 ms later. */
static void fail_slot(worker *w, slot *s)
{
    w->errors++;
    close_slot(s);
    s->state = S_OFF;
    s->retry_at = bench_now_ns() + 10000000;
}

static void on_connected(worker *w, slot *s)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        fail_slot(w, s);
        return;
    }
    start_request(w, s, true);
}

/* Connect modes: the request is done; the next one opens a connection. */
static void reconnect(worker *w, slot *s)
{
    complete(w, s);
    close_slot(s);
    if (stopping())
        s->state = S_FINISHED;
    else
        open_slot(w, s, 0);
}

static void on_readable(worker *w, slot *s)
{
    for (;;) {
        ssize_t n = recv(s->fd, w->rx, sizeof(w->rx), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {
            fail_slot(w, s);
            return;
        }
        if (opt.mode == M_DGRAM) {
            if (s->state != S_RECEIVING || (size_t)n != opt.size ||
                memcmp(w->rx, s->tx, opt.size) != 0)
                continue; /* a late reply to a datagram counted lost */
            complete(w, s);
            start_request(w, s, false);
            return;
        }
        if (s->state == S_DRAINING) {
            if (n != 0) {
                fail_slot(w, s);
                return;
            }
            reconnect(w, s);
            return;
        }
        if (n == 0 || s->rcvd + (size_t)n > opt.size ||
            memcmp(w->rx, s->tx + s->rcvd, (size_t)n) != 0) {
            fail_slot(w, s); /* end of file, or not the exact echo */
            return;
        }
        s->rcvd += (size_t)n;
        if (s->rcvd < opt.size)
            return; /* level-triggered: epoll brings the rest */
        if (opt.mode == M_CONNECT_CLOSE) {
            reconnect(w, s);
            return;
        }
        if (opt.mode == M_CONNECT) {
            shutdown(s->fd, SHUT_WR);
            s->state = S_DRAINING;
            continue;
        }
        complete(w, s);
        start_request(w, s, false);
        return;
    }
}

static void on_event(worker *w, slot *s, uint32_t events)
{
    switch (s->state) {
    case S_CONNECTING:
        on_connected(w, s);
        break;
    case S_SENDING:
        if (push(w, s) != 0)
            fail_slot(w, s);
        break;
    case S_RECEIVING:
    case S_DRAINING:
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(w, s);
        break;
    default:
        break;
    }
}

/* Timers: reopen failed slots, and count unanswered datagrams lost. */
static void scan(worker *w, uint64_t now)
{
    for (int i = 0; i < w->nslots; i++) {
        slot *s = &w->slots[i];
        if (s->state == S_OFF && now >= s->retry_at) {
            if (stopping())
                s->state = S_FINISHED;
            else
                open_slot(w, s, i);
        } else if (opt.mode == M_DGRAM && s->state == S_RECEIVING &&
                   now - s->t0 > (uint64_t)opt.timeout_ms * 1000000u) {
            w->lost++;
            start_request(w, s, false);
        }
    }
}

static bool all_finished(const worker *w)
{
    for (int i = 0; i < w->nslots; i++)
        if (w->slots[i].state != S_FINISHED)
            return false;
    return true;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[256];
    uint64_t last_scan = 0;

    w->ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < w->nslots; i++)
        open_slot(w, &w->slots[i], i);
    for (;;) {
        /* After the end, requests in flight get a bounded grace period to
         * complete; they count in `total`, not in the window. */
        uint64_t now = bench_now_ns();
        if (now >= t_end + GRACE_NS || all_finished(w))
            break;
        int n = epoll_wait(w->ep, evs, 256, 2);
        for (int i = 0; i < n; i++)
            on_event(w, evs[i].data.ptr, evs[i].events);
        now = bench_now_ns();
        if (now - last_scan >= 1000000) {
            scan(w, now);
            last_scan = now;
        }
    }
    for (int i = 0; i < w->nslots; i++)
        close_slot(&w->slots[i]);
    close(w->ep);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Idle mode: blocking sockets, one after another. */

static int run_idle(void)
{
    int *fds = calloc((size_t)opt.conns, sizeof(int));
    char msg[16] = "idle-connection\n", back[16];
    struct timeval tv = { .tv_sec = 5 };
    int opened = 0, errors = 0;

    for (int i = 0; i < opt.conns; i++) {
        int fd = socket(opt.addr.u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            errors++;
            break;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        size_t got = 0;
        if (connect(fd, &opt.addr.u.sa, opt.addr.len) != 0 ||
            bench_send_all(fd, msg, sizeof(msg)) != 0) {
            errors++;
            close(fd);
            continue;
        }
        while (got < sizeof(back)) {
            ssize_t n = recv(fd, back + got, sizeof(back) - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got != sizeof(back) || memcmp(msg, back, sizeof(msg)) != 0) {
            errors++;
            close(fd);
            continue;
        }
        fds[opened++] = fd;
    }
    printf("READY conns=%d errors=%d\n", opened, errors);
    fflush(stdout);
    struct timespec hold = { .tv_sec = (time_t)opt.hold,
                             .tv_nsec = (long)((opt.hold - (double)(time_t)opt.hold) * 1e9) };
    while (nanosleep(&hold, &hold) != 0 && errno == EINTR)
        ;
    for (int i = 0; i < opened; i++)
        close(fds[i]);
    free(fds);
    printf("RESULT mode=idle conns=%d errors=%d\n", opened, errors);
    return opened > 0 ? 0 : 1;
}

/* ------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --mode echo|connect|connect-close|dgram|idle\n"
            "  --addr ADDRESS\n"
            "  [--conns C] [--size BYTES] [--seconds S] [--warmup S]\n"
            "  [--requests N] [--threads T] [--timeout-ms MS] [--hold S]\n"
            "  [--tmpdir DIR]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longs[] = {
        { "mode", required_argument, 0, 'm' },
        { "addr", required_argument, 0, 'a' },
        { "conns", required_argument, 0, 'c' },
        { "size", required_argument, 0, 's' },
        { "seconds", required_argument, 0, 'd' },
        { "warmup", required_argument, 0, 'w' },
        { "requests", required_argument, 0, 'n' },
        { "threads", required_argument, 0, 't' },
        { "timeout-ms", required_argument, 0, 'o' },
        { "hold", required_argument, 0, 'H' },
        { "tmpdir", required_argument, 0, 'T' },
        { 0, 0, 0, 0 },
    };
    const char *addr = NULL;
    int c;

    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'm':
            opt.mode_name = optarg;
            if (strcmp(optarg, "echo") == 0)
                opt.mode = M_ECHO;
            else if (strcmp(optarg, "connect") == 0)
                opt.mode = M_CONNECT;
            else if (strcmp(optarg, "connect-close") == 0)
                opt.mode = M_CONNECT_CLOSE;
            else if (strcmp(optarg, "dgram") == 0)
                opt.mode = M_DGRAM;
            else if (strcmp(optarg, "idle") == 0)
                opt.mode = M_IDLE;
            else
                usage();
            break;
        case 'a': addr = optarg; break;
        case 'c': opt.conns = atoi(optarg); break;
        case 's': opt.size = (size_t)atol(optarg); break;
        case 'd': opt.seconds = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'n': opt.requests = atol(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'o': opt.timeout_ms = atoi(optarg); break;
        case 'H': opt.hold = atof(optarg); break;
        case 'T': opt.tmpdir = optarg; break;
        default: usage();
        }
    }
    if (opt.mode_name == NULL || addr == NULL || opt.conns < 1 ||
        opt.size < 2 || opt.size > 65536 || opt.seconds <= 0 ||
        opt.threads < 1 || opt.threads > opt.conns || opt.timeout_ms < 1)
        usage();
    if (bench_addr_parse(addr, &opt.addr) != 0)
        exit(2);
    if (opt.requests > 0)
        opt.warmup = 0;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (opt.mode == M_IDLE)
        return run_idle();

    worker *ws = calloc((size_t)opt.threads, sizeof(worker));
    slot *slots = calloc((size_t)opt.conns, sizeof(slot));
    char *tx = malloc((size_t)opt.conns * opt.size);
    for (int i = 0; i < opt.conns; i++) {
        slots[i].fd = -1;
        slots[i].tx = tx + (size_t)i * opt.size;
        for (size_t k = 0; k + 1 < opt.size; k++)
            slots[i].tx[k] = (char)('a' + (k + (size_t)i) % 26);
        slots[i].tx[opt.size - 1] = '\n';
        slots[i].seq = (uint64_t)i << 40;
    }

    t_start = bench_now_ns();
    t_warm = t_start + (uint64_t)(opt.warmup * 1e9);
    t_end = t_warm + (uint64_t)(opt.seconds * 1e9);
    for (int t = 0, first = 0; t < opt.threads; t++) {
        ws[t].id = t;
        ws[t].slots = slots + first;
        ws[t].nslots = opt.conns / opt.threads +
                       (t < opt.conns % opt.threads ? 1 : 0);
        first += ws[t].nslots;
        pthread_create(&ws[t].tid, NULL, run_worker, &ws[t]);
    }

    hist *h = calloc(1, sizeof(hist));
    uint64_t window = 0, total = 0, errors = 0, lost = 0;
    for (int t = 0; t < opt.threads; t++) {
        pthread_join(ws[t].tid, NULL);
        for (int i = 0; i < HBUCKETS; i++)
            h->n[i] += ws[t].h.n[i];
        h->count += ws[t].h.count;
        if (ws[t].h.max > h->max)
            h->max = ws[t].h.max;
        window += ws[t].window;
        total += ws[t].total;
        errors += ws[t].errors;
        lost += ws[t].lost;
    }
    uint64_t stop = bench_now_ns();
    /* With --requests the whole run is the window. */
    double secs = opt.requests > 0 ? (double)(stop - t_start) / 1e9
                                   : opt.seconds;
    if (opt.requests > 0)
        window = total;
    double rps = (double)window / secs;
    double p50 = hquantile(h, 0.50) / 1e3, p99 = hquantile(h, 0.99) / 1e3;
    double mx = (double)h->max / 1e3;
    char text[160];
    bench_addr_format(&opt.addr, text, sizeof(text));
    fprintf(stderr,
            "loadgen: %s %s conns=%d size=%zu: %.0f req/s, p50 %.1f us, "
            "p99 %.1f us, max %.1f us, errors %llu, lost %llu\n",
            opt.mode_name, text, opt.conns, opt.size, rps, p50, p99, mx,
            (unsigned long long)errors, (unsigned long long)lost);
    printf("RESULT mode=%s conns=%d size=%zu seconds=%.3f requests=%llu "
           "total=%llu rps=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f "
           "errors=%llu lost=%llu\n",
           opt.mode_name, opt.conns, opt.size, secs,
           (unsigned long long)window, (unsigned long long)total, rps, p50,
           p99, mx, (unsigned long long)errors, (unsigned long long)lost);
    free(h);
    free(tx);
    free(slots);
    free(ws);
    return total > 0 ? 0 : 1;
}
