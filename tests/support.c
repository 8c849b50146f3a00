/*
 * support.c - shared test plumbing; see support.h.
 */
#define _GNU_SOURCE
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct serve_args {
    test_server *ts;
    double poll;
};

static void *serve_thread(void *arg)
{
    struct serve_args *a = arg;
    test_server *ts = a->ts;
    double poll = a->poll;
    free(a);
    ts->serve_rc = sks_server_serve_forever(ts->srv, poll);
    return NULL;
}

void ts_serve(test_server *ts, sks_server *srv, double poll_interval)
{
    struct serve_args *a = malloc(sizeof(*a));
    assert_non_null(a);
    ts->srv = srv;
    ts->serve_rc = 0;
    assert_true(sks_addr_format(sks_server_address(srv), ts->address,
                                sizeof(ts->address)) > 0);
    a->ts = ts;
    a->poll = poll_interval;
    assert_int_equal(pthread_create(&ts->thread, NULL, serve_thread, a), 0);
}

sks_server *ts_new(const sks_server_ops *ops, const char *address,
                   const sks_handler_class *cls, void *user, unsigned flags)
{
    sks_server *srv = NULL;
    int err = sks_server_new(&srv, ops, address, cls, user, flags);
    if (err != 0)
        fail_msg("sks_server_new(%s, %s): %s", ops->name, address,
                 sks_strerror(err));
    return srv;
}

void ts_start(test_server *ts, const sks_server_ops *ops, const char *address,
              const sks_handler_class *cls, void *user, double poll_interval)
{
    ts_serve(ts, ts_new(ops, address, cls, user, 0), poll_interval);
}

void ts_stop(test_server *ts)
{
    sks_server_shutdown(ts->srv);
    pthread_join(ts->thread, NULL);
    assert_int_equal(ts->serve_rc, 0);
    sks_server_free(ts->srv);
    ts->srv = NULL;
}

void unix_temp_address(char *buf, size_t cap)
{
    static int n;
    snprintf(buf, cap, "unix:/tmp/sks-test-%ld-%d.sock", (long)getpid(),
             __atomic_fetch_add(&n, 1, __ATOMIC_SEQ_CST));
    unlink(buf + 5);
}

