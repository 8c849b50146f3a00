/*
 * tls_internal.h - what the TLS library's two files share: the
 * configuration's generations (tls_ctx.c) and the connections that hold
 * one (tls_conn.c).
 */
#ifndef SKS_TLS_INTERNAL_H
#define SKS_TLS_INTERNAL_H

#include "sockserver_tls.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

/*
 * One generation of a configuration: an SSL_CTX per certificate pair, the
 * first the default, made from the files as they were when it was built.
 * sks_tls_ctx_reload makes a new generation and swaps it in; each
 * connection holds a reference to the one it started with (for its SNI
 * choice, made during its handshake), and each SSL holds OpenSSL's own
 * reference to its SSL_CTX, so a reload never pulls a context from under
 * an open connection.
 */
struct sks__tls_gen {
    atomic_int refs;
    SSL_CTX **ctx;
    size_t n;
};

struct sks_tls_ctx {
    pthread_mutex_t lock;        /* guards cur */
    struct sks__tls_gen *cur;
    /* What each generation is built from (copies of the caller's). */
    char **cert_files, **key_files;
    size_t ncerts;
    char *client_ca_file;
    int client_auth, min_version;
    double handshake_timeout;
    bool no_tickets, keep_buffers;
    unsigned char *alpn;         /* wire form: length-prefixed names */
    size_t alpn_len;
    /* Session ticket keys, made once: every generation and every process
     * forked after sks_tls_ctx_new accepts the same tickets. */
    unsigned char ticket_keys[80];
    BIO_METHOD *bio_method;      /* the BIO over sks_conn (tls_conn.c) */
};

/* The current generation, with a reference taken for the caller. */
struct sks__tls_gen *sks__tls_gen_get(sks_tls_ctx *ctx);
void sks__tls_gen_put(struct sks__tls_gen *g);
/* The BIO method over sks_conn, made once per configuration: NULL on
 * failure. */
BIO_METHOD *sks__tls_bio_method(void);

#endif /* SKS_TLS_INTERNAL_H */
