/*
 * tls_load - the TLS rows' client: full handshakes (no resumption), or
 * echo round trips of 1 KiB on one connection, for SECONDS, against a
 * server whose CPU time it reads from /proc/PID/stat before and after.
 * The figure is per server CPU-second, so that the other processes on a
 * loaded machine change it little.
 *
 *   tls_load handshake|echo PORT SECONDS SERVER_PID
 *   prints: MODE OPS ops, SERVER_CPU s server CPU, RATE per server CPU-second
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

static double cpu_of(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(buf, sizeof(buf), f) == NULL)
        exit(1);
    fclose(f);
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2)
        exit(1);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static SSL *dial(SSL_CTX *ctx, int port, int *fd)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        exit(1);
    setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, *fd);
    if (SSL_connect(ssl) != 1)
        exit(1);
    return ssl;
}

static void round_trip(SSL *ssl, const char *msg, int n)
{
    char buf[2048];
    if (SSL_write(ssl, msg, n) != n)
        exit(1);
    for (int got = 0; got < n;) {
        int r = SSL_read(ssl, buf, sizeof(buf));
        if (r <= 0)
            exit(1);
        got += r;
    }
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    int port = atoi(argv[2]), pid = atoi(argv[4]), fd;
    double seconds = atof(argv[3]);
    bool echo = strcmp(argv[1], "echo") == 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    /* Full handshakes only: no session is kept, no ticket asked for. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    char msg[1024];
    memset(msg, 'x', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\n';
    long ops = 0;
    SSL *ssl = echo ? dial(ctx, port, &fd) : NULL;
    double c0 = cpu_of(pid), end = now() + seconds;
    while (now() < end) {
        if (echo) {
            round_trip(ssl, msg, sizeof(msg));
        } else {
            SSL *s = dial(ctx, port, &fd);
            round_trip(s, "x\n", 2);
            SSL_shutdown(s);
            SSL_free(s);
            close(fd);
        }
        ops++;
    }
    double cpu = cpu_of(pid) - c0;
    if (echo) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
    }
    printf("%s %ld ops, %.2f s server CPU, %.0f per server CPU-second\n",
           argv[1], ops, cpu, cpu > 0 ? (double)ops / cpu : 0.0);
    return 0;
}
