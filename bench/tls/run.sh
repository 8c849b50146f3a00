#!/usr/bin/env bash
# bench/tls/run.sh - the TLS rows of make bench: full handshakes per
# server CPU-second (ECDSA P-256, RSA-2048) and 1 KiB echo round trips per
# server CPU-second, libsockserver_tls's synchronous server against a
# hand-written OpenSSL one, side by side; then the heap an idle TLS
# connection costs beyond a plain one.  Loopback only.
#
#   BENCH_BIN=build/bench/tls BENCH_SECONDS=N bench/tls/run.sh
set -u
B=${BENCH_BIN:?}
S=${BENCH_SECONDS:-1}
ROUNDS=${TLS_BENCH_ROUNDS:-3}
T=$(mktemp -d "${TMPDIR:-/tmp}/sks-tlsbench.XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$T"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench -keyout "$T/ec.key" -out "$T/ec.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench \
    -keyout "$T/rsa.key" -out "$T/rsa.pem" 2>/dev/null

# rate SERVER KEYTYPE MODE: the per-server-CPU-second figure.
rate() {
    "$B/$1" "$T/$2.pem" "$T/$2.key" >"$T/out" 2>/dev/null &
    local pid=$! port line i
    pids+=("$pid")
    for ((i = 0; i < 100; i++)); do
        line=$(head -n 1 "$T/out")
        [ -n "$line" ] && break
        sleep 0.05
    done
    port=${line##*:}
    line=$("$B/tls_load" "$3" "$port" "$S" "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null
    sed -n 's/.*, \([0-9]*\) per server CPU-second/\1/p' <<<"$line"
}

echo "TLS (libsockserver_tls, OpenSSL $(openssl version | cut -d' ' -f2)); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-34s %10s %10s %7s\n' "per server CPU-second, best of $ROUNDS" "sks" "OpenSSL" "ratio"
# best SERVER KEYTYPE MODE: the best of ROUNDS runs.  The machine is
# shared: a run whose server was descheduled between the client's request
# and its reply pays wake-ups that have nothing to do with TLS, so the
# best run of each is compared, the two taken in turn.
best() { sort -n | tail -n 1; }
for row in "ec handshake:full handshakes, ECDSA P-256" \
           "rsa handshake:full handshakes, RSA-2048" \
           "ec echo:1 KiB echo round trips"; do
    set -- ${row%%:*}
    sks_runs="" ref_runs=""
    for ((r = 0; r < ROUNDS; r++)); do
        sks_runs="$sks_runs $(rate sks_tls_echo "$1" "$2")"
        ref_runs="$ref_runs $(rate ref_tls "$1" "$2")"
    done
    sks=$(tr ' ' '\n' <<<"$sks_runs" | best)
    ref=$(tr ' ' '\n' <<<"$ref_runs" | best)
    printf '  %-34s %10s %10s %7s\n' "${row#*:}" "$sks" "$ref" \
        "$(awk -v a="$sks" -v b="$ref" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')"
done
"$B/tls_heap" "$T/ec.pem" "$T/ec.key" 1000 | sed 's/^/  /'
echo "  (load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
