/*
 * fuzz_addr.c - libFuzzer target: address strings (sks_addr_parse and
 * sks_addr_format).
 *
 * Input byte 0 picks the mode:
 *   even: the rest is a string for sks_addr_parse().  Whatever parses must
 *         format to a string that parses back to the very same address;
 *         formatting must honour every buffer size (-ENOSPC, never a byte
 *         past cap) and always NUL-terminate.
 *   odd:  the rest builds an address of any family field by field, shaped
 *         as the kernel returns them (getsockname, accept, recvfrom); it
 *         must survive format then parse unchanged: parse(format(a)) == a.
 * Host names never reach the network: getaddrinfo() is replaced below by
 * one that knows only "localhost".
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "../../src/compat.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef FUZZ_ADDR_RESOLVER
#define FUZZ_ADDR_RESOLVER
/* Name resolution without the network: "localhost" is 127.0.0.1, every
 * other name is unknown.  Interposes libc's for this program only. */
int getaddrinfo(const char *node, const char *service,
                const struct addrinfo *hints, struct addrinfo **res)
{
    struct {
        struct addrinfo ai;
        struct sockaddr_in in;
    } *r;
    (void)hints;
    *res = NULL;
    if (node == NULL || strcmp(node, "localhost") != 0)
        return EAI_NONAME;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return EAI_MEMORY;
    r->in.sin_family = AF_INET;
    r->in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->in.sin_port = htons((uint16_t)(service ? atoi(service) : 0));
    r->ai.ai_family = AF_INET;
    r->ai.ai_socktype = SOCK_STREAM;
    r->ai.ai_addrlen = sizeof(r->in);
    r->ai.ai_addr = (struct sockaddr *)&r->in;
    *res = &r->ai;
    return 0;
}

void freeaddrinfo(struct addrinfo *res)
{
    free(res); /* the one block getaddrinfo above allocated */
}
#endif

/* Same address, by meaning: Unix paths compare as strings, abstract names
 * as byte strings, unnamed addresses as equal. */
static bool fuzz_addr_same(const sks_addr *a, const sks_addr *b)
{
    const size_t off = offsetof(struct sockaddr_un, sun_path);
    if (a->u.sa.sa_family != b->u.sa.sa_family)
        return false;
    switch (a->u.sa.sa_family) {
    case AF_INET:
        return a->len == b->len &&
               a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr &&
               a->u.in.sin_port == b->u.in.sin_port;
    case AF_INET6:
        return a->len == b->len &&
               memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16) == 0 &&
               a->u.in6.sin6_port == b->u.in6.sin6_port &&
               a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id;
    case AF_UNIX: {
        size_t na = a->len > off ? a->len - off : 0;
        size_t nb = b->len > off ? b->len - off : 0;
        bool abs_a = na > 0 && a->u.un.sun_path[0] == '\0';
        bool abs_b = nb > 0 && b->u.un.sun_path[0] == '\0';
        if (abs_a != abs_b)
            return false;
        if (abs_a)
            return na == nb &&
                   memcmp(a->u.un.sun_path, b->u.un.sun_path, na) == 0;
        const char *pa = a->u.un.sun_path, *pb = b->u.un.sun_path;
        na = strnlen(pa, na);
        nb = strnlen(pb, nb);
        /* "@x" is written "./@x" (the same file), not "@x" (abstract). */
        if (na > 0 && pa[0] == '@' && nb == na + 2 && memcmp(pb, "./", 2) == 0) {
            pb += 2;
            nb -= 2;
        }
        return na == nb && memcmp(pa, pb, na) == 0;
    }
    default:
        return false;
    }
}

/* Formats a into exactly-sized buffers: every cap too small must give
 * -ENOSPC, the right one the string.  Returns the string (caller frees). */
static char *fuzz_addr_format_checked(const sks_addr *a, uint8_t pick)
{
    char big[SKS_ADDRSTRLEN];
    int n = sks_addr_format(a, big, sizeof(big));
    FUZZ_CHECK(n >= 0);
    FUZZ_CHECK((size_t)n == strlen(big));

    char *exact = malloc((size_t)n + 1);
    FUZZ_CHECK(exact != NULL);
    FUZZ_CHECK(sks_addr_format(a, exact, (size_t)n + 1) == n);
    FUZZ_CHECK(strcmp(exact, big) == 0);

    /* Too small by one, and one more size chosen by the input. */
    size_t small[2] = { (size_t)n, 1 + (size_t)pick % ((size_t)n + 1) };
    for (int i = 0; i < 2; i++) {
        if (small[i] > (size_t)n || small[i] == 0)
            continue;
        char *b = malloc(small[i]);
        FUZZ_CHECK(b != NULL);
        FUZZ_CHECK(sks_addr_format(a, b, small[i]) == -ENOSPC);
        free(b);
    }
    return exact;
}

