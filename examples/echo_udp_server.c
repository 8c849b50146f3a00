/*
 * echo_udp_server - the synchronous UDPServer with a DatagramRequestHandler:
 * every datagram comes back unchanged, in one datagram.
 *
 *   build/examples/echo_udp_server 127.0.0.1:0
 *   build/examples/echo_udp_server [::1]:9000
 */
#include "common.h"

static const sks_handler_class echo_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "EchoHandler",
    .setup = sks_datagram_setup,
    .handle = example_echo_handle,
    .finish = sks_datagram_finish,
};

static void configure(sks_server *srv)
{
    /* Python's 8192 would cut longer datagrams short; 65536 holds the
     * largest UDP payload (65507 bytes), so every datagram echoes whole. */
    sks_server_set_max_packet_size(srv, 65536);
}

int main(int argc, char **argv)
{
    return example_serve(argc, argv, &sks_udp_ops, &echo_handler, configure);
}
