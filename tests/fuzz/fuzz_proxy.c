/*
 * fuzz_proxy.c - libFuzzer target: the PROXY protocol header parser
 * (v1 and v2), and the reading of a header from a connection.
 *
 * Input: byte 0 picks the versions accepted (its low two bits; 0 means
 * both), the rest is what the proxy sends.  Checks:
 *   - a result is a length within the input and SKS_PROXY_HEADER_MAX, 0
 *     (incomplete), or -EPROTO / -EMSGSIZE;
 *   - a header found is found again, the same, from exactly its bytes, and
 *     every prefix of it asks for more (never an error, never a header);
 *   - an error stays an error whatever bytes follow;
 *   - the addresses of a header format in the library's syntax, and a
 *     canonical header rebuilt from them parses back to them;
 *   - read from a real connection (a socketpair holding the input, then
 *     end of input), the header is applied as parsed, exactly its bytes
 *     are consumed, and the rest arrives intact; an incomplete header is
 *     -EPROTO.
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "../../src/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool px_same_addr(const sks_addr *a, const sks_addr *b)
{
    return a->len == b->len && memcmp(&a->u, &b->u, a->len) == 0;
}

static bool px_same_header(const sks__proxy_header *a,
                        const sks__proxy_header *b)
{
    if (a->version != b->version || a->local != b->local)
        return false;
    return a->local || (px_same_addr(&a->src, &b->src) &&
                        px_same_addr(&a->dst, &b->dst));
}

static void px_check_address(const sks_addr *a, int version)
{
    char text[SKS_ADDRSTRLEN];
    int f = a->u.sa.sa_family;
    FUZZ_CHECK(f == AF_INET || f == AF_INET6 || (version == 2 && f == AF_UNIX));
    FUZZ_CHECK(a->len <= sizeof(a->u));
    FUZZ_CHECK(sks_addr_format(a, text, sizeof(text)) > 0);
}

/* A canonical header for h (v1 text for v1 input, v2 binary otherwise). */
static size_t px_rebuild(const sks__proxy_header *h, uint8_t *b)
{
    static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                     0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
    int f = h->src.u.sa.sa_family;
    if (h->version == 1) {
        char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
        unsigned sp, dp;
        if (f == AF_INET) {
            inet_ntop(AF_INET, &h->src.u.in.sin_addr, s, sizeof(s));
            inet_ntop(AF_INET, &h->dst.u.in.sin_addr, d, sizeof(d));
            sp = ntohs(h->src.u.in.sin_port);
            dp = ntohs(h->dst.u.in.sin_port);
        } else {
            inet_ntop(AF_INET6, &h->src.u.in6.sin6_addr, s, sizeof(s));
            inet_ntop(AF_INET6, &h->dst.u.in6.sin6_addr, d, sizeof(d));
            sp = ntohs(h->src.u.in6.sin6_port);
            dp = ntohs(h->dst.u.in6.sin6_port);
        }
        return (size_t)snprintf((char *)b, 128, "PROXY %s %s %s %u %u\r\n",
                                f == AF_INET ? "TCP4" : "TCP6", s, d, sp, dp);
    }
    memcpy(b, sig, 12);
    b[12] = 0x21;
    size_t n;
    if (f == AF_INET) {
        b[13] = 0x11;
        memcpy(b + 16, &h->src.u.in.sin_addr, 4);
        memcpy(b + 20, &h->dst.u.in.sin_addr, 4);
        memcpy(b + 24, &h->src.u.in.sin_port, 2);
        memcpy(b + 26, &h->dst.u.in.sin_port, 2);
        n = 12;
    } else if (f == AF_INET6) {
        b[13] = 0x21;
        memcpy(b + 16, &h->src.u.in6.sin6_addr, 16);
        memcpy(b + 32, &h->dst.u.in6.sin6_addr, 16);
        memcpy(b + 48, &h->src.u.in6.sin6_port, 2);
        memcpy(b + 50, &h->dst.u.in6.sin6_port, 2);
        n = 36;
    } else {
        b[13] = 0x31;
        memcpy(b + 16, h->src.u.un.sun_path, 108);
        memcpy(b + 124, h->dst.u.un.sun_path, 108);
        n = 216;
    }
    b[14] = 0;
    b[15] = (uint8_t)n;
    return 16 + n;
}

