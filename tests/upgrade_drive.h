/*
 * upgrade_drive.h - what the upgrade test (tests/test_upgrade.c) and its
 * benchmark (bench/upgrade_bench.c) share: a load generator on loopback,
 * and the generations of a server that upgrades itself, started and
 * watched from here.  No cmocka: the benchmark prints what the test
 * asserts.
 *
 * The load: `clients` threads, each connecting again and again to
 * 127.0.0.1:port from its own source address (127.0.0.10 + i, so that
 * ephemeral ports last), until `seconds` have passed.  Every fourth
 * connection is kept alive for KEEPALIVE_REQUESTS requests, the others
 * make one.  A request is "hi\n"; its reply must be one whole line that
 * ends " pid PID\n" (whoami_server --pid).  A connection fails when it
 * is refused, reset, times out (5 s) or ends before a whole reply.
 *
 * The generations: this process becomes a subreaper (Linux's
 * PR_SET_CHILD_SUBREAPER), so that every generation, the child of the one
 * before, is reaped here once its parent has gone, and its exit time is
 * known.  Each generation prints "listening on ADDRESS" to the one stdout
 * pipe they all share: the time of that line is when it starts serving.
 */
#ifndef TESTS_UPGRADE_DRIVE_H
#define TESTS_UPGRADE_DRIVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#define UD_MAX_GENS 64
#define UD_MAX_CLIENTS 64
#define KEEPALIVE_REQUESTS 5

typedef struct ud_load {
    int port, clients;
    double seconds, rate;
    atomic_bool stop;             /* ud_load_stop: end before `seconds` */
    pthread_t threads[UD_MAX_CLIENTS];
    atomic_long connections, requests, failures;
    atomic_long refused, reset, timed_out, short_reply, other;
    /* The pids seen in replies, in the order they first appeared. */
    pthread_mutex_t lock;
    pid_t pids[UD_MAX_GENS];
    double first_seen[UD_MAX_GENS];
    int npids;
    /* The first failure, said once. */
    char first_failure[160];
} ud_load;

/* Starts the clients, making at most rate connections a second between
 * them (0: as many as they can): 0 or -errno. */
int ud_load_start(ud_load *l, int port, int clients, double seconds,
                  double rate);
/* Asks the clients to end after the connection each is making. */
void ud_load_stop(ud_load *l);
/* Waits until they have ended. */
void ud_load_join(ud_load *l);
int ud_pids(ud_load *l);          /* distinct pids seen so far */
pid_t ud_pid(ud_load *l, int i);  /* the i-th (0-based); -1 if not yet */
double ud_pid_seen(ud_load *l, int i);

/* The generations of one server. */
typedef struct ud_server {
    pid_t first;                  /* the first generation, our child */
    int out, out_wr;              /* their stdout, both ends */
    pthread_t reader, reaper;
    atomic_bool stop;
    char address[128];            /* from the first "listening on" */
    int port;
    unsigned long listeners[8];   /* their socket inodes */
    int nlisteners;
    pthread_mutex_t lock;
    double listening[UD_MAX_GENS]; /* the time of each "listening on" */
    int nlistening;
    pid_t exited[UD_MAX_GENS * 2]; /* reaped here: pid, time, status */
    double exit_time[UD_MAX_GENS * 2];
    int exit_status[UD_MAX_GENS * 2];
    int nexited;
} ud_server;

/* This process as a subreaper: 0 or -errno (-ENOSYS off Linux). */
int ud_become_subreaper(void);
/* Starts path with argv (argv[0] as given), stdout to the shared pipe,
 * stderr to err_path (NULL: inherited), in a process group of its own,
 * with extra environment entries env (NULL-terminated; may be NULL).
 * Waits up to 10 s for its "listening on" line.  0 or -errno. */
int ud_server_start(ud_server *s, const char *path, char *const argv[],
                    const char *err_path, char *const env[]);
/* Starts a later process into the same pipe and bookkeeping (a naive
 * restart's new server). */
int ud_server_start_more(ud_server *s, const char *path, char *const argv[],
                         const char *err_path, pid_t *pid);
int ud_listening(ud_server *s);           /* "listening on" lines so far */
double ud_listening_at(ud_server *s, int i);
/* When pid was reaped here (now_seconds) and its wait status; false if it
 * has not been, after waiting up to timeout_ms. */
bool ud_exited(ud_server *s, pid_t pid, int timeout_ms, double *when,
               int *status);
/* SIGKILL to the group, every process reaped, threads joined. */
void ud_server_stop(ud_server *s);

/* Descriptors of pid other than its accepted connections: everything but
 * the sockets that are not s's listeners (the sockets its first
 * generation held before any client came).  -1 if it cannot be read. */
int ud_fds(ud_server *s, pid_t pid);
/* Whether /proc/PID/fd of pid is exactly 0, 1, 2, 3 (a listener of s) and
 * 4 (a pipe); else false, with what it holds in why. */
bool ud_fds_are_activation(ud_server *s, pid_t pid, char *why, size_t cap);

double ud_now(void);
void ud_sleep_until(double t);

#endif
