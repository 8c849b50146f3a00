/*
 * test_examples.c - every build/examples/echo_*_server binary keeps the
 * examples' contract: `NAME ADDRESS` (port 0 and every address form), a
 * first stdout line "listening on ADDRESS" with the real bound address,
 * flushed at once; lines (stream) or datagrams (datagram) echoed byte for
 * byte; exit status 0 within one second of SIGTERM or SIGINT.  Binaries
 * are found at run time beside this test (../examples/ from its own path),
 * so new examples are covered as soon as they are built.  The kind of
 * server is read from its name: *_udp_*, *_unix_dgram_*, *_unix_*, else
 * TCP.  Also runs echo_client against the servers.
 */
#define _GNU_SOURCE
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum kind { TCP, UDP, UNIX_STREAM, UNIX_DGRAM };

#define MAX_EXAMPLES 32

static char names[MAX_EXAMPLES][NAME_MAX + 1];
static int nnames;

/* The processes this test started (a server, and echo_client): killed
 * if still running and reaped by cleanup, whatever an assertion cut
 * short.  Only these (and their process groups) are ever signalled or
 * waited for. */
static test_proc server = TEST_PROC_NONE, client = TEST_PROC_NONE;
static char unix_path[PATH_MAX]; /* the server's socket file */

static enum kind kind_of(const char *name)
{
    if (strstr(name, "_udp_") != NULL)
        return UDP;
    if (strstr(name, "_unix_dgram_") != NULL)
        return UNIX_DGRAM;
    if (strstr(name, "_unix_") != NULL)
        return UNIX_STREAM;
    return TCP;
}

static bool is_stream(enum kind k)
{
    return k == TCP || k == UNIX_STREAM;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Lists the echo_*_server programs of the examples directory (found from
 * this binary's path: build/tests/x -> build/examples). */
static int discover(void **state)
{
    (void)state;
    const char *exdir = examples_dir();
    DIR *d = exdir != NULL ? opendir(exdir) : NULL;
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && nnames < MAX_EXAMPLES) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "echo_", 5) != 0 || len < 12 ||
            strcmp(e->d_name + len - 7, "_server") != 0 ||
            !example_exists(e->d_name))
            continue;
        snprintf(names[nnames++], sizeof(names[0]), "%s", e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nnames, sizeof(names[0]), by_name);
    return 0;
}

static void reap_server(void)
{
    proc_kill(&server);
    if (unix_path[0] != '\0') {
        struct stat st;
        if (lstat(unix_path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(unix_path);
    }
    unix_path[0] = '\0';
}

static int cleanup(void **state)
{
    (void)state;
    proc_kill(&client);
    reap_server();
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Talking to a server                                                       */

static void read_exact(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r > 0);
        got += (size_t)r;
    }
}

static void stream_echo(int fd, const char *line, size_t n)
{
    char *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(client_send_all(fd, line, n), 0);
    read_exact(fd, buf, n);
    assert_memory_equal(buf, line, n);
    free(buf);
}

/* Lines: plain, every byte value but '\n', and one of 64 KiB. */
static void echo_lines(const char *address)
{
    static char line[65536];
    int c = client_connect(address);
    assert_true(c >= 0);
    stream_echo(c, "hello, example\n", 15);
    for (int i = 0; i < 255; i++)
        line[i] = (char)(i < '\n' ? i : i + 1);
    line[255] = '\n';
    stream_echo(c, line, 256);
    for (size_t i = 0; i < sizeof(line) - 1; i++)
        line[i] = (char)('a' + i % 26);
    line[sizeof(line) - 1] = '\n';
    stream_echo(c, line, sizeof(line));
    stream_echo(c, "bye\n", 4);
    client_close(c);
}

/* Datagrams: plain, every byte value, empty, and 8192 bytes (Python's
 * max_packet_size, which any datagram example serves whole). */
static void echo_datagrams(const char *address)
{
    static char data[8192];
    int c = client_dgram(address);
    assert_true(c >= 0);
    assert_dgram_echo(c, "hello, example\n", 15);
    for (int i = 0; i < 256; i++)
        data[i] = (char)i;
    assert_dgram_echo(c, data, 256);
    assert_dgram_echo(c, "", 0);
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7);
    assert_dgram_echo(c, data, sizeof(data));
    client_close(c);
}

