/*
 * echo_client - sends each MESSAGE as a line and prints each reply.
 *
 *   build/examples/echo_client [--udp] ADDRESS MESSAGE...
 *
 * Stream mode (default) opens one connection (TCP or Unix stream) and
 * sends each message followed by '\n', printing the line that comes back.
 * --udp sends each message as one datagram (UDP, or Unix datagram for a
 * unix: address, from a temporary bound path so the server can answer)
 * and prints the datagram that comes back.  Waits at most 5 s per reply.
 */
#define _GNU_SOURCE
#include "sockserver.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static int fail(const char *what, int err)
{
    fprintf(stderr, "echo_client: %s: %s\n", what, sks_strerror(err));
    return 1;
}

static int stream_mode(const sks_addr *addr, int n, char **msgs)
{
    int fd = socket(addr->u.sa.sa_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, &addr->u.sa, addr->len) != 0)
        return fail("connect", -errno);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    FILE *in = fdopen(dup(fd), "r");
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        size_t len = strlen(msgs[i]);
        char *out = malloc(len + 1);
        memcpy(out, msgs[i], len);
        out[len] = '\n';
        if (send(fd, out, len + 1, 0) != (ssize_t)(len + 1))
            rc = fail("send", -errno);
        free(out);
        if (rc == 0 && getline(&line, &cap, in) < 0)
            rc = fail("no reply", -ETIMEDOUT);
        if (rc == 0)
            printf("%s", line);
    }
    free(line);
    fclose(in);
    close(fd);
    return rc;
}

static int datagram_mode(const sks_addr *addr, int n, char **msgs)
{
    int fd = socket(addr->u.sa.sa_family, SOCK_DGRAM, 0);
    char path[64] = "";
    if (fd < 0)
        return fail("socket", -errno);
    if (addr->u.sa.sa_family == AF_UNIX) {
        /* A Unix datagram server can only answer a bound client. */
        sks_addr me;
        snprintf(path, sizeof(path), "unix:/tmp/echo_client.%ld.sock",
                 (long)getpid());
        sks_addr_parse(path, &me);
        if (bind(fd, &me.u.sa, me.len) != 0)
            return fail("bind", -errno);
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int rc = 0;
    static char buf[65536];
    for (int i = 0; i < n && rc == 0; i++) {
        if (sendto(fd, msgs[i], strlen(msgs[i]), 0, &addr->u.sa, addr->len) < 0)
            rc = fail("sendto", -errno);
        ssize_t got = rc == 0 ? recv(fd, buf, sizeof(buf), 0) : -1;
        if (rc == 0 && got < 0)
            rc = fail("no reply", -ETIMEDOUT);
        if (rc == 0)
            printf("%.*s\n", (int)got, buf);
    }
    close(fd);
    if (path[0])
        unlink(path + strlen("unix:"));
    return rc;
}

int main(int argc, char **argv)
{
    bool udp = argc > 1 && strcmp(argv[1], "--udp") == 0;
    int first = udp ? 2 : 1;
    sks_addr addr;

    if (argc - first < 2) {
        fprintf(stderr, "usage: echo_client [--udp] ADDRESS MESSAGE...\n");
        return 2;
    }
    /* A server that hangs up makes send fail with EPIPE, not kill us; a
     * signal disposition, since MSG_NOSIGNAL is not everywhere. */
    signal(SIGPIPE, SIG_IGN);
    int err = sks_addr_parse(argv[first], &addr);
    if (err != 0)
        return fail(argv[first], err);
    if (udp)
        return datagram_mode(&addr, argc - first - 1, argv + first + 1);
    return stream_mode(&addr, argc - first - 1, argv + first + 1);
}
