/*
 * test_proxy.c - the PROXY protocol (v1 and v2): the parser against the
 * specification's valid and invalid headers, and servers that read the
 * header from real connections before the handler runs.
 */
#define _GNU_SOURCE
#include "support.h"
#include "../src/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Headers                                                                   */

static const unsigned char SIG[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                       0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

#define V1_TCP4 "PROXY TCP4 127.0.0.7 127.0.0.1 54321 8000\r\n"
#define V1_TCP6 "PROXY TCP6 ::1 fe80::1:2 1000 65535\r\n"

/* CRC-32C written independently of the library's (a table-less Castagnoli
 * CRC checked against the standard check value below). */
static uint32_t test_crc32c(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return crc ^ 0xFFFFFFFFu;
}

/* A v2 header: signature, ver_cmd, fam, the length of body, body. */
static size_t v2(unsigned char *b, unsigned char ver_cmd, unsigned char fam,
                 const void *body, size_t n)
{
    memcpy(b, SIG, 12);
    b[12] = ver_cmd;
    b[13] = fam;
    b[14] = (unsigned char)(n >> 8);
    b[15] = (unsigned char)n;
    if (n > 0)
        memcpy(b + 16, body, n);
    return 16 + n;
}

/* TCP over IPv4, 127.0.0.7:54321 -> 127.0.0.1:8000, then extra bytes. */
static size_t v2_tcp4(unsigned char *b, const void *tlvs, size_t tn)
{
    unsigned char body[12 + 256] = { 127, 0, 0, 7, 127, 0, 0, 1,
                                     0xD4, 0x31, 0x1F, 0x40 };
    if (tn > 0)
        memcpy(body + 12, tlvs, tn);
    return v2(b, 0x21, 0x11, body, 12 + tn);
}

/* TCP over IPv6, [::1]:1000 -> [::1]:2000. */
static size_t v2_tcp6(unsigned char *b)
{
    unsigned char body[36] = { 0 };
    body[15] = 1;
    body[31] = 1;
    body[32] = 1000 >> 8;
    body[33] = 1000 & 0xFF;
    body[34] = 2000 >> 8;
    body[35] = 2000 & 0xFF;
    return v2(b, 0x21, 0x21, body, sizeof(body));
}

/* UNIX stream, /tmp/sks-proxy-client.sock -> /tmp/sks-proxy-server.sock. */
static size_t v2_unix(unsigned char *b)
{
    unsigned char body[216] = { 0 };
    strcpy((char *)body, "/tmp/sks-proxy-client.sock");
    strcpy((char *)body + 108, "/tmp/sks-proxy-server.sock");
    return v2(b, 0x21, 0x31, body, sizeof(body));
}

/* The TLVs of a realistic header: NOOP padding, ALPN, a custom type,
 * then a CRC32C over the whole header (filled by seal_crc). */
static const unsigned char TLVS[] = {
    0x04, 0x00, 0x03, 0, 0, 0,                   /* NOOP, 3 bytes */
    0x01, 0x00, 0x02, 'h', '2',                  /* ALPN "h2" */
    0xE0, 0x00, 0x00,                            /* custom, empty */
    0x03, 0x00, 0x04, 0, 0, 0, 0,                /* CRC32C */
};

static void seal_crc(unsigned char *b, size_t n)
{
    /* The CRC TLV is last: its value is the last 4 bytes. */
    memset(b + n - 4, 0, 4);
    uint32_t crc = test_crc32c(b, n);
    b[n - 4] = (unsigned char)(crc >> 24);
    b[n - 3] = (unsigned char)(crc >> 16);
    b[n - 2] = (unsigned char)(crc >> 8);
    b[n - 1] = (unsigned char)crc;
}

static ssize_t parse(const void *b, size_t n, sks__proxy_header *h)
{
    memset(h, 0x5A, sizeof(*h));
    return sks__proxy_parse(b, n, SKS_PROXY_ANY, h);
}

static void assert_addr(const sks_addr *a, const char *want)
{
    char got[SKS_ADDRSTRLEN];
    assert_true(sks_addr_format(a, got, sizeof(got)) > 0);
    assert_string_equal(got, want);
}

/* ------------------------------------------------------------------------ */
/* The parser                                                                */

static void test_crc32c_of_the_test_matches_the_standard_check_value(void **s)
{
    (void)s;
    assert_int_equal(test_crc32c((const unsigned char *)"123456789", 9),
                     0xE3069283u);
}

static void test_valid_v1_headers_parse_to_their_addresses(void **state)
{
    (void)state;
    sks__proxy_header h;
    char line[128];

    assert_int_equal(parse(V1_TCP4, strlen(V1_TCP4), &h),
                     (ssize_t)strlen(V1_TCP4));
    assert_int_equal(h.version, 1);
    assert_false(h.local);
    assert_addr(&h.src, "127.0.0.7:54321");
    assert_addr(&h.dst, "127.0.0.1:8000");

    assert_int_equal(parse(V1_TCP6, strlen(V1_TCP6), &h),
                     (ssize_t)strlen(V1_TCP6));
    assert_false(h.local);
    assert_addr(&h.src, "[::1]:1000");
    assert_addr(&h.dst, "[fe80::1:2]:65535");

    /* UNKNOWN, short and with anything before the CRLF. */
    assert_int_equal(parse("PROXY UNKNOWN\r\n", 15, &h), 15);
    assert_true(h.local);
    const char *u = "PROXY UNKNOWN ffff:: whatever 1 2\r\n";
    assert_int_equal(parse(u, strlen(u), &h), (ssize_t)strlen(u));
    assert_true(h.local);

    /* The limits: 0.0.0.0, 255.255.255.255, ports 0 and 65535, and the
     * 107-byte line of the specification's worst case. */
    const char *edge = "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";
    assert_int_equal(parse(edge, strlen(edge), &h), (ssize_t)strlen(edge));
    assert_addr(&h.src, "0.0.0.0:0");
    snprintf(line, sizeof(line), "PROXY UNKNOWN %091d\r\n", 0);
    assert_int_equal(strlen(line), 107);
    assert_int_equal(parse(line, 107, &h), 107);

    /* Only the header is taken: the payload after it is not looked at. */
    const char *more = V1_TCP4 "GET / HTTP/1.0\r\n";
    assert_int_equal(parse(more, strlen(more), &h), (ssize_t)strlen(V1_TCP4));
}

static void test_valid_v2_headers_parse_to_their_addresses(void **state)
{
    (void)state;
    unsigned char b[600];
    sks__proxy_header h;
    size_t n;

    n = v2_tcp4(b, NULL, 0);
    assert_int_equal(parse(b, n, &h), 28);
    assert_int_equal(h.version, 2);
    assert_false(h.local);
    assert_addr(&h.src, "127.0.0.7:54321");
    assert_addr(&h.dst, "127.0.0.1:8000");

    n = v2_tcp6(b);
    assert_int_equal(parse(b, n, &h), 52);
    assert_addr(&h.src, "[::1]:1000");
    assert_addr(&h.dst, "[::1]:2000");

    n = v2_unix(b);
    assert_int_equal(parse(b, n, &h), 232);
    assert_addr(&h.src, "unix:/tmp/sks-proxy-client.sock");
    assert_addr(&h.dst, "unix:/tmp/sks-proxy-server.sock");

    /* UDP over IPv4 carries the same addresses. */
    n = v2_tcp4(b, NULL, 0);
    b[13] = 0x12;
    assert_int_equal(parse(b, n, &h), 28);
    assert_addr(&h.src, "127.0.0.7:54321");

    /* TLVs are skipped; the CRC32C one is checked. */
    n = v2_tcp4(b, TLVS, sizeof(TLVS));
    seal_crc(b, n);
    assert_int_equal(parse(b, n, &h), (ssize_t)n);
    assert_addr(&h.src, "127.0.0.7:54321");
}

static void test_v2_local_and_unspec_keep_the_real_addresses(void **state)
{
    (void)state;
    unsigned char b[64], junk[20] = { 1, 2, 3 };
    sks__proxy_header h;

    /* LOCAL (a health check): no address, or an address block to skip,
     * whatever the family byte says. */
    assert_int_equal(parse(b, v2(b, 0x20, 0x00, NULL, 0), &h), 16);
    assert_true(h.local);
    assert_int_equal(parse(b, v2(b, 0x20, 0x11, junk, 12), &h), 28);
    assert_true(h.local);
    assert_int_equal(parse(b, v2(b, 0x20, 0xFF, junk, 3), &h), 19);
    assert_true(h.local);
    /* PROXY of an unspecified family or protocol: accepted, ignored. */
    assert_int_equal(parse(b, v2(b, 0x21, 0x00, junk, 20), &h), 36);
    assert_true(h.local);
    assert_int_equal(parse(b, v2(b, 0x21, 0x10, junk, 5), &h), 21);
    assert_true(h.local);
}

/* Every prefix of a valid header asks for more, never fails, never
 * succeeds: a header cut anywhere is waited for, not misread. */
static void assert_prefixes_incomplete(const void *hdr, size_t n)
{
    sks__proxy_header h;
    for (size_t p = 0; p < n; p++)
        if (parse(hdr, p, &h) != 0)
            fail_msg("prefix of %zu of %zu bytes did not ask for more", p, n);
    assert_int_equal(parse(hdr, n, &h), (ssize_t)n);
}

static void test_truncated_at_every_byte_is_incomplete(void **state)
{
    (void)state;
    unsigned char b[600];
    size_t n;

    assert_prefixes_incomplete(V1_TCP4, strlen(V1_TCP4));
    assert_prefixes_incomplete(V1_TCP6, strlen(V1_TCP6));
    assert_prefixes_incomplete("PROXY UNKNOWN\r\n", 15);
    assert_prefixes_incomplete(b, v2_tcp4(b, NULL, 0));
    assert_prefixes_incomplete(b, v2_tcp6(b));
    assert_prefixes_incomplete(b, v2_unix(b));
    n = v2_tcp4(b, TLVS, sizeof(TLVS));
    seal_crc(b, n);
    assert_prefixes_incomplete(b, n);
    assert_prefixes_incomplete(b, v2(b, 0x20, 0x00, NULL, 0));
}

static void assert_rejected(const void *hdr, size_t n, ssize_t err)
{
    sks__proxy_header h;
    ssize_t r = parse(hdr, n, &h);
    if (r != err)
        fail_msg("header of %zu bytes: got %zd, want %zd", n, r, err);
}

static void test_v1_each_field_wrong_in_turn_is_rejected(void **state)
{
    (void)state;
    /* The valid line, then each of its parts broken. */
    assert_int_equal(sks__proxy_parse(V1_TCP4, strlen(V1_TCP4), SKS_PROXY_V1,
                                      &(sks__proxy_header){ 0 }),
                     (ssize_t)strlen(V1_TCP4));
    static const char *const bad[] = {
        "PROXX TCP4 127.0.0.7 127.0.0.1 54321 8000\r\n",  /* signature */
        "proxy TCP4 127.0.0.7 127.0.0.1 54321 8000\r\n",
        "PROXY\tTCP4 127.0.0.7 127.0.0.1 54321 8000\r\n", /* separator */
        "PROXY  TCP4 127.0.0.7 127.0.0.1 54321 8000\r\n",
        "PROXY TCP5 127.0.0.7 127.0.0.1 54321 8000\r\n",  /* protocol */
        "PROXY tcp4 127.0.0.7 127.0.0.1 54321 8000\r\n",
        "PROXY TCP 127.0.0.7 127.0.0.1 54321 8000\r\n",
        "PROXY UDP4 127.0.0.7 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4  127.0.0.7 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 127.0.0.256 127.0.0.1 54321 8000\r\n", /* source */
        "PROXY TCP4 127.0.0 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 127.0.0.7.1 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 127.0.0.07 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 127..0.7 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 0x7f.0.0.7 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 ::1 127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 127.0.0.7  127.0.0.1 54321 8000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.1 54321 8000\r\n",    /* destination */
        "PROXY TCP4 127.0.0.7 127.0.0.-1 54321 8000\r\n",
        "PROXY TCP4 127.0.0.7 ::1 54321 8000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 65536 8000\r\n",  /* source port */
        "PROXY TCP4 127.0.0.7 127.0.0.1 054321 8000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 -1 8000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 5432a 8000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 +5 8000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1  8000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 54321 80000\r\n", /* dest. port */
        "PROXY TCP4 127.0.0.7 127.0.0.1 54321 08000\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 54321\r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 54321 8000 9\r\n", /* extra */
        "PROXY TCP4 127.0.0.7 127.0.0.1 54321 8000 \r\n",
        "PROXY TCP4 127.0.0.7 127.0.0.1 54321 8000\n",     /* line end */
        "PROXY TCP4 127.0.0.7 127.0.0.1 54321 8000\rX\n",
        "PROXY TCP4 127.0.0.7\n127.0.0.1 54321 8000\r\n",
        "PROXY TCP6 127.0.0.7 ::1 1000 2000\r\n",          /* TCP6 */
        "PROXY TCP6 ::1 ::g 1000 2000\r\n",
        "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1000 2000\r\n",
        "PROXY TCP6 [::1] ::1 1000 2000\r\n",
        "PROXY TCP6 fe80::1%lo ::1 1000 2000\r\n",
        "PROXY UNKNOWNX\r\n",                              /* UNKNOWN */
        "PROXY UNKNOWN\n",
        "PROXY\r\n",
        "PROXY \r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sks__proxy_header h;
        ssize_t r = parse(bad[i], strlen(bad[i]), &h);
        if (r >= 0)
            fail_msg("accepted (%zd): %s", r, bad[i]);
        assert_int_equal(r, -EPROTO);
    }
    /* A NUL inside the line. */
    static const char nul[] = "PROXY TCP4 127.0.0.7" "\0"
                              "127.0.0.1 54321 8000\r\n";
    assert_rejected(nul, sizeof(nul) - 1, -EPROTO);
}

static void test_v1_longer_than_107_bytes_is_rejected_as_oversized(void **s)
{
    (void)s;
    char line[256];
    /* 108 bytes with the CRLF: one too many. */
    snprintf(line, sizeof(line), "PROXY UNKNOWN %092d\r\n", 0);
    assert_int_equal(strlen(line), 108);
    assert_rejected(line, 108, -EMSGSIZE);
    /* No CRLF at all within the limit: decided once 107 bytes are in. */
    memset(line, 'a', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    assert_rejected(line, 106, 0);
    assert_rejected(line, 107, -EMSGSIZE);
    assert_rejected(line, sizeof(line), -EMSGSIZE);
}

static void test_v2_each_field_wrong_in_turn_is_rejected(void **state)
{
    (void)state;
    unsigned char good[64], b[64];
    size_t n = v2_tcp4(good, NULL, 0);

    /* Each byte of the signature. */
    for (size_t i = 0; i < 12; i++) {
        memcpy(b, good, n);
        b[i] ^= 0x40;
        assert_rejected(b, n, -EPROTO);
    }
    /* Versions other than 2 (the "unknown version"), and commands other
     * than LOCAL and PROXY. */
    static const unsigned char ver_cmd[] = { 0x11, 0x31, 0xF1, 0x01, 0x22,
                                             0x2F };
    for (size_t i = 0; i < sizeof(ver_cmd); i++) {
        memcpy(b, good, n);
        b[12] = ver_cmd[i];
        assert_rejected(b, n, -EPROTO);
    }
    /* Families past AF_UNIX and protocols past DGRAM. */
    static const unsigned char fam[] = { 0x41, 0xF1, 0x13, 0x1F };
    for (size_t i = 0; i < sizeof(fam); i++) {
        memcpy(b, good, n);
        b[13] = fam[i];
        assert_rejected(b, n, -EPROTO);
    }
    /* A length too short for the addresses of the family. */
    unsigned char body[216] = { 0 };
    assert_rejected(b, v2(b, 0x21, 0x11, body, 11), -EPROTO);
    assert_rejected(b, v2(b, 0x21, 0x21, body, 35), -EPROTO);
    unsigned char big[300];
    assert_rejected(big, v2(big, 0x21, 0x31, body, 215), -EPROTO);
    /* Decided from the 16 bytes alone, before any address arrives. */
    assert_rejected(b, 16, -EPROTO);
}

static void test_v2_length_overflow_is_rejected(void **state)
{
    (void)state;
    unsigned char b[SKS_PROXY_HEADER_MAX + 64];

    /* A length past the maximum is refused at once, from 16 bytes. */
    v2(b, 0x21, 0x11, NULL, 0);
    b[14] = 0xFF;
    b[15] = 0xFF;
    assert_rejected(b, 16, -EMSGSIZE);
    size_t len = SKS_PROXY_HEADER_MAX - 16 + 1;
    b[14] = (unsigned char)(len >> 8);
    b[15] = (unsigned char)len;
    assert_rejected(b, 16, -EMSGSIZE);
    /* Exactly the maximum is fine (NOOP TLV padding). */
    len = SKS_PROXY_HEADER_MAX - 16;
    memset(b + 16, 0, len);
    b[16 + 12] = 0x04;
    b[16 + 13] = (unsigned char)((len - 15) >> 8);
    b[16 + 14] = (unsigned char)(len - 15);
    b[14] = (unsigned char)(len >> 8);
    b[15] = (unsigned char)len;
    b[13] = 0x11;
    assert_int_equal(parse(b, SKS_PROXY_HEADER_MAX,
                           &(sks__proxy_header){ 0 }),
                     SKS_PROXY_HEADER_MAX);

    /* TLVs that overflow the header's length. */
    static const unsigned char tlv_long[] = { 0x01, 0x00, 0x05, 'a', 'b' };
    static const unsigned char tlv_cut[] = { 0x01, 0x00 };
    static const unsigned char tlv_huge[] = { 0x20, 0xFF, 0xFF, 0 };
    assert_rejected(b, v2_tcp4(b, tlv_long, sizeof(tlv_long)), -EPROTO);
    assert_rejected(b, v2_tcp4(b, tlv_cut, sizeof(tlv_cut)), -EPROTO);
    assert_rejected(b, v2_tcp4(b, tlv_huge, sizeof(tlv_huge)), -EPROTO);
}

static void test_v2_crc32c_mismatch_is_rejected(void **state)
{
    (void)state;
    unsigned char b[128];
    size_t n = v2_tcp4(b, TLVS, sizeof(TLVS));
    seal_crc(b, n);
    assert_int_equal(parse(b, n, &(sks__proxy_header){ 0 }), (ssize_t)n);
    b[n - 1] ^= 1;                           /* the checksum itself */
    assert_rejected(b, n, -EPROTO);
    b[n - 1] ^= 1;
    b[16 + 3] ^= 1;                          /* an address byte */
    assert_rejected(b, n, -EPROTO);
    /* A CRC32C TLV must hold 4 bytes. */
    static const unsigned char short_crc[] = { 0x03, 0x00, 0x03, 0, 0, 0 };
    assert_rejected(b, v2_tcp4(b, short_crc, sizeof(short_crc)), -EPROTO);
}

static void test_only_the_configured_versions_are_accepted(void **state)
{
    (void)state;
    unsigned char b[64];
    size_t n = v2_tcp4(b, NULL, 0);
    sks__proxy_header h;
    size_t l1 = strlen(V1_TCP4);

    assert_int_equal(sks__proxy_parse(V1_TCP4, l1, SKS_PROXY_V2, &h), -EPROTO);
    assert_int_equal(sks__proxy_parse(b, n, SKS_PROXY_V1, &h), -EPROTO);
    assert_int_equal(sks__proxy_parse(V1_TCP4, l1, SKS_PROXY_V1, &h),
                     (ssize_t)l1);
    assert_int_equal(sks__proxy_parse(b, n, SKS_PROXY_V2, &h), (ssize_t)n);
    /* Not a PROXY header at all: rejected from its first byte. */
    assert_int_equal(sks__proxy_parse("G", 1, SKS_PROXY_ANY, &h), -EPROTO);
    assert_int_equal(sks__proxy_parse("\x16", 1, SKS_PROXY_ANY, &h), -EPROTO);
}

/* ------------------------------------------------------------------------ */
/* Servers                                                                   */

/* What the handler saw, one reply line per request line:
 * "CLIENT PROXY LINE" (PROXY "-" when there is none). */
static atomic_int handled;

static int report_handle(sks_handler *h)
{
    char line[256], out[1024], who[SKS_ADDRSTRLEN], via[SKS_ADDRSTRLEN] = "-";
    const sks_addr *proxy = sks_request_proxy_address(sks_handler_request(h));
    ssize_t n;

    atomic_fetch_add(&handled, 1);
    if (sks_addr_format(sks_handler_client_address(h), who, sizeof(who)) < 0)
        return SKS_EHANDLER;
    if (proxy != NULL && sks_addr_format(proxy, via, sizeof(via)) < 0)
        return SKS_EHANDLER;
    while ((n = sks_rfile_readline(sks_handler_rfile(h), line,
                                   sizeof(line))) > 0) {
        int len = snprintf(out, sizeof(out), "%s %s %.*s", who, via, (int)n,
                           line);
        if (sks_wfile_write(sks_handler_wfile(h), out, (size_t)len) < 0)
            return SKS_EHANDLER;
    }
    return (int)n;
}

static const sks_handler_class report = {
    .setup = sks_stream_setup,
    .handle = report_handle,
    .finish = sks_stream_finish,
};

/* Errors reported through handle_error, in order. */
static pthread_mutex_t errs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t errs_cond = PTHREAD_COND_INITIALIZER;
static int errs[512];
static size_t nerrs;

static void record_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    pthread_mutex_lock(&errs_lock);
    if (nerrs < sizeof(errs) / sizeof(errs[0]))
        errs[nerrs] = err;
    nerrs++;
    pthread_cond_broadcast(&errs_cond);
    pthread_mutex_unlock(&errs_lock);
}

static void reset(void)
{
    pthread_mutex_lock(&errs_lock);
    nerrs = 0;
    pthread_mutex_unlock(&errs_lock);
    atomic_store(&handled, 0);
}

/* Waits up to ms for the n-th error; returns it, or 1 if none came. */
static int wait_error(size_t n, int ms)
{
    struct timespec ts;
    realtime_deadline(&ts, ms);
    pthread_mutex_lock(&errs_lock);
    while (nerrs < n)
        if (pthread_cond_timedwait(&errs_cond, &errs_lock, &ts) != 0)
            break;
    int e = nerrs >= n ? errs[n - 1] : 1;
    pthread_mutex_unlock(&errs_lock);
    return e;
}

static size_t error_count(void)
{
    pthread_mutex_lock(&errs_lock);
    size_t n = nerrs;
    pthread_mutex_unlock(&errs_lock);
    return n;
}

/* A server of base's kind with record_error, PROXY versions and timeout,
 * serving in a thread. */
static sks_server_ops ops_buf[4];

static void start(test_server *ts, const sks_server_ops *base, int slot,
                  const char *address, unsigned versions, double timeout)
{
    sks_server *srv = NULL;
    ops_buf[slot] = *base;
    ops_buf[slot].handle_error = record_error;
    assert_int_equal(sks_server_new(&srv, &ops_buf[slot], address, &report,
                                    NULL, 0), 0);
    assert_int_equal(sks_server_set_proxy_protocol(srv, versions), 0);
    if (timeout > 0)
        assert_int_equal(sks_server_set_proxy_timeout(srv, timeout), 0);
    reset();
    ts_serve(ts, srv, 0.01);
}

/* Sends header + "hello\n" in one segment and expects the handler's view. */
static void assert_seen_as(const char *address, const void *hdr, size_t n,
                           const char *client)
{
    char buf[2048], want[1024], me[SKS_ADDRSTRLEN]; /* me: the proxy */
    int c = client_connect(address);
    assert_true(c >= 0);
    memcpy(buf, hdr, n);
    memcpy(buf + n, "hello\n", 6);
    assert_int_equal(client_send_all(c, buf, n + 6), 0);
    socket_name(c, me, sizeof(me));
    snprintf(want, sizeof(want), "%s %s hello\n", client ? client : me, me);
    ssize_t r = client_recv_line(c, buf, sizeof(buf) - 1);
    assert_true(r > 0);
    buf[r] = '\0';
    assert_string_equal(buf, want);
    /* The connection goes on: a second line, same view. */
    assert_int_equal(client_send_all(c, "again\n", 6), 0);
    snprintf(want, sizeof(want), "%s %s again\n", client ? client : me, me);
    r = client_recv_line(c, buf, sizeof(buf) - 1);
    assert_true(r > 0);
    buf[r] = '\0';
    assert_string_equal(buf, want);
    /* shutdown, not only close: a forked request child holds a copy of
     * this socket (it was open in this process at fork). */
    shutdown(c, SHUT_WR);
    client_close(c);
}

static void handler_sees_original_client_and_proxy_address(const sks_server_ops *ops)
{
    test_server ts;
    unsigned char b[600];
    size_t n;
    int fds = count_open_fds();

    start(&ts, ops, 0, "127.0.0.1:0", SKS_PROXY_ANY, 0);
    assert_seen_as(ts.address, V1_TCP4, strlen(V1_TCP4), "127.0.0.7:54321");
    assert_seen_as(ts.address, V1_TCP6, strlen(V1_TCP6), "[::1]:1000");
    assert_seen_as(ts.address, b, v2_tcp4(b, NULL, 0), "127.0.0.7:54321");
    assert_seen_as(ts.address, b, v2_tcp6(b), "[::1]:1000");
    assert_seen_as(ts.address, b, v2_unix(b),
                   "unix:/tmp/sks-proxy-client.sock");
    n = v2_tcp4(b, TLVS, sizeof(TLVS));
    seal_crc(b, n);
    assert_seen_as(ts.address, b, n, "127.0.0.7:54321");
    /* LOCAL and UNKNOWN: the real peer is the client. */
    assert_seen_as(ts.address, b, v2(b, 0x20, 0x00, NULL, 0), NULL);
    assert_seen_as(ts.address, "PROXY UNKNOWN\r\n", 15, NULL);
    ts_stop(&ts);
    assert_int_equal(error_count(), 0);
    assert_int_equal(atomic_load(&handled), 8);
    assert_int_equal(count_open_fds(), fds);
}

static void test_handler_sees_original_client_and_proxy_address(void **state)
{
    (void)state;
    handler_sees_original_client_and_proxy_address(&sks_threading_tcp_ops);
}

static void test_handler_sees_original_client_and_proxy_address_fiber(void **state)
{
    (void)state;
    handler_sees_original_client_and_proxy_address(&sks_fiber_tcp_ops);
}

/* A header that trickles in byte by byte is waited for, and the payload
 * behind it reaches the handler intact. */
static void header_arriving_in_pieces_is_assembled(const sks_server_ops *ops)
{
    test_server ts;
    unsigned char b[64];
    char buf[256];
    int one = 1;

    start(&ts, ops, 0, "127.0.0.1:0", SKS_PROXY_ANY, 0);
    for (int v = 1; v <= 2; v++) {
        const unsigned char *hdr = v == 1 ? (const unsigned char *)V1_TCP4 : b;
        size_t n = v == 1 ? strlen(V1_TCP4) : v2_tcp4(b, NULL, 0);
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(client_send_all(c, hdr + i, 1), 0);
            sleep_ms(1); /* let each byte leave on its own */
        }
        assert_int_equal(client_send_all(c, "x\n", 2), 0);
        ssize_t r = client_recv_line(c, buf, sizeof(buf) - 1);
        assert_true(r > 0);
        buf[r] = '\0';
        assert_non_null(strstr(buf, "127.0.0.7:54321 "));
        assert_non_null(strstr(buf, " x\n"));
        client_close(c);
    }
    ts_stop(&ts);
    assert_int_equal(error_count(), 0);
}

