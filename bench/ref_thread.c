/*
 * ref_thread - hand-written thread-per-connection echo server, as a careful
 * programmer writes one without the library: blocking accept4, a detached
 * thread per connection on a 256 KiB stack (not the 8 MiB default, whose
 * stacks overflow glibc's cache of ended threads' stacks at a few dozen
 * threads, so each new thread would map and fault in a fresh one),
 * recv/send until end of input, close.
 *
 *   ref_thread ADDRESS        (127.0.0.1:0 or unix:/path)
 */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    ssize_t n;

    for (;;) {
        n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || bench_send_all(fd, buf, (size_t)n) != 0)
            break;
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_attr_t attr;

    if (argc != 2) {
        fprintf(stderr, "usage: ref_thread ADDRESS\n");
        return 2;
    }
    int lfd = bench_listen(argv[1], SOCK_STREAM);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            /* Out of descriptors: back off instead of spinning. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
            continue;
        }
        pthread_t t;
        if (pthread_create(&t, &attr, serve, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}
