/*
 * test_tls.c - libsockserver_tls in process: handshake, getters, the end
 * of a stream, bad input, the handshake deadline, reload, client
 * certificates and resumption, on the threading, pool, forking and fiber
 * models.  The client is OpenSSL's, over a blocking loopback socket with
 * a receive timeout; certificates are made by `openssl req` in setup.
 */
#define _GNU_SOURCE
#include "support.h"
#include "sockserver_tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

static char dir[64];

static void path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

/* A key and certificate NAME.key/NAME.pem for CN (and subjectAltName DNS
 * CN), self-signed or, with issuer, signed by issuer's. */
static void make_cert(const char *name, const char *cn, const char *issuer)
{
    char cmd[1024];
    if (issuer == NULL)
        snprintf(cmd, sizeof(cmd),
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                 "-nodes -days 2 -subj /CN=%s -addext subjectAltName=DNS:%s "
                 "-keyout %s/%s.key -out %s/%s.pem 2>/dev/null",
                 cn, cn, dir, name, dir, name);
    else
        snprintf(cmd, sizeof(cmd),
                 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                 "-subj /CN=%s -keyout %s/%s.key -out %s/%s.csr 2>/dev/null && "
                 "openssl x509 -req -days 2 -in %s/%s.csr -CA %s/%s.pem "
                 "-CAkey %s/%s.key -CAcreateserial -out %s/%s.pem 2>/dev/null",
                 cn, dir, name, dir, name, dir, name, dir, issuer, dir, issuer,
                 dir, name);
    assert_int_equal(system(cmd), 0);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sks-tls.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    make_cert("a", "a.test", NULL);
    make_cert("b", "b.test", NULL);
    make_cert("a2", "a.test", NULL);
    make_cert("ca", "TestCA", NULL);
    make_cert("alice", "alice", "ca");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* The server                                                                */

/* Echoes lines; "info\n" is answered with what the connection negotiated:
 * "VERSION ALPN SNI RESUMED SUBJECT". */
static int info_echo_handle(sks_handler *h)
{
    sks_rfile *in = sks_handler_rfile(h);
    sks_wfile *out = sks_handler_wfile(h);
    char line[512];
    ssize_t n;

    while ((n = sks_rfile_readline(in, line, sizeof(line))) > 0) {
        if (n == 5 && memcmp(line, "info\n", 5) == 0) {
            char subject[256];
            if (sks_tls_peer_subject(h, subject, sizeof(subject)) < 0)
                strcpy(subject, "-");
            const char *alpn = sks_tls_alpn(h), *sni = sks_tls_sni(h);
            n = snprintf(line, sizeof(line), "%x %s %s %d %s\n",
                         (unsigned)sks_tls_version_number(h),
                         alpn ? alpn : "-", sni ? sni : "-",
                         (int)sks_tls_resumed(h), subject);
        }
        ssize_t w = sks_wfile_write(out, line, (size_t)n);
        if (w < 0)
            return (int)w;
    }
    return (int)n;
}

static const sks_handler_class info_echo = {
    .version = SKS_HANDLER_VERSION,
    .setup = sks_stream_setup,
    .handle = info_echo_handle,
    .finish = sks_stream_finish,
    .timeout = 5,
    /* A line longer than the handler's buffer is echoed in two writes:
     * without this, the second waits for the client's delayed ACK. */
    .disable_nagle_algorithm = true,
};

struct fixture {
    probe_counts probe;          /* first: probe_handle_error's */
    test_server ts;
    sks_tls_ctx *tls;
    sks_server_ops ops;
};

static sks_tls_ctx *make_ctx(const sks_tls_opts *o)
{
    sks_tls_ctx *ctx = NULL;
    char why[256] = "";
    int err = sks_tls_ctx_new(&ctx, o, why, sizeof(why));
    if (err != 0)
        fail_msg("sks_tls_ctx_new: %d %s", err, why);
    return ctx;
}

static void serve(struct fixture *f, const sks_server_ops *ops,
                  const sks_tls_opts *o)
{
    memset(f, 0, sizeof(*f));
    f->ops = *ops;
    f->ops.handle_error = probe_handle_error;
    f->tls = make_ctx(o);
    sks_server *srv = ts_new(&f->ops, "127.0.0.1:0", &info_echo, f, 0);
    assert_int_equal(sks_server_set_tls(srv, f->tls), 0);
    ts_serve(&f->ts, srv, 0.05);
}

static void unserve(struct fixture *f)
{
    ts_stop(&f->ts);
    sks_tls_ctx_free(f->tls);
}

static char cert_a[128], key_a[128], cert_b[128], key_b[128];

static void default_opts(sks_tls_opts *o, sks_tls_cert *pairs)
{
    path(cert_a, sizeof(cert_a), "a.pem");
    path(key_a, sizeof(key_a), "a.key");
    path(cert_b, sizeof(cert_b), "b.pem");
    path(key_b, sizeof(key_b), "b.key");
    pairs[0] = (sks_tls_cert){ cert_a, key_a };
    pairs[1] = (sks_tls_cert){ cert_b, key_b };
    *o = (sks_tls_opts){ .version = SKS_TLS_OPTS_VERSION, .certs = pairs,
                         .ncerts = 2, .alpn = "h2,http/1.1" };
}

/* ------------------------------------------------------------------------ */
/* The client                                                                */

struct client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

/* Connects and handshakes with SNI name (NULL: none), offering ALPN
 * "http/1.1" and, with cert, alice's certificate; session to resume, or
 * NULL.  Returns SSL_connect's result (1: done). */
static int tls_connect(struct client *c, const char *address, const char *sni,
                       bool cert, SSL_SESSION *session)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    c->fd = client_connect(address);
    assert_true(c->fd >= 0);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    c->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(c->ctx);
    SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof(alpn) - 1);
    if (cert) {
        char p[128];
        path(p, sizeof(p), "alice.pem");
        assert_int_equal(SSL_CTX_use_certificate_file(c->ctx, p, SSL_FILETYPE_PEM), 1);
        path(p, sizeof(p), "alice.key");
        assert_int_equal(SSL_CTX_use_PrivateKey_file(c->ctx, p, SSL_FILETYPE_PEM), 1);
    }
    c->ssl = SSL_new(c->ctx);
    SSL_set_fd(c->ssl, c->fd);
    if (sni != NULL)
        SSL_set_tlsext_host_name(c->ssl, sni);
    if (session != NULL)
        SSL_set_session(c->ssl, session);
    return SSL_connect(c->ssl);
}

