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

int example_create(sks_server **srv, const char *prog, const char *address,
                   const sks_server_ops *ops, const sks_handler_class *cls,
                   void *user, void (*configure)(sks_server *srv))
{
    int err = sks_server_new(srv, ops, address, cls, user, SKS_NO_BIND);
    if (err == 0) {
        sks_server_set_allow_reuse_address(*srv, true);
        if (configure != NULL)
            configure(*srv);
        err = sks_server_bind_and_activate(*srv);
    }
    if (err != 0) {
        fprintf(stderr, "%s: cannot serve %s: %s\n", prog, address,
                sks_strerror(err));
        sks_server_free(*srv);
        *srv = NULL;
    }
    return err;
}

int example_run(sks_server *srv, const char *prog,
                void (*stopping)(sks_server *srv))
{
    char addr[SKS_ADDRSTRLEN];
    struct sigaction sa;

    the_server = srv;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sks_addr_format(sks_server_address(srv), addr, sizeof(addr));
    printf("listening on %s\n", addr);
    fflush(stdout);

    int err = sks_server_serve_forever(srv, 0.5);
    if (stopping != NULL)
        stopping(srv);
    sks_server_free(srv);
    if (err != 0) {
        fprintf(stderr, "%s: %s\n", prog, sks_strerror(err));
        return 1;
    }
    return 0;
}

/* Requests still running (idle keep-alive clients, say) get one second to
 * finish; then their connections are shut down. */
static void drain_a_second(sks_server *srv)
{
    sks_server_drain(srv, 1.0, NULL, NULL);
}

int example_serve(int argc, char **argv, const sks_server_ops *ops,
                  const sks_handler_class *cls,
                  void (*configure)(sks_server *srv))
{
    sks_server *srv = NULL;

    /* Started by socket activation (systemd, systemd-socket-activate):
     * serve the socket passed, already bound; ADDRESS is then optional
     * and, if given, not used. */
    int err = sks_server_new_activated(&srv, ops, NULL, cls, NULL);
    if (err == 0) {
        if (configure != NULL)
            configure(srv);
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
    } else if (example_create(&srv, argv[0], argv[1], ops, cls, NULL,
                              configure) != 0) {
        return 1;
    }
    return example_run(srv, argv[0], drain_a_second);
}
