#!/usr/bin/env bash
# bench/syscalls.sh - make bench-syscalls: the cost of one request that
# noise cannot move.  For each server: system calls per request (strace -c
# -f, every thread and child counted, with the breakdown by call), the same
# count at full speed where perf can read the raw_syscalls tracepoint (a
# server slowed down by strace finds more requests queued, which changes
# how often its loop polls), and user-space instructions per request
# (valgrind --tool=callgrind; `perf stat -e instructions:u` instead when
# the CPU exposes the counter, which this VM does not).
#
# Each figure is a difference of two bounded runs, N1 and N2 requests, so
# that start-up, connection set-up and shutdown cancel out:
#   per request = (count(N2) - count(N1)) / (N2 - N1)
#
# Environment: BENCH_BIN (build/bench); BENCH_ONLY (none): an extended
# regular expression, and only the rows whose "scenario server" matches
# run.  Results: $BENCH_BIN/results/.
set -u
cd "$(dirname "$0")/.."

wanted() { [ -z "${BENCH_ONLY:-}" ] || [[ $1 =~ $BENCH_ONLY ]]; }

BIN=${BENCH_BIN:-build/bench}
OUT=$BIN/results
mkdir -p "$OUT"
TAB=$OUT/syscalls.txt
LOG=$OUT/syscalls-log.txt
: >"$TAB"
: >"$LOG"
TMP=$(mktemp -d /tmp/sks-syscalls.XXXXXX)
TRACER=    # pid of the strace or valgrind we started, while it runs
START=$(date +%s)