/* Sends line, returns the reply line in buf (NUL-terminated), or NULL. */
static char *exchange(struct client *c, const char *line, char *buf, size_t cap)
{
    if (SSL_write(c->ssl, line, (int)strlen(line)) <= 0)
        return NULL;
    size_t got = 0;
    while (got + 1 < cap) {
        int r = SSL_read(c->ssl, buf + got, 1);
        if (r <= 0)
            return NULL;
        if (buf[got++] == '\n')
            break;
    }
    buf[got] = '\0';
    return buf;
}

/* Ends the connection: with a close_notify, or with a bare close. */
static void client_end(struct client *c, bool notify)
{
    if (notify)
        SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    close(c->fd);
}

/* The leaf certificate's subject CN the server presented. */
static void peer_cn(struct client *c, char *buf, size_t cap)
{
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    assert_non_null(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf,
                              (int)cap);
}

static bool errors_at_least(void *arg)
{
    struct fixture *f = arg;
    return atomic_load(&f->probe.errors) >= 1;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void assert_negotiates(const sks_server_ops *ops)
{
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    char buf[512], cn[64];
    struct client c;

    default_opts(&o, pairs);
    serve(&f, ops, &o);
    assert_int_equal(tls_connect(&c, f.ts.address, "b.test", false, NULL), 1);
    peer_cn(&c, cn, sizeof(cn));
    assert_string_equal(cn, "b.test");
    assert_non_null(exchange(&c, "hello\n", buf, sizeof(buf)));
    assert_string_equal(buf, "hello\n");
    assert_non_null(exchange(&c, "info\n", buf, sizeof(buf)));
    assert_string_equal(buf, "304 http/1.1 b.test 0 -\n");
    client_end(&c, true);

    /* No name, or one no certificate has: the default pair. */
    assert_int_equal(tls_connect(&c, f.ts.address, "c.test", false, NULL), 1);
    peer_cn(&c, cn, sizeof(cn));
    assert_string_equal(cn, "a.test");
    client_end(&c, true);
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static void test_threading_negotiates_version_alpn_and_sni_cert(void **state)
{
    (void)state;
    assert_negotiates(&sks_threading_tcp_ops);
}

static void test_pool_negotiates_version_alpn_and_sni_cert(void **state)
{
    (void)state;
    assert_negotiates(&sks_pool_tcp_ops);
}

static void test_forking_negotiates_version_alpn_and_sni_cert(void **state)
{
    (void)state;
    assert_negotiates(&sks_forking_tcp_ops);
}

static void test_fiber_negotiates_version_alpn_and_sni_cert(void **state)
{
    (void)state;
    assert_negotiates(&sks_fiber_tcp_ops);
}

/* A large exchange both ways, so that records span many reads and
 * writes and the fiber parks in both directions. */
static void test_fiber_echoes_a_megabyte_in_lines(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    struct client c;
    char line[1001], buf[1100];

    default_opts(&o, pairs);
    serve(&f, &sks_fiber_tcp_ops, &o);
    assert_int_equal(tls_connect(&c, f.ts.address, NULL, false, NULL), 1);
    memset(line, 'x', 999);
    line[999] = '\n';
    line[1000] = '\0';
    for (int i = 0; i < 1000; i++) {
        assert_non_null(exchange(&c, line, buf, sizeof(buf)));
        assert_string_equal(buf, line);
    }
    client_end(&c, true);
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static bool no_read_buffers(void *arg)
{
    struct fixture *f = arg;
    return sks_server_fiber_read_buffers(f->ts.srv) == 0;
}

static bool one_read_buffer(void *arg)
{
    struct fixture *f = arg;
    return sks_server_fiber_read_buffers(f->ts.srv) == 1;
}

/* An idle TLS connection under fibers gives its read buffer back while
 * it waits (the transport's await_input), as a plain one does, and reads
 * on when the next request comes: the heap-per-connection target. */
static void test_fiber_idle_tls_connections_hold_no_read_buffer(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    struct client c[3];
    char buf[64];

    default_opts(&o, pairs);
    serve(&f, &sks_fiber_tcp_ops, &o);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tls_connect(&c[i], f.ts.address, NULL, false, NULL), 1);
        assert_non_null(exchange(&c[i], "one\n", buf, sizeof(buf)));
        assert_string_equal(buf, "one\n");
    }
    assert_true(wait_until(no_read_buffers, &f, 2000));
    /* A partial line holds the pool's buffer (so the count is of lent
     * buffers, and these connections lend theirs), and gives it back. */
    assert_int_equal(SSL_write(c[0].ssl, "par", 3), 3);
    assert_true(wait_until(one_read_buffer, &f, 2000));
    assert_non_null(exchange(&c[0], "tial\n", buf, sizeof(buf)));
    assert_string_equal(buf, "partial\n");
    assert_true(wait_until(no_read_buffers, &f, 2000));
    for (int i = 0; i < 3; i++) {
        /* Two lines in one record: the second is OpenSSL's already when
         * the handler reads for it. */
        assert_non_null(exchange(&c[i], "two\nthree\n", buf, sizeof(buf)));
        assert_string_equal(buf, "two\n");
        size_t got = 0;
        while (got + 1 < sizeof(buf)) {
            assert_int_equal(SSL_read(c[i].ssl, buf + got, 1), 1);
            if (buf[got++] == '\n')
                break;
        }
        buf[got] = '\0';
        assert_string_equal(buf, "three\n");
        client_end(&c[i], true);
    }
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static void assert_end_without_close_notify_is_an_error(const sks_server_ops *ops)
{
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    struct client c;
    char buf[64];

    default_opts(&o, pairs);
    serve(&f, ops, &o);
    assert_int_equal(tls_connect(&c, f.ts.address, NULL, false, NULL), 1);
    assert_non_null(exchange(&c, "x\n", buf, sizeof(buf)));
    client_end(&c, false);
    assert_true(wait_until(errors_at_least, &f, 5000));
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 1);
    assert_int_equal(atomic_load(&f.probe.last_error), -ECONNRESET);
}

static void test_end_without_close_notify_reaches_handle_error(void **state)
{
    (void)state;
    assert_end_without_close_notify_is_an_error(&sks_threading_tcp_ops);
}

static void test_fiber_end_without_close_notify_reaches_handle_error(void **state)
{
    (void)state;
    assert_end_without_close_notify_is_an_error(&sks_fiber_tcp_ops);
}

static void test_close_notify_is_a_clean_end(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    struct client c;
    char buf[64];

    default_opts(&o, pairs);
    serve(&f, &sks_threading_tcp_ops, &o);
    assert_int_equal(tls_connect(&c, f.ts.address, NULL, false, NULL), 1);
    assert_non_null(exchange(&c, "x\n", buf, sizeof(buf)));
    SSL_shutdown(c.ssl);
    /* The server answers with its own close_notify, then closes. */
    assert_int_equal(SSL_read(c.ssl, buf, sizeof(buf)), 0);
    assert_int_equal(SSL_get_error(c.ssl, 0), SSL_ERROR_ZERO_RETURN);
    client_end(&c, false);
    assert_true(wait_stat(f.ts.srv, completed, 1, 5000));
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static void test_garbage_mid_stream_is_reported_once(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    struct client c;
    char buf[64];

    default_opts(&o, pairs);
    serve(&f, &sks_fiber_tcp_ops, &o);
    assert_int_equal(tls_connect(&c, f.ts.address, NULL, false, NULL), 1);
    assert_non_null(exchange(&c, "x\n", buf, sizeof(buf)));
    static const char garbage[] = "\x17\x03\x03\x00\x20not a record, not at all!!!!!!!!";
    assert_int_equal(send(c.fd, garbage, sizeof(garbage) - 1, MSG_NOSIGNAL),
                     (ssize_t)sizeof(garbage) - 1);
    assert_true(wait_until(errors_at_least, &f, 5000));
    /* The server closed without a close_notify of its own. */
    assert_true(readable_within(c.fd, 5000));
    client_end(&c, false);
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 1);
    assert_int_equal(atomic_load(&f.probe.last_error), -EPROTO);
}

static void test_plain_text_to_the_tls_port_is_closed_promptly(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;

    default_opts(&o, pairs);        /* the default 10 s handshake deadline */
    serve(&f, &sks_threading_tcp_ops, &o);
    int fd = client_connect(f.ts.address);
    assert_true(fd >= 0);
    double t0 = now_seconds();
    assert_int_equal(client_send_all(fd, "GET / HTTP/1.0\r\n\r\n", 18), 0);
    assert_true(readable_within(fd, 2000));
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf), 0); /* an alert, or nothing */
    while (n > 0)
        n = recv(fd, buf, sizeof(buf), 0);
    assert_true(now_seconds() - t0 < 1.0);
    client_close(fd);
    assert_true(wait_until(errors_at_least, &f, 5000));
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.last_error), -EPROTO);
}

