/*
 * echo_threading_server - ThreadingTCPServer: every connection gets its own
 * thread, so a client that connects and says nothing holds up nobody.
 *
 *   build/examples/echo_threading_server 127.0.0.1:0
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
    return example_serve(argc, argv, &sks_threading_tcp_ops, &echo_handler,
                         NULL);
}
