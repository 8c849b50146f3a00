/*
 * common.c - the echo handler and the examples' start-up contract.
 */
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

int example_echo_handle(sks_handler *h)
{
    sks_rfile *in = sks_handler_rfile(h);
    sks_wfile *out = sks_handler_wfile(h);
    const char *line;
    ssize_t n;

    /* Lines longer than the read buffer arrive in pieces: each piece is
     * echoed as it comes, so any line length echoes byte for byte. */
    while ((n = sks_rfile_readline_view(in, &line, (size_t)-1)) > 0) {
        ssize_t w = sks_wfile_write(out, line, (size_t)n);
        if (w < 0)
            return (int)w;
    }
    return (int)n; /* 0 at end of input, or the read error */
}

static sks_server *the_server;

static void on_signal(int sig)
{
    (void)sig;
    sks_server_request_shutdown(the_server); /* async-signal-safe */
}

int example_serve(int argc, char **argv, const sks_server_ops *ops,
                  const sks_handler_class *cls,
                  void (*configure)(sks_server *srv))
{
    char addr[SKS_ADDRSTRLEN];
    int err;

    /* Started by socket activation (systemd, systemd-socket-activate):
     * serve the socket passed, already bound; ADDRESS is then optional
     * and, if given, not used. */
    err = sks_server_new_activated(&the_server, ops, NULL, cls, NULL);
    if (err == 0) {
        if (configure != NULL)
            configure(the_server);
    } else if (err != -ENOENT) {
        fprintf(stderr, "%s: cannot serve the activated socket: %s\n",
                argv[0], sks_strerror(err));
        return 1;
    } else if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS   (e.g. 127.0.0.1:0, [::1]:9000, "
                        "unix:/tmp/echo.sock, unix:@echo)\n"
                        "       ADDRESS may be omitted under socket "
                        "activation (LISTEN_FDS)\n", argv[0]);
        return 2;
    } else {
        err = sks_server_new(&the_server, ops, argv[1], cls, NULL,
                             SKS_NO_BIND);
        if (err == 0) {
            sks_server_set_allow_reuse_address(the_server, true);
            if (configure != NULL)
                configure(the_server);
            err = sks_server_bind_and_activate(the_server);
        }
        if (err != 0) {
            fprintf(stderr, "%s: cannot serve %s: %s\n", argv[0], argv[1],
                    sks_strerror(err));
            sks_server_free(the_server);
            return 1;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sks_addr_format(sks_server_address(the_server), addr, sizeof(addr));
    printf("listening on %s\n", addr);
    fflush(stdout);

    err = sks_server_serve_forever(the_server, 0.5);
    /* Requests still running (idle keep-alive clients, say) get one second
     * to finish; then their connections are shut down. */
    sks_server_drain(the_server, 1.0, NULL, NULL);
    sks_server_free(the_server);
    if (err != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], sks_strerror(err));
        return 1;
    }
    return 0;
}
