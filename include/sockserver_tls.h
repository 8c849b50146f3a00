/*
 * sockserver_tls.h - TLS for libsockserver's stream servers, on OpenSSL 3:
 * what Python's ssl.SSLContext.wrap_socket(server_side=True) gives a
 * socketserver, as a separate library (libsockserver_tls, pkg-config
 * sockserver-tls) so that the core never links OpenSSL.
 *
 * One call turns it on for a server, whatever its concurrency model
 * (sync, threading, forking, pool, prefork, fibers):
 *
 *   sks_tls_cert cert = { "cert.pem", "key.pem" };
 *   sks_tls_opts o = { .version = SKS_TLS_OPTS_VERSION, .certs = &cert,
 *                      .ncerts = 1, .alpn = "http/1.1" };
 *   sks_tls_ctx *tls;
 *   if (sks_tls_ctx_new(&tls, &o, why, sizeof(why)) == 0)
 *       sks_server_set_tls(srv, tls);
 *
 * Each connection is accepted and verified (verify_request) by the loop
 * as any other; the handshake runs in the request's own worker (thread,
 * child, pool worker, pre-forked child or fiber), after the PROXY header
 * if that is on, under its own deadline, so a client that never sends a
 * ClientHello holds only its own worker, never the accept loop.  The
 * handler then reads and writes plaintext through rfile and wfile as
 * usual; at finish one close_notify is sent, without waiting for the
 * peer's.  OpenSSL's bytes go through the library's own I/O layer (a
 * custom BIO over the never-SIGPIPE sks_conn_*_once calls),
 * and each WANT_READ or WANT_WRITE waits, through the library's one wait,
 * for what OpenSSL asked: under the fiber model the fiber parks.
 *
 * Errors a handler sees from rfile and wfile: -ECONNRESET for an end of
 * input without close_notify (a truncation: never a clean end), -EPROTO
 * for bytes that are not valid TLS records, -ETIMEDOUT at a deadline.
 *
 * A handshake that fails ends the request before the handler's setup
 * returns: finish_request returns -EPROTO (not TLS, or refused by either
 * side, such as a missing client certificate), -ECONNRESET (the client
 * left), and handle_error reports it.  One cut at the handshake deadline
 * is counted in sks_stats.timed_out and is silent, as an idle cut is.
 *
 * sks_wfile_sendfile reads the file and sends it through SSL_write (the
 * custom BIO means OpenSSL cannot offer kTLS: see README).
 * sks_wfile_fileno's descriptor carries TLS records: write to it only
 * through wfile.
 *
 * MIT licence; see LICENSE.
 */
#ifndef SOCKSERVER_TLS_H
#define SOCKSERVER_TLS_H

#include "sockserver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol versions for sks_tls_opts.min_version and what
 * sks_tls_version_number returns (the wire values). */
#define SKS_TLS_1_2 0x0303
#define SKS_TLS_1_3 0x0304

/* Client certificates (sks_tls_opts.client_auth). */
enum {
    SKS_TLS_CLIENT_NONE = 0,     /* not asked for */
    SKS_TLS_CLIENT_OPTIONAL = 1, /* asked for; one that is sent must verify */
    SKS_TLS_CLIENT_REQUIRED = 2, /* a handshake without one fails */
};

/* A certificate chain and its private key, both PEM files. */
typedef struct sks_tls_cert {
    const char *cert_file;       /* the leaf first, then intermediates */
    const char *key_file;
} sks_tls_cert;

#define SKS_TLS_OPTS_VERSION 1

/*
 * A TLS configuration.  Every member but certs and ncerts may be 0/NULL
 * for its default.  The strings are copied: the caller's may go once
 * sks_tls_ctx_new returns.
 */
typedef struct sks_tls_opts {
    unsigned version;            /* SKS_TLS_OPTS_VERSION */
    /* One or more pairs.  certs[0] is the default; a client's SNI name
     * selects the first pair whose certificate names it (subjectAltName
     * DNS names, wildcards included, else the CN), and a name none has
     * gets the default. */
    const sks_tls_cert *certs;
    size_t ncerts;
    /* ALPN protocols in the server's order of preference, comma-separated
     * ("h2,http/1.1"); a client offering none of them gets none.  NULL:
     * no ALPN. */
    const char *alpn;
    int client_auth;             /* SKS_TLS_CLIENT_*; NONE by default */
    const char *client_ca_file;  /* PEM; required unless NONE */
    int min_version;             /* SKS_TLS_1_2 (default) or SKS_TLS_1_3 */
    /* How long a handshake may take, from the start of the request's
     * finish_request step (after the PROXY header), in seconds; 0: 10. */
    double handshake_timeout;
    bool no_tickets;             /* session tickets are on by default */
    /* SSL_MODE_RELEASE_BUFFERS is on by default: an idle connection keeps
     * no record buffers (about 34 KiB less each), at the cost of an
     * allocation per burst of I/O.  true keeps them. */
    bool keep_buffers;
} sks_tls_opts;