static void fuzz_addr_string(fuzz_in *in)
{
    uint8_t pick = fuzz_byte(in);
    size_t len = in->n;
    const uint8_t *p = fuzz_bytes(in, &len);
    char *s = malloc(len + 1);
    sks_addr a, b;

    FUZZ_CHECK(s != NULL);
    memcpy(s, p, len);
    s[len] = '\0';
    int err = sks_addr_parse(s, &a);
    FUZZ_CHECK(err == 0 || err == SKS_EADDRESS || err == -ENAMETOOLONG ||
               err == -EHOSTUNREACH ||
               (err == -EAFNOSUPPORT && !sks__abstract_names()));
    if (err == 0) {
        FUZZ_CHECK(a.len <= sizeof(a.u));
        char *f = fuzz_addr_format_checked(&a, pick);
        FUZZ_CHECK(sks_addr_parse(f, &b) == 0);
        /* parse clears the whole struct first: compare every byte. */
        FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);
        free(f);
    }
    free(s);
}

static uint16_t fuzz_addr_u16(fuzz_in *in)
{
    uint16_t hi = fuzz_byte(in);
    return (uint16_t)(hi << 8 | fuzz_byte(in));
}

static void fuzz_addr_struct(fuzz_in *in)
{
    const size_t off = offsetof(struct sockaddr_un, sun_path);
    uint8_t kind = fuzz_byte(in), pick = fuzz_byte(in);
    sks_addr a, b;
    size_t n;
    const uint8_t *p;

    memset(&a, 0, sizeof(a));
    switch (kind % 5) {
    case 0:
        a.u.in.sin_family = AF_INET;
        n = 4;
        p = fuzz_bytes(in, &n);
        memcpy(&a.u.in.sin_addr, p, n);
        a.u.in.sin_port = fuzz_addr_u16(in);
        a.len = sizeof(a.u.in);
        break;
    case 1:
        a.u.in6.sin6_family = AF_INET6;
        n = 16;
        p = fuzz_bytes(in, &n);
        memcpy(&a.u.in6.sin6_addr, p, n);
        a.u.in6.sin6_port = fuzz_addr_u16(in);
        n = 4;
        p = fuzz_bytes(in, &n);
        memcpy(&a.u.in6.sin6_scope_id, p, n);
        a.len = sizeof(a.u.in6);
        break;
    case 2: /* a path: no NUL inside, and the terminating NUL counted */
        n = in->n < sizeof(a.u.un.sun_path) - 1 ? in->n
                                                : sizeof(a.u.un.sun_path) - 1;
        p = fuzz_bytes(in, &n);
        n = strnlen((const char *)p, n);
        a.u.un.sun_family = AF_UNIX;
        memcpy(a.u.un.sun_path, p, n);
        a.len = (socklen_t)(off + n + 1);
        break;
    case 3: /* an abstract name: a NUL, then any bytes */
        n = in->n < sizeof(a.u.un.sun_path) - 1 ? in->n
                                                : sizeof(a.u.un.sun_path) - 1;
        p = fuzz_bytes(in, &n);
        a.u.un.sun_family = AF_UNIX;
        memcpy(a.u.un.sun_path + 1, p, n);
        a.len = (socklen_t)(off + 1 + n);
        break;
    default: /* unnamed: only the family, or nothing at all */
        a.u.un.sun_family = AF_UNIX;
        a.len = pick & 1 ? 0 : (socklen_t)sizeof(sa_family_t);
        break;
    }
    char *f = fuzz_addr_format_checked(&a, pick);
    int err = sks_addr_parse(f, &b);
    /* An abstract name formats, but parses only where there are such. */
    if (err == -EAFNOSUPPORT && !sks__abstract_names() &&
        a.len > off && a.u.un.sun_path[0] == '\0') {
        free(f);
        return;
    }
    /* Only a path made longer by that "./" may no longer fit. */
    if (err == -ENAMETOOLONG && kind % 5 == 2 && a.u.un.sun_path[0] == '@' &&
        strlen(a.u.un.sun_path) + 2 >= sizeof(a.u.un.sun_path)) {
        free(f);
        return;
    }
    FUZZ_CHECK(err == 0);
    FUZZ_CHECK(fuzz_addr_same(&a, &b));
    free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = { data, size };
    if (fuzz_byte(&in) & 1)
        fuzz_addr_struct(&in);
    else
        fuzz_addr_string(&in);
    return 0;
}
