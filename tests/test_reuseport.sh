#!/usr/bin/env bash
# test_reuseport.sh - several independent processes on one port with
# SO_REUSEPORT (whoami_server --reuse-port): each binds its own socket to
# 127.0.0.1:PORT and the kernel spreads incoming connections over them.
# Unlike the pre-fork mixin (one socket, inherited by forked children),
# the instances share nothing: one can be stopped and restarted while the
# others serve.  Prints cmocka-style summary lines.  The client is socat.
#
#   BUILD=build tests/test_reuseport.sh     (make test sets BUILD)
SUITE=test_reuseport
. "$(dirname "$0")/deploy_lib.sh"

suite_needs socat socat

WHOAMI=$EX/whoami_server
N=3

# connect_many COUNT: COUNT connections to PORT, one line each; every
# reply must be the client's own address.
connect_many() {
    local i reply
    for ((i = 0; i < $1; i++)); do
        reply=$(printf 'who\n' |
            line_client "TCP:127.0.0.1:$PORT,bind=127.0.0.7") ||
            fail "connection $i: no reply" || return 1
        [[ $reply =~ ^127\.0\.0\.7:[0-9]+$ ]] ||
            fail "connection $i: reply '$reply'" || return 1
    done
}

served() { grep -c '^127\.0\.0\.7:[0-9]* direct$' "${OUT[$1]}"; }

test_instances_share_one_port() {
    start w1 "$WHOAMI" --reuse-port 127.0.0.1:0
    wait_for w1 '^listening on ' "${OUT[w1]}" || return 1
    PORT=$(address_of w1)
    PORT=${PORT##*:}
    local i
    for ((i = 2; i <= N; i++)); do
        start "w$i" "$WHOAMI" --reuse-port "127.0.0.1:$PORT"
        wait_for "w$i" "^listening on 127.0.0.1:$PORT\$" "${OUT[w$i]}" ||
            return 1
    done
}

test_an_instance_without_reuse_port_is_refused() {
    start plain "$WHOAMI" "127.0.0.1:$PORT"
    wait_for plain 'Address already in use' "$T/plain.err" || return 1
    # It leaves on its own after the message; a SIGTERM sent at once could
    # overtake that exit (a slow exit under a sanitizer: status 143).
    wait_exit plain 5
    [ "$STATUS" = 1 ] || fail "exit status $STATUS, want 1"
}

test_the_kernel_spreads_connections_over_all() {
    connect_many 60 || return 1
    local i total=0 counts=
    for ((i = 1; i <= N; i++)); do
        counts="$counts w$i=$(served "w$i")"
        total=$((total + $(served "w$i")))
    done
    echo "  60 connections:$counts"
    [ "$total" = 60 ] || fail "$total served, want 60" || return 1
    # With 60 connections over 3 sockets, an instance left without one
    # has a probability near 1e-10 if the kernel spreads them at all.
    for ((i = 1; i <= N; i++)); do
        [ "$(served "w$i")" -ge 1 ] || fail "w$i served none" || return 1
    done
}

test_stopping_one_instance_leaves_the_port_served() {
    stop w1
    [ "$STATUS" = 0 ] || fail "w1 exit status $STATUS" || return 1
    local before=$(($(served w2) + $(served w3)))
    connect_many 20 || return 1
    local after=$(($(served w2) + $(served w3)))
    [ $((after - before)) = 20 ] || fail "$((after - before)) of 20 served"
}

test_a_new_instance_joins_the_port() {
    start w4 "$WHOAMI" --reuse-port "127.0.0.1:$PORT"
    wait_for w4 "^listening on 127.0.0.1:$PORT\$" "${OUT[w4]}" || return 1
    local i
    for ((i = 0; i < 60 && $(served w4) == 0; i++)); do
        connect_many 1 || return 1
    done
    [ "$(served w4)" -ge 1 ] || fail "the new instance got no connection" ||
        return 1
    for i in w2 w3 w4; do
        stop "$i"
        [ "$STATUS" = 0 ] || fail "$i exit status $STATUS" || return 1
    done
}

run_suite test_instances_share_one_port \
    test_an_instance_without_reuse_port_is_refused \
    test_the_kernel_spreads_connections_over_all \
    test_stopping_one_instance_leaves_the_port_served \
    test_a_new_instance_joins_the_port
