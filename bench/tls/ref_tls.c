/*
 * ref_tls - the hand-written OpenSSL server the TLS rows compare against:
 * one thread, blocking sockets, accept -> SSL_accept -> echo lines until
 * the client's close_notify -> SSL_shutdown -> close.  What a C programmer
 * writes without a library, with OpenSSL's defaults (plus
 * RELEASE_BUFFERS and TCP_NODELAY, as libsockserver_tls has them).
 *
 *   ref_tls CERT KEY      prints "listening on 127.0.0.1:PORT"
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1)
        return 1;
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 128) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &len) != 0)
        return 1;
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            char buf[16384];
            int n;
            while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0)
                if (SSL_write(ssl, buf, n) <= 0)
                    break;
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
    }
}