static void assert_silent_client_cut(const sks_server_ops *ops)
{
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;

    default_opts(&o, pairs);
    o.handshake_timeout = 0.3;
    serve(&f, ops, &o);
    int fd = client_connect(f.ts.address);
    assert_true(fd >= 0);
    double t0 = now_seconds();
    assert_true(readable_within(fd, 3000));
    char b;
    assert_true(recv(fd, &b, 1, 0) <= 0);
    double took = now_seconds() - t0;
    assert_true(took >= 0.25);
    assert_true(took < 1.5);
    client_close(fd);
    assert_true(wait_stat(f.ts.srv, timed_out, 1, 5000));
    unserve(&f);
    /* Silent: counted, not reported. */
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static void test_silent_client_is_cut_at_the_handshake_deadline(void **state)
{
    (void)state;
    assert_silent_client_cut(&sks_threading_tcp_ops);
}

static void test_fiber_silent_client_is_cut_at_the_handshake_deadline(void **state)
{
    (void)state;
    assert_silent_client_cut(&sks_fiber_tcp_ops);
}

static void test_reload_changes_new_handshakes_only(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pair;
    char cert[128], key[128], cmd[512], buf[64];
    struct client old, fresh;

    path(cert, sizeof(cert), "live.pem");
    path(key, sizeof(key), "live.key");
    snprintf(cmd, sizeof(cmd), "cp %s/a.pem %s && cp %s/a.key %s", dir, cert,
             dir, key);
    assert_int_equal(system(cmd), 0);
    pair = (sks_tls_cert){ cert, key };
    sks_tls_opts o = { .version = SKS_TLS_OPTS_VERSION, .certs = &pair,
                       .ncerts = 1 };
    serve(&f, &sks_threading_tcp_ops, &o);
    assert_int_equal(tls_connect(&old, f.ts.address, NULL, false, NULL), 1);
    X509 *first = SSL_get1_peer_certificate(old.ssl);
    /* Its ticket (read past it first), for a resumption after the reload. */
    assert_non_null(exchange(&old, "ticket\n", buf, sizeof(buf)));
    SSL_SESSION *session = SSL_get1_session(old.ssl);

    snprintf(cmd, sizeof(cmd), "cp %s/a2.pem %s && cp %s/a2.key %s", dir, cert,
             dir, key);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sks_tls_ctx_reload(f.tls, NULL, 0), 0);

    assert_int_equal(tls_connect(&fresh, f.ts.address, NULL, false, NULL), 1);
    X509 *second = SSL_get0_peer_certificate(fresh.ssl);
    assert_int_not_equal(X509_cmp(first, second), 0);
    client_end(&fresh, true);
    /* The ticket keys outlive the generation: the old ticket resumes. */
    assert_int_equal(tls_connect(&fresh, f.ts.address, NULL, false, session), 1);
    assert_int_equal(SSL_session_reused(fresh.ssl), 1);
    client_end(&fresh, true);
    SSL_SESSION_free(session);
    /* The old connection goes on, on its generation. */
    assert_non_null(exchange(&old, "still\n", buf, sizeof(buf)));
    assert_string_equal(buf, "still\n");
    client_end(&old, true);
    X509_free(first);

    /* A reload that fails keeps what is there. */
    snprintf(cmd, sizeof(cmd), "echo broken > %s", cert);
    assert_int_equal(system(cmd), 0);
    char why[256] = "";
    assert_int_equal(sks_tls_ctx_reload(f.tls, why, sizeof(why)), -EPROTO);
    assert_non_null(strstr(why, "live.pem"));
    assert_int_equal(tls_connect(&fresh, f.ts.address, NULL, false, NULL), 1);
    client_end(&fresh, true);
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 0);
}

