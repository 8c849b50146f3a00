/*
 * tls_conn.c - the TLS transport: a connection's SSL over a BIO that does
 * its I/O through the library's sks_conn calls, the handshake, reads and
 * writes, the close_notify, and the getters.
 *
 * Each BIO read or write is one sks_conn_*_once attempt (a blocking
 * socket may block in the kernel to the deadline; a fiber's never does),
 * and EAGAIN becomes BIO retry, so OpenSSL returns WANT_READ or
 * WANT_WRITE and we wait for exactly that, whichever call it came from (a
 * write may need to read, in TLS 1.3 after a key update; a read may need
 * to write).  The wait is sks_conn_wait: the connection's deadlines, and
 * under the fiber model a park, never a switch inside OpenSSL.  So
 * ERR_clear_error, the call and SSL_get_error run on one thread with
 * nothing between them, as OpenSSL's per-thread error queue requires.
 */
#define _GNU_SOURCE
#include "tls_internal.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

struct tls_conn {
    SSL *ssl;
    sks_conn *conn;
    struct sks__tls_gen *gen;    /* the generation it started with */
    int io_err;                  /* the socket's own error, if any */
    bool eof;                    /* the socket's end of input was read */
    bool failed;                 /* a fatal error: no close_notify */
    char alpn[256];              /* NUL-terminated copy, "" for none */
};

/* ------------------------------------------------------------------------ */
/* The BIO                                                                   */

static int bio_read(BIO *b, char *buf, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t r = sks_conn_recv_once(t->conn, buf, (size_t)len);
    if (r == 0)
        t->eof = true;
    if (r >= 0)
        return (int)r;
    if (r == -EAGAIN)
        BIO_set_retry_read(b);
    else
        t->io_err = (int)r;
    return -1;
}

static int bio_write(BIO *b, const char *buf, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t w = sks_conn_send_once(t->conn, buf, (size_t)len);
    if (w >= 0)
        return (int)w;
    if (w == -EAGAIN)
        BIO_set_retry_write(b);
    else
        t->io_err = (int)w;
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct tls_conn *t = BIO_get_data(b);
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;   /* every byte is handed to the kernel at once */
    case BIO_CTRL_EOF:
        /* Asked after a read of 0: OpenSSL then reports the truncation
         * as UNEXPECTED_EOF_WHILE_READING, not as a system error. */
        return t->eof;
    default:
        return 0;
    }
}

BIO_METHOD *sks__tls_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                 "sockserver");
    if (m == NULL)
        return NULL;
    if (BIO_meth_set_read(m, bio_read) != 1 ||
        BIO_meth_set_write(m, bio_write) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */

/* A clean end of input (close_notify). */
#define CLEAN_END 1

/*
 * After an SSL call returned r <= 0: 0 to call it again (what OpenSSL
 * asked for may now be there), CLEAN_END, or the error for the caller.
 */
static int settle(struct tls_conn *t, int r)
{
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return sks_conn_wait(t->conn, POLLIN);
    case SSL_ERROR_WANT_WRITE:
        return sks_conn_wait(t->conn, POLLOUT);
    case SSL_ERROR_ZERO_RETURN:
        return CLEAN_END;
    case SSL_ERROR_SYSCALL:
        t->failed = true;
        return t->io_err != 0 ? t->io_err : -ECONNRESET;
    case SSL_ERROR_SSL:
        t->failed = true;
        if (t->io_err != 0)
            return t->io_err;
        /* OpenSSL 3's report of an end of input without close_notify: a
         * truncation, never a clean end. */
        if (ERR_GET_REASON(ERR_peek_error()) ==
            SSL_R_UNEXPECTED_EOF_WHILE_READING)
            return -ECONNRESET;
        return -EPROTO;
    default:
        t->failed = true;
        return -EPROTO;
    }
}

/* Before each SSL call: its errors, and only its, are what settle sees. */
static void fresh(struct tls_conn *t)
{
    ERR_clear_error();
    t->io_err = 0;
}

static void release(struct tls_conn *t)
{
    SSL_free(t->ssl);
    sks__tls_gen_put(t->gen);
    free(t);
}

/*
 * TCP_NODELAY on every TLS connection over TCP, as nginx does: OpenSSL
 * writes a TLS 1.3 server's session tickets, and a response's records,
 * each with a send of its own, and under Nagle the second waits for the
 * client's delayed ACK of the first (40 ms a handshake, measured).  A Unix
 * socket refuses the option: nothing to do there.
 */
static void no_delay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int tls_start(sks_conn *c, void *arg, void **state)
{
    sks_tls_ctx *ctx = arg;
    no_delay(sks_conn_fd(c));
    struct tls_conn *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->conn = c;
    t->gen = sks__tls_gen_get(ctx);
    t->ssl = SSL_new(t->gen->ctx[0]);
    BIO *b = t->ssl != NULL ? BIO_new(ctx->bio_method) : NULL;
    if (b == NULL) {
        release(t);
        return -ENOMEM;
    }
    BIO_set_data(b, t);
    BIO_set_init(b, 1);
    SSL_set_bio(t->ssl, b, b);
    SSL_set_accept_state(t->ssl);
    for (;;) {
        fresh(t);
        int r = SSL_do_handshake(t->ssl);
        if (r == 1)
            break;
        int err = settle(t, r);
        if (err != 0) {
            release(t);
            return err == CLEAN_END ? -ECONNRESET : err;
        }
    }
    const unsigned char *p;
    unsigned len;
    SSL_get0_alpn_selected(t->ssl, &p, &len);
    if (len > 0)                 /* none chosen: p is NULL */
        memcpy(t->alpn, p, len); /* len < 256: one length byte on the wire */
    t->alpn[len] = '\0';
    *state = t;
    return 0;
}

