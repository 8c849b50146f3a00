/*
 * net.c - address parsing and the servers' start-up contract, shared by
 * the hand-written reference servers and the load generator.
 */
#define _GNU_SOURCE
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int bench_addr_parse(const char *str, bench_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (strncmp(str, "unix:", 5) == 0) {
        const char *path = str + 5;
        if (*path == '\0' || strlen(path) >= sizeof(out->u.un.sun_path)) {
            fprintf(stderr, "bad unix address: %s\n", str);
            return -1;
        }
        out->u.un.sun_family = AF_UNIX;
        strcpy(out->u.un.sun_path, path);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                               strlen(path) + 1);
        return 0;
    }
    const char *colon = strrchr(str, ':');
    char host[64];
    if (colon == NULL || (size_t)(colon - str) >= sizeof(host)) {
        fprintf(stderr, "bad address (want IPv4:PORT or unix:/path): %s\n",
                str);
        return -1;
    }
    memcpy(host, str, (size_t)(colon - str));
    host[colon - str] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    out->u.in.sin_family = AF_INET;
    if (*end != '\0' || port < 0 || port > 65535 ||
        inet_pton(AF_INET, host, &out->u.in.sin_addr) != 1) {
        fprintf(stderr, "bad address: %s\n", str);
        return -1;
    }
    out->u.in.sin_port = htons((uint16_t)port);
    out->len = sizeof(out->u.in);
    return 0;
}

void bench_addr_format(const bench_addr *a, char *buf, size_t cap)
{
    if (a->u.sa.sa_family == AF_UNIX) {
        snprintf(buf, cap, "unix:%s", a->u.un.sun_path);
        return;
    }
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->u.in.sin_addr, host, sizeof(host));
    snprintf(buf, cap, "%s:%u", host, (unsigned)ntohs(a->u.in.sin_port));
}

int bench_listen(const char *address, int type)
{
    bench_addr a;
    char text[160];
    int one = 1;

    if (bench_addr_parse(address, &a) != 0)
        exit(2);
    int fd = socket(a.u.sa.sa_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    if (a.u.sa.sa_family == AF_INET)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, &a.u.sa, a.len) != 0 ||
        ((type & ~SOCK_NONBLOCK) == SOCK_STREAM &&
         listen(fd, SOMAXCONN) != 0)) {
        perror(address);
        exit(1);
    }
    socklen_t len = sizeof(a.u.ss);
    getsockname(fd, &a.u.sa, &len);
    a.len = len;
    bench_addr_format(&a, text, sizeof(text));
    printf("listening on %s\n", text);
    fflush(stdout);
    return fd;
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int bench_send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}