/* The address to serve: port 0 on loopback, or a fresh Unix name. */
static void pick_address(enum kind k, bool alternate, char *buf, size_t cap)
{
    static int n;
    if (k == TCP || k == UDP) {
        snprintf(buf, cap, "%s", alternate ? "[::1]:0" : "127.0.0.1:0");
    } else if (alternate && HAVE_ABSTRACT_NAMES) {
        snprintf(buf, cap, "unix:@sks-example-%ld-%d", (long)getpid(), n++);
    } else {
        unix_temp_address(buf, cap);
        snprintf(unix_path, sizeof(unix_path), "%s", buf + 5);
    }
}

/* Starts name on address; checks the first line and returns the address
 * it reports in bound. */
static void start_server(const char *name, const char *address, char *bound,
                         size_t cap)
{
    example_start(&server, name, address, bound, cap);

    /* The real address, in the syntax of the one asked for. */
    sks_addr want, got;
    assert_int_equal(sks_addr_parse(address, &want), 0);
    assert_int_equal(sks_addr_parse(bound, &got), 0);
    assert_int_equal(got.u.sa.sa_family, want.u.sa.sa_family);
    if (want.u.sa.sa_family == AF_UNIX) {
        assert_string_equal(bound, address);
    } else if (want.u.sa.sa_family == AF_INET) {
        assert_int_equal(got.u.in.sin_addr.s_addr, want.u.in.sin_addr.s_addr);
        assert_true(got.u.in.sin_port != 0);
    } else {
        assert_memory_equal(&got.u.in6.sin6_addr, &want.u.in6.sin6_addr,
                            sizeof(want.u.in6.sin6_addr));
        assert_true(got.u.in6.sin6_port != 0);
    }
}

/* Sends sig and expects exit status 0 within one second. */
static void stop_server(const char *name, int sig)
{
    double took;
    assert_int_equal(kill(server.pid, sig), 0);
    int status = proc_wait_exit(&server, 5000, &took);
    if (status == -1)
        fail_msg("%s: still running 5 s after signal %d", name, sig);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("%s: signal %d: wait status 0x%x, not exit 0", name, sig,
                 status);
    if (took >= 1.0)
        fail_msg("%s: took %.3f s to exit after signal %d", name, took, sig);
    reap_server();
}

