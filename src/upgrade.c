/*
 * upgrade.c - zero-downtime restart: the server's listening socket handed
 * to a new program, which adopts it through socket activation and says
 * when it serves; only then does this process stop accepting.
 *
 * The queue of connections belongs to the socket, not to a process: the
 * successor gets the same socket (a descriptor inherited across fork and
 * exec), so whatever waits in the queue, or arrives while the two
 * processes overlap, is accepted by one of them.  Nothing is re-bound, so
 * nothing is reset (docs/DEPLOYMENT.md, "Upgrading without a restart").
 *
 * The protocol is systemd's (activation.c reads it) plus one descriptor:
 * LISTEN_FDS=n sockets at 3 .. 3+n-1 (the server's socket and its
 * SO_REUSEPORT siblings: listeners.c), LISTEN_FDNAMES, LISTEN_PID=the
 * successor's pid, and SKS_UPGRADE_FD=3+n, the write end of a pipe on
 * which the successor writes READY_BYTE when its first serve_forever
 * starts.  A successor that ends before that closes the pipe (EOF); one
 * whose exec failed writes EXEC_FAILED and the errno first.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define READY_BYTE 'R'
#define EXEC_FAILED 'E'
/* How often a waiting upgrade looks whether its server is closing. */
#define CANCEL_CHECK 0.02
/* A successor that closed its pipe without being ready, or that ran past
 * its time, gets this long to exit by itself before SIGKILL. */
#define EXIT_GRACE 0.1

#define ENV_FD SKS__UPGRADE_FD_ENV
/* Descriptors passed: the listening sockets and the readiness pipe. */
#define MAX_FDS (SKS__MAX_LISTENERS + 1)

/* ------------------------------------------------------------------------ */
/* The successor's side                                                      */

/* The readiness pipe this process inherited, until it says "ready". */
static atomic_int ready_fd = -1;
static atomic_bool ready_taken;

void sks__upgrade_inherit(void)
{
    const char *s = getenv(ENV_FD);
    if (s != NULL && !atomic_exchange(&ready_taken, true)) {
        char *end;
        errno = 0;
        long fd = strtol(s, &end, 10);
        struct stat st;
        /* Only a pipe: a stray variable naming another descriptor must
         * not make the library write into it. */
        if (errno == 0 && *end == '\0' && end != s &&
            fd >= SKS_LISTEN_FDS_START && fd < INT_MAX &&
            fstat((int)fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
            int fl = fcntl((int)fd, F_GETFD);
            if (fl >= 0 && fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC) == 0)
                atomic_store(&ready_fd, (int)fd);
        }
    }
}

void sks__upgrade_signal_ready(void)
{
    if (atomic_load(&ready_fd) < 0)
        return;
    int fd = atomic_exchange(&ready_fd, -1);
    if (fd < 0)
        return;
    char c = READY_BYTE;
    ssize_t r;
    do
        r = write(fd, &c, 1);
    while (r < 0 && errno == EINTR);
    sks__close(fd);
}

/* ------------------------------------------------------------------------ */
/* Handing over                                                              */

/* argv[0] as execve wants it: a path, searched in PATH when it names no
 * directory (before the fork: execvp's search allocates). */
static int resolve(const char *name, char *out, size_t cap)
{
    if (strchr(name, '/') != NULL) {
        if (strlen(name) >= cap)
            return -ENAMETOOLONG;
        strcpy(out, name);
        return 0;
    }
    const char *path = getenv("PATH");
    if (path == NULL || *path == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path;; p++) {
        size_t n = strcspn(p, ":");
        /* An empty entry is the current directory. */
        int len = snprintf(out, cap, "%.*s/%s", n ? (int)n : 1,
                           n ? p : ".", name);
        if (len > 0 && (size_t)len < cap && access(out, X_OK) == 0)
            return 0;
        p += n;
        if (*p == '\0')
            return -ENOENT;
    }
}

static bool is_ours(const char *entry)
{
    static const char *const names[] = { "LISTEN_PID=", "LISTEN_FDS=",
                                         "LISTEN_FDNAMES=", ENV_FD "=" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strncmp(entry, names[i], strlen(names[i])) == 0)
            return true;
    return false;
}

/*
 * The successor's environment: this one's without the activation
 * variables, plus ours.  LISTEN_PID must be the successor's pid, which
 * exists only after the fork, where a threaded process may not allocate:
 * pid_digits is room in its entry that the child fills in.
 */
struct env {
    char **vars;
    char *block;        /* our four entries */
    char *pid_digits;
};

