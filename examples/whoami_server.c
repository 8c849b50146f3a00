/*
 * whoami_server - ThreadingTCPServer that tells each client who it is: for
 * every line received it replies with one line, the client's address as
 * the handler sees it ("127.0.0.7:54321").  Behind a load balancer that
 * sends the PROXY protocol (HAProxy's send-proxy or send-proxy-v2), run it
 * with --proxy-protocol and the address is the original client's, not the
 * balancer's.  Each connection is also logged on stdout, as
 * "CLIENT via PROXY" (or "CLIENT direct").
 *
 *   build/examples/whoami_server [--proxy-protocol] [--reuse-port] ADDRESS
 *
 * --reuse-port sets SO_REUSEPORT, so that several independent instances
 * can listen on one port and the kernel spreads connections over them.
 * Under socket activation (LISTEN_FDS) ADDRESS may be omitted.
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static bool proxy_protocol, reuse_port;

static int whoami_handle(sks_handler *h)
{
    char who[SKS_ADDRSTRLEN + 1], via[SKS_ADDRSTRLEN] = "direct";
    const sks_addr *proxy = sks_request_proxy_address(sks_handler_request(h));
    const char *line;
    ssize_t n;
    int len = sks_addr_format(sks_handler_client_address(h), who,
                              sizeof(who) - 1);

    if (len < 0)
        return len;
    if (proxy != NULL) {
        memcpy(via, "via ", 4);
        if (sks_addr_format(proxy, via + 4, sizeof(via) - 4) < 0)
            via[3] = '\0';
    }
    /* One write: log lines from concurrent connections stay whole. */
    printf("%s %s\n", who, via);
    fflush(stdout);

    who[len++] = '\n';
    while ((n = sks_rfile_readline_view(sks_handler_rfile(h), &line,
                                        (size_t)-1)) > 0) {
        /* A line longer than the buffer arrives in pieces: answer once
         * per line, at its end. */
        if (line[n - 1] != '\n')
            continue;
        ssize_t w = sks_wfile_write(sks_handler_wfile(h), who, (size_t)len);
        if (w < 0)
            return (int)w;
    }
    /* A load balancer's health check may end with a reset instead of a
     * close: for this server that is just the end of the conversation. */
    if (n == -ECONNRESET)
        return 0;
    return (int)n; /* 0 at end of input, or the read error */
}

static const sks_handler_class whoami_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "WhoamiHandler",
    .setup = sks_stream_setup,
    .handle = whoami_handle,
    .finish = sks_stream_finish,
};

static void configure(sks_server *srv)
{
    if (proxy_protocol)
        sks_server_set_proxy_protocol(srv, SKS_PROXY_V1 | SKS_PROXY_V2);
    if (reuse_port)
        sks_server_set_allow_reuse_port(srv, true);
}

int main(int argc, char **argv)
{
    /* The flags come first; what is left is example_serve's argv. */
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--proxy-protocol") == 0) {
            proxy_protocol = true;
        } else if (strcmp(argv[i], "--reuse-port") == 0) {
            reuse_port = true;
        } else {
            fprintf(stderr, "usage: %s [--proxy-protocol] [--reuse-port] "
                            "ADDRESS\n", argv[0]);
            return 2;
        }
    }
    argv[i - 1] = argv[0];
    return example_serve(argc - (i - 1), argv + (i - 1), &sks_threading_tcp_ops,
                         &whoami_handler, configure);
}
