/*
 * whoami_server - ThreadingTCPServer that tells each client who it is: for
 * every line received it replies with one line, the client's address as
 * the handler sees it ("127.0.0.7:54321").  Behind a load balancer that
 * sends the PROXY protocol (HAProxy's send-proxy or send-proxy-v2), run it
 * with --proxy-protocol and the address is the original client's, not the
 * balancer's.  Each connection is also logged on stdout, as
 * "CLIENT via PROXY" (or "CLIENT direct").
 *
 *   build/examples/whoami_server [--proxy-protocol] [--reuse-port] [--pid]
 *                                [--model threading|prefork|fiber] ADDRESS
 *
 * --reuse-port sets SO_REUSEPORT, so that several independent instances
 * can listen on one port and the kernel spreads connections over them.
 * --pid adds " pid PID" to each reply, the pid of the process started
 * with this command line (a pre-forked child answers with its parent's):
 * across upgrades (SIGUSR2) it tells the generations apart.  --model
 * picks the concurrency model (threading, the default; prefork: one
 * child per CPU, each with threads; fiber).  Under socket activation
 * (LISTEN_FDS) ADDRESS may be omitted.
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool proxy_protocol, reuse_port;
static char pid_suffix[32]; /* " pid PID", with --pid */

static int whoami_handle(sks_handler *h)
{
    char who[SKS_ADDRSTRLEN + sizeof(pid_suffix) + 1];
    char via[SKS_ADDRSTRLEN] = "direct";
    const sks_addr *proxy = sks_request_proxy_address(sks_handler_request(h));
    const char *line;
    ssize_t n;
    int len = sks_addr_format(sks_handler_client_address(h), who,
                              SKS_ADDRSTRLEN);

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

    size_t room = sizeof(who) - 1 - (size_t)len;
    len += snprintf(who + len, room, "%s", pid_suffix);
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
    /* Each child drains for up to 1 s, as the examples' contract asks. */
    sks_server_set_prefork(srv, 0, 0, 1.0);
    if (proxy_protocol)
        sks_server_set_proxy_protocol(srv, SKS_PROXY_V1 | SKS_PROXY_V2);
    if (reuse_port)
        sks_server_set_allow_reuse_port(srv, true);
}

static const struct {
    const char *name;
    const sks_server_ops *ops;
} models[] = {
    { "threading", &sks_threading_tcp_ops },
    { "prefork", &sks_prefork_threading_tcp_ops },
    { "fiber", &sks_fiber_tcp_ops },
};

static int usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--proxy-protocol] [--reuse-port] [--pid] "
                    "[--model threading|prefork|fiber] ADDRESS\n", prog);
    return 2;
}

int main(int argc, char **argv)
{
    const sks_server_ops *ops = models[0].ops;
    /* The flags come first; what is left is example_serve's argv.  An
     * upgrade runs the whole command line again. */
    example_set_command(argv);
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--proxy-protocol") == 0) {
            proxy_protocol = true;
        } else if (strcmp(argv[i], "--reuse-port") == 0) {
            reuse_port = true;
        } else if (strcmp(argv[i], "--pid") == 0) {
            snprintf(pid_suffix, sizeof(pid_suffix), " pid %ld",
                     (long)getpid());
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            size_t m = 0;
            i++;
            while (m < sizeof(models) / sizeof(models[0]) &&
                   strcmp(argv[i], models[m].name) != 0)
                m++;
            if (m == sizeof(models) / sizeof(models[0]))
                return usage(argv[0]);
            ops = models[m].ops;
        } else {
            return usage(argv[0]);
        }
    }
    char **rest = calloc((size_t)(argc - i) + 2, sizeof(*rest));
    if (rest == NULL)
        return 1;
    rest[0] = argv[0];
    memcpy(rest + 1, argv + i, (size_t)(argc - i) * sizeof(*rest));
    int status = example_serve(argc - i + 1, rest, ops, &whoami_handler,
                               configure);
    free(rest);
    return status;
}
