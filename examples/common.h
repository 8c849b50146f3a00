/*
 * common.h - what every echo example shares: the echo handler and the
 * start-up contract (NAME ADDRESS; "listening on ADDRESS"; exit 0 on
 * SIGINT/SIGTERM).  Copy common.c along with the example you start from.
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

#endif
