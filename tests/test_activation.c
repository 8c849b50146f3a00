/*
 * test_activation.c - servers on inherited sockets: sks_server_new_from_fd
 * and the socket-activation protocol (LISTEN_PID, LISTEN_FDS,
 * LISTEN_FDNAMES, descriptors from 3), every transport.
 *
 * The passed sockets are placed at descriptors 3, 4, ... of this process,
 * as systemd would; whatever this process had there (a make jobserver
 * pipe, say) is set aside for the test and put back after it.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Echoes every line until end of input (support.c). */
static const sks_handler_class *const echo = &echo_lines_stream;
static const sks_handler_class *const dgram_echo = &echo_lines_dgram;

/* ------------------------------------------------------------------------ */
/* Sockets as a supervisor would pass them                                   */

/* A socket bound to address, listening if stream; blocking, and without
 * close-on-exec, as inherited descriptors usually are. */
static int make_socket(const char *address, int type, bool listening)
{
    sks_addr a;
    assert_int_equal(sks_addr_parse(address, &a), 0);
    int fd = socket(a.u.sa.sa_family, type, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, &a.u.sa, a.len), 0);
    if (listening)
        assert_int_equal(listen(fd, 16), 0);
    return fd;
}

#define MAX_PLACED 4
static int saved[MAX_PLACED];
static int nplaced;

/* Moves socks[0..n) to descriptors 3.. (setting aside what was there). */
static void place(const int *socks, int n)
{
    int high[MAX_PLACED];
    assert_true(n <= MAX_PLACED);
    /* Out of the way first: a socket may itself sit at 3 or 4. */
    for (int i = 0; i < n; i++) {
        high[i] = fcntl(socks[i], F_DUPFD_CLOEXEC, 100);
        assert_true(high[i] >= 100);
        close(socks[i]);
    }
    for (int i = 0; i < n; i++) {
        int target = SKS_LISTEN_FDS_START + i;
        saved[i] = fcntl(target, F_DUPFD_CLOEXEC, 100);
        if (saved[i] < 0)
            assert_int_equal(errno, EBADF); /* nothing was there */
    }
    /* dup2 leaves the copy without close-on-exec, as inherited. */
    for (int i = 0; i < n; i++) {
        int target = SKS_LISTEN_FDS_START + i;
        assert_int_equal(dup2(high[i], target), target);
        close(high[i]);
    }
    nplaced = n;
}

/* Closes what is still at 3.. and puts back what was there. */
static void unplace(void)
{
    for (int i = 0; i < nplaced; i++) {
        int target = SKS_LISTEN_FDS_START + i;
        close(target);
        if (saved[i] >= 0) {
            assert_int_equal(dup2(saved[i], target), target);
            close(saved[i]);
        }
    }
    nplaced = 0;
}

static void clear_env(void)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

/* The variables systemd sets for this process and n descriptors. */
static void activate(int n, const char *names)
{
    char buf[32];
    clear_env();
    snprintf(buf, sizeof(buf), "%ld", (long)getpid());
    setenv("LISTEN_PID", buf, 1);
    snprintf(buf, sizeof(buf), "%d", n);
    setenv("LISTEN_FDS", buf, 1);
    if (names != NULL)
        setenv("LISTEN_FDNAMES", names, 1);
}

static bool env_cleared(void)
{
    return getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
           getenv("LISTEN_FDNAMES") == NULL;
}

static bool is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static bool has_cloexec(int fd)
{
    return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
}

static bool is_nonblocking(int fd)
{
    return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
}

static void free_names(char **names)
{
    for (char **p = names; p != NULL && *p != NULL; p++)
        free(*p);
    free(names);
}

/* ------------------------------------------------------------------------ */
/* The protocol's variables                                                  */

static void test_not_activated_is_zero_and_enoent(void **state)
{
    (void)state;
    sks_server *srv = (sks_server *)1;
    char **names = (char **)1;

    clear_env();
    assert_int_equal(sks_listen_fds(true, &names), 0);
    assert_null(names);
    assert_int_equal(sks_server_new_activated(&srv, &sks_tcp_ops, NULL, echo,
                                              NULL), -ENOENT);
    assert_null(srv);
}

