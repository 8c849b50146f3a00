/*
 * test_address.c - address strings (sks_addr_parse, sks_addr_format) and
 * error names (sks_strerror, sks_errname).  No sockets: pure data.
 */
#define _GNU_SOURCE
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

/* Two parsed addresses are the same address: same length, same bytes. */
static void assert_addr_equal(const sks_addr *a, const sks_addr *b)
{
    assert_int_equal(a->len, b->len);
    assert_memory_equal(&a->u, &b->u, a->len);
}

/* parse(s) succeeds, format gives `canonical`, and parse(format) gives the
 * same address back. */
static void assert_round_trip(const char *s, const char *canonical,
                              sks_addr *out)
{
    char buf[SKS_ADDRSTRLEN];
    sks_addr again;
    int err = sks_addr_parse(s, out);
    if (err != 0)
        fail_msg("parse(\"%s\"): %s", s, sks_errname(err));
    int n = sks_addr_format(out, buf, sizeof(buf));
    assert_int_equal(n, (int)strlen(canonical));
    assert_string_equal(buf, canonical);
    assert_int_equal(sks_addr_parse(buf, &again), 0);
    assert_addr_equal(out, &again);
}

static void test_ipv4_literal_round_trips(void **state)
{
    (void)state;
    sks_addr a;
    assert_round_trip("127.0.0.1:9000", "127.0.0.1:9000", &a);
    assert_int_equal(a.u.sa.sa_family, AF_INET);
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(a.u.in.sin_port), 9000);
    assert_int_equal(ntohl(a.u.in.sin_addr.s_addr), INADDR_LOOPBACK);

    assert_round_trip("127.0.0.1:0", "127.0.0.1:0", &a);
    assert_round_trip("127.0.0.1:65535", "127.0.0.1:65535", &a);
    assert_int_equal(ntohs(a.u.in.sin_port), 65535);
}

static void test_empty_host_means_all_ipv4_interfaces(void **state)
{
    (void)state;
    sks_addr a;
    assert_round_trip(":9000", "0.0.0.0:9000", &a);
    assert_int_equal(a.u.sa.sa_family, AF_INET);
    assert_int_equal(a.u.in.sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(a.u.in.sin_port), 9000);
}

static void test_ipv6_literal_in_brackets_round_trips(void **state)
{
    (void)state;
    sks_addr a;
    assert_round_trip("[::1]:9000", "[::1]:9000", &a);
    assert_int_equal(a.u.sa.sa_family, AF_INET6);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(a.u.in6.sin6_port), 9000);
    assert_true(IN6_IS_ADDR_LOOPBACK(&a.u.in6.sin6_addr));
    assert_int_equal(a.u.in6.sin6_scope_id, 0);

    /* inet_ntop's canonical form: the longest zero run compressed. */
    assert_round_trip("[0:0:0:0:0:0:0:1]:80", "[::1]:80", &a);
    assert_round_trip("[::ffff:127.0.0.1]:80", "[::ffff:127.0.0.1]:80", &a);
    assert_int_equal(a.u.sa.sa_family, AF_INET6);
}

static void test_ipv6_scope_id_by_name_and_number(void **state)
{
    (void)state;
    sks_addr a;
    char want[64];
    unsigned lo = if_nametoindex("lo");
    assert_true(lo > 0);

    /* By interface name: formatted back as the number, which parses to the
     * same address. */
    snprintf(want, sizeof(want), "[fe80::1%%%u]:9000", lo);
    assert_round_trip("[fe80::1%lo]:9000", want, &a);
    assert_int_equal(a.u.in6.sin6_scope_id, lo);

    assert_round_trip("[fe80::1%7]:80", "[fe80::1%7]:80", &a);
    assert_int_equal(a.u.in6.sin6_scope_id, 7);

    assert_int_equal(sks_addr_parse("[fe80::1%]:80", &a), SKS_EADDRESS);
    assert_int_equal(sks_addr_parse("[fe80::1%nosuchif9]:80", &a),
                     SKS_EADDRESS);
    assert_int_equal(sks_addr_parse("[fe80::1%7x]:80", &a), SKS_EADDRESS);
}

