/*
 * address.c - address strings: "127.0.0.1:9000", "[::1]:9000",
 * "localhost:9000", ":9000", "unix:/path", "unix:@abstract", "unix:".
 */
#define _GNU_SOURCE
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char unix_prefix[] = "unix:";

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int parse_unix(const char *s, sks_addr *out)
{
    size_t room = sizeof(out->u.un.sun_path);
    char *path = out->u.un.sun_path;
    size_t n = 0;

    out->u.un.sun_family = AF_UNIX;
    if (*s == '\0') {
        out->len = sizeof(sa_family_t);
        return 0;
    }
    if (*s == '@') {
        /* Elsewhere a leading NUL would be a path of length 0, or an
         * error only at bind: say at once that there is no such name. */
        if (!sks__abstract_names())
            return -EAFNOSUPPORT;
        /* Abstract name: a leading NUL, then the bytes, "\xHH" decoded. */
        path[n++] = '\0';
        for (s++; *s; n++) {
            if (n >= room)
                return -ENAMETOOLONG;
            if (s[0] == '\\' && s[1] == 'x') {
                int hi = hexval(s[2]), lo = hi < 0 ? -1 : hexval(s[3]);
                if (lo < 0)
                    return SKS_EADDRESS;
                path[n] = (char)(hi << 4 | lo);
                s += 4;
            } else {
                path[n] = *s++;
            }
        }
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return 0;
    }
    n = strlen(s);
    if (n >= room)
        return -ENAMETOOLONG;
    memcpy(path, s, n + 1);
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
    char *end;
    if (*s < '0' || *s > '9')
        return SKS_EADDRESS;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || errno != 0 || v > 65535)
        return SKS_EADDRESS;
    *port = (uint16_t)v;
    return 0;
}

static int resolve(const char *host, uint16_t port, sks_addr *out)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, service, &hints, &res) != 0 || res == NULL)
        return -EHOSTUNREACH;
    memcpy(&out->u.ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int sks_addr_parse(const char *str, sks_addr *out)
{
    char host[NI_MAXHOST];
    const char *colon, *hs, *he;
    uint16_t port;
    int err;

    if (str == NULL || out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (strncmp(str, unix_prefix, sizeof(unix_prefix) - 1) == 0)
        return parse_unix(str + sizeof(unix_prefix) - 1, out);

    if (str[0] == '[') {
        he = strchr(str, ']');
        if (he == NULL || he[1] != ':')
            return SKS_EADDRESS;
        hs = str + 1;
        colon = he + 1;
    } else {
        colon = strrchr(str, ':');
        if (colon == NULL)
            return SKS_EADDRESS;
        hs = str;
        he = colon;
        if (memchr(hs, ':', (size_t)(he - hs)) != NULL)
            return SKS_EADDRESS; /* bare IPv6 needs brackets */
    }
    if ((size_t)(he - hs) >= sizeof(host))
        return SKS_EADDRESS;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    if ((err = parse_port(colon + 1, &port)) != 0)
        return err;

    if (str[0] == '[') {
        struct sockaddr_in6 *in6 = &out->u.in6;
        char *pct = strchr(host, '%');
        if (pct != NULL) {
            *pct = '\0';
            in6->sin6_scope_id = if_nametoindex(pct + 1);
            if (in6->sin6_scope_id == 0) {
                char *end;
                unsigned long id = strtoul(pct + 1, &end, 10);
                if (pct[1] == '\0' || *end != '\0' || id > UINT32_MAX)
                    return SKS_EADDRESS;
                in6->sin6_scope_id = (uint32_t)id;
            }
        }
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return SKS_EADDRESS;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        out->len = sizeof(*in6);
        return 0;
    }
    if (host[0] == '\0' || inet_pton(AF_INET, host, &out->u.in.sin_addr) == 1) {
        if (host[0] == '\0')
            out->u.in.sin_addr.s_addr = htonl(INADDR_ANY);
        out->u.in.sin_family = AF_INET;
        out->u.in.sin_port = htons(port);
        out->len = sizeof(out->u.in);
        return 0;
    }
    return resolve(host, port, out);
}

/* Abstract names may hold any byte: print the printable ones, escape the
 * rest (and the backslash) as \xHH so parse reads them back. */
static int format_abstract(const char *name, size_t n, char *buf, size_t cap)
{
    size_t o = 0;
    int w = snprintf(buf, cap, "%s@", unix_prefix);
    if (w < 0 || (size_t)w >= cap)
        return -ENOSPC;
    o = (size_t)w;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 0x21 && c < 0x7f && c != '\\') {
            if (o + 1 >= cap)
                return -ENOSPC;
            buf[o++] = (char)c;
        } else {
            if (o + 4 >= cap)
                return -ENOSPC;
            snprintf(buf + o, 5, "\\x%02x", c);
            o += 4;
        }
    }
    buf[o] = '\0';
    return (int)o;
}

int sks_addr_format(const sks_addr *a, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int w;

    if (a == NULL || buf == NULL || cap == 0)
        return -EINVAL;
    if (a->len < sizeof(sa_family_t)) {
        /* Unix peers that never bound may come back with length 0. */
        w = snprintf(buf, cap, "%s", unix_prefix);
        return (w < 0 || (size_t)w >= cap) ? -ENOSPC : w;
    }
    switch (a->u.sa.sa_family) {
    case AF_INET:
        inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof(ip));
        w = snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(a->u.in.sin_port));
        break;
    case AF_INET6:
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof(ip));
        if (a->u.in6.sin6_scope_id != 0)
            w = snprintf(buf, cap, "[%s%%%u]:%u", ip,
                         (unsigned)a->u.in6.sin6_scope_id,
                         (unsigned)ntohs(a->u.in6.sin6_port));
        else
            w = snprintf(buf, cap, "[%s]:%u", ip,
                         (unsigned)ntohs(a->u.in6.sin6_port));
        break;
    case AF_UNIX: {
        size_t n = a->len - offsetof(struct sockaddr_un, sun_path);
        const char *p = a->u.un.sun_path;
        if (a->len <= offsetof(struct sockaddr_un, sun_path))
            n = 0;
        if (n > 0 && p[0] == '\0')
            return format_abstract(p + 1, n - 1, buf, cap);
        /* A relative path that begins with '@' would read back as an
         * abstract name: "./" keeps it a path, to the same file. */
        w = snprintf(buf, cap, "%s%s%.*s", unix_prefix,
                     n > 0 && p[0] == '@' ? "./" : "", (int)strnlen(p, n), p);
        break;
    }
    default:
        return -EAFNOSUPPORT;
    }
    return (w < 0 || (size_t)w >= cap) ? -ENOSPC : w;
}
