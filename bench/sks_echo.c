/*
 * sks_echo - the library's echo servers for the benchmarks: the examples'
 * echo handler and start-up contract (examples/common.c), with Python's
 * default buffer sizes (rbufsize 8192, unbuffered wfile) so that the
 * comparison with CPython's socketserver is like for like.
 *
 *   sks_echo KIND ADDRESS
 *
 * KIND: tcp threading forking udp threading-udp unix-stream threading-unix
 *       forking-unix unix-dgram fiber fiber-udp
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

static const sks_handler_class stream_echo = {
    .version = SKS_HANDLER_VERSION,
    .name = "EchoHandler",
    .setup = sks_stream_setup,
    .handle = example_echo_handle,
    .finish = sks_stream_finish,
};

static const sks_handler_class dgram_echo = {
    .version = SKS_HANDLER_VERSION,
    .name = "EchoHandler",
    .setup = sks_datagram_setup,
    .handle = example_echo_handle,
    .finish = sks_datagram_finish,
};

static const struct kind {
    const char *name;
    const sks_server_ops *ops;
    const sks_handler_class *cls;
} kinds[] = {
    { "tcp", &sks_tcp_ops, &stream_echo },
    { "threading", &sks_threading_tcp_ops, &stream_echo },
    { "forking", &sks_forking_tcp_ops, &stream_echo },
    { "udp", &sks_udp_ops, &dgram_echo },
    { "threading-udp", &sks_threading_udp_ops, &dgram_echo },
    { "unix-stream", &sks_unix_stream_ops, &stream_echo },
    { "threading-unix", &sks_threading_unix_stream_ops, &stream_echo },
    { "forking-unix", &sks_forking_unix_stream_ops, &stream_echo },
    { "unix-dgram", &sks_unix_dgram_ops, &dgram_echo },
    { "fiber", &sks_fiber_tcp_ops, &stream_echo },
    { "fiber-udp", &sks_fiber_udp_ops, &dgram_echo },
};

static void configure(sks_server *srv)
{
    /* The benchmark gives every Unix server a fresh path; leave none. */
    sks_server_set_unlink_on_close(srv, true);
}

int main(int argc, char **argv)
{
    if (argc == 3) {
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
            if (strcmp(argv[1], kinds[i].name) == 0)
                return example_serve(argc - 1, argv + 1, kinds[i].ops,
                                     kinds[i].cls, configure);
    }
    fprintf(stderr, "usage: sks_echo KIND ADDRESS\nKIND:");
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        fprintf(stderr, " %s", kinds[i].name);
    fprintf(stderr, "\n");
    return 2;
}
