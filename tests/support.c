/*
 * support.c - shared test plumbing; see support.h.
 */
#define _GNU_SOURCE
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

void ts_start(test_server *ts, const sks_server_ops *ops, const char *address,
              const sks_handler_class *cls, void *user, double poll_interval)
{
    sks_server *srv = NULL;
    int err = sks_server_new(&srv, ops, address, cls, user, 0);
    if (err != 0)
        fail_msg("sks_server_new(%s, %s): %s", ops->name, address,
                 sks_strerror(err));
    ts_serve(ts, srv, poll_interval);
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

int client_connect(const char *address)
{
    sks_addr a;
    int err = sks_addr_parse(address, &a);
    if (err != 0)
        return err;
    int fd = socket(a.u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    set_timeouts(fd);
    if (connect(fd, &a.u.sa, a.len) != 0) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int client_dgram(const char *server_address)
{
    sks_addr a;
    int err = sks_addr_parse(server_address, &a);
    if (err != 0)
        return err;
    int fd = socket(a.u.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    set_timeouts(fd);
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
    if (connect(fd, &a.u.sa, a.len) != 0) {
        err = -errno;
        client_close(fd);
        return err;
    }
    return fd;
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

ssize_t client_recv_line(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t r = recv(fd, buf + got, 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return got ? (ssize_t)got : -errno;
        if (r == 0)
            break;
        got++;
        if (buf[got - 1] == '\n')
            break;
    }
    return (ssize_t)got;
}

ssize_t client_recv_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return got ? (ssize_t)got : -errno;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
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

int count_open_fds(void)
{
    /* Less the descriptor of the directory stream reading the list. */
    return count_dir("/proc/self/fd") - 1;
}

int count_threads(void)
{
    return count_dir("/proc/self/task");
}

int count_children(void)
{
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
            ppid == me)
            n++;
    }
    closedir(d);
    return n;
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