static int make_env(struct env *out, size_t nfds, const char *name,
                    int ready)
{
    extern char **environ;
    size_t n = 0, k = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        n++;
    out->vars = calloc(n + 5, sizeof(*out->vars));
    /* 11 + 24 digits, 11 + 20, 15 + 11, 15, NULs: under 128. */
    out->block = malloc(128 + nfds * (strlen(name) + 1));
    if (out->vars == NULL || out->block == NULL) {
        free(out->vars);
        free(out->block);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        if (!is_ours(environ[i]))
            out->vars[k++] = environ[i];
    char *p = out->block;
    out->vars[k++] = p;
    p += sprintf(p, "LISTEN_PID=");
    out->pid_digits = p;
    memset(p, '\0', 24);
    p += 24;
    out->vars[k++] = p;
    p += sprintf(p, "LISTEN_FDS=%zu", nfds) + 1;
    out->vars[k++] = p;
    p += sprintf(p, ENV_FD "=%d", ready) + 1;
    out->vars[k++] = p;
    p += sprintf(p, "LISTEN_FDNAMES=");
    for (size_t i = 0; i < nfds; i++)
        p += sprintf(p, "%s%s", i ? ":" : "", name);
    out->vars[k] = NULL;
    return 0;
}

/* Decimal digits of v into p (async-signal-safe: no snprintf). */
static void put_pid(char *p, pid_t v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long u = (unsigned long)v;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    while (n > 0)
        *p++ = tmp[--n];
    *p = '\0';
}

/*
 * The child between fork and exec: only async-signal-safe calls.  Each
 * descriptor to pass is first copied above the target range (so that a
 * source sitting on another's target is not overwritten), then dup2'd
 * down to its target, which clears close-on-exec on that one copy only:
 * every other descriptor of the process stays close-on-exec.
 */
_Noreturn static void exec_child(const char *path, char *const argv[],
                                 const struct env *env, const int *fds,
                                 size_t n)
{
    int tmp[MAX_FDS];
    int top = SKS_LISTEN_FDS_START + (int)n + 1;
    int err = 0;

    put_pid(env->pid_digits, getpid());
    for (size_t i = 0; i < n && err == 0; i++)
        if ((tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, top)) < 0)
            err = errno;
    bool copied = err == 0;
    for (size_t i = 0; i < n && err == 0; i++)
        if (dup2(tmp[i], SKS_LISTEN_FDS_START + (int)i) < 0)
            err = errno;
    if (err == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, env->vars);
        err = errno;
    }
    /* The readiness pipe is the last descriptor passed: its high copy
     * once made (a dup2 may have put another on its number), else its
     * original. */
    char msg[2] = { EXEC_FAILED, (char)(err < 256 ? err : EIO) };
    (void)!write(copied ? tmp[n - 1] : fds[n - 1], msg,
                 sizeof(msg));
    _exit(127);
}

/* Ends a successor that will not serve: it gets EXIT_GRACE to exit by
 * itself, then SIGKILL; it is reaped either way. */
static void end_child(pid_t pid)
{
    double until = sks__now() + EXIT_GRACE;
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return;
        if (sks__now() >= until)
            break;
        (void)sks__wait(NULL, 0, sks__now() + 0.005);
    }
    (void)kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Waits for the successor's word on rd: 0 (ready), or why not. */
static int await_ready(sks_server *srv, int rd, pid_t pid, double timeout)
{
    double deadline = sks__deadline_in(timeout);
    for (;;) {
        if (atomic_load(&srv->upgrade.cancel)) {
            end_child(pid);
            return -ECANCELED;
        }
        double slice = sks__now() + CANCEL_CHECK;
        struct pollfd p = { .fd = rd, .events = POLLIN };
        int r = sks__wait(&p, 1, slice < deadline ? slice : deadline);
        if (r < 0 && r != -EINTR) {
            end_child(pid);
            return r;
        }
        if (r > 0) {
            unsigned char msg[2];
            ssize_t got;
            do
                got = read(rd, msg, sizeof(msg));
            while (got < 0 && errno == EINTR);
            if (got > 0 && msg[0] == READY_BYTE)
                return 0;
            if (got < 0 && errno == EAGAIN)
                continue;
            end_child(pid);
            if (got == 2 && msg[0] == EXEC_FAILED && msg[1] != 0)
                return -(int)msg[1];
            return SKS_EUPGRADE; /* it ended, or closed the pipe */
        }
        if (sks__now() >= deadline) {
            end_child(pid);
            return -ETIMEDOUT;
        }
    }
}

/* Closes this process's copies of the listening sockets, once they serve
 * in the successor: no Unix socket file is removed (the successor listens
 * on it).  Under srv->lock, when no loop uses them. */
static void close_listeners(sks_server *srv)
{
    srv->have_sock_file = false;
    sks__listeners_close_more(srv);
    sks__close(srv->fd);
    srv->fd = -1;
}

static void handed_over(sks_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    atomic_store(&srv->upgrade.handed_over, true);
    bool serving = srv->serving;
    if (!serving)
        close_listeners(srv);
    pthread_mutex_unlock(&srv->lock);
    /* The loop stops accepting and, as it ends, closes them. */
    if (serving)
        sks_server_request_shutdown(srv);
}