static void test_header_arriving_in_pieces_is_assembled(void **state)
{
    (void)state;
    header_arriving_in_pieces_is_assembled(&sks_threading_tcp_ops);
}

static void test_header_arriving_in_pieces_is_assembled_fiber(void **state)
{
    (void)state;
    header_arriving_in_pieces_is_assembled(&sks_fiber_tcp_ops);
}

/* Sends bytes, half-closes, and expects the server to close without a
 * reply: the handler never ran.  Bytes the server left unread make its
 * close a reset, so either end of the connection is fine. */
static void send_and_expect_close(const char *address, const void *p,
                                  size_t n, bool half_close)
{
    char buf[64];
    int c = client_connect(address);
    assert_true(c >= 0);
    if (n > 0)
        assert_int_equal(client_send_all(c, p, n), 0);
    if (half_close)
        shutdown(c, SHUT_WR);
    ssize_t r = client_recv_all(c, buf, sizeof(buf));
    if (r != 0 && r != -ECONNRESET)
        fail_msg("expected the connection closed, got %zd", r);
    client_close(c);
}

static void test_truncated_headers_close_without_handler(void **state)
{
    (void)state;
    test_server ts;
    unsigned char b[128];
    size_t expected = 0;
    int fds = count_open_fds();

    start(&ts, &sks_threading_tcp_ops, 0, "127.0.0.1:0", SKS_PROXY_ANY, 0);
    /* Cut at every byte, then end of input. */
    size_t n1 = strlen(V1_TCP4);
    for (size_t p = 0; p < n1; p++, expected++)
        send_and_expect_close(ts.address, V1_TCP4, p, true);
    size_t n2 = v2_tcp4(b, TLVS, sizeof(TLVS));
    seal_crc(b, n2);
    for (size_t p = 0; p < n2; p++, expected++)
        send_and_expect_close(ts.address, b, p, true);
    for (size_t i = 1; i <= expected; i++)
        assert_int_equal(wait_error(i, 5000), -EPROTO);
    ts_stop(&ts);
    assert_int_equal(error_count(), expected);
    assert_int_equal(atomic_load(&handled), 0);
    assert_int_equal(count_open_fds(), fds);
}