/* Reads the header from a socketpair holding the input, as a server. */
static void px_check_reader(const uint8_t *p, size_t n, unsigned versions,
                         ssize_t r, const sks__proxy_header *h)
{
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    /* The whole input fits in the socket buffer (max_len is small). */
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(sv[1], p + off, n - off, MSG_NOSIGNAL);
        FUZZ_CHECK(w > 0);
        off += (size_t)w;
    }
    shutdown(sv[1], SHUT_WR);

    static sks_server srv;
    srv.proxy_versions = versions;
    srv.proxy_timeout = 5.0;
    sks_request *req = sks__request_new(&srv, sv[0], 0);
    FUZZ_CHECK(req != NULL);
    req->client.u.in.sin_family = AF_INET;
    req->client.u.in.sin_port = htons(9);
    req->client.u.in.sin_addr.s_addr = htonl(0x7F000001);
    req->client.len = sizeof(req->client.u.in);
    sks_addr real = req->client;

    int err = sks__proxy_accept(&srv, req);
    if (r > 0) {
        FUZZ_CHECK(err == 0);
        FUZZ_CHECK(req->proxied);
        FUZZ_CHECK(px_same_addr(sks_request_proxy_address(req), &real));
        FUZZ_CHECK(px_same_addr(&req->client, h->local ? &real : &h->src));
        /* Exactly the header was consumed: the payload follows intact. */
        size_t rest = n - (size_t)r, got = 0;
        uint8_t *buf = malloc(rest + 1);
        FUZZ_CHECK(buf != NULL);
        ssize_t k;
        while ((k = recv(sv[0], buf + got, rest + 1 - got, 0)) > 0)
            got += (size_t)k;
        FUZZ_CHECK(got == rest);
        FUZZ_CHECK(rest == 0 || memcmp(buf, p + r, rest) == 0);
        free(buf);
    } else {
        FUZZ_CHECK(err == (r < 0 ? (int)r : -EPROTO));
        FUZZ_CHECK(!req->proxied);
        FUZZ_CHECK(px_same_addr(&req->client, &real));
    }
    sks__request_free(&srv, req);
    close(sv[0]);
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned versions = data[0] & 3u;
    if (versions == 0)
        versions = SKS_PROXY_ANY;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    sks__proxy_header h, again;

    ssize_t r = sks__proxy_parse(p, n, versions, &h);
    if (r > 0) {
        FUZZ_CHECK((size_t)r <= n && r <= SKS_PROXY_HEADER_MAX);
        FUZZ_CHECK(h.version == 1 || h.version == 2);
        FUZZ_CHECK(versions & (h.version == 1 ? SKS_PROXY_V1 : SKS_PROXY_V2));
        if (h.version == 1)
            FUZZ_CHECK(r <= 107);
        FUZZ_CHECK(sks__proxy_parse(p, (size_t)r, versions, &again) == r);
        FUZZ_CHECK(px_same_header(&h, &again));
        /* Every prefix asks for more: all of them for short headers, a
         * sample of them for long ones. */
        size_t step = r <= 256 ? 1 : (size_t)r / 61 + 1;
        for (size_t q = 0; q < (size_t)r; q += step)
            FUZZ_CHECK(sks__proxy_parse(p, q, versions, &again) == 0);
        FUZZ_CHECK(sks__proxy_parse(p, (size_t)r - 1, versions, &again) == 0);
        if (!h.local) {
            px_check_address(&h.src, h.version);
            px_check_address(&h.dst, h.version);
            uint8_t canon[256];
            size_t cn = px_rebuild(&h, canon);
            FUZZ_CHECK(sks__proxy_parse(canon, cn, SKS_PROXY_ANY, &again) ==
                       (ssize_t)cn);
            FUZZ_CHECK(px_same_header(&h, &again));
        }
    } else if (r == 0) {
        FUZZ_CHECK(n < SKS_PROXY_HEADER_MAX);
    } else {
        FUZZ_CHECK(r == -EPROTO || r == -EMSGSIZE);
        /* More bytes never turn an error into a header. */
        static const uint8_t tail[] = "\r\n\0\0\0\0PROXY UNKNOWN\r\n";
        uint8_t *more = malloc(n + sizeof(tail));
        FUZZ_CHECK(more != NULL);
        memcpy(more, p, n);
        memcpy(more + n, tail, sizeof(tail));
        FUZZ_CHECK(sks__proxy_parse(more, n + sizeof(tail), versions, &again) <
                   0);
        free(more);
    }
    px_check_reader(p, n, versions, r, &h);
    return 0;
}