/* SSL_read or SSL_write until bytes move: the count, 0 at a clean end of
 * input (a write then reports -EPIPE), or the error. */
static ssize_t transfer(sks_conn *c, void *buf, size_t n, bool write)
{
    struct tls_conn *t = sks_conn_state(c);
    int want = n > INT_MAX ? INT_MAX : (int)n;
    for (;;) {
        fresh(t);
        int r = write ? SSL_write(t->ssl, buf, want) : SSL_read(t->ssl, buf, want);
        if (r > 0)
            return r;
        int err = settle(t, r);
        if (err != 0)
            return err != CLEAN_END ? err : write ? -EPIPE : 0;
    }
}

static ssize_t tls_recv(sks_conn *c, void *buf, size_t n)
{
    return transfer(c, buf, n, false);
}

static ssize_t tls_send(sks_conn *c, const void *buf, size_t n)
{
    return transfer(c, (void *)buf, n, true); /* SSL_write only reads it */
}

/*
 * Under fibers, before a read with nothing buffered, holding no buffer: a
 * record OpenSSL holds already, else a byte or an end on the socket
 * (peeked, so OpenSSL still reads it), else the wait.  EAGAIN has then
 * just been seen, so the next byte is an edge the fiber wakes for.
 */
static int tls_await_input(sks_conn *c)
{
    struct tls_conn *t = sks_conn_state(c);
    if (SSL_has_pending(t->ssl))
        return 0;
    char b;
    ssize_t r;
    do
        r = recv(sks_conn_fd(c), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return sks_conn_wait(c, POLLIN);
    return 0;                    /* input, an end or an error: recv says */
}

/* One close_notify, never a wait for the peer's: the connection is closed
 * next, and a peer that does not answer must not hold the worker.  None
 * after a fatal error (OpenSSL would refuse), nor mid-handshake. */
static void tls_shutdown(sks_conn *c)
{
    struct tls_conn *t = sks_conn_state(c);
    if (t->failed || SSL_in_init(t->ssl))
        return;
    fresh(t);
    (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

static void tls_close(sks_conn *c)
{
    release(sks_conn_state(c));
}

const sks_transport sks_tls_transport = {
    .version = SKS_TRANSPORT_VERSION,
    .name = "tls",
    .start = tls_start,
    .recv = tls_recv,
    .send = tls_send,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .await_input = tls_await_input,
};

/* ------------------------------------------------------------------------ */
/* Getters                                                                   */

static struct tls_conn *tls_of(sks_handler *h)
{
    sks_conn *c = h != NULL ? sks_handler_conn(h) : NULL;
    if (c == NULL || sks_conn_transport(c) != &sks_tls_transport)
        return NULL;
    return sks_conn_state(c);
}

const char *sks_tls_version(sks_handler *h)
{
    struct tls_conn *t = tls_of(h);
    return t != NULL ? SSL_get_version(t->ssl) : NULL;
}

int sks_tls_version_number(sks_handler *h)
{
    struct tls_conn *t = tls_of(h);
    return t != NULL ? SSL_version(t->ssl) : -EINVAL;
}

const char *sks_tls_cipher(sks_handler *h)
{
    struct tls_conn *t = tls_of(h);
    return t != NULL ? SSL_get_cipher_name(t->ssl) : NULL;
}

const char *sks_tls_alpn(sks_handler *h)
{
    struct tls_conn *t = tls_of(h);
    return t != NULL && t->alpn[0] != '\0' ? t->alpn : NULL;
}

const char *sks_tls_sni(sks_handler *h)
{
    struct tls_conn *t = tls_of(h);
    return t != NULL ? SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name)
                     : NULL;
}

bool sks_tls_resumed(sks_handler *h)
{
    struct tls_conn *t = tls_of(h);
    return t != NULL && SSL_session_reused(t->ssl) == 1;
}

int sks_tls_peer_subject(sks_handler *h, char *buf, size_t cap)
{
    struct tls_conn *t = tls_of(h);
    if (t == NULL)
        return -EINVAL;
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    if (x == NULL)
        return -ENOENT;
    BIO *m = BIO_new(BIO_s_mem());
    if (m == NULL)
        return -ENOMEM;
    int n = X509_NAME_print_ex(m, X509_get_subject_name(x), 0,
                               XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    char *data;
    long len = BIO_get_mem_data(m, &data);
    if (n >= 0 && cap > 0) {
        size_t k = (size_t)len < cap - 1 ? (size_t)len : cap - 1;
        memcpy(buf, data, k);
        buf[k] = '\0';
    }
    BIO_free(m);
    return n < 0 ? -ENOMEM : (int)len;
}
