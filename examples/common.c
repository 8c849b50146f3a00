/*
 * common.c - the echo handler and the examples' start-up contract.
 */
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
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
static char **command;

static void on_signal(int sig)
{
    /* Both async-signal-safe. */
    if (sig == SIGUSR2)
        sks_server_request_upgrade(the_server);
    else
        sks_server_request_shutdown(the_server);
}

void example_set_command(char **argv)
{
    command = argv;
}

int example_create(sks_server **srv, const char *prog, const char *address,
                   const sks_server_ops *ops, const sks_handler_class *cls,
                   void *user, void (*configure)(sks_server *srv))
{
    /* Started by socket activation (systemd, systemd-socket-activate, or
     * an upgrade of this program): serve the socket passed, already
     * bound. */
    int err = sks_server_new_activated(srv, ops, NULL, cls, user);
    if (err == 0) {
        if (configure != NULL)
            configure(*srv);
        return 0;
    }
    if (err != -ENOENT) {
        fprintf(stderr, "%s: cannot serve the activated socket: %s\n", prog,
                sks_strerror(err));
        return err;
    }
    if (address == NULL)
        return -ENOENT;
    err = sks_server_new(srv, ops, address, cls, user, SKS_NO_BIND);
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
    const char *timeout = getenv("EXAMPLE_UPGRADE_TIMEOUT");
    sks_server_set_upgrade(srv, command,
                           timeout != NULL ? strtod(timeout, NULL) : 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);

    sks_addr_format(sks_server_address(srv), addr, sizeof(addr));
    printf("listening on %s\n", addr);
    fflush(stdout);

    int err = sks_server_serve_forever(srv, 0.5);
    if (sks_server_upgraded(srv))
        fprintf(stderr, "%s: the new process serves; this one drains\n",
                prog);
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

    if (command == NULL)
        example_set_command(argv);
    /* Under socket activation ADDRESS is optional and, if given, not
     * used. */
    const char *address = argc == 2 ? argv[1] : NULL;
    int err = example_create(&srv, argv[0], address, ops, cls, NULL,
                             configure);
    if (err == -ENOENT && address == NULL) {
        fprintf(stderr, "usage: %s ADDRESS   (e.g. 127.0.0.1:0, [::1]:9000, "
                        "unix:/tmp/echo.sock, unix:@echo)\n"
                        "       ADDRESS may be omitted under socket "
                        "activation (LISTEN_FDS)\n", argv[0]);
        return 2;
    }
    if (err != 0)
        return 1;
    return example_run(srv, argv[0], drain_a_second);
}
