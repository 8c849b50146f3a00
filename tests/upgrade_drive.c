/*
 * upgrade_drive.c - the load generator and the generation watcher of
 * upgrade_drive.h.
 */
#define _GNU_SOURCE
#include "upgrade_drive.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

double ud_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ud_sleep_until(double t)
{
    for (;;) {
        double left = t - ud_now();
        if (left <= 0)
            return;
        struct timespec ts = { (time_t)left,
                               (long)((left - (double)(time_t)left) * 1e9) };
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Load                                                                      */

struct client {
    ud_load *l;
    int index;
};
static struct client clients_arg[UD_MAX_CLIENTS];

static void failed(ud_load *l, atomic_long *kind, const char *what, int err)
{
    atomic_fetch_add(&l->failures, 1);
    atomic_fetch_add(kind, 1);
    pthread_mutex_lock(&l->lock);
    if (l->first_failure[0] == '\0')
        snprintf(l->first_failure, sizeof(l->first_failure), "%s: %s", what,
                 err ? strerror(err) : "short reply");
    pthread_mutex_unlock(&l->lock);
}

static void saw_pid(ud_load *l, pid_t pid, pid_t *last)
{
    if (pid == *last)
        return;
    *last = pid;
    pthread_mutex_lock(&l->lock);
    int i = 0;
    while (i < l->npids && l->pids[i] != pid)
        i++;
    if (i == l->npids && i < UD_MAX_GENS) {
        l->pids[i] = pid;
        l->first_seen[i] = ud_now();
        l->npids++;
    }
    pthread_mutex_unlock(&l->lock);
}

static atomic_long *kind_of(ud_load *l, int err)
{
    switch (err) {
    case ECONNREFUSED:
        return &l->refused;
    case ECONNRESET:
    case EPIPE:
        return &l->reset;
    case EAGAIN:
    case ETIMEDOUT:
        return &l->timed_out;
    default:
        return &l->other;
    }
}

/* One connection: true if every request got its whole reply. */
static bool one_connection(ud_load *l, int index, int requests,
                           pid_t *last)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        failed(l, &l->other, "socket", errno);
        return false;
    }
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in me = { .sin_family = AF_INET };
    me.sin_addr.s_addr = htonl(0x7f00000a + (uint32_t)index);
#ifdef IP_BIND_ADDRESS_NO_PORT
    /* The port is picked at connect, for the whole 4-tuple: one source
     * address then lasts for as many connections as the test makes. */
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
    (void)bind(fd, (struct sockaddr *)&me, sizeof(me));
    struct sockaddr_in to = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)l->port) };
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r;
    do
        r = connect(fd, (struct sockaddr *)&to, sizeof(to));
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        failed(l, kind_of(l, errno), "connect", errno);
        close(fd);
        return false;
    }
    atomic_fetch_add(&l->connections, 1);
    bool ok = true;
    for (int q = 0; q < requests && ok; q++) {
        if (send(fd, "hi\n", 3, MSG_NOSIGNAL) != 3) {
            failed(l, kind_of(l, errno), "send", errno);
            ok = false;
            break;
        }
        char line[256];
        size_t n = 0;
        while (n < sizeof(line) - 1 && (n == 0 || line[n - 1] != '\n')) {
            ssize_t got = recv(fd, line + n, sizeof(line) - 1 - n, 0);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                int err = got < 0 ? errno : 0;
                failed(l, err ? kind_of(l, err) : &l->short_reply, "recv",
                       err);
                ok = false;
                break;
            }
            n += (size_t)got;
        }
        if (!ok)
            break;
        line[n] = '\0';
        const char *p = strstr(line, " pid ");
        if (line[n - 1] != '\n' || p == NULL) {
            failed(l, &l->short_reply, "reply", 0);
            ok = false;
            break;
        }
        atomic_fetch_add(&l->requests, 1);
        saw_pid(l, (pid_t)atol(p + 5), last);
    }
    close(fd);
    return ok;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    ud_load *l = c->l;
    double start = ud_now(), end = start + l->seconds;
    /* Paced: the k-th connection not before start + k * gap. */
    double gap = l->rate > 0 ? l->clients / l->rate : 0;
    pid_t last = -1;
    for (unsigned long k = 0; ud_now() < end && !atomic_load(&l->stop);
         k++) {
        if (gap > 0)
            ud_sleep_until(start + (double)k * gap);
        (void)one_connection(l, c->index, k % 4 == 0 ? KEEPALIVE_REQUESTS : 1,
                             &last);
    }
    return NULL;
}