void sks__upgrade_loop_ended(sks_server *srv)
{
    if (atomic_load(&srv->upgrade.handed_over))
        close_listeners(srv);
}

static int run(sks_server *srv, char *const argv[], double timeout)
{
    char path[PATH_MAX];
    int fds[MAX_FDS];
    size_t n = 0;
    int pipefd[2];
    struct env env;

    int err = resolve(argv[0], path, sizeof(path));
    if (err != 0)
        return err;
    /* Every socket: one left behind would reset its queue as it closes. */
    n = sks__listeners(srv, fds, SKS__MAX_LISTENERS);
    if (n == 0)
        return SKS_ECLOSED;
    size_t nsock = n;
    if ((err = sks__pipe(pipefd)) != 0)
        return err;
    fds[n++] = pipefd[1];

    err = make_env(&env, nsock,
                   srv->upgrade.name ? srv->upgrade.name : "unknown",
                   SKS_LISTEN_FDS_START + (int)nsock);
    if (err != 0) {
        sks__close(pipefd[0]);
        sks__close(pipefd[1]);
        return err;
    }

    /* No signal handler of this process runs in the child: it would act
     * on the parent's copy of the program's state, between fork and exec. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        exec_child(path, argv, &env, fds, n);
    err = pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(env.vars);
    free(env.block);
    sks__close(pipefd[1]);
    if (err == 0)
        err = await_ready(srv, pipefd[0], pid, timeout);
    sks__close(pipefd[0]);
    if (err == 0)
        handed_over(srv);
    return err;
}

static int begin(sks_server *srv)
{
    if (atomic_load(&srv->upgrade.handed_over))
        return -EALREADY;
    if (srv->closed || srv->fd < 0)
        return SKS_ECLOSED;
    if (getpid() != srv->upgrade.owner)
        return -EPERM; /* a pre-forked or forked child of the server */
    if (atomic_exchange(&srv->upgrade.busy, true))
        return -EBUSY;
    return 0;
}

int sks_server_upgrade(sks_server *srv, char *const argv[], double timeout)
{
    if (srv == NULL || argv == NULL || argv[0] == NULL || !(timeout > 0))
        return -EINVAL;
    int err = begin(srv);
    if (err != 0)
        return err;
    err = run(srv, argv, timeout);
    atomic_store(&srv->upgrade.busy, false);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Requested upgrades                                                        */

int sks_server_set_upgrade(sks_server *srv, char *const argv[],
                           double timeout)
{
    if (srv == NULL || (argv != NULL && argv[0] == NULL) ||
        !(timeout >= 0))
        return -EINVAL;
    srv->upgrade.argv = argv;
    srv->upgrade.timeout = timeout > 0 ? timeout : SKS_UPGRADE_TIMEOUT;
    return 0;
}

void sks_server_request_upgrade(sks_server *srv)
{
    atomic_store(&srv->upgrade.requested, true);
    sks__wake(srv); /* keeps errno */
}

bool sks_server_upgraded(const sks_server *srv)
{
    return atomic_load(&srv->upgrade.handed_over);
}

/* A requested upgrade runs on a thread of its own, so that the loop goes
 * on serving while the successor starts. */
static void *upgrade_main(void *arg)
{
    sks_server *srv = arg;
    int err = run(srv, srv->upgrade.argv, srv->upgrade.timeout);
    if (err != 0 && err != -ECANCELED)
        sks_server_handle_error(srv, NULL, err);
    atomic_store(&srv->upgrade.busy, false);
    return NULL;
}

static void join_thread(sks_server *srv)
{
    if (srv->upgrade.thread_started) {
        pthread_join(srv->upgrade.thread, NULL);
        srv->upgrade.thread_started = false;
    }
}

void sks__upgrade_turn(sks_server *srv)
{
    if (!atomic_load(&srv->upgrade.requested))
        return;
    atomic_store(&srv->upgrade.requested, false);
    int err = srv->upgrade.argv == NULL ? -EINVAL : begin(srv);
    if (err == -EPERM)
        return; /* a child's loop: upgrading is its parent's business */
    if (err != 0) {
        sks_server_handle_error(srv, NULL, err);
        return;
    }
    join_thread(srv); /* the previous upgrade's, which has ended */
    err = -pthread_create(&srv->upgrade.thread, NULL, upgrade_main, srv);
    if (err != 0) {
        atomic_store(&srv->upgrade.busy, false);
        sks_server_handle_error(srv, NULL, err);
        return;
    }
    srv->upgrade.thread_started = true;
}

void sks__upgrade_close(sks_server *srv)
{
    atomic_store(&srv->upgrade.cancel, true);
    join_thread(srv);
}