static void set_timeouts(int fd)
{
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* A socket of type for address (parsed into *a), with the timeouts. */
static int client_socket(const char *address, int type, sks_addr *a)
{
    int err = sks_addr_parse(address, a);
    if (err != 0)
        return err;
    int fd = socket(a->u.sa.sa_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    set_timeouts(fd);
    return fd;
}

/* Connects fd to *a: fd, or -errno with fd closed (its path removed). */
/* A connect interrupted by a signal (a child's SIGCHLD: the sockets'
 * SO_SNDTIMEO makes Linux return EINTR even under SA_RESTART) goes on in
 * the background: wait for it, bounded by the same 5 s, and take its
 * outcome from SO_ERROR.  Calling connect again would only say EALREADY. */
static int connect_finished(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r, err = 0;
    socklen_t len = sizeof(err);
    double end = now_seconds() + 5.0;
    do
        r = poll(&p, 1, (int)((end - now_seconds()) * 1000) + 1);
    while (r < 0 && errno == EINTR && now_seconds() < end);
    if (r <= 0)
        return r == 0 ? -ETIMEDOUT : -errno;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return -errno;
    return -err;
}

static int client_connected(int fd, const sks_addr *a)
{
    int err = connect(fd, &a->u.sa, a->len) == 0 ? 0 : -errno;
    if (err == -EINTR)
        err = connect_finished(fd);
    if (err != 0) {
        client_close(fd);
        return err;
    }
    return fd;
}

int client_connect(const char *address)
{
    sks_addr a;
    int fd = client_socket(address, SOCK_STREAM, &a);
    return fd < 0 ? fd : client_connected(fd, &a);
}

int client_dgram(const char *server_address)
{
    sks_addr a;
    int err;
    int fd = client_socket(server_address, SOCK_DGRAM, &a);
    if (fd < 0)
        return fd;
    if (a.u.sa.sa_family == AF_UNIX) {
        char me[SKS_ADDRSTRLEN];
        sks_addr ma;
        unix_temp_address(me, sizeof(me));
        sks_addr_parse(me, &ma);
        if (bind(fd, &ma.u.sa, ma.len) != 0) {
            err = -errno;
            close(fd);
            return err;
        }
    }
    return client_connected(fd, &a);
}

void client_close(int fd)
{
    sks_addr me;
    me.len = sizeof(me.u.ss);
    if (getsockname(fd, &me.u.sa, &me.len) == 0 &&
        me.u.sa.sa_family == AF_UNIX &&
        me.len > offsetof(struct sockaddr_un, sun_path) &&
        me.u.un.sun_path[0] != '\0')
        unlink(me.u.un.sun_path);
    close(fd);
}

int client_send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads until EOF or cap; a line at a time (byte by byte, so that nothing
 * after the '\n' is taken) when `line`.  Bytes read, or -errno. */
static ssize_t client_recv(int fd, char *buf, size_t cap, bool line)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t r = recv(fd, buf + got, line ? 1 : cap - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return got ? (ssize_t)got : -errno;
        if (r == 0)
            break;
        got += (size_t)r;
        if (line && buf[got - 1] == '\n')
            break;
    }
    return (ssize_t)got;
}

ssize_t client_recv_line(int fd, char *buf, size_t cap)
{
    return client_recv(fd, buf, cap, true);
}

ssize_t client_recv_all(int fd, char *buf, size_t cap)
{
    return client_recv(fd, buf, cap, false);
}

void assert_echo(int fd, const char *line)
{
    char buf[4096];
    size_t n = strlen(line);
    assert_true(n < sizeof(buf));
    assert_int_equal(client_send_all(fd, line, n), 0);
    ssize_t got = client_recv_line(fd, buf, n);
    assert_int_equal(got, (ssize_t)n);
    assert_memory_equal(buf, line, n);
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

bool proc_mounted(void)
{
    return access("/proc/self/stat", R_OK) == 0;
}

static void skip_without_proc(const char *why)
{
    if (!proc_mounted())
        skip_because(why);
}

int count_open_fds(void)
{
    if (proc_mounted()) /* less the directory stream reading the list */
        return count_dir("/proc/self/fd") - 1;
    /* Every descriptor below the limit, asked one by one: slower, but
     * POSIX.  The limit is read now, so a test that lowers it below a
     * descriptor it holds counts differently; none does between counts. */
    struct rlimit rl;
    long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                   ? (long)rl.rlim_cur : 65536;
    int n = 0;
    for (long fd = 0; fd < max; fd++)
        if (fcntl((int)fd, F_GETFD) != -1)
            n++;
    return n;
}

int count_threads(void)
{
    skip_without_proc("needs /proc to count this process's threads");
    return count_dir("/proc/self/task");
}

/* Children of this process; with running_only, not those that have
 * exited and wait to be reaped (zombies). */
static int children(bool running_only)
{
    skip_without_proc("needs /proc to count this process's children");
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    pid_t me = getpid();
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        /* pid (comm) state ppid ...; comm may hold spaces: find the last ')' */
        char *rp = strrchr(buf, ')');
        int ppid;
        char state;
        if (rp != NULL && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 &&
            ppid == me && !(running_only && state == 'Z'))
            n++;
    }
    closedir(d);
    return n;
}

int count_children(void)
{
    return children(false);
}

int count_running_children(void)
{
    return children(true);
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000,
                           .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    double end = now_seconds() + timeout_ms / 1000.0;
    for (;;) {
        if (cond(arg))
            return true;
        if (now_seconds() > end)
            return false;
        sleep_ms(2);
    }
}

/* ------------------------------------------------------------------------ */
/* More servers                                                              */

void ts_shutdown_close(test_server *ts)
{
    sks_server_shutdown(ts->srv);
    assert_int_equal(pthread_join(ts->thread, NULL), 0);
    assert_int_equal(ts->serve_rc, 0);
    sks_server_close(ts->srv);
    assert_int_equal(sks_server_fileno(ts->srv), -1);
}

double ts_timed_close(test_server *ts)
{
    sks_server_shutdown(ts->srv);
    assert_int_equal(pthread_join(ts->thread, NULL), 0);
    double t0 = now_seconds();
    sks_server_close(ts->srv);
    return now_seconds() - t0;
}

void ts_stop_quietly(test_server *ts)
{
    if (ts->srv != NULL) {
        sks_server_shutdown(ts->srv);
        pthread_join(ts->thread, NULL);
        sks_server_free(ts->srv);
        ts->srv = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                  */

int echo_lines_handle(sks_handler *h)
{
    char line[256];
    ssize_t n;
    while ((n = sks_rfile_readline(sks_handler_rfile(h), line,
                                   sizeof(line))) > 0)
        if (sks_wfile_write(sks_handler_wfile(h), line, (size_t)n) < 0)
            return SKS_EHANDLER;
    return (int)n;
}

const sks_handler_class echo_lines_stream = {
    .setup = sks_stream_setup,
    .handle = echo_lines_handle,
    .finish = sks_stream_finish,
};

const sks_handler_class echo_lines_dgram = {
    .setup = sks_datagram_setup,
    .handle = echo_lines_handle,
    .finish = sks_datagram_finish,
};

/* Echoes one line, counted in *count (if any) once read; "fail\n" fails
 * the request instead when may_fail. */
static int echo_one_line(sks_handler *h, probe_counts *count, bool may_fail)
{
    char line[256];
    ssize_t n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    if (n < 0)
        return (int)n;
    if (count != NULL)
        atomic_fetch_add(&count->handled, 1);
    if (may_fail && n == 5 && memcmp(line, "fail\n", 5) == 0)
        return SKS_EHANDLER;
    return sks_wfile_write(sks_handler_wfile(h), line, (size_t)n) < 0
               ? SKS_EHANDLER : 0;
}

int echo_line_or_fail_handle(sks_handler *h)
{
    return echo_one_line(h, NULL, true);
}

const sks_handler_class echo_line_or_fail = {
    .setup = sks_stream_setup,
    .handle = echo_line_or_fail_handle,
    .finish = sks_stream_finish,
};

void probe_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)req;
    probe_counts *pr = sks_server_user(srv);
    atomic_store(&pr->last_error, err);
    atomic_fetch_add(&pr->errors, 1);
}

static int probe_line_echo_handle(sks_handler *h)
{
    return echo_one_line(h, sks_server_user(sks_handler_server(h)), false);
}

const sks_handler_class probe_line_echo_stream = {
    .setup = sks_stream_setup,
    .handle = probe_line_echo_handle,
    .finish = sks_stream_finish,
};

const sks_handler_class probe_line_echo_dgram = {
    .setup = sks_datagram_setup,
    .handle = probe_line_echo_handle,
    .finish = sks_datagram_finish,
};

/* ------------------------------------------------------------------------ */
/* More clients                                                              */

void assert_dgram_reply(int fd, const void *data, size_t n, size_t want)
{
    /* Room for n + 1 bytes: a reply longer than want shows.  On the stack
     * when it fits: a forking server forks while this thread waits here,
     * and in the child (where this thread does not exist) memcheck would
     * count a heap buffer held only by this stack as definitely lost. */
    char small[16384];
    char *buf = n < sizeof(small) ? small : malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(send(fd, data, n, 0), (ssize_t)n);
    ssize_t got;
    do /* under valgrind a child's SIGCHLD interrupts it */
        got = recv(fd, buf, n + 1, 0);
    while (got < 0 && errno == EINTR);
    assert_int_equal(got, (ssize_t)want);
    assert_memory_equal(buf, data, want);
    if (buf != small)
        free(buf);
}

void assert_dgram_echo(int fd, const void *data, size_t n)
{
    assert_dgram_reply(fd, data, n, n);
}

void assert_dgram_echoes_keep_fds(const char *address, int n)
{
    int c = client_dgram(address);
    assert_true(c >= 0);
    assert_dgram_echo(c, "warm-up\n", 8);
    int serving = count_open_fds();
    for (int i = 0; i < n; i++)
        assert_dgram_echo(c, "ping\n", 5);
    assert_int_equal(count_open_fds(), serving);
    client_close(c);
}

int client_handled(sks_server *srv, const char *line)
{
    char address[SKS_ADDRSTRLEN];
    assert_true(sks_addr_format(sks_server_address(srv), address,
                                sizeof(address)) > 0);
    int c = client_connect(address);
    assert_true(c >= 0);
    if (line != NULL)
        assert_int_equal(client_send_all(c, line, strlen(line)), 0);
    assert_int_equal(sks_server_handle_request(srv), 0);
    return c;
}

void assert_echo_once(const char *address, int type, const char *line)
{
    int c = type == SOCK_DGRAM ? client_dgram(address)
                               : client_connect(address);
    if (c < 0)
        fail_msg("client of %s: %s", address, sks_strerror(c));
    if (type == SOCK_DGRAM)
        assert_dgram_echo(c, line, strlen(line));
    else
        assert_echo(c, line);
    client_close(c);
}

void assert_line(int fd, const char *line)
{
    char buf[256];
    size_t n = strlen(line);
    ssize_t got = client_recv_line(fd, buf, sizeof(buf));
    assert_int_equal(got, (ssize_t)n);
    assert_memory_equal(buf, line, n);
}

void assert_eof(int fd)
{
    char buf[64];
    assert_int_equal(client_recv_all(fd, buf, sizeof(buf)), 0);
}

void client_hang_up(int fd)
{
    shutdown(fd, SHUT_WR);
    client_close(fd);
}

bool readable_within(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

void socket_name(int fd, char *buf, size_t cap)
{
    sks_addr a;
    a.len = sizeof(a.u.ss);
    assert_int_equal(getsockname(fd, &a.u.sa, &a.len), 0);
    assert_true(sks_addr_format(&a, buf, cap) > 0);
}

/* ------------------------------------------------------------------------ */
/* Threads, waits and signals                                                */

void assert_abstract_name_refused(void)
{
    sks_addr a;
    sks_server *srv = NULL;
    assert_int_equal(sks_addr_parse("unix:@sks-test", &a), -EAFNOSUPPORT);
    assert_int_equal(sks_server_new(&srv, &sks_unix_stream_ops,
                                    "unix:@sks-test", &echo_lines_stream, NULL, 0),
                     -EAFNOSUPPORT);
    assert_null(srv);
    print_message("no abstract names here: refused with EAFNOSUPPORT\n");
}

void skip_because(const char *why)
{
    print_message("skipped: %s\n", why);
    skip();
}

void skip_under_tsan(const char *why)
{
    if (UNDER_TSAN) {
        print_message("skipped under ThreadSanitizer: %s\n", why);
        skip();
    }
}

static void *nothing_at_all(void *arg)
{
    return arg;
}

void warm_up_threads(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, nothing_at_all, NULL) == 0)
        pthread_join(t, NULL);
}

