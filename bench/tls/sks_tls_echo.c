/*
 * sks_tls_echo - the library's TLS echo server for the TLS rows: the
 * synchronous TCPServer (one connection at a time, as ref_tls) with the
 * examples' echo handler over libsockserver_tls, defaults throughout.
 *
 *   sks_tls_echo CERT KEY      prints "listening on 127.0.0.1:PORT"
 */
#include "common.h"
#include "sockserver_tls.h"

#include <stdio.h>

static const sks_handler_class echo = {
    .version = SKS_HANDLER_VERSION,
    .name = "EchoHandler",
    .setup = sks_stream_setup,
    .handle = example_echo_handle,
    .finish = sks_stream_finish,
    .rbufsize = 16384,
};

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    sks_tls_cert pair = { argv[1], argv[2] };
    sks_tls_opts o = { .version = SKS_TLS_OPTS_VERSION, .certs = &pair,
                       .ncerts = 1 };
    sks_tls_ctx *tls;
    char why[256];
    if (sks_tls_ctx_new(&tls, &o, why, sizeof(why)) != 0) {
        fprintf(stderr, "sks_tls_echo: %s\n", why);
        return 1;
    }
    sks_server *srv;
    if (example_create(&srv, argv[0], "127.0.0.1:0", &sks_tcp_ops, &echo, NULL,
                       NULL) != 0)
        return 1;
    sks_server_set_tls(srv, tls);
    int rc = example_run(srv, argv[0], NULL);
    sks_tls_ctx_free(tls);
    return rc;
}