static void serve_and_stop(const char *name, bool alternate, int sig)
{
    enum kind k = kind_of(name);
    char address[SKS_ADDRSTRLEN], bound[SKS_ADDRSTRLEN];
    pick_address(k, alternate, address, sizeof(address));
    start_server(name, address, bound, sizeof(bound));
    if (is_stream(k))
        echo_lines(bound);
    else
        echo_datagrams(bound);
    stop_server(name, sig);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* Guards against a test that passes because it found nothing. */
static void test_examples_are_found(void **state)
{
    (void)state;
    static const char *const known[] = {
        "echo_tcp_server", "echo_udp_server", "echo_unix_server",
        "echo_unix_dgram_server",
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        bool found = false;
        for (int j = 0; j < nnames; j++)
            found = found || strcmp(names[j], known[i]) == 0;
        if (!found)
            fail_msg("%s not found in %s", known[i], examples_dir());
    }
    assert_int_equal(kind_of("echo_udp_server"), UDP);
    assert_int_equal(kind_of("echo_threading_udp_server"), UDP);
    assert_int_equal(kind_of("echo_unix_dgram_server"), UNIX_DGRAM);
    assert_int_equal(kind_of("echo_unix_server"), UNIX_STREAM);
    assert_int_equal(kind_of("echo_forking_unix_server"), UNIX_STREAM);
    assert_int_equal(kind_of("echo_prefork_server"), TCP);
    for (int j = 0; j < nnames; j++)
        print_message("found %s/%s\n", examples_dir(), names[j]);
}

static void test_every_echo_server_echoes_and_exits_0_on_sigterm(
    void **state)
{
    (void)state;
    for (int i = 0; i < nnames; i++)
        serve_and_stop(names[i], false, SIGTERM);
}

static void test_every_echo_server_echoes_and_exits_0_on_sigint(void **state)
{
    (void)state;
    for (int i = 0; i < nnames; i++)
        serve_and_stop(names[i], false, SIGINT);
}

/* IPv6 loopback for TCP/UDP servers, an abstract name for Unix ones. */
static void test_every_echo_server_serves_other_address_forms(void **state)
{
    (void)state;
    for (int i = 0; i < nnames; i++)
        serve_and_stop(names[i], true, SIGTERM);
}

/* Nothing in progress, yet idle: SIGTERM after a long quiet spell still
 * ends the server at once (the wait is not paced by poll_interval). */
static void test_echo_server_exits_at_once_when_idle(void **state)
{
    (void)state;
    char address[SKS_ADDRSTRLEN], bound[SKS_ADDRSTRLEN];
    pick_address(TCP, false, address, sizeof(address));
    start_server("echo_tcp_server", address, bound, sizeof(bound));
    double took;
    assert_int_equal(kill(server.pid, SIGTERM), 0);
    int status = proc_wait_exit(&server, 5000, &took);
    assert_true(status != -1 && WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(took < 0.4); /* poll_interval is 0.5 s */
}

/* Runs echo_client with args; returns its exit status, output in out. */
static int run_client(char *const argv[], char *out, size_t cap)
{
    size_t got = 0;
    double end = now_seconds() + 10.0;
    proc_spawn(&client, argv);
    for (;;) {
        int left = (int)((end - now_seconds()) * 1000.0);
        if (left <= 0 || !readable_within(client.out, left))
            break;
        ssize_t r = read(client.out, out + got, cap - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || (got += (size_t)r) == cap - 1)
            break;
    }
    out[got] = '\0';
    double took;
    int status = proc_wait_exit(&client, 5000, &took);
    assert_true(status != -1 && WIFEXITED(status));
    proc_kill(&client);
    return WEXITSTATUS(status);
}

static void test_echo_client_talks_to_every_transport(void **state)
{
    (void)state;
    static const char *const servers[] = {
        "echo_tcp_server", "echo_unix_server", "echo_udp_server",
        "echo_unix_dgram_server",
    };
    for (size_t i = 0; i < sizeof(servers) / sizeof(servers[0]); i++) {
        enum kind k = kind_of(servers[i]);
        char address[SKS_ADDRSTRLEN], bound[SKS_ADDRSTRLEN], out[256];
        pick_address(k, false, address, sizeof(address));
        start_server(servers[i], address, bound, sizeof(bound));
        char *stream_argv[] = { "echo_client", bound, "hello", "two words",
                                NULL };
        char *dgram_argv[] = { "echo_client", "--udp", bound, "hello",
                               "two words", NULL };
        assert_int_equal(run_client(is_stream(k) ? stream_argv : dgram_argv,
                                    out, sizeof(out)),
                         0);
        assert_string_equal(out, "hello\ntwo words\n");
        stop_server(servers[i], SIGTERM);
    }
}

/* The Unix examples remove their socket file when they stop. */
static void test_unix_examples_remove_their_socket_file(void **state)
{
    (void)state;
    static const char *const servers[] = { "echo_unix_server",
                                           "echo_unix_dgram_server" };
    for (size_t i = 0; i < 2; i++) {
        char address[SKS_ADDRSTRLEN], bound[SKS_ADDRSTRLEN], path[PATH_MAX];
        struct stat st;
        pick_address(kind_of(servers[i]), false, address, sizeof(address));
        snprintf(path, sizeof(path), "%s", unix_path);
        start_server(servers[i], address, bound, sizeof(bound));
        assert_true(lstat(path, &st) == 0 && S_ISSOCK(st.st_mode));
        stop_server(servers[i], SIGTERM);
        assert_int_equal(lstat(path, &st), -1);
    }
}

#define T(name) cmocka_unit_test_teardown(name, cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_examples_are_found),
        T(test_every_echo_server_echoes_and_exits_0_on_sigterm),
        T(test_every_echo_server_echoes_and_exits_0_on_sigint),
        T(test_every_echo_server_serves_other_address_forms),
        T(test_echo_server_exits_at_once_when_idle),
        T(test_echo_client_talks_to_every_transport),
        T(test_unix_examples_remove_their_socket_file),
    };
    return cmocka_run_group_tests(tests, discover, NULL);
}