static void test_variables_for_another_process_are_ignored(void **state)
{
    (void)state;
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getppid());

    /* Kept when asked to... */
    clear_env();
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    assert_int_equal(sks_listen_fds(false, NULL), 0);
    assert_string_equal(getenv("LISTEN_PID"), pid);
    /* ...and cleared otherwise, as sd_listen_fds(1) does. */
    assert_int_equal(sks_listen_fds(true, NULL), 0);
    assert_true(env_cleared());
    /* No LISTEN_PID: not activated, whatever LISTEN_FDS says. */
    setenv("LISTEN_FDS", "2", 1);
    assert_int_equal(sks_listen_fds(true, NULL), 0);
    assert_true(env_cleared());
}

static void test_malformed_variables_are_einval_and_cleared(void **state)
{
    (void)state;
    sks_server *srv = NULL;
    int s = make_socket("127.0.0.1:0", SOCK_STREAM, true);
    place(&s, 1);

    activate(1, NULL);
    setenv("LISTEN_PID", "12x", 1);
    assert_int_equal(sks_listen_fds(true, NULL), -EINVAL);
    assert_true(env_cleared());

    static const char *const bad_fds[] = { "", "-1", "one", "1 ",
                                           "99999999999" };
    for (size_t i = 0; i < sizeof(bad_fds) / sizeof(bad_fds[0]); i++) {
        activate(1, NULL);
        setenv("LISTEN_FDS", bad_fds[i], 1);
        assert_int_equal(sks_listen_fds(true, NULL), -EINVAL);
        assert_true(env_cleared());
    }
    /* A name count that does not match the descriptors. */
    activate(1, "a:b");
    assert_int_equal(sks_server_new_activated(&srv, &sks_tcp_ops, NULL, echo,
                                              NULL), -EINVAL);
    assert_null(srv);
    assert_true(env_cleared());
    assert_true(is_open(3));
    unplace();
}

static void test_passed_descriptors_become_cloexec_with_their_names(void **s)
{
    (void)s;
    int socks[2] = { make_socket("127.0.0.1:0", SOCK_STREAM, true),
                     make_socket("127.0.0.1:0", SOCK_DGRAM, false) };
    char **names = NULL;
    place(socks, 2);
    assert_false(has_cloexec(3));
    assert_false(has_cloexec(4));

    activate(2, "web:dns");
    assert_int_equal(sks_listen_fds(false, &names), 2);
    assert_true(has_cloexec(3));
    assert_true(has_cloexec(4));
    assert_non_null(names);
    assert_string_equal(names[0], "web");
    assert_string_equal(names[1], "dns");
    assert_null(names[2]);
    free_names(names);
    assert_false(env_cleared());

    /* Without LISTEN_FDNAMES every name is "unknown". */
    activate(2, NULL);
    assert_int_equal(sks_listen_fds(true, &names), 2);
    assert_string_equal(names[0], "unknown");
    assert_string_equal(names[1], "unknown");
    free_names(names);
    assert_true(env_cleared());
    unplace();
}

/* ------------------------------------------------------------------------ */
/* Adoption, every transport                                                 */

static void activated_tcp_listener_is_adopted_and_serves(const sks_server_ops *ops)
{
    char want[SKS_ADDRSTRLEN];
    test_server ts;
    sks_server *srv = NULL;
    int s = make_socket("127.0.0.1:0", SOCK_STREAM, true);
    socket_name(s, want, sizeof(want));
    place(&s, 1);
    int fds = count_open_fds();
    assert_false(is_nonblocking(3));

    activate(1, NULL);
    assert_int_equal(sks_server_new_activated(&srv, ops,
                                              NULL, echo, NULL), 0);
    assert_true(env_cleared());
    assert_int_equal(sks_server_fileno(srv), 3);
    assert_true(has_cloexec(3));
    assert_true(is_nonblocking(3)); /* as the library's own listeners */
    ts_serve(&ts, srv, 0.01);
    assert_string_equal(ts.address, want);
    int c = client_connect(ts.address);
    assert_true(c >= 0);
    assert_echo(c, "adopted\n");
    client_close(c);
    ts_stop(&ts);
    assert_false(is_open(3)); /* the server owned it */
    /* The wake-up pipe is gone too; only the socket is. */
    assert_int_equal(count_open_fds(), fds - 1);
    unplace();
}

