/*
 * echo_pool_server - a bounded thread pool (beyond Python's socketserver):
 * 4 to 128 worker threads fed by a queue of 64 accepted connections.  Up
 * to 128 clients are served at once, so idle clients hold up nobody; past
 * 192 in flight, new connections wait in the listen backlog.
 *
 *   build/examples/echo_pool_server 127.0.0.1:0
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

static void configure(sks_server *srv)
{
    sks_server_set_pool(srv, 4, 128, 30.0, 64);
}

int main(int argc, char **argv)
{
    return example_serve(argc, argv, &sks_pool_tcp_ops, &echo_handler,
                         configure);
}
