/*
 * support_proc.c - the processes a test deals with: forked children that
 * report through a pipe, a runner forked as an unprivileged user, and the
 * example programs started from the build tree; see support.h.
 */
#define _GNU_SOURCE
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Reports from children: fixed-size records, each written in one write()
 * (atomic below PIPE_BUF), so that children never interleave them.         */

static int report_pipe[2] = { -1, -1 };

void reports_open(void)
{
    assert_int_equal(pipe2(report_pipe, O_CLOEXEC), 0);
}

void reports_close(void)
{
    close(report_pipe[0]);
    close(report_pipe[1]);
    report_pipe[0] = report_pipe[1] = -1;
}

void report_send(char kind, int err)
{
    child_report r;
    /* Zero the padding too: the whole struct goes down the pipe, and
     * memcheck rightly flags uninitialised bytes passed to write(). */
    memset(&r, 0, sizeof(r));
    r.kind = kind;
    r.pid = getpid();
    r.err = err;
    if (report_pipe[1] >= 0) {
        ssize_t w;
        do
            w = write(report_pipe[1], &r, sizeof(r));
        while (w < 0 && errno == EINTR);
    }
}

bool report_next(child_report *r, int timeout_ms)
{
    if (!readable_within(report_pipe[0], timeout_ms))
        return false;
    return read(report_pipe[0], r, sizeof(*r)) == (ssize_t)sizeof(*r);
}

/* ------------------------------------------------------------------------ */
/* A request that cannot get its process or thread                           */

static bool uid_in_use(uid_t uid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    struct stat st;
    bool used = false;
    if (d == NULL)
        return true;
    while (!used && (e = readdir(d)) != NULL)
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9' &&
            fstatat(dirfd(d), e->d_name, &st, 0) == 0 && st.st_uid == uid)
            used = true;
    closedir(d);
    return used;
}

/* A uid no process runs as, so that RLIMIT_NPROC counts only ours. */
static uid_t unused_uid(void)
{
    if (!proc_mounted())
        skip_because("needs /proc to find a uid no process uses");
    uid_t uid = 40000 + (uid_t)(getpid() % 20000);
    while (uid_in_use(uid))
        uid++;
    return uid;
}

static int spawn_errors, spawn_last_error;

static void counting_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    spawn_errors++;
    spawn_last_error = err;
}

/* What the runner below checks, in order; its exit status is the index
 * of the first check that failed (0: all passed). */
static const char *const spawn_checks[] = {
    "all passed",
    "could not become an unprivileged user",
    "could not lower RLIMIT_NPROC",
    "could not create the server",
    "could not connect",
    "handle_request failed",
    "handle_error was not called once with -EAGAIN",
    "the refused request's connection was not closed",
    "could not raise RLIMIT_NPROC again",
    "the next request was not served after the failure",
    "a request was still running after close",
};

/* Nothing here may use cmocka: it runs in another process. */
static int failed_spawn_runner(const sks_server_ops *base, uid_t uid)
{
    sks_server_ops ops = *base;
    ops.handle_error = counting_handle_error;
    sks_server *srv = NULL;
    char address[SKS_ADDRSTRLEN], buf[16];
    struct rlimit rl;

    alarm(10); /* a hang ends the runner by SIGALRM */
    if (setgroups(0, NULL) != 0 || setgid(uid) != 0 || setuid(uid) != 0)
        return 1;
    getrlimit(RLIMIT_NPROC, &rl);
    rlim_t hard = rl.rlim_max;
    rl.rlim_cur = 1;
    if (setrlimit(RLIMIT_NPROC, &rl) != 0)
        return 2;
    if (sks_server_new(&srv, &ops, "127.0.0.1:0", &echo_line_or_fail, NULL,
                       0) != 0)
        return 3;
    sks_addr_format(sks_server_address(srv), address, sizeof(address));
    int c = client_connect(address);
    if (c < 0 || client_send_all(c, "lost\n", 5) != 0)
        return 4;
    if (sks_server_handle_request(srv) != 0)
        return 5;
    if (spawn_errors != 1 || spawn_last_error != -EAGAIN)
        return 6;
    if (client_recv_all(c, buf, sizeof(buf)) > 0)
        return 7; /* EOF, or a reset: the input was never read */
    close(c);

    rl.rlim_cur = hard;
    if (setrlimit(RLIMIT_NPROC, &rl) != 0)
        return 8;
    c = client_connect(address);
    if (c < 0 || client_send_all(c, "back\n", 5) != 0 ||
        sks_server_handle_request(srv) != 0 ||
        client_recv_line(c, buf, sizeof(buf)) != 5 ||
        memcmp(buf, "back\n", 5) != 0 || spawn_errors != 1)
        return 9;
    close(c);
    /* Nothing stays counted (server_close would wait forever for a thread
     * never started), and nothing is left running. */
    sks_server_close(srv);
    if (sks_server_active_requests(srv) != 0 || count_children() != 0)
        return 10;
    sks_server_free(srv);
    return 0;
}

