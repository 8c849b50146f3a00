/*
 * proxy.c - HAProxy's PROXY protocol, versions 1 and 2, on the receiving
 * side: the header parser, the trusted-proxy filter, and the reading of a
 * request's header before its handler runs (called from finish_request).
 *
 * The specification is HAProxy's doc/proxy-protocol.txt.  What this file
 * decides where the specification leaves a choice:
 *   - v1 UNKNOWN, v2 LOCAL, and v2 headers of the UNSPEC family or
 *     protocol are accepted and keep the connection's real addresses;
 *   - v2 TLVs must be well framed (each inside the header); their values
 *     are skipped, but a CRC32C TLV is verified, as the specification
 *     requires of a receiver that supports it;
 *   - a v2 header longer than SKS_PROXY_HEADER_MAX is refused, so the
 *     whole header is always parsed from one bounded buffer.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define V1_MAX 107                 /* the longest line, CRLF included */
#define V2_FIXED 16                /* signature, ver_cmd, fam, len */

static const unsigned char v1_sig[6] = { 'P', 'R', 'O', 'X', 'Y', ' ' };
static const unsigned char v2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* v2 families, protocols, commands and the one TLV type we look into. */
enum { FAM_UNSPEC, FAM_INET, FAM_INET6, FAM_UNIX };
enum { PROTO_UNSPEC, PROTO_STREAM, PROTO_DGRAM };
enum { CMD_LOCAL, CMD_PROXY };
#define PP2_TYPE_CRC32C 0x03

/* ------------------------------------------------------------------------ */
/* Version 1: one text line                                                  */

/* A decimal number of 1..maxdigits digits without heading zeroes (the
 * specification forbids them, as octal look-alikes), at most max. */
static bool v1_number(const char *s, size_t n, unsigned max, unsigned *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* Exactly four decimal numbers 0..255 separated by single dots.  Not
 * inet_pton: its strictness about heading zeroes varies by libc. */
static bool v1_ipv4(const char *s, size_t n, struct in_addr *out)
{
    unsigned char b[4];
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t start = i;
        while (i < n && s[i] != '.')
            i++;
        unsigned v;
        if (!v1_number(s + start, i - start, 255, &v))
            return false;
        b[part] = (unsigned char)v;
        if (part < 3) {
            if (i >= n)
                return false;
            i++; /* the dot */
        }
    }
    if (i != n)
        return false;
    memcpy(&out->s_addr, b, 4);
    return true;
}

static bool v1_ipv6(const char *s, size_t n, struct in6_addr *out)
{
    char tmp[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(tmp))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F') || s[i] == ':' || s[i] == '.'))
            return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET6, tmp, out) == 1;
}

/* Fills an address of family (AF_INET/AF_INET6) from its text and port. */
static bool v1_address(int family, const char *ip, size_t iplen,
                       const char *port, size_t portlen, sks_addr *out)
{
    unsigned p;
    memset(out, 0, sizeof(*out));
    if (!v1_number(port, portlen, 65535, &p))
        return false;
    if (family == AF_INET) {
        out->u.in.sin_family = AF_INET;
        out->u.in.sin_port = htons((uint16_t)p);
        out->len = sizeof(out->u.in);
        return v1_ipv4(ip, iplen, &out->u.in.sin_addr);
    }
    out->u.in6.sin6_family = AF_INET6;
    out->u.in6.sin6_port = htons((uint16_t)p);
    out->len = sizeof(out->u.in6);
    return v1_ipv6(ip, iplen, &out->u.in6.sin6_addr);
}