void realtime_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

struct stat_want {
    sks_server *srv;
    size_t offset, want;
};

static bool stat_is(void *arg)
{
    struct stat_want *w = arg;
    sks_stats st;
    sks_server_stats(w->srv, &st);
    return *(const size_t *)((const char *)&st + w->offset) == w->want;
}

bool wait_stat_at(sks_server *srv, size_t offset, size_t want, int timeout_ms)
{
    struct stat_want w = { srv, offset, want };
    return wait_until(stat_is, &w, timeout_ms);
}

void sync_add(ts_sync *s, int *counter, int delta)
{
    pthread_mutex_lock(&s->lock);
    *counter += delta;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

int sync_get(ts_sync *s, const int *counter)
{
    pthread_mutex_lock(&s->lock);
    int v = *counter;
    pthread_mutex_unlock(&s->lock);
    return v;
}

int sync_wait_at_least(ts_sync *s, const int *counter, int want,
                       int timeout_ms)
{
    struct timespec end;
    realtime_deadline(&end, timeout_ms);
    pthread_mutex_lock(&s->lock);
    while (*counter < want &&
           pthread_cond_timedwait(&s->cond, &s->lock, &end) != ETIMEDOUT)
        ;
    int v = *counter;
    pthread_mutex_unlock(&s->lock);
    return v;
}

static atomic_int interruptions;

static void on_interrupt(int sig)
{
    (void)sig;
    atomic_fetch_add(&interruptions, 1);
}

static bool interrupted(void *n)
{
    return atomic_load(&interruptions) >= *(int *)n;
}

void interruptions_begin(struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt; /* no SA_RESTART: waits fail with EINTR */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR2, &sa, old), 0);
    atomic_store(&interruptions, 0);
}

