/*
 * echo_prefork_server - pre-forked workers (beyond Python's socketserver):
 * one child per CPU, each running a threading server on the shared
 * listening socket; the parent replaces children that die.
 *
 *   build/examples/echo_prefork_server 127.0.0.1:0
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
    /* One child per CPU, never recycled; each drains for up to 1 s at
     * shutdown, as the examples' contract asks. */
    sks_server_set_prefork(srv, 0, 0, 1.0);
}

int main(int argc, char **argv)
{
    return example_serve(argc, argv, &sks_prefork_threading_tcp_ops,
                         &echo_handler, configure);
}