cleanup() {
    if [ -n "$TRACER" ]; then
        kill -KILL "$TRACER" 2>/dev/null
        wait "$TRACER" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Installs a Debian package as root if its command is missing.
need() {
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bench-syscalls: $1 missing: installing $2"
        (apt-get install -y -q "$2" || (apt-get update -q && apt-get install -y -q "$2")) \
            >>"$LOG" 2>&1
    fi
    command -v "$1" >/dev/null
}

HAVE_STRACE=1 INSN= FAST=0
# System calls counted at full speed too, where tracepoints are readable:
# strace slows the server down, and a slow server finds more requests
# queued, which changes how often its loop polls.
perf stat -x, -e raw_syscalls:sys_enter true 2>&1 | grep -q '^[0-9]' && FAST=1
[ "$FAST" = 0 ] && echo "bench-syscalls: perf cannot read the raw_syscalls tracepoint: sys/fast column skipped"
need strace strace || { HAVE_STRACE=0; echo "bench-syscalls: strace unavailable (apt-get install strace): system-call column skipped"; }
if perf stat -x, -e instructions:u true 2>&1 | grep -q '^[0-9]'; then
    INSN=perf
elif need valgrind valgrind; then
    INSN=callgrind
else
    echo "bench-syscalls: neither perf instruction counters nor valgrind: instruction column skipped"
fi

PY=
command -v python3 >/dev/null && PY=$(python3 -c 'import sys; print(sys.executable)')

alive() {
    [ -r "/proc/$1/stat" ] && ! grep -qs '^[0-9]* ([^)]*) Z' "/proc/$1/stat"
}

# Waits (at most 20 s: valgrind starts slowly) for "listening on".
wait_listening() {
    local i
    for i in $(seq 2000); do
        if grep -q '^listening on ' "$TMP/srv.out"; then
            ADDR=$(sed -n 's/^listening on //p' "$TMP/srv.out" | head -n 1)
            return 0
        fi
        alive "$TRACER" || return 1
        sleep 0.01
    done
    return 1
}

# The server under the tracer: the tracer itself (valgrind) or its child.
server_pid() {
    if [ "$1" = self ]; then
        echo "$TRACER"
    else
        cat /proc/"$TRACER"/task/*/children 2>/dev/null | awk '{ print $1; exit }'
    fi
}

# Stops the traced server with SIGTERM and waits (at most 30 s) for the
# tracer to write its figures and exit.
stop_traced() {
    local who=$1 pid i
    pid=$(server_pid "$who")
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    for i in $(seq 3000); do
        alive "$TRACER" || break
        sleep 0.01
    done
    if alive "$TRACER"; then
        echo "bench-syscalls: tracer $TRACER did not finish: killed" >>"$LOG"
        kill -KILL "$TRACER" 2>/dev/null
    fi
    wait "$TRACER" 2>/dev/null
    TRACER=
}

# load ARGS N: the bounded load (N requests, at most 60 s).
load() {
    timeout -k 5 90 "$BIN/loadgen" $1 --requests "$2" --seconds 60 \
        --addr "$ADDR" --tmpdir "$TMP" 2>>"$LOG" | grep '^RESULT' >>"$LOG"
}

# fresh_addr FAMILY: the server address in FADDR: loopback port 0, or a
# new Unix path (each server its own; mktemp, as this runs in subshells).
fresh_addr() {
    if [ "$1" = unix ]; then
        FADDR="unix:$(mktemp -u "$TMP/tXXXXXX.sock")"
    else
        FADDR=127.0.0.1:0
    fi
}

# strace_count FAMILY LOADGEN-ARGS N -- SERVER... : writes per-syscall
# counts "name calls" to $TMP/counts.
strace_count() {
    local fam=$1 lg=$2 n=$3 a
    shift 4
    fresh_addr "$fam"
    a=$FADDR
    : >"$TMP/srv.out"
    strace -f -c -o "$TMP/strace.out" -- "$@" "$a" >"$TMP/srv.out" 2>>"$LOG" &
    TRACER=$!
    wait_listening || { stop_traced child; return 1; }
    load "$lg" "$n"
    stop_traced child
    awk '$1 ~ /^[0-9.]+$/ && NF >= 5 { print $NF, $4 }' "$TMP/strace.out" >"$TMP/counts"
}

# insn_count FAMILY LOADGEN-ARGS N -- SERVER... : prints user-space
# instructions over the server's life (every thread and child).
insn_count() {
    local fam=$1 lg=$2 n=$3 a
    shift 4
    fresh_addr "$fam"
    a=$FADDR
    : >"$TMP/srv.out"
    rm -f "$TMP"/cg.* "$TMP/perf.out"
    if [ "$INSN" = perf ]; then
        perf stat -x, -e instructions:u -o "$TMP/perf.out" -- "$@" "$a" \
            >"$TMP/srv.out" 2>>"$LOG" &
        TRACER=$!
        wait_listening || { stop_traced child; return 1; }
        load "$lg" "$n"
        stop_traced child
        awk -F, '$3 ~ /instructions/ { print $1; exit }' "$TMP/perf.out"
    else
        valgrind -q --tool=callgrind --dump-before=_Fork \
            --callgrind-out-file="$TMP/cg.%p" \
            "$@" "$a" >"$TMP/srv.out" 2>>"$LOG" &
        TRACER=$!
        wait_listening || { stop_traced self; return 1; }
        load "$lg" "$n"
        stop_traced self
        # A forked child starts with its parent's counts: dumping (and so
        # zeroing) before each fork makes every instruction count once,
        # in some file of the parent or of a child; add them all up.
        cat "$TMP"/cg.* 2>/dev/null | awk '$1 == "summary:" { s += $2 } END { printf "%.0f\n", s }'
    fi
}

# fast_count FAMILY LOADGEN-ARGS N -- SERVER... : prints the system calls
# made over the server's life, counted by a tracepoint at full speed.
fast_count() {
    local fam=$1 lg=$2 n=$3 a
    shift 4
    fresh_addr "$fam"
    a=$FADDR
    : >"$TMP/srv.out"
    perf stat -x, -e raw_syscalls:sys_enter -o "$TMP/perf-sys.out" -- "$@" "$a" \
        >"$TMP/srv.out" 2>>"$LOG" &
    TRACER=$!
    wait_listening || { stop_traced child; return 1; }
    load "$lg" "$n"
    stop_traced child
    awk -F, '$3 ~ /sys_enter/ { print $1; exit }' "$TMP/perf-sys.out"
}

# measure SCENARIO LABEL FAMILY LOADGEN-ARGS N1 N2 WHAT -- SERVER...
#   WHAT: "both", or "sys" (strace only: CPython under valgrind would
#   measure the interpreter, not the server design).
measure() {
    local scen=$1 label=$2 fam=$3 lg=$4 n1=$5 n2=$6 what=$7
    shift 8
    wanted "$scen $label" || return 0
    local sys=- top=- insn=- fast=- t0=$SECONDS
    if [ "$HAVE_STRACE" = 1 ]; then
        if strace_count "$fam" "$lg" "$n1" -- "$@"; then
            mv "$TMP/counts" "$TMP/counts1"
            if strace_count "$fam" "$lg" "$n2" -- "$@"; then
                sys=$(awk -v d=$((n2 - n1)) 'NR == FNR { a[$1] = $2; next }
                      $1 == "total" { printf "%.2f", ($2 - a["total"]) / d }' \
                      "$TMP/counts1" "$TMP/counts")
                # The calls that make up the figure, largest first.
                top=$(awk -v d=$((n2 - n1)) 'NR == FNR { a[$1] = $2; next }
                      $1 != "total" { v = ($2 - a[$1]) / d
                                      if (v >= 0.05) printf "%.2f %s\n", v, $1 }' \
                      "$TMP/counts1" "$TMP/counts" | sort -rn |
                      awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1 }')
            fi
        fi
    fi
    if [ "$FAST" = 1 ] && [ "$what" = both ]; then
        local f1 f2
        f1=$(fast_count "$fam" "$lg" "$n1" -- "$@")
        f2=$(fast_count "$fam" "$lg" "$n2" -- "$@")
        if [ -n "$f1" ] && [ -n "$f2" ]; then
            fast=$(awk -v a="$f1" -v b="$f2" -v d=$((n2 - n1)) \
                   'BEGIN { printf "%.2f", (b - a) / d }')
        fi
    fi
    if [ -n "$INSN" ] && [ "$what" = both ]; then
        local i1 i2
        i1=$(insn_count "$fam" "$lg" "$n1" -- "$@")
        i2=$(insn_count "$fam" "$lg" "$n2" -- "$@")
        if [ -n "$i1" ] && [ -n "$i2" ] && [ "$i2" -gt 0 ]; then
            insn=$(awk -v a="$i1" -v b="$i2" -v d=$((n2 - n1)) \
                   'BEGIN { printf "%.0f", (b - a) / d }')
        fi
    fi
    echo "$scen|$label|$sys|$fast|$insn|$top" >>"$TAB"
    printf '  %-14s %-30s %7s %7s %9s  %s  (%d s)\n' \
        "$scen" "$label" "$sys" "$fast" "$insn" "$top" $((SECONDS - t0))
}

echo "Per-request cost, from the difference of two bounded runs (N2 - N1 requests):"
echo "  sys/strace: system calls under strace -f -c (breakdown on the right)"
echo "  sys/fast:   system calls at full speed (perf, raw_syscalls:sys_enter)"
echo "  insn:       user-space instructions ($INSN; every thread and child)"
printf '  %-14s %-30s %7s %7s %9s  %s\n' scenario server sys/str sys/fast insn "breakdown (strace)"
E="--mode echo --conns 16 --size 16"
C="--mode connect --conns 16 --size 16"
D="--mode dgram --conns 16 --size 16"
S=$BIN/sks_echo
measure "echo 16B c16" "sks ThreadingTCPServer" tcp "$E" 2000 10000 both -- "$S" threading
measure "echo 16B c16" "C thread-per-connection" tcp "$E" 2000 10000 both -- "$BIN/ref_thread"
measure "echo 16B c16" "sks FiberTCPServer" tcp "$E" 2000 10000 both -- "$S" fiber
measure "echo 16B c16" "C epoll (ceiling)" tcp "$E" 2000 10000 both -- "$BIN/ref_epoll"
[ -n "$PY" ] && measure "echo 16B c16" "py ThreadingTCPServer" tcp "$E" 2000 10000 sys -- "$PY" bench/py_echo.py threading
measure "connect c16" "sks ThreadingTCPServer" tcp "$C" 200 1000 both -- "$S" threading
measure "connect c16" "C thread-per-connection" tcp "$C" 200 1000 both -- "$BIN/ref_thread"
measure "connect c16" "sks FiberTCPServer" tcp "$C" 200 1000 both -- "$S" fiber
measure "connect c16" "C epoll (ceiling)" tcp "$C" 200 1000 both -- "$BIN/ref_epoll"
[ -n "$PY" ] && measure "connect c16" "py ThreadingTCPServer" tcp "$C" 200 1000 sys -- "$PY" bench/py_echo.py threading
measure "connect c16" "sks ForkingTCPServer" tcp "$C" 100 400 both -- "$S" forking
measure "connect c16" "C fork-per-connection" tcp "$C" 100 400 both -- "$BIN/ref_fork"
measure "udp 16" "sks UDPServer" tcp "$D" 2000 10000 both -- "$S" udp
measure "udp 16" "sks FiberUDPServer" tcp "$D" 2000 10000 both -- "$S" fiber-udp
measure "udp 16" "C recvfrom/sendto loop" tcp "$D" 2000 10000 both -- "$BIN/ref_udp"
[ -n "$PY" ] && measure "udp 16" "py UDPServer" tcp "$D" 2000 10000 sys -- "$PY" bench/py_echo.py udp
measure "unix echo c16" "sks ThreadingUnixStreamServer" unix "$E" 2000 10000 both -- "$S" threading-unix
measure "unix echo c16" "C thread-per-connection" unix "$E" 2000 10000 both -- "$BIN/ref_thread"
measure "unix dgram 16" "sks UnixDatagramServer" unix "$D" 2000 10000 both -- "$S" unix-dgram
measure "unix dgram 16" "C recvfrom/sendto loop" unix "$D" 2000 10000 both -- "$BIN/ref_udp"
echo "($(($(date +%s) - START)) s)"
