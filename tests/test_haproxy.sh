#!/usr/bin/env bash
# test_haproxy.sh - the PROXY protocol behind a real HAProxy (Debian
# package haproxy): two whoami_server instances with --proxy-protocol, and
# HAProxy in front of them on loopback, sending PROXY v1 (send-proxy) to
# one and v2 (send-proxy-v2, with a CRC32C TLV) to the other.  A client
# bound to 127.0.0.7 connects through HAProxy; the handler must report
# that address, whichever instance and version served it, and HAProxy's
# health checks (a v2 LOCAL header; a v1 line of HAProxy's own addresses)
# must pass.
# Prints cmocka-style summary lines.  The client is socat (package socat).
#
#   BUILD=build tests/test_haproxy.sh       (make test sets BUILD)
SUITE=test_haproxy
. "$(dirname "$0")/deploy_lib.sh"

suite_needs haproxy haproxy
suite_needs socat socat
# listening() asks ss where /proc is not mounted.
[ -r /proc/net/tcp ] || suite_needs ss iproute2

WHOAMI=$EX/whoami_server

# The configuration docs/DEPLOYMENT.md shows, with the ports filled in:
# fe_v1 -> a (v1), fe_v2 -> b (v2), fe_both -> a and b in turn.
write_config() {
    cat >"$T/haproxy.cfg" <<EOF
global
    log stderr format raw local0

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe_v1
    bind 127.0.0.1:$FE_V1
    default_backend be_v1

frontend fe_v2
    bind 127.0.0.1:$FE_V2
    default_backend be_v2

frontend fe_both
    bind 127.0.0.1:$FE_BOTH
    default_backend be_both

backend be_v1
    server a $ADDR_A send-proxy check inter 300ms

backend be_v2
    server b $ADDR_B send-proxy-v2 proxy-v2-options crc32c check inter 300ms

backend be_both
    balance roundrobin
    server a $ADDR_A send-proxy check inter 300ms
    server b $ADDR_B send-proxy-v2 proxy-v2-options crc32c check inter 300ms
EOF
}

setup() {
    start a "$WHOAMI" --proxy-protocol 127.0.0.1:0
    start b "$WHOAMI" --proxy-protocol 127.0.0.1:0
    wait_for a '^listening on ' "${OUT[a]}" || return 1
    wait_for b '^listening on ' "${OUT[b]}" || return 1
    ADDR_A=$(address_of a)
    ADDR_B=$(address_of b)
    local try i
    for try in 1 2 3; do
        FE_V1=$(free_port)
        FE_V2=$(free_port)
        FE_BOTH=$(free_port)
        write_config
        start haproxy haproxy -db -f "$T/haproxy.cfg"
        for ((i = 0; i < 250; i++)); do
            if listening "$FE_V1" && listening "$FE_V2" &&
                listening "$FE_BOTH"; then
                return 0
            fi
            kill -0 "${PID[haproxy]}" 2>/dev/null || break
            sleep 0.02
        done
        echo "  haproxy did not start: $(head -c 600 "$T/haproxy.err")"
        stop haproxy
    done
    return 1
}

# who PORT [LINES]: connects from 127.0.0.7 through HAProxy's PORT, sends
# LINES lines (default 1) and prints the replies.
who() {
    local port=$1 n=${2:-1} i
    for ((i = 0; i < n; i++)); do echo "who $i"; done |
        line_client "TCP:127.0.0.1:$port,bind=127.0.0.7"
}

# is_client REPLY: one line, 127.0.0.7 and a port.
is_client() { [[ $1 =~ ^127\.0\.0\.7:[0-9]+$ ]]; }

# count_clients NAME: connections the instance logged from 127.0.0.7.
count_clients() { grep -c '^127\.0\.0\.7:[0-9]* via 127\.0\.0\.1:' "${OUT[$1]}"; }