static void test_localhost_resolves_to_loopback(void **state)
{
    (void)state;
    sks_addr a;
    assert_int_equal(sks_addr_parse("localhost:8080", &a), 0);
    if (a.u.sa.sa_family == AF_INET) {
        assert_int_equal(a.len, sizeof(struct sockaddr_in));
        assert_int_equal(ntohl(a.u.in.sin_addr.s_addr) >> 24, 127);
        assert_int_equal(ntohs(a.u.in.sin_port), 8080);
    } else {
        assert_int_equal(a.u.sa.sa_family, AF_INET6);
        assert_true(IN6_IS_ADDR_LOOPBACK(&a.u.in6.sin6_addr));
        assert_int_equal(ntohs(a.u.in6.sin6_port), 8080);
    }
}

static void test_unix_paths_round_trip(void **state)
{
    (void)state;
    sks_addr a;
    assert_round_trip("unix:/tmp/sks.sock", "unix:/tmp/sks.sock", &a);
    assert_int_equal(a.u.sa.sa_family, AF_UNIX);
    assert_string_equal(a.u.un.sun_path, "/tmp/sks.sock");
    assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) +
                                strlen("/tmp/sks.sock") + 1);

    assert_round_trip("unix:relative/dir.sock", "unix:relative/dir.sock", &a);
    assert_string_equal(a.u.un.sun_path, "relative/dir.sock");
}

static void test_unix_path_length_limit(void **state)
{
    (void)state;
    char s[256];
    sks_addr a;
    size_t room = sizeof(a.u.un.sun_path); /* includes the NUL */

    /* The longest path that fits with its NUL. */
    strcpy(s, "unix:/");
    memset(s + 6, 'p', room - 2);
    s[6 + room - 2] = '\0';
    assert_int_equal(strlen(s + 5), room - 1);
    assert_round_trip(s, s, &a);

    /* One byte more does not fit. */
    strcat(s, "q");
    assert_int_equal(sks_addr_parse(s, &a), -ENAMETOOLONG);
}

static void test_abstract_name_round_trips_with_escapes(void **state)
{
    (void)state;
    ABSTRACT_NAMES_OR_REFUSED();
    sks_addr a;
    const size_t base = offsetof(struct sockaddr_un, sun_path);

    assert_round_trip("unix:@name", "unix:@name", &a);
    assert_int_equal(a.u.sa.sa_family, AF_UNIX);
    assert_int_equal(a.len, base + 1 + 4); /* leading NUL + "name" */
    assert_memory_equal(a.u.un.sun_path, "\0name", 5);

    /* The empty abstract name: just the leading NUL. */
    assert_round_trip("unix:@", "unix:@", &a);
    assert_int_equal(a.len, base + 1);

    /* NUL, a control byte, the backslash and the space are escaped; the
     * input may use either hex case. */
    assert_round_trip("unix:@a\\x00b\\x01\\x5C\\x20c\\xff",
                      "unix:@a\\x00b\\x01\\x5c\\x20c\\xff", &a);
    assert_int_equal(a.len, base + 1 + 8);
    assert_memory_equal(a.u.un.sun_path, "\0a\0b\x01\\ c\xff", 9);

    /* A literal backslash not followed by x is a plain byte, and comes
     * back escaped. */
    assert_round_trip("unix:@back\\slash", "unix:@back\\x5cslash", &a);

    /* Bad escapes. */
    assert_int_equal(sks_addr_parse("unix:@\\x4", &a), SKS_EADDRESS);
    assert_int_equal(sks_addr_parse("unix:@\\xzz", &a), SKS_EADDRESS);
    assert_int_equal(sks_addr_parse("unix:@\\x", &a), SKS_EADDRESS);
}

static void test_abstract_name_length_limit(void **state)
{
    (void)state;
    ABSTRACT_NAMES_OR_REFUSED();
    char s[600];
    char buf[SKS_ADDRSTRLEN];
    sks_addr a, again;
    size_t room = sizeof(a.u.un.sun_path);

    /* room - 1 name bytes fit after the leading NUL. */
    strcpy(s, "unix:@");
    memset(s + 6, 'n', room - 1);
    s[6 + room - 1] = '\0';
    assert_round_trip(s, s, &a);
    strcat(s, "n");
    assert_int_equal(sks_addr_parse(s, &a), -ENAMETOOLONG);

    /* The longest possible string: every byte escaped still fits in
     * SKS_ADDRSTRLEN. */
    strcpy(s, "unix:@");
    for (size_t i = 0; i < room - 1; i++)
        strcat(s, "\\x01");
    assert_int_equal(sks_addr_parse(s, &a), 0);
    assert_int_equal(sks_addr_format(&a, buf, sizeof(buf)), (int)strlen(s));
    assert_string_equal(buf, s);
    assert_int_equal(sks_addr_parse(buf, &again), 0);
    assert_addr_equal(&a, &again);
}

