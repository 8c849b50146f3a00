#!/usr/bin/env bash
# http_bench.sh - wrk against examples/http_file_server and against
# `python3 -m http.server` (a ThreadingHTTPServer), both serving the same
# 4 KiB file from the same directory on loopback, for a fixed duration.
# Prints requests/s, p99 latency and the ratio, twice: with keep-alive
# (wrk's default; Python's server answers HTTP/1.0 and closes anyway) and
# with "Connection: close" on every request (a connection per request for
# both: the fair per-request comparison).
#
#   BUILD=build BENCH_SECONDS=5 bench/http_bench.sh
#
# Needs wrk (Debian: apt-get install -y wrk) and python3; without them it
# says so and exits 0, so `make bench` can call it unconditionally.  The
# access logs go to /dev/null for both servers.  Results are also written
# to $BUILD/bench/results/http.txt.
set -eu
BUILD=${BUILD:-build}
SECONDS_EACH=${BENCH_SECONDS:-5}
THREADS=${WRK_THREADS:-1}
CONNS=${WRK_CONNECTIONS:-16}
SERVER=$BUILD/examples/http_file_server

for prog in wrk python3 curl; do
    if ! command -v "$prog" >/dev/null 2>&1; then
        echo "http_bench: $prog is missing (apt-get install -y $prog): skipped"
        exit 0
    fi
done
if [ ! -x "$SERVER" ]; then
    echo "http_bench: $SERVER is not built (make examples)" >&2
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/http_bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/www"
head -c 4096 /dev/urandom >"$T/www/file4k.bin"

# wait_line FILE PATTERN: up to 10 s for a server's start-up line.
wait_line() {
    for ((i = 0; i < 200; i++)); do
        grep -qs "$2" "$1" && return 0
        sleep 0.05
    done
    echo "http_bench: server did not start: $(cat "$1")" >&2
    exit 1
}

"$SERVER" 127.0.0.1:0 "$T/www" >"$T/sks.out" 2>/dev/null &
pids+=($!)
wait_line "$T/sks.out" '^listening on '
sks_addr=$(sed -n '1s/^listening on //p' "$T/sks.out")

# -u: unbuffered, so the "Serving HTTP on ... port N" line shows at once.
python3 -u -m http.server --bind 127.0.0.1 --directory "$T/www" 0 \
    >"$T/py.out" 2>/dev/null &
pids+=($!)
wait_line "$T/py.out" 'port [0-9]'
py_addr=127.0.0.1:$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$T/py.out" | head -n 1)

# Both must serve the file right before being measured.
for a in "$sks_addr" "$py_addr"; do
    curl -sS --max-time 10 -o "$T/check" "http://$a/file4k.bin"
    cmp -s "$T/check" "$T/www/file4k.bin" || { echo "http_bench: $a serves a wrong file" >&2; exit 1; }
done

# run ADDRESS [wrk args...]: prints "REQ_PER_SEC P99".
run() {
    local a=$1
    shift
    wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_EACH}s" --latency "$@" \
        "http://$a/file4k.bin" >"$T/wrk.out" 2>&1
    local rps p99 errors
    rps=$(sed -n 's/^Requests\/sec: *//p' "$T/wrk.out")
    p99=$(awk '$1 == "99%" { print $2 }' "$T/wrk.out")
    errors=$(grep -E 'Socket errors|Non-2xx' "$T/wrk.out" | tr -s ' ' | tr '\n' ';' || true)
    echo "${rps:-0} ${p99:-?} ${errors}"
}

out=$T/report
{
    echo "HTTP GET of a 4 KiB file: wrk -t$THREADS -c$CONNS -d${SECONDS_EACH}s, loopback, $(nproc) CPUs"
    printf '%-28s %-34s %12s %10s\n' mode server "requests/s" "p99"
    for mode in keep-alive close; do
        hdr=()
        [ "$mode" = close ] && hdr=(-H "Connection: close")
        read -r s_rps s_p99 s_err < <(run "$sks_addr" "${hdr[@]+"${hdr[@]}"}")
        read -r p_rps p_p99 p_err < <(run "$py_addr" "${hdr[@]+"${hdr[@]}"}")
        printf '%-28s %-34s %12s %10s %s\n' "$mode" "libsockserver http_file_server" "$s_rps" "$s_p99" "$s_err"
        printf '%-28s %-34s %12s %10s %s\n' "$mode" "python3 -m http.server" "$p_rps" "$p_p99" "$p_err"
        awk -v s="$s_rps" -v p="$p_rps" -v m="$mode" \
            'BEGIN { if (p > 0) printf "%-28s ratio (requests/s)                 %11.1fx\n", m, s / p }'
    done
} | tee "$out"

mkdir -p "$BUILD/bench/results" 2>/dev/null && cp "$out" "$BUILD/bench/results/http.txt" || true