static void test_malformed_headers_close_and_report_errors(void **state)
{
    (void)state;
    test_server ts;
    unsigned char b[64];
    char big[300];

    start(&ts, &sks_threading_tcp_ops, 0, "127.0.0.1:0", SKS_PROXY_ANY, 0);
    /* A client that does not speak the protocol: no waiting for more. */
    send_and_expect_close(ts.address, "GET / HTTP/1.0\r\n\r\n", 18, false);
    assert_int_equal(wait_error(1, 5000), -EPROTO);
    send_and_expect_close(ts.address, "PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", 30,
                          false);
    assert_int_equal(wait_error(2, 5000), -EPROTO);
    /* An unknown version. */
    size_t n = v2_tcp4(b, NULL, 0);
    b[12] = 0x31;
    send_and_expect_close(ts.address, b, n, false);
    assert_int_equal(wait_error(3, 5000), -EPROTO);
    /* Oversized: a v1 line with no end, a v2 length past the maximum. */
    memset(big, 'a', sizeof(big));
    memcpy(big, "PROXY UNKNOWN ", 14);
    send_and_expect_close(ts.address, big, sizeof(big), false);
    assert_int_equal(wait_error(4, 5000), -EMSGSIZE);
    n = v2_tcp4(b, NULL, 0);
    b[14] = 0xFF;
    send_and_expect_close(ts.address, b, n, false);
    assert_int_equal(wait_error(5, 5000), -EMSGSIZE);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&handled), 0);
}

