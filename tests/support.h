/*
 * support.h - what the tests share: a server serving in a thread on a
 * loopback or Unix address, clients, process accounting (descriptors,
 * threads, children) read from /proc, common handlers, waits, and the
 * programs and children a test starts (support_proc.c).
 */
#ifndef TESTS_SUPPORT_H
#define TESTS_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#include "sockserver.h"

/* A server running sks_server_serve_forever(poll_interval) in a thread. */
typedef struct test_server {
    sks_server *srv;
    pthread_t thread;
    int serve_rc;
    char address[SKS_ADDRSTRLEN]; /* the bound address, formatted */
} test_server;

/* Creates the server (asserting success), then serves it in a thread. */
void ts_start(test_server *ts, const sks_server_ops *ops, const char *address,
              const sks_handler_class *cls, void *user, double poll_interval);
/* Serves an already-created server in a thread. */
void ts_serve(test_server *ts, sks_server *srv, double poll_interval);
/* shutdown, join, free (server_close runs inside free). */
void ts_stop(test_server *ts);

/* A fresh Unix address "unix:/tmp/sks-test-PID-N.sock" (file removed). */
void unix_temp_address(char *buf, size_t cap);

/* Clients, with 5 s send/receive timeouts so no test can hang. */
int client_connect(const char *address);             /* stream; -errno */
int client_dgram(const char *server_address);        /* connected datagram
                                                        socket, bound to a
                                                        temp path for unix */
int client_send_all(int fd, const void *buf, size_t n); /* 0 or -errno */
/* Reads until '\n' (included) or cap bytes or EOF; returns bytes or -errno. */
ssize_t client_recv_line(int fd, char *buf, size_t cap);
/* Reads until EOF or cap; returns bytes or -errno. */
ssize_t client_recv_all(int fd, char *buf, size_t cap);
/* Closes a client socket (removing its bound Unix path, if any). */
void client_close(int fd);
/* Sends line, expects exactly the same bytes back. */
void assert_echo(int fd, const char *line);

/* Process accounting, from /proc.  Where /proc is not mounted (the BSDs,
 * macOS, some containers) count_open_fds asks each descriptor instead,
 * and count_threads and count_children, which have no portable way,
 * skip the running test and say why: call them only from within a test,
 * or after proc_mounted() said yes. */
bool proc_mounted(void);
int count_open_fds(void);
int count_threads(void);
int count_children(void);   /* live or zombie children of this process */
int count_running_children(void); /* those not exited (no zombies) */

double now_seconds(void);   /* monotonic */
void sleep_ms(int ms);

/* Waits (up to timeout_ms) until cond(arg) is true; returns it. */
bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms);

/* ------------------------------------------------------------------------ */
/* More servers                                                              */

/* sks_server_new, asserting success (the message names table and address). */
sks_server *ts_new(const sks_server_ops *ops, const char *address,
                   const sks_handler_class *cls, void *user, unsigned flags);
/* CPython's scenario end: shutdown, join (serve_forever returned 0),
 * server_close, and the socket is gone (fileno -1); the caller frees. */
void ts_shutdown_close(test_server *ts);
/* Ends the loop (shutdown, join), then server_close: the seconds that
 * server_close took (the caller frees). */
double ts_timed_close(test_server *ts);
/* Stops and frees a server a failed test left serving, if any (no asserts). */
void ts_stop_quietly(test_server *ts);

/* ------------------------------------------------------------------------ */
/* Handlers                                                                  */

/* Echoes every line (of the stream, or of the datagram) until end of input. */
int echo_lines_handle(sks_handler *h);
extern const sks_handler_class echo_lines_stream, echo_lines_dgram;
/* Echoes one line; "fail\n" fails the request (SKS_EHANDLER) after reading. */
int echo_line_or_fail_handle(sks_handler *h);
extern const sks_handler_class echo_line_or_fail;

/* A probing server's counts: its user pointer is a probe_counts, or a
 * struct whose first member is one. */