static void test_required_client_certificate(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    char ca[128], buf[256];
    struct client c;

    default_opts(&o, pairs);
    path(ca, sizeof(ca), "ca.pem");
    o.client_auth = SKS_TLS_CLIENT_REQUIRED;
    o.client_ca_file = ca;
    serve(&f, &sks_fiber_tcp_ops, &o);

    /* Without one: TLS 1.3 lets the client finish first; the server's
     * alert then ends its first read. */
    if (tls_connect(&c, f.ts.address, NULL, false, NULL) == 1)
        assert_null(exchange(&c, "info\n", buf, sizeof(buf)));
    client_end(&c, false);
    assert_true(wait_until(errors_at_least, &f, 5000));
    assert_int_equal(atomic_load(&f.probe.last_error), -EPROTO);

    assert_int_equal(tls_connect(&c, f.ts.address, NULL, true, NULL), 1);
    assert_non_null(exchange(&c, "info\n", buf, sizeof(buf)));
    assert_string_equal(buf, "304 http/1.1 - 0 CN=alice\n");
    client_end(&c, true);
    unserve(&f);
    assert_int_equal(atomic_load(&f.probe.errors), 1);
}

static void test_a_session_ticket_resumes(void **state)
{
    (void)state;
    struct fixture f;
    sks_tls_cert pairs[2];
    sks_tls_opts o;
    struct client c;
    char buf[256];

    default_opts(&o, pairs);
    serve(&f, &sks_pool_tcp_ops, &o);
    assert_int_equal(tls_connect(&c, f.ts.address, NULL, false, NULL), 1);
    /* TLS 1.3 tickets follow the handshake: read past them. */
    assert_non_null(exchange(&c, "info\n", buf, sizeof(buf)));
    SSL_SESSION *s = SSL_get1_session(c.ssl);
    client_end(&c, true);
    assert_int_equal(tls_connect(&c, f.ts.address, NULL, false, s), 1);
    assert_int_equal(SSL_session_reused(c.ssl), 1);
    assert_non_null(exchange(&c, "info\n", buf, sizeof(buf)));
    assert_string_equal(buf, "304 http/1.1 - 1 -\n");
    client_end(&c, true);
    SSL_SESSION_free(s);
    unserve(&f);
}