static void test_activated_tcp_listener_is_adopted_and_serves(void **state)
{
    (void)state;
    activated_tcp_listener_is_adopted_and_serves(&sks_threading_tcp_ops);
}

static void test_activated_tcp_listener_is_adopted_and_serves_fiber(void **state)
{
    (void)state;
    activated_tcp_listener_is_adopted_and_serves(&sks_fiber_tcp_ops);
}

/* A SO_REUSEPORT listener on address (port 0: a free one). */
static int reuse_port_listener(const char *address)
{
    sks_addr a;
    int one = 1;
    assert_int_equal(sks_addr_parse(address, &a), 0);
    int fd = socket(a.u.sa.sa_family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
                                sizeof(one)), 0);
    assert_int_equal(bind(fd, &a.u.sa, a.len), 0);
    assert_int_equal(listen(fd, 64), 0);
    return fd;
}

/* Two SO_REUSEPORT listeners of one address and name, as an upgrade of a
 * server with per-loop sockets passes them: one server adopts both and
 * accepts from both queues (the kernel spreads the clients over them, and
 * a client of a socket left out would wait unanswered), and owns both. */
static void reuse_port_pair_is_adopted_whole(const sks_server_ops *ops)
{
    char address[SKS_ADDRSTRLEN];
    int s[2];
    s[0] = reuse_port_listener("127.0.0.1:0");
    socket_name(s[0], address, sizeof(address));
    s[1] = reuse_port_listener(address);
    place(s, 2);
    activate(2, "web:web");
    sks_server *srv = NULL;
    assert_int_equal(sks_server_new_activated(&srv, ops, "web", echo, NULL),
                     0);
    assert_true(has_cloexec(4) && is_nonblocking(4));
    test_server ts;
    ts_serve(&ts, srv, 0.01);
    for (int i = 0; i < 32; i++) {
        int c = client_connect(address);
        assert_true(c >= 0);
        assert_echo(c, "either queue\n");
        client_close(c);
    }
    ts_stop(&ts);
    assert_false(is_open(3));
    assert_false(is_open(4));
    unplace();
}

static void test_a_reuse_port_pair_is_adopted_whole(void **state)
{
    (void)state;
    reuse_port_pair_is_adopted_whole(&sks_threading_tcp_ops);
}

static void test_a_reuse_port_pair_is_adopted_whole_fiber(void **state)
{
    (void)state;
    reuse_port_pair_is_adopted_whole(&sks_fiber_tcp_ops);
}

static void test_activated_udp_socket_is_adopted_blocking(void **state)
{
    (void)state;
    test_server ts;
    sks_server *srv = NULL;
    int s = make_socket("127.0.0.1:0", SOCK_DGRAM, false);
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    place(&s, 1);

    activate(1, NULL);
    /* A stream table does not take a datagram socket, and it stays. */
    assert_int_equal(sks_server_new_activated(&srv, &sks_tcp_ops, NULL, echo,
                                              NULL), -EPROTOTYPE);
    assert_null(srv);
    assert_true(is_open(3));
    assert_int_equal(sks_server_new_activated(&srv, &sks_udp_ops, NULL,
                                              dgram_echo, NULL), 0);
    assert_false(is_nonblocking(3)); /* as the library's datagram sockets */
    ts_serve(&ts, srv, 0.01);
    assert_echo_once(ts.address, SOCK_DGRAM, "ping\n");
    ts_stop(&ts);
    assert_false(is_open(3));
    unplace();
}

