/*
 * tls_ctx.c - a TLS configuration: the OpenSSL contexts made from
 * sks_tls_opts (certificate pairs chosen by SNI, ALPN, client
 * certificates, minimum version, tickets), their generations and reload.
 */
#define _GNU_SOURCE
#include "tls_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define DEFAULT_HANDSHAKE_TIMEOUT 10.0

/* One line for the caller: what failed, and OpenSSL's reason if it has
 * one.  Returns err. */
static int say(char *why, size_t cap, int err, const char *fmt, ...)
{
    if (why != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(why, cap, fmt, ap);
        va_end(ap);
        unsigned long e = ERR_peek_last_error();
        if (e != 0 && k >= 0 && (size_t)k + 3 < cap) {
            memcpy(why + k, ": ", 3);
            ERR_error_string_n(e, why + k + 2, cap - (size_t)k - 2);
        }
    }
    ERR_clear_error();
    return err;
}

/* Whether path can be opened: 0 or -errno, so that a missing file is
 * -ENOENT rather than OpenSSL's "system library" error. */
static int readable(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -errno;
    fclose(f);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Callbacks                                                                 */

/* SNI: the first pair whose certificate names the client's host; the
 * default (the SSL's first context) when none does or no name came. */
static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct sks__tls_gen *g = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    (void)alert;
    if (name == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    for (size_t i = 0; i < g->n; i++) {
        X509 *x = SSL_CTX_get0_certificate(g->ctx[i]);
        if (x != NULL && X509_check_host(x, name, 0, 0, NULL) == 1) {
            if (i > 0 && SSL_set_SSL_CTX(ssl, g->ctx[i]) == NULL)
                return SSL_TLSEXT_ERR_ALERT_FATAL;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* ALPN in the server's order of preference; no common protocol: none
 * (NOACK), as most servers do, rather than a fatal alert. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const sks_tls_ctx *ctx = arg;
    unsigned char *chosen;

    (void)ssl;
    if (SSL_select_next_proto(&chosen, outlen, ctx->alpn,
                              (unsigned)ctx->alpn_len, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/* ------------------------------------------------------------------------ */
/* Generations                                                               */

static void gen_free(struct sks__tls_gen *g)
{
    for (size_t i = 0; i < g->n; i++)
        SSL_CTX_free(g->ctx[i]);
    free(g->ctx);
    free(g);
}

void sks__tls_gen_put(struct sks__tls_gen *g)
{
    if (g != NULL && atomic_fetch_sub(&g->refs, 1) == 1)
        gen_free(g);
}

struct sks__tls_gen *sks__tls_gen_get(sks_tls_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    struct sks__tls_gen *g = ctx->cur;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&ctx->lock);
    return g;
}

/* One pair's context, configured as every other of the generation. */
static int make_one(SSL_CTX **out, sks_tls_ctx *ctx, struct sks__tls_gen *g,
                    size_t i, char *why, size_t cap)
{
    static const unsigned char sid_ctx[] = "sockserver";
    int err;

    if ((err = readable(ctx->cert_files[i])) != 0)
        return say(why, cap, err, "%s: %s", ctx->cert_files[i], strerror(-err));
    if ((err = readable(ctx->key_files[i])) != 0)
        return say(why, cap, err, "%s: %s", ctx->key_files[i], strerror(-err));
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (c == NULL)
        return say(why, cap, -ENOMEM, "SSL_CTX_new");
    *out = c;
    if (SSL_CTX_use_certificate_chain_file(c, ctx->cert_files[i]) != 1)
        return say(why, cap, -EPROTO, "%s", ctx->cert_files[i]);
    if (SSL_CTX_use_PrivateKey_file(c, ctx->key_files[i], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c) != 1)
        return say(why, cap, -EPROTO, "%s", ctx->key_files[i]);
    SSL_CTX_set_min_proto_version(c, ctx->min_version);
    /* No client-initiated renegotiation (TLS 1.2): a CPU cost a client
     * could make the server pay at will, as nginx also refuses. */
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               (ctx->no_tickets ? SSL_OP_NO_TICKET : 0));
    if (!ctx->keep_buffers)
        SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    /* One recv for what is queued, not one for each record's header and
     * one for its body; the buffer still goes when it is empty. */
    SSL_CTX_set_read_ahead(c, 1);
    SSL_CTX_set_session_id_context(c, sid_ctx, sizeof(sid_ctx) - 1);
    if (!ctx->no_tickets &&
        SSL_CTX_set_tlsext_ticket_keys(c, ctx->ticket_keys,
                                       sizeof(ctx->ticket_keys)) != 1)
        return say(why, cap, -EPROTO, "session ticket keys");
    if (ctx->client_auth != SKS_TLS_CLIENT_NONE) {
        if ((err = readable(ctx->client_ca_file)) != 0)
            return say(why, cap, err, "%s: %s", ctx->client_ca_file,
                       strerror(-err));
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ctx->client_ca_file);
        if (names == NULL ||
            SSL_CTX_load_verify_locations(c, ctx->client_ca_file, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            return say(why, cap, -EPROTO, "%s", ctx->client_ca_file);
        }
        SSL_CTX_set_client_CA_list(c, names);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER |
                                  (ctx->client_auth == SKS_TLS_CLIENT_REQUIRED
                                       ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                       : 0),
                           NULL);
    }
    SSL_CTX_set_tlsext_servername_callback(c, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(c, g);
    if (ctx->alpn != NULL)
        SSL_CTX_set_alpn_select_cb(c, alpn_cb, ctx);
    return 0;
}

static int gen_make(struct sks__tls_gen **out, sks_tls_ctx *ctx, char *why,
                    size_t cap)
{
    struct sks__tls_gen *g = calloc(1, sizeof(*g));
    if (g == NULL || (g->ctx = calloc(ctx->ncerts, sizeof(*g->ctx))) == NULL) {
        free(g);
        return say(why, cap, -ENOMEM, "out of memory");
    }
    atomic_init(&g->refs, 1);
    for (; g->n < ctx->ncerts; g->n++) {
        int err = make_one(&g->ctx[g->n], ctx, g, g->n, why, cap);
        if (err != 0) {
            if (g->ctx[g->n] != NULL)
                g->n++;
            gen_free(g);
            return err;
        }
    }
    *out = g;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Configurations                                                            */

/* "h2,http/1.1" in ALPN's wire form: each name preceded by its length. */
static int alpn_wire(sks_tls_ctx *ctx, const char *list)
{
    size_t n = strlen(list);
    if (n == 0 || n > 65535)
        return -EINVAL;
    ctx->alpn = malloc(n + 1);
    if (ctx->alpn == NULL)
        return -ENOMEM;
    size_t len = 0;
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        size_t k = end ? (size_t)(end - p) : strlen(p);
        if (k == 0 || k > 255)
            return -EINVAL;
        ctx->alpn[len++] = (unsigned char)k;
        memcpy(ctx->alpn + len, p, k);
        len += k;
        if (end == NULL)
            break;
        p = end + 1;
    }
    ctx->alpn_len = len;
    return 0;
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *failed = true;
    return d;
}

static int copy_opts(sks_tls_ctx *ctx, const sks_tls_opts *o)
{
    bool failed = false;

    if (o->version == 0 || o->version > SKS_TLS_OPTS_VERSION ||
        o->certs == NULL || o->ncerts == 0 ||
        o->client_auth < SKS_TLS_CLIENT_NONE ||
        o->client_auth > SKS_TLS_CLIENT_REQUIRED ||
        (o->client_auth != SKS_TLS_CLIENT_NONE && o->client_ca_file == NULL) ||
        (o->min_version != 0 && o->min_version != SKS_TLS_1_2 &&
         o->min_version != SKS_TLS_1_3) ||
        !(o->handshake_timeout >= 0))
        return -EINVAL;
    ctx->cert_files = calloc(o->ncerts, sizeof(char *));
    ctx->key_files = calloc(o->ncerts, sizeof(char *));
    if (ctx->cert_files == NULL || ctx->key_files == NULL)
        return -ENOMEM;
    ctx->ncerts = o->ncerts;
    for (size_t i = 0; i < o->ncerts; i++) {
        if (o->certs[i].cert_file == NULL || o->certs[i].key_file == NULL)
            return -EINVAL;
        ctx->cert_files[i] = dup_or_null(o->certs[i].cert_file, &failed);
        ctx->key_files[i] = dup_or_null(o->certs[i].key_file, &failed);
    }
    ctx->client_ca_file = dup_or_null(o->client_ca_file, &failed);
    if (failed)
        return -ENOMEM;
    ctx->client_auth = o->client_auth;
    ctx->min_version = o->min_version ? o->min_version : SKS_TLS_1_2;
    ctx->handshake_timeout = o->handshake_timeout > 0
                                 ? o->handshake_timeout
                                 : DEFAULT_HANDSHAKE_TIMEOUT;
    ctx->no_tickets = o->no_tickets;
    ctx->keep_buffers = o->keep_buffers;
    return o->alpn != NULL ? alpn_wire(ctx, o->alpn) : 0;
}

int sks_tls_ctx_new(sks_tls_ctx **out, const sks_tls_opts *opts, char *why,
                    size_t cap)
{
    if (out == NULL || opts == NULL)
        return say(why, cap, -EINVAL, "no options");
    sks_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return say(why, cap, -ENOMEM, "out of memory");
    pthread_mutex_init(&ctx->lock, NULL);
    int err = copy_opts(ctx, opts);
    if (err != 0) {
        sks_tls_ctx_free(ctx);
        return say(why, cap, err, "%s", err == -EINVAL ? "invalid options"
                                                       : "out of memory");
    }
    if (RAND_bytes(ctx->ticket_keys, sizeof(ctx->ticket_keys)) != 1 ||
        (ctx->bio_method = sks__tls_bio_method()) == NULL) {
        sks_tls_ctx_free(ctx);
        return say(why, cap, -ENOMEM, "OpenSSL");
    }
    err = gen_make(&ctx->cur, ctx, why, cap);
    if (err != 0) {
        sks_tls_ctx_free(ctx);
        return err;
    }
    *out = ctx;
    return 0;
}

int sks_tls_ctx_reload(sks_tls_ctx *ctx, char *why, size_t cap)
{
    struct sks__tls_gen *g;
    int err = gen_make(&g, ctx, why, cap);
    if (err != 0)
        return err;
    pthread_mutex_lock(&ctx->lock);
    struct sks__tls_gen *old = ctx->cur;
    ctx->cur = g;
    pthread_mutex_unlock(&ctx->lock);
    sks__tls_gen_put(old);
    return 0;
}

void sks_tls_ctx_free(sks_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    sks__tls_gen_put(ctx->cur);
    for (size_t i = 0; i < ctx->ncerts; i++) {
        free(ctx->cert_files[i]);
        free(ctx->key_files[i]);
    }
    free(ctx->cert_files);
    free(ctx->key_files);
    free(ctx->client_ca_file);
    free(ctx->alpn);
    OPENSSL_cleanse(ctx->ticket_keys, sizeof(ctx->ticket_keys));
    BIO_meth_free(ctx->bio_method);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

int sks_server_set_tls(sks_server *srv, sks_tls_ctx *ctx)
{
    if (srv == NULL || ctx == NULL)
        return -EINVAL;
    return sks_server_set_transport(srv, &sks_tls_transport, ctx,
                                    ctx->handshake_timeout);
}