void interruptions_end(const struct sigaction *old)
{
    sigaction(SIGUSR2, old, NULL);
}

void interrupt_thread(pthread_t t, int times)
{
    for (int i = atomic_load(&interruptions) + 1, end = i + times; i < end;
         i++) {
        assert_int_equal(pthread_kill(t, SIGUSR2), 0);
        assert_true(wait_until(interrupted, &i, 5000));
    }
}

/* ------------------------------------------------------------------------ */
/* The concurrency barrier                                                   */

int barrier_answer(sks_handler *h, bool (*all_met)(void))
{
    char line[64];
    ssize_t n = sks_rfile_readline(sks_handler_rfile(h), line, sizeof(line));
    if (n <= 0)
        return n < 0 ? (int)n : SKS_EHANDLER;
    bool all = all_met();
    return sks_wfile_write(sks_handler_wfile(h), all ? "ok\n" : "no\n", 3) < 0
               ? SKS_EHANDLER : 0;
}

void barrier_clients_start(int *c, int n, const char *address)
{
    for (int i = 0; i < n; i++) {
        c[i] = client_connect(address);
        assert_true(c[i] >= 0);
        assert_int_equal(client_send_all(c[i], "go\n", 3), 0);
    }
}

void barrier_clients_expect_ok(int *c, int n)
{
    for (int i = 0; i < n; i++) {
        assert_line(c[i], "ok\n");
        client_close(c[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* Valgrind                                                                  */

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND_H 1
#endif
#endif

bool under_valgrind(void)
{
#ifdef HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND)
        return true;
#endif
    /* Memcheck preloads vgpreload_*.so into every process it runs. */
    const char *p = getenv("LD_PRELOAD");
    return p != NULL && strstr(p, "vgpreload") != NULL;
}

double valgrind_scaled(double seconds)
{
    return under_valgrind() ? seconds * 5 : seconds;
}

ssize_t recv_once(int fd, void *buf, size_t cap)
{
    ssize_t r;
    do
        r = recv(fd, buf, cap, 0);
    while (r < 0 && errno == EINTR);
    return r;
}
