/*
 * echo_unix_server - the synchronous UnixStreamServer with a
 * StreamRequestHandler: one client at a time, each line echoed back.
 *
 *   build/examples/echo_unix_server unix:/tmp/echo.sock
 *   build/examples/echo_unix_server unix:@echo        (Linux abstract name)
 *
 * A socket file left by a server that died is replaced (nobody listens on
 * it); a live server's file, or any other file, is never touched; the file
 * is removed again at exit.
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

static void configure(sks_server *srv)
{
    sks_server_set_unlink_stale(srv, true);
    sks_server_set_unlink_on_close(srv, true);
}

int main(int argc, char **argv)
{
    return example_serve(argc, argv, &sks_unix_stream_ops, &echo_handler,
                         configure);
}