/* A TLS configuration in use: its OpenSSL contexts (one per pair),
 * replaced whole by sks_tls_ctx_reload. */
typedef struct sks_tls_ctx sks_tls_ctx;

/*
 * Makes a configuration from opts, reading the files now.  Session
 * ticket keys are made here, once, and kept across reloads; make the
 * context before serving (before a pre-forking server forks) so that every
 * process of a server accepts every other's tickets.  Returns 0 and *out,
 * or -EINVAL (bad options), -ENOENT/-EACCES (a file cannot be opened),
 * -EPROTO (a file OpenSSL refuses: not PEM, a key that does not match its
 * certificate), -ENOMEM; then, when why is not NULL, why[0..cap) holds a
 * one-line reason.  Thread safety: any thread.
 */
SKS_EXTERN int sks_tls_ctx_new(sks_tls_ctx **out, const sks_tls_opts *opts,
                               char *why, size_t cap);

/*
 * Reads the certificate, key and CA files again and makes them the ones
 * every later handshake uses; connections already open keep the ones they
 * started with (each holds a reference to its generation).  On failure
 * the current ones stay.  Returns as sks_tls_ctx_new.  A typical trigger
 * is a SIGHUP flag read in service_actions.  In a pre-forking or forking
 * server, only the process that calls it sees the new files.  Thread
 * safety: any thread, while handshakes run.
 */
SKS_EXTERN int sks_tls_ctx_reload(sks_tls_ctx *ctx, char *why, size_t cap);

/* Frees ctx; every server using it must have been freed first (open
 * connections hold only their own generation).  NULL: nothing.  Thread
 * safety: once nothing else uses ctx. */
SKS_EXTERN void sks_tls_ctx_free(sks_tls_ctx *ctx);

/*
 * Serves TLS on every later connection of srv (a stream server), with
 * ctx's handshake deadline: sks_server_set_transport with the TLS
 * transport.  ctx must outlive srv.  0, -EINVAL (NULL), -EOPNOTSUPP
 * (datagram server).  Thread safety: before serving, on the thread that
 * configures the server.
 */
SKS_EXTERN int sks_server_set_tls(sks_server *srv, sks_tls_ctx *ctx);

/* The TLS transport's table, for a transport that wraps it. */
SKS_EXTERN extern const sks_transport sks_tls_transport;

/*
 * What a handler's connection negotiated, once its setup has run (the
 * handshake is done by then).  Each returns NULL (or false, or a negative
 * number) when the connection is not TLS.  Strings are valid during the
 * handler calls.  Thread safety: the handler's own thread.
 */
/* "TLSv1.3", "TLSv1.2". */
SKS_EXTERN const char *sks_tls_version(sks_handler *h);
/* SKS_TLS_1_2, SKS_TLS_1_3; -EINVAL when not TLS. */
SKS_EXTERN int sks_tls_version_number(sks_handler *h);
/* OpenSSL's cipher suite name, e.g. "TLS_AES_256_GCM_SHA384". */
SKS_EXTERN const char *sks_tls_cipher(sks_handler *h);
/* The ALPN protocol chosen, or NULL when none was. */
SKS_EXTERN const char *sks_tls_alpn(sks_handler *h);
/* The SNI name the client sent, or NULL when it sent none. */
SKS_EXTERN const char *sks_tls_sni(sks_handler *h);
/* Whether the session was resumed (a ticket, or the session cache). */
SKS_EXTERN bool sks_tls_resumed(sks_handler *h);
/* The verified client certificate's subject, one line in RFC 2253 form
 * ("CN=alice,O=Example"), into buf[0..cap) (truncated, NUL-terminated):
 * its full length, or -ENOENT when the client sent no certificate,
 * -EINVAL when not TLS. */
SKS_EXTERN int sks_tls_peer_subject(sks_handler *h, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* SOCKSERVER_TLS_H */