typedef struct probe_counts {
    atomic_int handled;    /* handler calls */
    atomic_int errors;     /* handle_error calls */
    atomic_int last_error;
} probe_counts;
/* handle_error that records into the server's probe_counts, quietly. */
void probe_handle_error(sks_server *srv, sks_request *req, int err);
/* CPython's MyHandler: echoes one line, counted in the server's probe. */
extern const sks_handler_class probe_line_echo_stream, probe_line_echo_dgram;

/* ------------------------------------------------------------------------ */
/* More clients                                                              */

/* Sends n bytes as one datagram and expects exactly the same bytes back. */
void assert_dgram_echo(int fd, const void *data, size_t n);
/* Sends n bytes as one datagram; the reply must be their first `want`. */
void assert_dgram_reply(int fd, const void *data, size_t n, size_t want);
/* One datagram client: a warm-up echo, then n more; the descriptors of this
 * process stay as they were after the warm-up. */
void assert_dgram_echoes_keep_fds(const char *address, int n);
/* A client of srv that sent line (if not NULL) and that one
 * sks_server_handle_request(srv), here, has served. */
int client_handled(sks_server *srv, const char *line);
/* A fresh client of type (SOCK_STREAM or SOCK_DGRAM): line echoed once. */
void assert_echo_once(const char *address, int type, const char *line);
/* Reads one line: it must be exactly `line`. */
void assert_line(int fd, const char *line);
/* Reads: end of input must come, and nothing before it. */
void assert_eof(int fd);
/* shutdown(SHUT_WR), then close: ends the stream even if a forked child
 * holds a copy of the socket. */
void client_hang_up(int fd);
/* True when fd has input (or end of input) within ms. */
bool readable_within(int fd, int ms);
/* fd's own (local) address, formatted; asserts success. */
void socket_name(int fd, char *buf, size_t cap);

/* The concurrency barrier, handler side: reads a line, then answers
 * "ok\n" if all_met() says BARRIER_N handlers met there at once, else
 * "no\n". */
#define BARRIER_N 4
int barrier_answer(sks_handler *h, bool (*all_met)(void));
/* Client side: n clients of address, each sends "go\n" (fds in c). */
void barrier_clients_start(int *c, int n, const char *address);
/* Client side: each of the n clients reads "ok\n"; all closed. */
void barrier_clients_expect_ok(int *c, int n);

/* ------------------------------------------------------------------------ */
/* Threads, waits and signals                                                */

/* 1 when built with ThreadSanitizer, else 0. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* Abstract Unix names ("unix:@name") exist on Linux only; elsewhere, and
 * in an SKS_PORTABLE build, sks_addr_parse refuses them. */
#if defined(__linux__) && !defined(SKS_PORTABLE)
#define HAVE_ABSTRACT_NAMES 1
#else
#define HAVE_ABSTRACT_NAMES 0
#endif
/* Opens a test about abstract names: where there are none, the test
 * proves instead that one is refused with -EAFNOSUPPORT, and ends. */
#define ABSTRACT_NAMES_OR_REFUSED()                                          \
    do {                                                                     \
        if (!HAVE_ABSTRACT_NAMES) {                                          \
            assert_abstract_name_refused();                                  \
            return;                                                          \
        }                                                                    \
    } while (0)
void assert_abstract_name_refused(void);

/* Says why (a message, "skipped: WHY") and skips the running test: for
 * what this machine lacks.  Only from within a test. */
void skip_because(const char *why);
/* Under ThreadSanitizer only: says why (a message) and skips the test. */
void skip_under_tsan(const char *why);
/* Starts and joins a first thread, so that runtime threads started lazily
 * with it (ThreadSanitizer's) are in every thread count taken later. */
void warm_up_threads(void);
/* *ts = CLOCK_REALTIME now + ms: a deadline for pthread_cond_timedwait. */
void realtime_deadline(struct timespec *ts, int ms);
/* Waits (up to timeout_ms) until stats field `field` of srv equals want. */
#define wait_stat(srv, field, want, timeout_ms)                               \
    wait_stat_at((srv), offsetof(sks_stats, field), (want), (timeout_ms))