static void test_bad_options_are_refused(void **state)
{
    (void)state;
    sks_tls_cert pair = { "/nonexistent.pem", "/nonexistent.key" };
    sks_tls_opts o = { .version = SKS_TLS_OPTS_VERSION, .certs = &pair,
                       .ncerts = 1 };
    sks_tls_ctx *ctx = NULL;
    char why[256];

    assert_int_equal(sks_tls_ctx_new(&ctx, &o, why, sizeof(why)), -ENOENT);
    assert_non_null(strstr(why, "/nonexistent.pem"));
    o.ncerts = 0;
    assert_int_equal(sks_tls_ctx_new(&ctx, &o, NULL, 0), -EINVAL);
    o.ncerts = 1;
    o.alpn = "h2,,x";
    assert_int_equal(sks_tls_ctx_new(&ctx, &o, NULL, 0), -EINVAL);
    o.alpn = NULL;
    o.client_auth = SKS_TLS_CLIENT_REQUIRED;  /* no CA file */
    assert_int_equal(sks_tls_ctx_new(&ctx, &o, NULL, 0), -EINVAL);
    assert_null(ctx);

    /* TLS on a datagram server: refused. */
    sks_tls_cert pairs[2];
    default_opts(&o, pairs);
    ctx = make_ctx(&o);
    sks_server *srv = ts_new(&sks_udp_ops, "127.0.0.1:0", &sks_datagram_handler,
                             NULL, 0);
    assert_int_equal(sks_server_set_tls(srv, ctx), -EOPNOTSUPP);
    sks_server_free(srv);
    sks_tls_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threading_negotiates_version_alpn_and_sni_cert),
        cmocka_unit_test(test_pool_negotiates_version_alpn_and_sni_cert),
        cmocka_unit_test(test_forking_negotiates_version_alpn_and_sni_cert),
        cmocka_unit_test(test_fiber_negotiates_version_alpn_and_sni_cert),
        cmocka_unit_test(test_fiber_echoes_a_megabyte_in_lines),
        cmocka_unit_test(test_fiber_idle_tls_connections_hold_no_read_buffer),
        cmocka_unit_test(test_end_without_close_notify_reaches_handle_error),
        cmocka_unit_test(test_fiber_end_without_close_notify_reaches_handle_error),
        cmocka_unit_test(test_close_notify_is_a_clean_end),
        cmocka_unit_test(test_garbage_mid_stream_is_reported_once),
        cmocka_unit_test(test_plain_text_to_the_tls_port_is_closed_promptly),
        cmocka_unit_test(test_silent_client_is_cut_at_the_handshake_deadline),
        cmocka_unit_test(test_fiber_silent_client_is_cut_at_the_handshake_deadline),
        cmocka_unit_test(test_reload_changes_new_handshakes_only),
        cmocka_unit_test(test_required_client_certificate),
        cmocka_unit_test(test_a_session_ticket_resumes),
        cmocka_unit_test(test_bad_options_are_refused),
    };
    /* The test's own OpenSSL client writes with write(2). */
    signal(SIGPIPE, SIG_IGN);
    alarm(120); /* a hung test fails the run instead of blocking it */
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
