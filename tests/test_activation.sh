#!/usr/bin/env bash
# test_activation.sh - socket activation with the real
# systemd-socket-activate (Debian package systemd): it binds a loopback
# port or a Unix path, and on the first connection starts an example
# server with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES and the socket at
# descriptor 3; the server must adopt it (no ADDRESS given), say
# "listening on" that address, and serve.  Started without the variables,
# the same servers bind as usual.  Prints cmocka-style summary lines.
#
#   BUILD=build tests/test_activation.sh      (make test sets BUILD)
SUITE=test_activation
. "$(dirname "$0")/deploy_lib.sh"

suite_needs systemd-socket-activate systemd

# activate NAME ADDRESS [OPTIONS...] -- SERVER: systemd-socket-activate
# listening on ADDRESS (a free port is chosen for "PORT"); sets LISTEN to
# the address it listens on.  It execs the server on the first connection,
# so PID[NAME] becomes the server's own.
activate() {
    local name=$1 address=$2 try
    shift 2
    for try in 1 2 3; do
        LISTEN=${address/PORT/$(free_port)}
        start "$name" systemd-socket-activate -l "$LISTEN" "$@"
        wait_for "$name" '^Listening on' "$T/$name.err" && return 0
        stop "$name"
    done
    return 1
}

test_tcp_server_adopts_the_activated_port() {
    activate tcp 127.0.0.1:PORT --fdname=echo "$EX/echo_threading_server" ||
        return 1
    # The first connection starts the server, which answers it.
    local reply
    reply=$("$EX/echo_client" "$LISTEN" "hello, activated" "again") ||
        fail "no echo through $LISTEN" || return 1
    [ "$reply" = $'hello, activated\nagain' ] ||
        fail "echo: '$reply'" || return 1
    wait_for tcp '^listening on ' "${OUT[tcp]}" || return 1
    [ "$(address_of tcp)" = "$LISTEN" ] ||
        fail "says '$(address_of tcp)', activated on $LISTEN" || return 1
    grep -q "Execing $EX/echo_threading_server" "$T/tcp.err" ||
        fail "not started by systemd-socket-activate" || return 1
    # Served by the started process: a second client, same server.
    reply=$("$EX/echo_client" "$LISTEN" "second") && [ "$reply" = second ] ||
        fail "second client: '$reply'" || return 1
    stop tcp
    [ "$STATUS" = 0 ] || fail "exit status $STATUS on SIGTERM"
}

test_unix_server_adopts_the_activated_path() {
    activate unix "$T/echo.sock" "$EX/echo_unix_server" || return 1
    local reply
    reply=$("$EX/echo_client" "unix:$T/echo.sock" "over a unix socket") ||
        fail "no echo" || return 1
    [ "$reply" = "over a unix socket" ] || fail "echo: '$reply'" || return 1
    wait_for unix '^listening on ' "${OUT[unix]}" || return 1
    [ "$(address_of unix)" = "unix:$T/echo.sock" ] ||
        fail "says '$(address_of unix)'" || return 1
    stop unix
    [ "$STATUS" = 0 ] || fail "exit status $STATUS" || return 1
    # The socket file is systemd's: the server leaves it.
    [ -S "$T/echo.sock" ] || fail "the activated socket file was removed"
}

test_udp_server_adopts_the_activated_datagram_socket() {
    activate udp 127.0.0.1:PORT --datagram "$EX/echo_udp_server" ||
        return 1
    local reply
    reply=$("$EX/echo_client" --udp "$LISTEN" "datagram one" "two") ||
        fail "no echo" || return 1
    [ "$reply" = $'datagram one\ntwo' ] || fail "echo: '$reply'" || return 1
    wait_for udp '^listening on ' "${OUT[udp]}" || return 1
    [ "$(address_of udp)" = "$LISTEN" ] || fail "says '$(address_of udp)'" ||
        return 1
    stop udp
    [ "$STATUS" = 0 ] || fail "exit status $STATUS"
}

test_whoami_server_adopts_and_reports_the_client() {
    need socat socat || return
    activate whoami 127.0.0.1:PORT "$EX/whoami_server" || return 1
    local reply
    reply=$(printf 'who\n' | line_client "TCP:$LISTEN,bind=127.0.0.7") ||
        fail "no reply" || return 1
    case $reply in
    127.0.0.7:[0-9]*) ;;
    *) fail "reply '$reply'" || return 1 ;;
    esac
    wait_for whoami '^listening on ' "${OUT[whoami]}" || return 1
    [ "$(address_of whoami)" = "$LISTEN" ] || fail "says $(address_of whoami)"
    stop whoami
}

test_wrong_socket_type_is_refused_with_a_message() {
    # A datagram socket passed to a stream server.
    activate wrong 127.0.0.1:PORT --datagram "$EX/echo_tcp_server" ||
        return 1
    # The datagram goes out at once; no answer is waited for.
    timeout 1 "$EX/echo_client" --udp "$LISTEN" "x" >/dev/null 2>&1
    wait_for wrong 'cannot serve the activated socket' "$T/wrong.err" ||
        return 1
    stop wrong
    [ "$STATUS" = 1 ] || fail "exit status $STATUS, want 1"
}

test_without_the_variables_the_server_binds_itself() {
    # No variables, and variables meant for another process (pid 1).
    start plain env -u LISTEN_PID -u LISTEN_FDS "$EX/echo_tcp_server" \
        127.0.0.1:0
    start other env LISTEN_PID=1 LISTEN_FDS=1 "$EX/echo_tcp_server" \
        127.0.0.1:0
    local name reply
    for name in plain other; do
        wait_for "$name" '^listening on 127\.0\.0\.1:' "${OUT[$name]}" ||
            return 1
        reply=$("$EX/echo_client" "$(address_of "$name")" "bound") &&
            [ "$reply" = bound ] || fail "$name: echo '$reply'" || return 1
        stop "$name"
        [ "$STATUS" = 0 ] || fail "$name: exit status $STATUS" || return 1
    done
    # Neither ADDRESS nor activation: usage, exit 2.
    "$EX/echo_tcp_server" >/dev/null 2>"$T/usage.err"
    local rc=$?
    [ "$rc" = 2 ] || fail "no ADDRESS: exit $rc, want 2" || return 1
    grep -q 'LISTEN_FDS' "$T/usage.err" || fail "usage does not say LISTEN_FDS"
}

run_suite test_tcp_server_adopts_the_activated_port \
    test_unix_server_adopts_the_activated_path \
    test_udp_server_adopts_the_activated_datagram_socket \
    test_whoami_server_adopts_and_reports_the_client \
    test_wrong_socket_type_is_refused_with_a_message \
    test_without_the_variables_the_server_binds_itself