/* A proxy that connects and says nothing is cut at the header timeout,
 * and meanwhile a threading or fiber server serves others at once. */
static void silent_peer_times_out_without_blocking_accept(const sks_server_ops *ops)
{
    test_server ts;
    char buf[256];

    start(&ts, ops, 0, "127.0.0.1:0", SKS_PROXY_ANY, 1.0);
    double t0 = now_seconds();
    int silent = client_connect(ts.address);
    assert_true(silent >= 0);
    for (int i = 0; i < 3; i++) {
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_int_equal(client_send_all(c, V1_TCP4 "hi\n",
                                         strlen(V1_TCP4) + 3), 0);
        assert_true(client_recv_line(c, buf, sizeof(buf)) > 0);
        client_close(c);
    }
    /* Served while the silent one (accepted first) still waits for its
     * header: a blocked accept loop would have served them after it. */
    assert_int_equal(error_count(), 0);
    assert_int_equal(wait_error(1, 5000), -ETIMEDOUT);
    double waited = now_seconds() - t0;
    assert_true(waited >= 0.95);
    assert_true(waited < 4.0);
    assert_int_equal(client_recv_all(silent, buf, sizeof(buf)), 0);
    client_close(silent);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&handled), 3);
}

static void test_silent_peer_times_out_without_blocking_accept(void **state)
{
    (void)state;
    silent_peer_times_out_without_blocking_accept(&sks_threading_tcp_ops);
}

