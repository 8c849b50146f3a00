/*
 * echo_server - the echo server on any concurrency model, optionally over
 * TLS (libsockserver_tls; built when make finds OpenSSL 3):
 *
 *   build/examples/echo_server [MODEL] [--tls CERT KEY [--sni CERT KEY]...]
 *       [--alpn LIST] [--client-ca FILE [--client-optional]]
 *       [--handshake-timeout SECONDS] ADDRESS
 *
 *   MODEL: --threading (default), --forking, --pool, --prefork (threads
 *   in 2 pre-forked children), --fiber.
 *
 * Each line is echoed back, except "tls?", answered with what the
 * connection negotiated: "version cipher alpn sni resumed subject" ("-"
 * for none).  SIGHUP reloads the certificate files (in service_actions):
 * new handshakes see the new certificate, open connections keep theirs.
 * The bounds are raised so that a thousand connections (a test's silent
 * clients) each get a worker.
 */
#include "common.h"
#ifdef EXAMPLE_TLS
#include "sockserver_tls.h"
#endif

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORKERS 2048

static const struct model {
    const char *flag;
    const sks_server_ops *ops;
} models[] = {
    { "--threading", &sks_threading_tcp_ops },
    { "--forking", &sks_forking_tcp_ops },
    { "--pool", &sks_pool_tcp_ops },
    { "--prefork", &sks_prefork_threading_tcp_ops },
    { "--fiber", &sks_fiber_tcp_ops },
};

#ifdef EXAMPLE_TLS
static sks_tls_ctx *tls;
static volatile sig_atomic_t reload_asked;
static const sks_server_ops *super;   /* the model's own table */

static void on_hup(int sig)
{
    (void)sig;
    reload_asked = 1;
}

/* service_actions runs on the serving loop once per turn: the place to
 * act on a signal's flag outside the handler. */
static void reload_actions(sks_server *srv)
{
    if (reload_asked) {
        char why[256];
        reload_asked = 0;
        if (sks_tls_ctx_reload(tls, why, sizeof(why)) != 0)
            fprintf(stderr, "reload: %s\n", why);
        else
            fprintf(stderr, "reloaded\n");
    }
    if (super->service_actions != NULL)
        super->service_actions(srv);
}

static int tls_report(sks_handler *h)
{
    char subject[256];
    const char *alpn = sks_tls_alpn(h), *sni = sks_tls_sni(h);
    const char *version = sks_tls_version(h);
    if (version == NULL)
        return (int)sks_wfile_write(sks_handler_wfile(h), "plain\n", 6);
    if (sks_tls_peer_subject(h, subject, sizeof(subject)) < 0)
        strcpy(subject, "-");
    char line[512];
    int n = snprintf(line, sizeof(line), "%s %s %s %s %s %s\n", version,
                     sks_tls_cipher(h), alpn ? alpn : "-", sni ? sni : "-",
                     sks_tls_resumed(h) ? "resumed" : "new", subject);
    return (int)sks_wfile_write(sks_handler_wfile(h), line, (size_t)n);
}
#endif

static int echo_handle(sks_handler *h)
{
    sks_rfile *in = sks_handler_rfile(h);
    sks_wfile *out = sks_handler_wfile(h);
    const char *line;
    ssize_t n;

    while ((n = sks_rfile_readline_view(in, &line, (size_t)-1)) > 0) {
#ifdef EXAMPLE_TLS
        if (n == 5 && memcmp(line, "tls?\n", 5) == 0) {
            int err = tls_report(h);
            if (err < 0)
                return err;
            continue;
        }
#endif
        ssize_t w = sks_wfile_write(out, line, (size_t)n);
        if (w < 0)
            return (int)w;
    }
    return (int)n; /* 0 at end of input, or the read error (handle_error) */
}

static const sks_handler_class echo_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "EchoHandler",
    .setup = sks_stream_setup,
    .handle = echo_handle,
    .finish = sks_stream_finish,
    .rbufsize = 65536,
};

static void configure(sks_server *srv)
{
    sks_server_set_max_threads(srv, MAX_WORKERS);
    sks_server_set_max_children(srv, MAX_WORKERS);
    sks_server_set_pool(srv, 4, MAX_WORKERS, 5.0, 0);
    sks_server_set_prefork(srv, 2, 0, 0);
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--threading|--forking|--pool|--prefork|--fiber]\n"
            "          [--tls CERT KEY [--sni CERT KEY]...] [--alpn LIST]\n"
            "          [--client-ca FILE [--client-optional]]\n"
            "          [--handshake-timeout SECONDS] ADDRESS\n", prog);
    return 2;
}

int main(int argc, char **argv)
{
    static sks_server_ops ops;
    const struct model *model = &models[0];
    const char *address = NULL;
#ifdef EXAMPLE_TLS
    sks_tls_cert certs[8];
    sks_tls_opts o = { .version = SKS_TLS_OPTS_VERSION, .certs = certs };
#endif

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool known = false;
        for (size_t m = 0; m < sizeof(models) / sizeof(models[0]); m++)
            if (strcmp(a, models[m].flag) == 0) {
                model = &models[m];
                known = true;
            }
        if (known)
            continue;
#ifdef EXAMPLE_TLS
        if ((strcmp(a, "--tls") == 0 || strcmp(a, "--sni") == 0) &&
            i + 2 < argc && o.ncerts < 8) {
            certs[o.ncerts].cert_file = argv[++i];
            certs[o.ncerts++].key_file = argv[++i];
        } else if (strcmp(a, "--alpn") == 0 && i + 1 < argc) {
            o.alpn = argv[++i];
        } else if (strcmp(a, "--client-ca") == 0 && i + 1 < argc) {
            o.client_ca_file = argv[++i];
            if (o.client_auth == SKS_TLS_CLIENT_NONE)
                o.client_auth = SKS_TLS_CLIENT_REQUIRED;
        } else if (strcmp(a, "--client-optional") == 0) {
            o.client_auth = SKS_TLS_CLIENT_OPTIONAL;
        } else if (strcmp(a, "--handshake-timeout") == 0 && i + 1 < argc) {
            o.handshake_timeout = strtod(argv[++i], NULL);
        } else
#else
        if (strcmp(a, "--tls") == 0) {
            fprintf(stderr, "%s: built without TLS (make TLS=openssl)\n",
                    argv[0]);
            return 2;
        } else
#endif
        if (a[0] == '-' || address != NULL) {
            return usage(argv[0]);
        } else {
            address = a;
        }
    }
    if (address == NULL)
        return usage(argv[0]);
    ops = *model->ops;
#ifdef EXAMPLE_TLS
    char why[256];
    if (o.ncerts > 0 && sks_tls_ctx_new(&tls, &o, why, sizeof(why)) != 0) {
        fprintf(stderr, "%s: TLS: %s\n", argv[0], why);
        return 1;
    }
    if (tls != NULL) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_hup;
        sigaction(SIGHUP, &sa, NULL);
        super = model->ops;
        ops.service_actions = reload_actions;
    }
#endif
    sks_server *srv = NULL;
    if (example_create(&srv, argv[0], address, &ops, &echo_handler, NULL,
                       configure) != 0)
        return 1;
#ifdef EXAMPLE_TLS
    if (tls != NULL)
        sks_server_set_tls(srv, tls);
#endif
    int rc = example_run(srv, argv[0], NULL);
#ifdef EXAMPLE_TLS
    sks_tls_ctx_free(tls);
#endif
    return rc;
}
