/*
 * echo_fiber_server - FiberTCPServer: every connection is a fiber on one
 * of the per-core epoll loops, so a client that connects and says nothing
 * costs a few kilobytes, not a thread; the handler is the threading
 * server's, unchanged.
 *
 *   build/examples/echo_fiber_server 127.0.0.1:0
 */
#include "common.h"

static const sks_handler_class echo_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "EchoHandler",
    .setup = sks_stream_setup,
    .handle = example_echo_handle,
    .finish = sks_stream_finish,
    .rbufsize = 65536,
};

int main(int argc, char **argv)
{
    return example_serve(argc, argv, &sks_fiber_tcp_ops, &echo_handler,
                         NULL);
}
