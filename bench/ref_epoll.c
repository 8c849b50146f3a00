/*
 * ref_epoll - hand-written single-threaded epoll echo server: the practical
 * ceiling for one core.  Non-blocking sockets, level-triggered; what a
 * short write leaves over waits for EPOLLOUT before the connection is read
 * again, so a slow reader cannot make the server buffer without bound.
 *
 *   ref_epoll ADDRESS         (127.0.0.1:0 or unix:/path)
 */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    char *pend;        /* unsent output, or NULL */
    size_t plen, poff;
};

static int ep;
static char buf[65536];

static void drop(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    free(c->pend);
    free(c);
}

static void arm(struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends what is pending; returns -1 when the connection is gone. */
static int flush(struct conn *c)
{
    while (c->poff < c->plen) {
        ssize_t w = send(c->fd, c->pend + c->poff, c->plen - c->poff,
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->poff += (size_t)w;
    }
    free(c->pend);
    c->pend = NULL;
    arm(c, EPOLLIN);
    return 0;
}

static int on_readable(struct conn *c)
{
    ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    ssize_t w = send(c->fd, buf, (size_t)n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR)
        return -1;
    if (w < 0)
        w = 0;
    if (w < n) {
        c->plen = (size_t)(n - w);
        c->poff = 0;
        c->pend = malloc(c->plen);
        if (c->pend == NULL)
            return -1;
        memcpy(c->pend, buf + w, c->plen);
        arm(c, EPOLLOUT);
    }
    return 0;
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
            return;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            drop(c);
    }
}

int main(int argc, char **argv)
{
    struct epoll_event evs[256];

    if (argc != 2) {
        fprintf(stderr, "usage: ref_epoll ADDRESS\n");
        return 2;
    }
    int lfd = bench_listen(argv[1], SOCK_STREAM | SOCK_NONBLOCK);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                accept_all(lfd);
                continue;
            }
            int rc = c->pend ? flush(c) : on_readable(c);
            if (rc != 0)
                drop(c);
        }
    }
}