static void test_unnamed_unix_address(void **state)
{
    (void)state;
    sks_addr a;
    char buf[16];
    assert_round_trip("unix:", "unix:", &a);
    assert_int_equal(a.u.sa.sa_family, AF_UNIX);
    assert_int_equal(a.len, sizeof(sa_family_t));

    /* An unnamed peer may come back from the kernel with length 0. */
    memset(&a, 0, sizeof(a));
    assert_int_equal(sks_addr_format(&a, buf, sizeof(buf)), 5);
    assert_string_equal(buf, "unix:");
}

static void test_malformed_strings_are_eaddress(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",                      /* nothing */
        "garbage",               /* no port at all */
        "127.0.0.1",             /* missing port */
        "127.0.0.1:",            /* empty port */
        "127.0.0.1:65536",       /* port > 65535 */
        "127.0.0.1:99999999999999999999999", /* overflows strtoul */
        "127.0.0.1:-1",          /* negative port */
        "127.0.0.1:+1",          /* signs are not digits */
        "127.0.0.1: 80",         /* spaces neither */
        "127.0.0.1:80x",         /* trailing junk */
        "::1:80",                /* bare IPv6 without brackets */
        "::1",
        "[::1]",                 /* bracketed, no port */
        "[::1]80",
        "[::1:80",
        "[::1]:",
        "[::1]:70000",
        "[not-an-ip]:80",
        "[127.0.0.1]:80",        /* brackets are for IPv6 only */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sks_addr a;
        int err = sks_addr_parse(bad[i], &a);
        if (err != SKS_EADDRESS)
            fail_msg("parse(\"%s\") = %s, want SKS_EADDRESS", bad[i],
                     sks_errname(err));
    }
}

static void test_unresolvable_name_is_ehostunreach(void **state)
{
    (void)state;
    /* A 70-byte label cannot be a DNS name (63 at most), so the resolver
     * rejects it locally: no query leaves the machine. */
    char s[128];
    sks_addr a;
    memset(s, 'a', 70);
    strcpy(s + 70, ".invalid:80");
    assert_int_equal(sks_addr_parse(s, &a), -EHOSTUNREACH);
}

static void test_null_arguments_are_einval(void **state)
{
    (void)state;
    sks_addr a;
    char buf[8];
    assert_int_equal(sks_addr_parse(NULL, &a), -EINVAL);
    assert_int_equal(sks_addr_parse("127.0.0.1:1", NULL), -EINVAL);
    assert_int_equal(sks_addr_parse("127.0.0.1:1", &a), 0);
    assert_int_equal(sks_addr_format(NULL, buf, sizeof(buf)), -EINVAL);
    assert_int_equal(sks_addr_format(&a, NULL, sizeof(buf)), -EINVAL);
    assert_int_equal(sks_addr_format(&a, buf, 0), -EINVAL);
}

/* Formats into exactly `cap` bytes: -ENOSPC below length + 1, the string at
 * length + 1, never writing past cap. */
static void assert_format_boundary(const char *s)
{
    char buf[SKS_ADDRSTRLEN + 8];
    sks_addr a;
    size_t len = strlen(s);
    assert_int_equal(sks_addr_parse(s, &a), 0);
    for (size_t cap = 1; cap <= len; cap++) {
        memset(buf, '#', sizeof(buf));
        int r = sks_addr_format(&a, buf, cap);
        if (r != -ENOSPC)
            fail_msg("format(%s) into %zu bytes = %d, want -ENOSPC", s, cap,
                     r);
        assert_int_equal(buf[cap], '#');
    }
    memset(buf, '#', sizeof(buf));
    assert_int_equal(sks_addr_format(&a, buf, len + 1), (int)len);
    assert_string_equal(buf, s);
    assert_int_equal(buf[len + 1], '#');
}

static void test_format_reports_enospc_on_small_buffer(void **state)
{
    (void)state;
    assert_format_boundary("127.0.0.1:80");
    assert_format_boundary("[::1]:65535");
    assert_format_boundary("[fe80::1%7]:80");
    assert_format_boundary("unix:/tmp/x.sock");
    if (HAVE_ABSTRACT_NAMES)
        assert_format_boundary("unix:@ab\\x00c");
    assert_format_boundary("unix:");
}

