/*
 * ref_fork - hand-written fork-per-connection echo server: blocking
 * accept4, fork, the child echoes and exits; a SIGCHLD handler reaps (so
 * the children's CPU time reaches the parent's cutime/cstime).
 *
 *   ref_fork ADDRESS          (127.0.0.1:0 or unix:/path)
 */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void reap(int sig)
{
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

static void serve(int fd)
{
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
}

int main(int argc, char **argv)
{
    struct sigaction sa;

    if (argc != 2) {
        fprintf(stderr, "usage: ref_fork ADDRESS\n");
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = reap;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);

    int lfd = bench_listen(argv[1], SOCK_STREAM);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            serve(fd);
            _exit(0);
        }
        close(fd);
    }
}