int ud_load_start(ud_load *l, int port, int clients, double seconds,
                  double rate)
{
    memset(l, 0, sizeof(*l));
    if (clients > UD_MAX_CLIENTS)
        return -EINVAL;
    l->rate = rate;
    l->port = port;
    l->clients = clients;
    l->seconds = seconds;
    pthread_mutex_init(&l->lock, NULL);
    for (int i = 0; i < clients; i++) {
        clients_arg[i] = (struct client){ l, i };
        int err = pthread_create(&l->threads[i], NULL, client_main,
                                 &clients_arg[i]);
        if (err != 0) {
            l->clients = i;
            ud_load_join(l);
            return -err;
        }
    }
    return 0;
}

void ud_load_stop(ud_load *l)
{
    atomic_store(&l->stop, true);
}

void ud_load_join(ud_load *l)
{
    for (int i = 0; i < l->clients; i++)
        pthread_join(l->threads[i], NULL);
    l->clients = 0;
}

int ud_pids(ud_load *l)
{
    pthread_mutex_lock(&l->lock);
    int n = l->npids;
    pthread_mutex_unlock(&l->lock);
    return n;
}

pid_t ud_pid(ud_load *l, int i)
{
    pthread_mutex_lock(&l->lock);
    pid_t p = i < l->npids ? l->pids[i] : -1;
    pthread_mutex_unlock(&l->lock);
    return p;
}

double ud_pid_seen(ud_load *l, int i)
{
    pthread_mutex_lock(&l->lock);
    double t = i < l->npids ? l->first_seen[i] : -1;
    pthread_mutex_unlock(&l->lock);
    return t;
}

/* ------------------------------------------------------------------------ */
/* Generations                                                               */

int ud_become_subreaper(void)
{
#if defined(__linux__) && defined(PR_SET_CHILD_SUBREAPER)
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 ? 0 : -errno;
#else
    return -ENOSYS;
#endif
}

static void *reader_main(void *arg)
{
    ud_server *s = arg;
    char buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(s->out, buf + have, sizeof(buf) - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        have += (size_t)n;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
            *nl = '\0';
            if (strncmp(start, "listening on ", 13) == 0) {
                pthread_mutex_lock(&s->lock);
                if (s->nlistening == 0)
                    snprintf(s->address, sizeof(s->address), "%s",
                             start + 13);
                if (s->nlistening < UD_MAX_GENS)
                    s->listening[s->nlistening++] = ud_now();
                pthread_mutex_unlock(&s->lock);
            }
            start = nl + 1;
        }
        have -= (size_t)(start - buf);
        memmove(buf, start, have);
        if (have == sizeof(buf) - 1)
            have = 0; /* a line longer than the buffer: not ours */
    }
}

/* Reaps every process that ends here: the first generation, and each
 * later one once its parent (the generation before) has gone. */
static void *reaper_main(void *arg)
{
    ud_server *s = arg;
    while (!atomic_load(&s->stop)) {
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p > 0) {
            pthread_mutex_lock(&s->lock);
            if (s->nexited < UD_MAX_GENS * 2) {
                s->exited[s->nexited] = p;
                s->exit_time[s->nexited] = ud_now();
                s->exit_status[s->nexited] = st;
                s->nexited++;
            }
            pthread_mutex_unlock(&s->lock);
            continue;
        }
        ud_sleep_until(ud_now() + 0.002);
    }
    return NULL;
}