static void test_format_other_family_is_eafnosupport(void **state)
{
    (void)state;
    sks_addr a;
    char buf[SKS_ADDRSTRLEN];
    memset(&a, 0, sizeof(a));
    a.u.sa.sa_family = AF_APPLETALK;
    a.len = sizeof(struct sockaddr);
    assert_int_equal(sks_addr_format(&a, buf, sizeof(buf)), -EAFNOSUPPORT);
}

static void test_error_names_and_descriptions(void **state)
{
    (void)state;
    assert_string_equal(sks_strerror(-ECONNRESET), "Connection reset by peer");
    assert_string_equal(sks_errname(-ECONNRESET), "ECONNRESET");
    /* A positive errno is accepted too. */
    assert_string_equal(sks_strerror(ECONNRESET), "Connection reset by peer");
    assert_string_equal(sks_errname(ECONNRESET), "ECONNRESET");
    assert_string_equal(sks_errname(-EADDRINUSE), "EADDRINUSE");
    assert_string_equal(sks_errname(-ETIMEDOUT), "ETIMEDOUT");

    assert_string_equal(sks_strerror(SKS_EHANDLER), "request handler failed");
    assert_string_equal(sks_errname(SKS_EHANDLER), "SKS_EHANDLER");
    assert_string_equal(sks_errname(SKS_EADDRESS), "SKS_EADDRESS");
    assert_string_equal(sks_errname(SKS_ECLOSED), "SKS_ECLOSED");
    assert_string_not_equal(sks_strerror(SKS_EADDRESS),
                            sks_strerror(SKS_ECLOSED));

    assert_string_equal(sks_errname(0), "OK");
    assert_non_null(sks_strerror(0));

    /* Unknown codes: never NULL. */
    assert_string_equal(sks_errname(-19999), "E?");
    assert_non_null(sks_strerror(-19999));
    assert_non_null(sks_strerror(-30000));
}

/* The library's own table names every errno this system defines, as
 * glibc names it: the same answer then comes from every libc. */
static void test_error_names_cover_every_errno(void **state)
{
    (void)state;
    static const struct { int code; const char *name; } posix[] = {
        { EPIPE, "EPIPE" }, { EAGAIN, "EAGAIN" }, { EMFILE, "EMFILE" },
        { ENOTSOCK, "ENOTSOCK" }, { EOWNERDEAD, "EOWNERDEAD" },
        { ECANCELED, "ECANCELED" }, { EPROTO, "EPROTO" }, { EXDEV, "EXDEV" },
    };
    for (size_t i = 0; i < sizeof(posix) / sizeof(posix[0]); i++)
        assert_string_equal(sks_errname(-posix[i].code), posix[i].name);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    int named = 0;
    for (int e = 1; e < 4096; e++) {
        const char *name = strerrorname_np(e);
        if (!name)
            continue;
        named++;
        assert_string_equal(sks_errname(-e), name);
        assert_string_equal(sks_strerror(-e), strerrordesc_np(e));
    }
    assert_true(named > 100);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_literal_round_trips),
        cmocka_unit_test(test_empty_host_means_all_ipv4_interfaces),
        cmocka_unit_test(test_ipv6_literal_in_brackets_round_trips),
        cmocka_unit_test(test_ipv6_scope_id_by_name_and_number),
        cmocka_unit_test(test_localhost_resolves_to_loopback),
        cmocka_unit_test(test_unix_paths_round_trip),
        cmocka_unit_test(test_unix_path_length_limit),
        cmocka_unit_test(test_abstract_name_round_trips_with_escapes),
        cmocka_unit_test(test_abstract_name_length_limit),
        cmocka_unit_test(test_unnamed_unix_address),
        cmocka_unit_test(test_malformed_strings_are_eaddress),
        cmocka_unit_test(test_unresolvable_name_is_ehostunreach),
        cmocka_unit_test(test_null_arguments_are_einval),
        cmocka_unit_test(test_format_reports_enospc_on_small_buffer),
        cmocka_unit_test(test_format_other_family_is_eafnosupport),
        cmocka_unit_test(test_error_names_and_descriptions),
        cmocka_unit_test(test_error_names_cover_every_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
