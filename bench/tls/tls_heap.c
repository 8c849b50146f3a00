/*
 * tls_heap - heap per idle connection, TLS beyond plain: an in-process
 * fiber server (its stacks are mappings, not heap) holds N idle echo
 * connections, each of which has done one 1-byte round trip, first plain,
 * then over TLS; mallinfo2 (every arena, in use plus mmapped chunks) is
 * read before the clients connect and while they are held.  The clients
 * run in a forked child, so their heap is not counted.
 *
 *   tls_heap CERT KEY [N]
 */
#define _GNU_SOURCE
#include "common.h"
#include "sockserver_tls.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ssl.h>

static const sks_handler_class echo = {
    .version = SKS_HANDLER_VERSION,
    .setup = sks_stream_setup,
    .handle = example_echo_handle,
    .finish = sks_stream_finish,
};

/* The clients leave without a close_notify: expected, not reported. */
static void quiet_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    (void)err;
}

static size_t heap(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

static void *serve(void *srv)
{
    sks_server_serve_forever(srv, 0.1);
    return NULL;
}

/* The child: n connections, one round trip each, then held until the
 * parent closes the pipe. */
static void clients(int port, int n, bool tls, int ready, int hold)
{
    SSL_CTX *ctx = tls ? SSL_CTX_new(TLS_client_method()) : NULL;
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = { .sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        char c;
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
            _exit(1);
        if (tls) {
            SSL *s = SSL_new(ctx);
            SSL_set_fd(s, fd);
            if (SSL_connect(s) != 1 || SSL_write(s, "\n", 1) != 1 ||
                SSL_read(s, &c, 1) != 1)
                _exit(1);
        } else if (write(fd, "\n", 1) != 1 || read(fd, &c, 1) != 1) {
            _exit(1);
        }
    }
    if (write(ready, "r", 1) != 1)
        _exit(1);
    char c;
    (void)read(hold, &c, 1);
    _exit(0);
}

static double per_connection(sks_tls_ctx *tls, int n)
{
    static sks_server_ops ops;
    ops = sks_fiber_tcp_ops;
    ops.handle_error = quiet_error;
    sks_server *srv;
    if (sks_server_new(&srv, &ops, "127.0.0.1:0", &echo, NULL,
                       SKS_NO_BIND) != 0)
        exit(1);
    sks_server_set_fiber_loops(srv, 1);
    sks_server_set_request_queue_size(srv, 1024);
    if (sks_server_bind_and_activate(srv) != 0)
        exit(1);
    if (tls != NULL)
        sks_server_set_tls(srv, tls);
    pthread_t t;
    pthread_create(&t, NULL, serve, srv);
    int port = ntohs(sks_server_address(srv)->u.in.sin_port);
    int ready[2], hold[2];
    if (pipe(ready) != 0 || pipe(hold) != 0)
        exit(1);
    usleep(200000);
    size_t before = heap();
    pid_t child = fork();
    if (child == 0) {
        close(hold[1]); /* the parent's close must reach the child */
        clients(port, n, tls != NULL, ready[1], hold[0]);
    }
    char c;
    if (read(ready[0], &c, 1) != 1)
        exit(1);
    usleep(300000); /* the last handlers reach their next read */
    size_t held = heap();
    close(hold[1]);
    waitpid(child, NULL, 0);
    sks_server_shutdown(srv);
    pthread_join(t, NULL);
    sks_server_free(srv);
    close(ready[0]);
    close(ready[1]);
    close(hold[0]);
    return ((double)held - (double)before) / n;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int n = argc > 3 ? atoi(argv[3]) : 1000;
    signal(SIGPIPE, SIG_IGN);
    /* n server-side descriptors, and n more in the child. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    sks_tls_cert pair = { argv[1], argv[2] };
    sks_tls_opts o = { .version = SKS_TLS_OPTS_VERSION, .certs = &pair,
                       .ncerts = 1 };
    sks_tls_ctx *tls;
    char why[256];
    if (sks_tls_ctx_new(&tls, &o, why, sizeof(why)) != 0) {
        fprintf(stderr, "tls_heap: %s\n", why);
        return 1;
    }
    double plain = per_connection(NULL, n);
    double secure = per_connection(tls, n);
    o.keep_buffers = true;
    sks_tls_ctx *kept;
    if (sks_tls_ctx_new(&kept, &o, why, sizeof(why)) != 0)
        return 1;
    double with_buffers = per_connection(kept, n);
    printf("heap per idle connection (%d held, fiber model): plain %.1f KiB, "
           "TLS %.1f KiB: %.1f KiB beyond plain (target <= 16); "
           "without RELEASE_BUFFERS %.1f KiB beyond\n",
           n, plain / 1024, secure / 1024, (secure - plain) / 1024,
           (with_buffers - plain) / 1024);
    sks_tls_ctx_free(tls);
    sks_tls_ctx_free(kept);
    return 0;
}