static int each_fd(pid_t pid, void (*fn)(void *, int, const char *),
                   void *arg);
static void note_socket(void *arg, int fd, const char *target);

static pid_t spawn(ud_server *s, const char *path, char *const argv[],
                   const char *err_path, char *const env[], pid_t group)
{
    int err_fd = -1;
    if (err_path != NULL &&
        (err_fd = open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                       0644)) < 0)
        return -errno;
    /* The environment is made before the fork: threads run here. */
    extern char **environ;
    size_t n = 0, extra = 0;
    while (environ[n] != NULL)
        n++;
    while (env != NULL && env[extra] != NULL)
        extra++;
    char **vars = calloc(n + extra + 1, sizeof(*vars));
    if (vars == NULL) {
        if (err_fd >= 0)
            close(err_fd);
        return -ENOMEM;
    }
    if (extra > 0)
        memcpy(vars, env, extra * sizeof(*vars));
    memcpy(vars + extra, environ, n * sizeof(*vars));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, group);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGUSR2, SIG_DFL);
        dup2(s->out_wr, STDOUT_FILENO);
        if (err_fd >= 0)
            dup2(err_fd, STDERR_FILENO);
        /* Nothing this process inherited itself reaches the server: its
         * descriptors are then all its own, as the tests count them. */
        for (int fd = 3; fd < 1024; fd++)
            (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        execve(path, argv, vars);
        _exit(127);
    }
    int saved = errno;
    free(vars);
    if (err_fd >= 0)
        close(err_fd);
    if (pid < 0)
        return -saved;
    setpgid(pid, group); /* whichever runs first */
    return pid;
}

int ud_server_start(ud_server *s, const char *path, char *const argv[],
                    const char *err_path, char *const env[])
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -errno;
    s->out = p[0];
    s->out_wr = p[1];
    pid_t pid = spawn(s, path, argv, err_path, env, 0);
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return pid;
    }
    s->first = pid;
    pthread_create(&s->reader, NULL, reader_main, s);
    pthread_create(&s->reaper, NULL, reaper_main, s);
    double until = ud_now() + 10;
    while (ud_listening(s) == 0 && ud_now() < until)
        ud_sleep_until(ud_now() + 0.005);
    if (ud_listening(s) == 0)
        return -ETIMEDOUT;
    const char *colon = strrchr(s->address, ':');
    s->port = colon != NULL ? atoi(colon + 1) : 0;
    /* Once it has answered, its loops run (a fiber server opens a socket
     * per loop as they start): only then are its sockets all listeners. */
    ud_load probe;
    memset(&probe, 0, sizeof(probe));
    probe.port = s->port;
    pthread_mutex_init(&probe.lock, NULL);
    pid_t seen = -1;
    if (!one_connection(&probe, 0, 1, &seen))
        return -ECONNREFUSED;
    if (each_fd(pid, note_socket, s) != 0 || s->nlisteners == 0)
        return -ENOENT;
    return 0;
}

int ud_server_start_more(ud_server *s, const char *path, char *const argv[],
                         const char *err_path, pid_t *pid)
{
    pid_t p = spawn(s, path, argv, err_path, NULL, s->first);
    if (p < 0)
        return p;
    *pid = p;
    return 0;
}

int ud_listening(ud_server *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->nlistening;
    pthread_mutex_unlock(&s->lock);
    return n;
}

double ud_listening_at(ud_server *s, int i)
{
    pthread_mutex_lock(&s->lock);
    double t = i < s->nlistening ? s->listening[i] : -1;
    pthread_mutex_unlock(&s->lock);
    return t;
}

bool ud_exited(ud_server *s, pid_t pid, int timeout_ms, double *when,
               int *status)
{
    double until = ud_now() + timeout_ms / 1000.0;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        for (int i = 0; i < s->nexited; i++)
            if (s->exited[i] == pid) {
                if (when != NULL)
                    *when = s->exit_time[i];
                if (status != NULL)
                    *status = s->exit_status[i];
                pthread_mutex_unlock(&s->lock);
                return true;
            }
        pthread_mutex_unlock(&s->lock);
        if (ud_now() >= until)
            return false;
        ud_sleep_until(ud_now() + 0.002);
    }
}