static void test_silent_peer_times_out_without_blocking_accept_fiber(void **state)
{
    (void)state;
    silent_peer_times_out_without_blocking_accept(&sks_fiber_tcp_ops);
}

/* The synchronous server reads the header in its loop: the timeout is
 * what bounds a silent peer's hold on it. */
static void test_sync_server_is_held_no_longer_than_the_timeout(void **state)
{
    (void)state;
    test_server ts;
    char buf[256];

    start(&ts, &sks_tcp_ops, 0, "127.0.0.1:0", SKS_PROXY_ANY, 0.3);
    double t0 = now_seconds();
    int silent = client_connect(ts.address);
    assert_true(silent >= 0);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, V1_TCP4 "hi\n", strlen(V1_TCP4) + 3),
                     0);
    assert_true(client_recv_line(c, buf, sizeof(buf)) > 0);
    client_close(c);
    assert_true(now_seconds() - t0 < 3.0);
    assert_int_equal(wait_error(1, 5000), -ETIMEDOUT);
    client_close(silent);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&handled), 1);
}

/* One deadline for the whole header: a proxy trickling a byte every
 * 50 ms (each piece well within the timeout) is still cut at 0.3 s. */
static void header_trickling_in_is_cut_at_one_deadline(const sks_server_ops *ops)
{
    test_server ts;
    char buf[64];
    int one = 1;

    start(&ts, ops, 0, "127.0.0.1:0", SKS_PROXY_ANY, 0.3);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    double t0 = now_seconds();
    /* 43 bytes at 50 ms would take 2.1 s; stop at the server's close. */
    for (size_t i = 0; i < strlen(V1_TCP4) && error_count() == 0; i++) {
        if (client_send_all(c, &V1_TCP4[i], 1) != 0)
            break;
        sleep_ms(50);
    }
    assert_int_equal(wait_error(1, 5000), -ETIMEDOUT);
    double waited = now_seconds() - t0;
    if (waited < 0.25 || waited > 1.5)
        fail_msg("cut after %.3f s, header timeout 0.3 s", waited);
    ssize_t r = client_recv_all(c, buf, sizeof(buf));
    if (r != 0 && r != -ECONNRESET)
        fail_msg("expected the connection closed, got %zd", r);
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&handled), 0);
}