static void test_activated_unix_sockets_are_adopted_file_kept(void **state)
{
    (void)state;
    char spath[SKS_ADDRSTRLEN], dpath[SKS_ADDRSTRLEN];
    test_server ts, td;
    sks_server *srv = NULL, *dsrv = NULL;
    struct stat st;

    unix_temp_address(spath, sizeof(spath));
    unix_temp_address(dpath, sizeof(dpath));
    int socks[2] = { make_socket(dpath, SOCK_DGRAM, false),
                     make_socket(spath, SOCK_STREAM, true) };
    place(socks, 2);
    activate(2, "dgram:stream");
    /* With no name: the first that suits each table. */
    assert_int_equal(sks_server_new_activated(&srv, &sks_unix_stream_ops,
                                              NULL, echo, NULL), 0);
    assert_int_equal(sks_server_fileno(srv), 4);
    assert_int_equal(sks_server_new_activated(&dsrv, &sks_unix_dgram_ops,
                                              NULL, dgram_echo, NULL), 0);
    assert_int_equal(sks_server_fileno(dsrv), 3);
    /* The files are the supervisor's: never removed by the server. */
    sks_server_set_unlink_on_close(srv, true);
    sks_server_set_unlink_on_close(dsrv, true);
    ts_serve(&ts, srv, 0.01);
    ts_serve(&td, dsrv, 0.01);
    assert_string_equal(ts.address, spath);
    assert_string_equal(td.address, dpath);
    int c = client_connect(spath);
    assert_true(c >= 0);
    assert_echo(c, "unix stream\n");
    client_close(c);
    assert_echo_once(dpath, SOCK_DGRAM, "unix dgram\n");
    ts_stop(&ts);
    ts_stop(&td);
    assert_int_equal(stat(spath + 5, &st), 0);
    assert_int_equal(stat(dpath + 5, &st), 0);
    unlink(spath + 5);
    unlink(dpath + 5);
    unplace();
}

static void test_names_pick_the_socket_and_each_is_adopted_once(void **s)
{
    (void)s;
    char a0[SKS_ADDRSTRLEN], a1[SKS_ADDRSTRLEN];
    sks_server *x = NULL, *y = NULL, *z = NULL;
    int socks[2] = { make_socket("127.0.0.1:0", SOCK_STREAM, true),
                     make_socket("[::1]:0", SOCK_STREAM, true) };
    socket_name(socks[0], a0, sizeof(a0));
    socket_name(socks[1], a1, sizeof(a1));
    place(socks, 2);

    activate(2, "public:admin");
    assert_int_equal(sks_server_new_activated(&x, &sks_tcp_ops, "nosuch",
                                              echo, NULL), -ENOENT);
    assert_int_equal(sks_server_new_activated(&x, &sks_tcp_ops, "admin",
                                              echo, NULL), 0);
    assert_int_equal(sks_server_fileno(x), 4);
    char got[SKS_ADDRSTRLEN];
    sks_addr_format(sks_server_address(x), got, sizeof(got));
    assert_string_equal(got, a1);
    assert_int_equal(sks_server_new_activated(&y, &sks_tcp_ops, "admin",
                                              echo, NULL), -ENOENT);
    assert_int_equal(sks_server_new_activated(&y, &sks_tcp_ops, NULL, echo,
                                              NULL), 0);
    assert_int_equal(sks_server_fileno(y), 3);
    sks_addr_format(sks_server_address(y), got, sizeof(got));
    assert_string_equal(got, a0);
    assert_int_equal(sks_server_new_activated(&z, &sks_tcp_ops, NULL, echo,
                                              NULL), -ENOENT);
    assert_null(z);
    sks_server_free(x);
    sks_server_free(y);
    unplace();
}

/* ------------------------------------------------------------------------ */
/* sks_server_new_from_fd                                                    */