test_health_checks_with_proxy_headers_pass() {
    # A health check's header is v2 LOCAL (keep the real peer) or a v1
    # line of HAProxy's own addresses: either way the instance sees
    # HAProxy as the client, "X via X".
    local name
    for name in a b; do
        wait_for "$name" '^\(127\.0\.0\.1:[0-9]*\) via \1$' \
            "${OUT[$name]}" || return 1
    done
    ! grep -q 'DOWN' "$T/haproxy.err" ||
        fail "a server went DOWN: $(grep DOWN "$T/haproxy.err" | head -3)" ||
        return 1
    # No header was refused, and no check connection failed.
    for name in a b; do
        ! grep -q 'Exception occurred' "$T/$name.err" ||
            fail "$name reported: $(head -c 300 "$T/$name.err")" || return 1
    done
}

test_v1_backend_reports_the_original_client() {
    local reply
    reply=$(who "$FE_V1") || fail "no reply" || return 1
    is_client "$reply" || fail "v1: reply '$reply'" || return 1
    # The instance logged it, with HAProxy as the peer.
    grep -qx "$reply via 127\.0\.0\.1:[0-9]*" "${OUT[a]}" ||
        fail "instance a did not log $reply"
}

test_v2_backend_reports_the_original_client() {
    local reply
    reply=$(who "$FE_V2") || fail "no reply" || return 1
    is_client "$reply" || fail "v2: reply '$reply'" || return 1
    grep -qx "$reply via 127\.0\.0\.1:[0-9]*" "${OUT[b]}" ||
        fail "instance b did not log $reply"
}

test_each_line_gets_the_client_address_back() {
    local replies line n=0 first=
    replies=$(who "$FE_V2" 5) || fail "no reply" || return 1
    while IFS= read -r line; do
        is_client "$line" || fail "reply line '$line'" || return 1
        [ -z "$first" ] && first=$line
        [ "$line" = "$first" ] || fail "lines differ: $line, $first" ||
            return 1
        n=$((n + 1))
    done <<<"$replies"
    [ "$n" = 5 ] || fail "$n replies to 5 lines"
}

test_connections_are_spread_over_both_instances() {
    local a0 b0 i reply
    a0=$(count_clients a)
    b0=$(count_clients b)
    for ((i = 0; i < 10; i++)); do
        reply=$(who "$FE_BOTH") || fail "connection $i: no reply" || return 1
        is_client "$reply" || fail "connection $i: reply '$reply'" ||
            return 1
    done
    local da=$(($(count_clients a) - a0)) db=$(($(count_clients b) - b0))
    echo "  10 connections: $da to a (v1), $db to b (v2)"
    [ $((da + db)) = 10 ] || fail "$((da + db)) logged, want 10" || return 1
    [ "$da" -ge 3 ] && [ "$db" -ge 3 ] || fail "not spread: $da and $db"
}

test_direct_connection_without_header_is_refused() {
    # Straight to an instance, no PROXY header: closed, never answered,
    # reported on stderr by handle_error.
    local reply
    reply=$(printf 'who\n' | line_client "TCP:$ADDR_A,bind=127.0.0.7")
    [ -z "$reply" ] || fail "answered without a header: '$reply'" ||
        return 1
    wait_for a 'request from 127\.0\.0\.7:' "$T/a.err" || return 1
    grep -q 'EPROTO' "$T/a.err" || fail "no EPROTO in: $(cat "$T/a.err")"
}

test_instances_stop_cleanly() {
    stop haproxy
    local name
    for name in a b; do
        stop "$name"
        [ "$STATUS" = 0 ] || fail "$name: exit status $STATUS" || return 1
    done
}

[ -n "$SUITE_SKIP" ] || setup || { echo "[  FAILED  ] 1 test(s)."; exit 1; }
run_suite test_health_checks_with_proxy_headers_pass \
    test_v1_backend_reports_the_original_client \
    test_v2_backend_reports_the_original_client \
    test_each_line_gets_the_client_address_back \
    test_connections_are_spread_over_both_instances \
    test_direct_connection_without_header_is_refused \
    test_instances_stop_cleanly