static void test_header_trickling_in_is_cut_at_one_deadline(void **state)
{
    (void)state;
    header_trickling_in_is_cut_at_one_deadline(&sks_threading_tcp_ops);
}

static void test_header_trickling_in_is_cut_at_one_deadline_fiber(void **state)
{
    (void)state;
    header_trickling_in_is_cut_at_one_deadline(&sks_fiber_tcp_ops);
}

static void test_forking_and_pool_servers_read_the_header(void **state)
{
    (void)state;
    test_server ts;
    unsigned char b[64];

    start(&ts, &sks_forking_tcp_ops, 1, "127.0.0.1:0", SKS_PROXY_V2, 0);
    assert_seen_as(ts.address, b, v2_tcp4(b, NULL, 0), "127.0.0.7:54321");
    ts_stop(&ts);
    start(&ts, &sks_pool_tcp_ops, 2, "127.0.0.1:0", SKS_PROXY_V1, 0);
    assert_seen_as(ts.address, V1_TCP6, strlen(V1_TCP6), "[::1]:1000");
    ts_stop(&ts);
}

static void test_unix_stream_server_reads_the_header(void **state)
{
    (void)state;
    test_server ts;
    char path[SKS_ADDRSTRLEN], buf[512];
    unsigned char b[64];

    unix_temp_address(path, sizeof(path));
    start(&ts, &sks_threading_unix_stream_ops, 0, path, SKS_PROXY_ANY, 0);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    size_t n = v2_tcp4(b, NULL, 0);
    memcpy(buf, b, n);
    memcpy(buf + n, "hi\n", 3);
    assert_int_equal(client_send_all(c, buf, n + 3), 0);
    ssize_t r = client_recv_line(c, buf, sizeof(buf) - 1);
    assert_true(r > 0);
    buf[r] = '\0';
    /* The proxy's own address is the unnamed Unix peer. */
    assert_string_equal(buf, "127.0.0.7:54321 unix: hi\n");
    client_close(c);
    ts_stop(&ts);
    unlink(path + 5);
}

