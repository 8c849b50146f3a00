/*
 * echo_tcp_server - the synchronous TCPServer with a StreamRequestHandler:
 * one client at a time, each line echoed back.
 *
 *   build/examples/echo_tcp_server 127.0.0.1:0
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
    return example_serve(argc, argv, &sks_tcp_ops, &echo_handler, NULL);
}