/* Parses the complete line s[0..n) (CRLF excluded, "PROXY " included). */
static bool v1_line(const char *s, size_t n, sks__proxy_header *out)
{
    const char *f[6];
    size_t len[6];
    int family;

    s += sizeof(v1_sig);
    n -= sizeof(v1_sig);
    /* UNKNOWN: whatever follows it up to the CRLF is ignored. */
    if (n >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (n == 7 || s[7] == ' ')) {
        out->local = true;
        return true;
    }
    /* TCP4|TCP6 SP src SP dst SP sport SP dport: exactly one space each. */
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ' ')
            continue;
        if (k == 5)
            return false; /* a sixth field */
        f[k] = s + start;
        len[k] = i - start;
        if (len[k] == 0)
            return false; /* two spaces, or a trailing one */
        k++;
        start = i + 1;
    }
    if (k != 5)
        return false;
    if (len[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
        family = AF_INET;
    else if (len[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return false;
    out->local = false;
    return v1_address(family, f[1], len[1], f[3], len[3], &out->src) &&
           v1_address(family, f[2], len[2], f[4], len[4], &out->dst);
}

static ssize_t v1_parse(const unsigned char *b, size_t n,
                        sks__proxy_header *out)
{
    /* Reject as soon as the bytes so far cannot begin a valid line, so the
     * sender learns of its mistake at once (the specification's advice):
     * the protocol name must be one of the three. */
    static const char *const protos[] = { "TCP4 ", "TCP6 ", "UNKNOWN" };
    if (n > sizeof(v1_sig)) {
        const char *p = (const char *)b + sizeof(v1_sig);
        size_t m = n - sizeof(v1_sig);
        bool maybe = false;
        for (size_t i = 0; i < 3 && !maybe; i++) {
            size_t l = strlen(protos[i]);
            maybe = memcmp(p, protos[i], m < l ? m : l) == 0;
        }
        if (!maybe)
            return -EPROTO;
    }
    /* The line ends at the first CR, which must be followed by LF; a lone
     * CR or LF never ends it.  The CRLF must lie within V1_MAX bytes. */
    for (size_t i = sizeof(v1_sig); i < n && i + 1 < V1_MAX; i++) {
        if (b[i] == '\n')
            return -EPROTO;
        if (b[i] != '\r')
            continue;
        if (i + 1 >= n)
            return 0; /* the LF is still to come */
        if (b[i + 1] != '\n')
            return -EPROTO;
        out->version = 1;
        if (!v1_line((const char *)b, i, out))
            return -EPROTO;
        return (ssize_t)(i + 2);
    }
    return n >= V1_MAX ? -EMSGSIZE : 0;
}

/* ------------------------------------------------------------------------ */
/* Version 2: binary                                                         */

/* CRC-32C (Castagnoli, reflected 0x82F63B78), bit by bit: headers are
 * small and rarely carry one. */
static uint32_t crc32c(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* Checks the TLVs in b[from..total): each must fit, and a CRC32C TLV must
 * hold the checksum of the whole header with its own value zeroed. */
static bool v2_tlvs(const unsigned char *b, size_t from, size_t total)
{
    size_t i = from;
    while (i < total) {
        if (total - i < 3)
            return false;
        size_t len = (size_t)b[i + 1] << 8 | b[i + 2];
        if (len > total - i - 3)
            return false;
        if (b[i] == PP2_TYPE_CRC32C) {
            static const unsigned char zero[4];
            if (len != 4)
                return false;
            const unsigned char *v = b + i + 3;
            uint32_t want = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 |
                            (uint32_t)v[2] << 8 | v[3];
            uint32_t crc = crc32c(0, b, i + 3);
            crc = crc32c(crc, zero, 4);
            crc = crc32c(crc, b + i + 7, total - i - 7);
            if (crc != want)
                return false;
        }
        i += 3 + len;
    }
    return true;
}

static void v2_inet(sks_addr *a, const unsigned char *ip,
                    const unsigned char *port)
{
    memset(a, 0, sizeof(*a));
    a->u.in.sin_family = AF_INET;
    memcpy(&a->u.in.sin_addr, ip, 4);
    memcpy(&a->u.in.sin_port, port, 2); /* both in network order */
    a->len = sizeof(a->u.in);
}

static void v2_inet6(sks_addr *a, const unsigned char *ip,
                     const unsigned char *port)
{
    memset(a, 0, sizeof(*a));
    a->u.in6.sin6_family = AF_INET6;
    memcpy(&a->u.in6.sin6_addr, ip, 16);
    memcpy(&a->u.in6.sin6_port, port, 2);
    a->len = sizeof(a->u.in6);
}

/* A 108-byte AF_UNIX address of the header: a NUL-padded path, or an
 * abstract name (a leading NUL; trailing NULs are padding), or all NULs
 * for an unnamed socket. */
static void v2_unix(sks_addr *a, const unsigned char *p)
{
    size_t room = sizeof(a->u.un.sun_path), n;
    memset(a, 0, sizeof(*a));
    a->u.un.sun_family = AF_UNIX;
    memcpy(a->u.un.sun_path, p, room);
    if (p[0] != '\0') {
        n = strnlen((const char *)p, room);
        n += n < room; /* the NUL, when there is room for it */
    } else {
        n = room;
        while (n > 0 && p[n - 1] == '\0')
            n--;
        if (n == 0) {
            a->len = sizeof(sa_family_t);
            return;
        }
    }
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

static ssize_t v2_parse(const unsigned char *b, size_t n,
                        sks__proxy_header *out)
{
    size_t sig = n < sizeof(v2_sig) ? n : sizeof(v2_sig);
    if (memcmp(b, v2_sig, sig) != 0)
        return -EPROTO;
    if (n > 12 && (b[12] >> 4 != 2 || (b[12] & 0xF) > CMD_PROXY))
        return -EPROTO; /* another version, or an unassigned command */
    bool proxy = n > 12 && (b[12] & 0xF) == CMD_PROXY;
    unsigned fam = n > 13 ? b[13] >> 4 : 0, proto = n > 13 ? b[13] & 0xF : 0;
    /* LOCAL ignores the family byte altogether, as the specification says;
     * PROXY must present an assigned family and protocol. */
    if (proxy && n > 13 && (fam > FAM_UNIX || proto > PROTO_DGRAM))
        return -EPROTO;
    if (n < V2_FIXED)
        return 0;

    size_t len = (size_t)b[14] << 8 | b[15];
    size_t total = V2_FIXED + len;
    if (total > SKS_PROXY_HEADER_MAX)
        return -EMSGSIZE;
    size_t need = 0; /* the address block, when its layout is known */
    bool known = proxy && fam != FAM_UNSPEC && proto != PROTO_UNSPEC;
    if (known)
        need = fam == FAM_INET ? 12 : fam == FAM_INET6 ? 36 : 216;
    if (len < need)
        return -EPROTO; /* addresses cut short: a length overflow */
    if (n < total)
        return 0;

    out->version = 2;
    out->local = !known;
    if (!known)
        return (ssize_t)total; /* nothing to read in it, TLVs included */
    const unsigned char *a = b + V2_FIXED;
    if (fam == FAM_INET) {
        v2_inet(&out->src, a, a + 8);
        v2_inet(&out->dst, a + 4, a + 10);
    } else if (fam == FAM_INET6) {
        v2_inet6(&out->src, a, a + 32);
        v2_inet6(&out->dst, a + 16, a + 34);
    } else {
        v2_unix(&out->src, a);
        v2_unix(&out->dst, a + 108);
    }
    if (!v2_tlvs(b, V2_FIXED + need, total))
        return -EPROTO;
    return (ssize_t)total;
}

ssize_t sks__proxy_parse(const void *buf, size_t n, unsigned versions,
                         sks__proxy_header *out)
{
    const unsigned char *b = buf;
    if (n == 0)
        return 0;
    /* The first byte tells the versions apart: 'P' or CR. */
    if (b[0] == v1_sig[0] && (versions & SKS_PROXY_V1)) {
        size_t m = n < sizeof(v1_sig) ? n : sizeof(v1_sig);
        if (memcmp(b, v1_sig, m) != 0)
            return -EPROTO;
        return n < sizeof(v1_sig) ? 0 : v1_parse(b, n, out);
    }
    if (b[0] == v2_sig[0] && (versions & SKS_PROXY_V2))
        return v2_parse(b, n, out);
    return -EPROTO;
}

/* ------------------------------------------------------------------------ */
/* Trusted proxies                                                           */

static bool prefix_match(const unsigned char *a, const unsigned char *net,
                         unsigned bits)
{
    size_t whole = bits / 8;
    if (memcmp(a, net, whole) != 0)
        return false;
    if (bits % 8 == 0)
        return true;
    unsigned char mask = (unsigned char)(0xFF << (8 - bits % 8));
    return (a[whole] & mask) == (net[whole] & mask);
}

static bool trusted(const sks_server *srv, const sks_addr *peer)
{
    const unsigned char *ip;
    int family = peer->u.sa.sa_family;

    if (srv->ntrusted == 0 || family == AF_UNIX)
        return true;
    if (family == AF_INET) {
        ip = (const unsigned char *)&peer->u.in.sin_addr;
    } else if (family == AF_INET6) {
        ip = peer->u.in6.sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&peer->u.in6.sin6_addr)) {
            family = AF_INET;
            ip += 12;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < srv->ntrusted; i++) {
        const struct sks__net *t = &srv->trusted[i];
        if (t->family == family && prefix_match(ip, t->addr, t->prefix))
            return true;
    }
    return false;
}

int sks_server_add_trusted_proxy(sks_server *srv, const char *network)
{
    struct sks__net net;
    char ip[INET6_ADDRSTRLEN];
    const char *slash;
    size_t n;

    if (network == NULL)
        return SKS_EADDRESS;
    slash = strchr(network, '/');
    n = slash ? (size_t)(slash - network) : strlen(network);
    if (n == 0 || n >= sizeof(ip))
        return SKS_EADDRESS;
    memcpy(ip, network, n);
    ip[n] = '\0';
    memset(&net, 0, sizeof(net));
    if (inet_pton(AF_INET, ip, net.addr) == 1)
        net.family = AF_INET;
    else if (inet_pton(AF_INET6, ip, net.addr) == 1)
        net.family = AF_INET6;
    else
        return SKS_EADDRESS;
    unsigned max = net.family == AF_INET ? 32 : 128;
    net.prefix = max;
    if (slash != NULL) {
        unsigned v = 0;
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3)
            return SKS_EADDRESS;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return SKS_EADDRESS;
            v = v * 10 + (unsigned)(*p - '0');
        }
        if (v > max)
            return SKS_EADDRESS;
        net.prefix = v;
    }
    if (srv->ntrusted == sizeof(srv->trusted) / sizeof(srv->trusted[0]))
        return -ENOSPC;
    srv->trusted[srv->ntrusted++] = net;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading a request's header                                                */

/*
 * The header is peeked at, and only the bytes known to be header are
 * consumed: all of a peek that is still an incomplete header, or exactly
 * up to its end once it is complete.  So the handler's reader starts at
 * the first byte of payload, even when the proxy sent header and payload
 * in one segment, and a header that arrives in pieces is waited for (up
 * to the deadline) without spinning on bytes already seen.
 */
int sks__proxy_accept(sks_server *srv, sks_request *req)
{
    unsigned char buf[SKS_PROXY_HEADER_MAX];
    sks__proxy_header hdr;
    size_t have = 0;
    double timeout = srv->proxy_timeout > 0 ? srv->proxy_timeout
                                            : SKS__PROXY_DEFAULT_TIMEOUT;
    /* One deadline for the whole header, however it arrives. */
    struct sks__conn c = sks__conn_make(req->fd, 0);
    c.deadline = sks__now() + timeout;

    if (!trusted(srv, &req->client))
        return -EACCES;
    for (;;) {
        ssize_t k = sks__conn_peek(&c, buf + have, sizeof(buf) - have);
        if (k < 0)
            return (int)k;
        if (k == 0)
            return -EPROTO; /* end of input inside the header */
        ssize_t r = sks__proxy_parse(buf, have + (size_t)k,
                                     srv->proxy_versions, &hdr);
        if (r < 0)
            return (int)r;
        size_t take = r > 0 ? (size_t)r - have : (size_t)k;
        int err = sks__recv_queued(req->fd, buf + have, take);
        if (err != 0)
            return err;
        have += take;
        if (r > 0)
            break;
        if (have == sizeof(buf))
            return -EMSGSIZE; /* the parser says so first; a guard */
    }
    req->proxy = req->client;
    req->proxied = true;
    if (!hdr.local)
        req->client = hdr.src;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Attributes                                                                */

int sks_server_set_proxy_protocol(sks_server *srv, unsigned versions)
{
    if (versions & ~(unsigned)SKS_PROXY_ANY)
        return -EINVAL;
    if (versions != 0 && srv->ops->socket_type != SOCK_STREAM)
        return -EOPNOTSUPP;
    srv->proxy_versions = versions;
    return 0;
}

int sks_server_set_proxy_timeout(sks_server *srv, double seconds)
{
    if (!(seconds > 0) || !isfinite(seconds))
        return -EINVAL;
    srv->proxy_timeout = seconds > 86400.0 ? 86400.0 : seconds;
    return 0;
}

const sks_addr *sks_request_proxy_address(const sks_request *req)
{
    return req->proxied ? &req->proxy : NULL;
}
