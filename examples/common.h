/*
 * common.h - what the examples share: the echo handler and the start-up
 * contract (NAME ADDRESS; "listening on ADDRESS"; exit 0 on SIGINT/SIGTERM;
 * SIGUSR2 upgrades: the program is started again on the same socket, and
 * this one drains and exits once the new one serves).  Copy common.c
 * along with the example you start from.
 */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include "sockserver.h"

/* handle: echo every line (stream) or the whole packet (datagram) back. */
int example_echo_handle(sks_handler *h);

/*
 * Creates the server on argv[1] with ops and cls, lets configure() set
 * attributes (may be NULL), prints "listening on ADDRESS", serves until
 * SIGINT/SIGTERM, closes.  Returns main's exit status.
 */
int example_serve(int argc, char **argv, const sks_server_ops *ops,
                  const sks_handler_class *cls,
                  void (*configure)(sks_server *srv));

/*
 * The steps of example_serve, for an example with its own command line.
 * example_create: under socket activation (systemd, or an upgrade) the
 * socket passed, and address is not used (it may be NULL); else the
 * server on address, unbound, allow_reuse_address on (a restart binds the
 * same port at once, as Python's HTTPServer does), configure() (may be
 * NULL), then bound.  0, or the error after saying on stderr "PROG:
 * cannot serve ADDRESS: ..."; -ENOENT, quietly, for a NULL address
 * without activation.
 */
int example_create(sks_server **srv, const char *prog, const char *address,
                   const sks_server_ops *ops, const sks_handler_class *cls,
                   void *user, void (*configure)(sks_server *srv));
/*
 * example_run: SIGINT/SIGTERM ask srv to shut down, SIGUSR2 to upgrade
 * (sks_server_request_upgrade: the command of example_set_command, with
 * the readiness timeout in seconds from the environment variable
 * EXAMPLE_UPGRADE_TIMEOUT, else the library's default); prints "listening
 * on ADDRESS"; serves until then; stopping(srv) ends what still runs;
 * frees srv (server_close).  Returns main's exit status.
 */
int example_run(sks_server *srv, const char *prog,
                void (*stopping)(sks_server *srv));

/* The command an upgrade runs: main's argv, which must stay as it is.
 * example_serve sets the argv it was given, unless this was called. */
void example_set_command(char **argv);

#endif