void assert_failed_spawn_is_reported(const sks_server_ops *ops,
                                     const char *what)
{
    uid_t uid = unused_uid();
    fflush(NULL);
    pid_t runner = fork();
    assert_true(runner >= 0);
    if (runner == 0)
        _exit(failed_spawn_runner(ops, uid));
    int status = 0;
    assert_int_equal(waitpid(runner, &status, 0), runner);
    if (WIFSIGNALED(status))
        fail_msg("the runner was killed by signal %d (SIGALRM: it hung)",
                 WTERMSIG(status));
    assert_true(WIFEXITED(status));
    int rc = WEXITSTATUS(status);
    if (rc != 0)
        fail_msg("failed-%s runner (uid %d): %s", what, (int)uid,
                 rc < (int)(sizeof(spawn_checks) / sizeof(*spawn_checks))
                     ? spawn_checks[rc] : "crashed");
}

/* ------------------------------------------------------------------------ */
/* The example programs                                                      */

const char *examples_dir(void)
{
    static char dir[PATH_MAX + 16];
    if (dir[0] != '\0')
        return dir;
    /* build/tests/x -> build/examples (build/asan/tests/x -> ...). */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        /* No /proc: make test says where the build is. */
        const char *build = getenv("BUILD");
        if (build == NULL)
            return NULL;
        snprintf(dir, sizeof(dir), "%s/examples", build);
        return dir;
    }
    self[n] = '\0';
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(self, '/');
        if (slash == NULL)
            return NULL;
        *slash = '\0';
    }
    snprintf(dir, sizeof(dir), "%s/examples", self);
    return dir;
}

/* examples_dir()/name; false if the directory is unknown or too long. */
static bool example_path(const char *name, char *buf, size_t cap)
{
    const char *dir = examples_dir();
    return dir != NULL &&
           (size_t)snprintf(buf, cap, "%s/%s", dir, name) < cap;
}

bool example_exists(const char *name)
{
    char path[PATH_MAX];
    return example_path(name, path, sizeof(path)) && access(path, X_OK) == 0;
}

void proc_spawn(test_proc *p, char *const argv[])
{
    char path[PATH_MAX];
    int out[2];
    if (!example_path(argv[0], path, sizeof(path)))
        fail_msg("no examples directory beside this test for %s", argv[0]);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    fflush(NULL); /* or the child would write our buffered output again */
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        /* Its own process group, so that its children can be killed with
         * it; and signals as a fresh process would have them. */
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        dup2(out[1], STDOUT_FILENO);
        execv(path, argv);
        _exit(127);
    }
    setpgid(p->pid, p->pid); /* whichever runs first */
    p->group = p->pid;
    close(out[1]);
    p->out = out[0];
}

ssize_t proc_read_line(test_proc *p, char *buf, size_t cap, int timeout_ms)
{
    size_t got = 0;
    double end = now_seconds() + timeout_ms / 1000.0;
    while (got + 1 < cap) {
        int left = (int)((end - now_seconds()) * 1000.0);
        if (left <= 0 || !readable_within(p->out, left))
            return -1;
        char c;
        ssize_t r = read(p->out, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (c == '\n') {
            buf[got] = '\0';
            return (ssize_t)got;
        }
        buf[got++] = c;
    }
    return -1;
}

int proc_wait_exit(test_proc *p, int timeout_ms, double *took)
{
    double t0 = now_seconds();
    int status = -1;
    bool exited = false;
    int pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (pidfd >= 0) {
        exited = readable_within(pidfd, timeout_ms) &&
                 waitpid(p->pid, &status, 0) == p->pid;
        close(pidfd);
    } else {
        /* No pidfd (old kernel): poll waitpid. */
        while (now_seconds() - t0 < timeout_ms / 1000.0) {
            if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
                exited = true;
                break;
            }
            sleep_ms(2);
        }
    }
    *took = now_seconds() - t0;
    if (!exited)
        return -1;
    p->pid = -1;
    return status;
}

void proc_kill(test_proc *p)
{
    if (p->group > 0)
        kill(-p->group, SIGKILL);
    p->group = -1;
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    p->pid = -1;
    if (p->out >= 0)
        close(p->out);
    p->out = -1;
}

void example_start(test_proc *p, const char *name, const char *address,
                   char *bound, size_t cap)
{
    char line[SKS_ADDRSTRLEN + 32];
    char *argv[] = { (char *)name, (char *)address, NULL };
    if (!example_exists(name))
        fail_msg("%s is not built: build the examples first (make examples)",
                 name);
    proc_spawn(p, argv);
    if (proc_read_line(p, line, sizeof(line), 5000) < 0)
        fail_msg("%s %s: no first line within 5 s", name, address);
    if (strncmp(line, "listening on ", 13) != 0)
        fail_msg("%s: first line is \"%s\"", name, line);
    if (strlen(line + 13) >= cap)
        fail_msg("%s: address too long: %s", name, line + 13);
    memcpy(bound, line + 13, strlen(line + 13) + 1);
}
