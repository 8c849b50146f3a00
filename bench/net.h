/*
 * net.h - the little the benchmark programs share: address strings in the
 * library's syntax ("127.0.0.1:9000", "unix:/path"), parsed and printed
 * without the library, so the hand-written servers and the load generator
 * owe it nothing.
 */
#ifndef BENCH_NET_H
#define BENCH_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>

typedef struct bench_addr {
    socklen_t len;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_un un;
        struct sockaddr_storage ss;
    } u;
} bench_addr;

/* "IPv4:PORT" or "unix:/path".  Returns 0 or -1 (message on stderr). */
int bench_addr_parse(const char *str, bench_addr *out);
/* Formats as bench_addr_parse reads it. */
void bench_addr_format(const bench_addr *a, char *buf, size_t cap);

/* A bound (and, for streams, listening) server socket; prints
 * "listening on ADDRESS" and flushes stdout.  Exits on failure: these
 * are benchmark programs, not library code. */
int bench_listen(const char *address, int type);

/* Monotonic nanoseconds. */
uint64_t bench_now_ns(void);

/* Sends all n bytes (blocking socket, MSG_NOSIGNAL, EINTR retried).
 * 0 or -1. */
int bench_send_all(int fd, const void *buf, size_t n);

#endif
