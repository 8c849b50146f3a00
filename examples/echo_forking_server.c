/*
 * echo_forking_server - ForkingTCPServer: every connection is served by its
 * own forked child, so a client that connects and says nothing holds up
 * nobody (up to max_children, 40, connections at once; more wait in the
 * listen backlog until a child ends).
 *
 *   build/examples/echo_forking_server 127.0.0.1:0
 *
 * On SIGTERM or SIGINT the server stops accepting, gives the connections
 * still open one second to end (example_serve's drain), then ends their
 * children and, as Python's block_on_close, waits for every child.  A
 * child takes the signals' default action, so Ctrl-C in a terminal (which
 * signals the whole process group) ends the children at once.
 */
#include "common.h"

static const sks_handler_class echo_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "EchoHandler",
    .setup = sks_stream_setup,
    .handle = example_echo_handle,
    .finish = sks_stream_finish,
    .rbufsize = 65536, /* lines up to 64 KiB come back in one piece */
};

int main(int argc, char **argv)
{
    return example_serve(argc, argv, &sks_forking_tcp_ops, &echo_handler,
                         NULL);
}