static void test_untrusted_peer_is_refused(void **state)
{
    (void)state;
    test_server ts;
    sks_server *srv = NULL;
    char buf[256];

    ops_buf[0] = sks_threading_tcp_ops;
    ops_buf[0].handle_error = record_error;
    assert_int_equal(sks_server_new(&srv, &ops_buf[0], "127.0.0.1:0", &report,
                                    NULL, 0), 0);
    assert_int_equal(sks_server_set_proxy_protocol(srv, SKS_PROXY_ANY), 0);
    assert_int_equal(sks_server_add_trusted_proxy(srv, "127.0.0.2"), 0);
    assert_int_equal(sks_server_add_trusted_proxy(srv, "::1"), 0);
    reset();
    ts_serve(&ts, srv, 0.01);
    /* From 127.0.0.1, not in the list: refused before the header. */
    send_and_expect_close(ts.address, V1_TCP4 "hi\n", strlen(V1_TCP4) + 3,
                          false);
    assert_int_equal(wait_error(1, 5000), -EACCES);
    ts_stop(&ts);
    assert_int_equal(atomic_load(&handled), 0);

    /* A network that holds 127.0.0.1 lets it through. */
    assert_int_equal(sks_server_new(&srv, &ops_buf[0], "127.0.0.1:0", &report,
                                    NULL, 0), 0);
    assert_int_equal(sks_server_set_proxy_protocol(srv, SKS_PROXY_ANY), 0);
    assert_int_equal(sks_server_add_trusted_proxy(srv, "10.0.0.0/8"), 0);
    assert_int_equal(sks_server_add_trusted_proxy(srv, "127.0.0.0/30"), 0);
    reset();
    ts_serve(&ts, srv, 0.01);
    assert_seen_as(ts.address, V1_TCP4, strlen(V1_TCP4), "127.0.0.7:54321");
    ts_stop(&ts);
    assert_int_equal(error_count(), 0);

    /* An IPv4-mapped peer matches an IPv4 entry. */
    assert_int_equal(sks_server_new(&srv, &ops_buf[0], "[::ffff:127.0.0.1]:0",
                                    &report, NULL, 0), 0);
    assert_int_equal(sks_server_set_proxy_protocol(srv, SKS_PROXY_ANY), 0);
    assert_int_equal(sks_server_add_trusted_proxy(srv, "127.0.0.1/32"), 0);
    reset();
    ts_serve(&ts, srv, 0.01);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_int_equal(client_send_all(c, V1_TCP4 "hi\n", strlen(V1_TCP4) + 3),
                     0);
    assert_true(client_recv_line(c, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "127.0.0.7:54321 "));
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(error_count(), 0);
}

