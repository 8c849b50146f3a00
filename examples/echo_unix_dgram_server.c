/*
 * echo_unix_dgram_server - the synchronous UnixDatagramServer with a
 * DatagramRequestHandler: every datagram comes back unchanged.
 *
 *   build/examples/echo_unix_dgram_server unix:/tmp/echo-dgram.sock
 *   build/examples/echo_client --udp unix:/tmp/echo-dgram.sock hello
 *
 * Only a client bound to an address of its own can be answered; a
 * datagram from an unnamed one is reported on stderr (handle_error) and
 * the server goes on.  The socket-file policy is echo_unix_server's.
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
    sks_server_set_max_packet_size(srv, 65536);
    sks_server_set_unlink_stale(srv, true);
    sks_server_set_unlink_on_close(srv, true);
}

int main(int argc, char **argv)
{
    return example_serve(argc, argv, &sks_unix_dgram_ops, &echo_handler,
                         configure);
}