bool wait_stat_at(sks_server *srv, size_t offset, size_t want, int timeout_ms);

/* Counters shared with handler threads, under a lock; changes broadcast. */
typedef struct ts_sync {
    pthread_mutex_t lock;
    pthread_cond_t cond;
} ts_sync;
#define TS_SYNC_INITIALIZER                                                   \
    { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER }
void sync_add(ts_sync *s, int *counter, int delta); /* wakes waiters */
int sync_get(ts_sync *s, const int *counter);
/* Waits (up to timeout_ms) until *counter >= want; the last value seen. */
int sync_wait_at_least(ts_sync *s, const int *counter, int want,
                       int timeout_ms);

/* Counts SIGUSR2 with a handler without SA_RESTART (waits fail EINTR). */
void interruptions_begin(struct sigaction *old);
void interruptions_end(const struct sigaction *old); /* restores *old */
/* SIGUSR2 to t, `times` times, each time until it was handled (5 s). */
void interrupt_thread(pthread_t t, int times);

/* ------------------------------------------------------------------------ */
/* Children and programs (support_proc.c)                                    */

/* What a forked child reports through the report pipe, in one write(). */
typedef struct child_report {
    char kind;
    pid_t pid;
    int err;
} child_report;
void reports_open(void);  /* the report pipe (close-on-exec) */
void reports_close(void);
/* From any process: sends {kind, getpid(), err}; a no-op when closed. */
void report_send(char kind, int err);
/* The next report, waiting at most timeout_ms; false if none came. */
bool report_next(child_report *r, int timeout_ms);

/*
 * In a forked runner, as an unused uid whose RLIMIT_NPROC is 1 (root
 * ignores the limit): the server of ops cannot start a process or thread
 * for a request (what: "fork", "thread"), reports it once to handle_error
 * with -EAGAIN and closes it; with the limit raised the next is served,
 * and nothing runs after close.  Fails the test with the first broken step.
 */
void assert_failed_spawn_is_reported(const sks_server_ops *ops,
                                     const char *what);

/* A program this test started, in a process group of its own. */
typedef struct test_proc {
    pid_t pid, group;
    int out;           /* read end of its stdout */
} test_proc;
#define TEST_PROC_NONE { -1, -1, -1 }
/* build/.../examples beside this test's binary; NULL if not found. */
const char *examples_dir(void);
bool example_exists(const char *name); /* built and executable */
/* Starts examples_dir()/argv[0] with default signals, stdout to a pipe. */
void proc_spawn(test_proc *p, char *const argv[]);
/* One line of its stdout (no '\n') within timeout_ms; its length, or -1. */
ssize_t proc_read_line(test_proc *p, char *buf, size_t cap, int timeout_ms);
/* Its wait status once it exits (pid forgotten), or -1 after timeout_ms;
 * *took: the seconds waited. */
int proc_wait_exit(test_proc *p, int timeout_ms, double *took);
/* SIGKILL to its process group, reaped, pipe closed; a no-op when done. */
void proc_kill(test_proc *p);
/* Starts example `name` on address; bound gets the ADDRESS of its first
 * line "listening on ADDRESS" (within 5 s). */
void example_start(test_proc *p, const char *name, const char *address,
                   char *bound, size_t cap);

/* ------------------------------------------------------------------------ */
/* Valgrind                                                                  */

/* True when this process runs under valgrind (the client request when
 * <valgrind/valgrind.h> was there at build time, else its preload library
 * in LD_PRELOAD).  Only for what valgrind itself changes: emulated
 * limits, no user switch, a slower test process. */
bool under_valgrind(void);
/* seconds, or seconds * 5 under valgrind: a time bound on this process. */
double valgrind_scaled(double seconds);
/* One recv(fd, buf, cap, 0), retried on EINTR (under valgrind a child's
 * SIGCHLD interrupts blocking calls even at its default disposition). */
ssize_t recv_once(int fd, void *buf, size_t cap);

#endif