static void test_from_fd_refuses_misfits_and_leaves_them_open(void **state)
{
    (void)state;
    sks_server *srv = (sks_server *)1;
    char path[SKS_ADDRSTRLEN];
    int fds = count_open_fds();

    unix_temp_address(path, sizeof(path));
    int ux = make_socket(path, SOCK_STREAM, true);
    assert_int_equal(sks_server_new_from_fd(&srv, &sks_tcp_ops, ux, echo,
                                            NULL), -EAFNOSUPPORT);
    assert_null(srv);
    assert_true(is_open(ux));
    assert_false(has_cloexec(ux)); /* untouched */
    close(ux);
    unlink(path + 5);

    int idle = make_socket("127.0.0.1:0", SOCK_STREAM, false);
    assert_int_equal(sks_server_new_from_fd(&srv, &sks_tcp_ops, idle, echo,
                                            NULL), -EINVAL);
    assert_true(is_open(idle));
    close(idle);

    int unbound = socket(AF_INET, SOCK_DGRAM, 0);
    assert_int_equal(sks_server_new_from_fd(&srv, &sks_udp_ops, unbound,
                                            dgram_echo, NULL), -EINVAL);
    assert_true(is_open(unbound));
    close(unbound);

    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(sks_server_new_from_fd(&srv, &sks_tcp_ops, p[0], echo,
                                            NULL), -ENOTSOCK);
    close(p[0]);
    close(p[1]);
    assert_int_equal(sks_server_new_from_fd(&srv, &sks_tcp_ops, -1, echo,
                                            NULL), -EBADF);
    assert_null(srv);
    assert_int_equal(count_open_fds(), fds);
}

static void test_from_fd_serves_an_inherited_ipv6_listener(void **state)
{
    (void)state;
    char want[SKS_ADDRSTRLEN];
    test_server ts;
    sks_server *srv = NULL;
    int fds = count_open_fds();
    int s = make_socket("[::1]:0", SOCK_STREAM, true);
    socket_name(s, want, sizeof(want));

    assert_int_equal(sks_server_new_from_fd(&srv, &sks_threading_tcp_ops, s,
                                            echo, NULL), 0);
    assert_int_equal(sks_server_fileno(srv), s);
    assert_int_equal(sks_server_address_family(srv), AF_INET6);
    ts_serve(&ts, srv, 0.01);
    assert_string_equal(ts.address, want);
    int c = client_connect(want);
    assert_true(c >= 0);
    assert_echo(c, "inherited\n");
    client_close(c);
    ts_stop(&ts);
    assert_int_equal(count_open_fds(), fds);
}

/* A pre-forked server on an inherited socket: the children serve it. */
static void test_prefork_server_on_an_inherited_socket(void **state)
{
    (void)state;
    test_server ts;
    sks_server *srv = NULL;
    int s = make_socket("127.0.0.1:0", SOCK_STREAM, true);

    assert_int_equal(sks_server_new_from_fd(&srv, &sks_prefork_tcp_ops, s,
                                            echo, NULL), 0);
    assert_int_equal(sks_server_set_prefork(srv, 2, 0, 1.0), 0);
    ts_serve(&ts, srv, 0.01);
    for (int i = 0; i < 4; i++) {
        int c = client_connect(ts.address);
        assert_true(c >= 0);
        assert_echo(c, "prefork\n");
        /* shutdown, not only close: a child forked while this socket was
         * open holds a copy of it. */
        shutdown(c, SHUT_WR);
        assert_eof(c);
        client_close(c);
    }
    ts_stop(&ts);
    assert_int_equal(count_children(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_activated_is_zero_and_enoent),
        cmocka_unit_test(test_variables_for_another_process_are_ignored),
        cmocka_unit_test(test_malformed_variables_are_einval_and_cleared),
        cmocka_unit_test(test_passed_descriptors_become_cloexec_with_their_names),
        cmocka_unit_test(test_activated_tcp_listener_is_adopted_and_serves),
        cmocka_unit_test(test_activated_tcp_listener_is_adopted_and_serves_fiber),
        cmocka_unit_test(test_activated_udp_socket_is_adopted_blocking),
        cmocka_unit_test(test_activated_unix_sockets_are_adopted_file_kept),
        cmocka_unit_test(test_names_pick_the_socket_and_each_is_adopted_once),
        cmocka_unit_test(test_from_fd_refuses_misfits_and_leaves_them_open),
        cmocka_unit_test(test_from_fd_serves_an_inherited_ipv6_listener),
        cmocka_unit_test(test_prefork_server_on_an_inherited_socket),
        cmocka_unit_test(test_a_reuse_port_pair_is_adopted_whole),
        cmocka_unit_test(test_a_reuse_port_pair_is_adopted_whole_fiber),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
