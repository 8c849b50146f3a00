/*
 * support.h - what the tests share: a server serving in a thread on a
 * loopback or Unix address, clients, and process accounting (descriptors,
 * threads, children) read from /proc.
 */
#ifndef TESTS_SUPPORT_H
#define TESTS_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

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

/* Process accounting, from /proc. */
int count_open_fds(void);
int count_threads(void);
int count_children(void);   /* live or zombie children of this process */

double now_seconds(void);   /* monotonic */
void sleep_ms(int ms);

/* Waits (up to timeout_ms) until cond(arg) is true; returns it. */
bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms);

#endif