static void test_settings_are_validated(void **state)
{
    (void)state;
    sks_server *srv = NULL;

    assert_int_equal(sks_server_new(&srv, &sks_udp_ops, "127.0.0.1:0",
                                    &sks_datagram_handler, NULL, SKS_NO_BIND),
                     0);
    assert_int_equal(sks_server_set_proxy_protocol(srv, SKS_PROXY_V1),
                     -EOPNOTSUPP);
    assert_int_equal(sks_server_set_proxy_protocol(srv, 0), 0);
    sks_server_free(srv);

    assert_int_equal(sks_server_new(&srv, &sks_tcp_ops, "127.0.0.1:0",
                                    &report, NULL, SKS_NO_BIND), 0);
    assert_int_equal(sks_server_set_proxy_protocol(srv, 4), -EINVAL);
    assert_int_equal(sks_server_set_proxy_protocol(srv, SKS_PROXY_ANY), 0);
    assert_int_equal(sks_server_set_proxy_timeout(srv, 0), -EINVAL);
    assert_int_equal(sks_server_set_proxy_timeout(srv, -1), -EINVAL);
    assert_int_equal(sks_server_set_proxy_timeout(srv, NAN), -EINVAL);
    assert_int_equal(sks_server_set_proxy_timeout(srv, INFINITY), -EINVAL);
    assert_int_equal(sks_server_set_proxy_timeout(srv, 3.0), 0);
    static const char *const bad[] = { "", "abc", "300.1.1.1", "1.2.3.4/33",
                                       "::1/129", "1.2.3.4/", "1.2.3.4/x",
                                       "[::1]", "1.2.3.4/0008", NULL };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sks_server_add_trusted_proxy(srv, bad[i]),
                         SKS_EADDRESS);
    for (int i = 0; i < 16; i++)
        assert_int_equal(sks_server_add_trusted_proxy(srv, "fd00::/8"), 0);
    assert_int_equal(sks_server_add_trusted_proxy(srv, "127.0.0.1"), -ENOSPC);
    sks_server_free(srv);
}

static void test_no_proxy_address_without_the_protocol(void **state)
{
    (void)state;
    test_server ts;
    char buf[1024], want[1024], me[SKS_ADDRSTRLEN];

    start(&ts, &sks_threading_tcp_ops, 0, "127.0.0.1:0", 0, 0);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    socket_name(c, me, sizeof(me));
    /* A PROXY line is just data here. */
    assert_int_equal(client_send_all(c, V1_TCP4, strlen(V1_TCP4)), 0);
    snprintf(want, sizeof(want), "%s - %s", me, V1_TCP4);
    ssize_t r = client_recv_line(c, buf, sizeof(buf) - 1);
    assert_true(r > 0);
    buf[r] = '\0';
    assert_string_equal(buf, want);
    client_close(c);
    ts_stop(&ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_of_the_test_matches_the_standard_check_value),
        cmocka_unit_test(test_valid_v1_headers_parse_to_their_addresses),
        cmocka_unit_test(test_valid_v2_headers_parse_to_their_addresses),
        cmocka_unit_test(test_v2_local_and_unspec_keep_the_real_addresses),
        cmocka_unit_test(test_truncated_at_every_byte_is_incomplete),
        cmocka_unit_test(test_v1_each_field_wrong_in_turn_is_rejected),
        cmocka_unit_test(test_v1_longer_than_107_bytes_is_rejected_as_oversized),
        cmocka_unit_test(test_v2_each_field_wrong_in_turn_is_rejected),
        cmocka_unit_test(test_v2_length_overflow_is_rejected),
        cmocka_unit_test(test_v2_crc32c_mismatch_is_rejected),
        cmocka_unit_test(test_only_the_configured_versions_are_accepted),
        cmocka_unit_test(test_handler_sees_original_client_and_proxy_address),
        cmocka_unit_test(test_handler_sees_original_client_and_proxy_address_fiber),
        cmocka_unit_test(test_header_arriving_in_pieces_is_assembled),
        cmocka_unit_test(test_header_arriving_in_pieces_is_assembled_fiber),
        cmocka_unit_test(test_truncated_headers_close_without_handler),
        cmocka_unit_test(test_malformed_headers_close_and_report_errors),
        cmocka_unit_test(test_silent_peer_times_out_without_blocking_accept),
        cmocka_unit_test(test_silent_peer_times_out_without_blocking_accept_fiber),
        cmocka_unit_test(test_sync_server_is_held_no_longer_than_the_timeout),
        cmocka_unit_test(test_header_trickling_in_is_cut_at_one_deadline),
        cmocka_unit_test(test_header_trickling_in_is_cut_at_one_deadline_fiber),
        cmocka_unit_test(test_forking_and_pool_servers_read_the_header),
        cmocka_unit_test(test_unix_stream_server_reads_the_header),
        cmocka_unit_test(test_untrusted_peer_is_refused),
        cmocka_unit_test(test_settings_are_validated),
        cmocka_unit_test(test_no_proxy_address_without_the_protocol),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