void ud_server_stop(ud_server *s)
{
    if (s->first <= 0)
        return;
    atomic_store(&s->stop, true);
    pthread_join(s->reaper, NULL);
    /* Every process of the group is reaped here, the later generations
     * as orphans once their parents have gone: until none is left.  The
     * group is signalled again each turn: a child whose fork was under
     * way at the first signal was not in it yet. */
    double until = ud_now() + 5;
    while (ud_now() < until) {
        (void)kill(-s->first, SIGKILL);
        pid_t p = waitpid(-1, NULL, WNOHANG);
        if (p < 0 && errno == ECHILD)
            break;
        if (p <= 0)
            ud_sleep_until(ud_now() + 0.005);
    }
    close(s->out_wr);
    pthread_join(s->reader, NULL);
    close(s->out);
    s->first = 0;
}

/* ------------------------------------------------------------------------ */
/* Descriptors                                                               */

/* Calls fn for each of pid's descriptors: number and link target. */
static int each_fd(pid_t pid, void (*fn)(void *, int, const char *),
                   void *arg)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[64 + sizeof(e->d_name)], target[256];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        fn(arg, atoi(e->d_name), target);
    }
    closedir(d);
    return 0;
}

struct fd_census {
    const unsigned long *listeners;
    int nlisteners;
    int count;
    int numbers[64], nnumbers;
    bool fd3_listener, fd4_pipe;
};

static bool is_listener(const struct fd_census *c, const char *target)
{
    unsigned long ino;
    if (sscanf(target, "socket:[%lu]", &ino) != 1)
        return false;
    for (int i = 0; i < c->nlisteners; i++)
        if (c->listeners[i] == ino)
            return true;
    return false;
}

static void census(void *arg, int fd, const char *target)
{
    struct fd_census *c = arg;
    if (strncmp(target, "socket:", 7) == 0 && !is_listener(c, target))
        return; /* a connection */
    c->count++;
    if (c->nnumbers < 64)
        c->numbers[c->nnumbers++] = fd;
    if (fd == 3)
        c->fd3_listener = is_listener(c, target);
    if (fd == 4)
        c->fd4_pipe = strncmp(target, "pipe:", 5) == 0;
}

/* Before any client came, the first generation's sockets are its
 * listeners: the same sockets in every generation after it. */
static void note_socket(void *arg, int fd, const char *target)
{
    ud_server *s = arg;
    unsigned long ino;
    (void)fd;
    if (sscanf(target, "socket:[%lu]", &ino) == 1 && s->nlisteners < 8)
        s->listeners[s->nlisteners++] = ino;
}

int ud_fds(ud_server *s, pid_t pid)
{
    struct fd_census c = { .listeners = s->listeners,
                           .nlisteners = s->nlisteners };
    if (each_fd(pid, census, &c) != 0)
        return -1;
    return c.count;
}

bool ud_fds_are_activation(ud_server *s, pid_t pid, char *why, size_t cap)
{
    struct fd_census c = { .listeners = s->listeners,
                           .nlisteners = s->nlisteners };
    if (each_fd(pid, census, &c) != 0) {
        snprintf(why, cap, "cannot read the descriptors of %ld", (long)pid);
        return false;
    }
    int seen = 0;
    for (int i = 0; i < c.nnumbers; i++)
        if (c.numbers[i] >= 0 && c.numbers[i] <= 4)
            seen |= 1 << c.numbers[i];
    if (c.count != 5 || seen != 0x1f || !c.fd3_listener || !c.fd4_pipe) {
        int len = snprintf(why, cap, "%d descriptors:", c.count);
        for (int i = 0; i < c.nnumbers && len > 0 && (size_t)len < cap; i++)
            len += snprintf(why + len, cap - (size_t)len, " %d",
                            c.numbers[i]);
        return false;
    }
    return true;
}
