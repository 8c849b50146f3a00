#!/usr/bin/env bash
# bench/run.sh - make bench / make bench-quick: every scenario against the
# library's servers, the hand-written C servers and CPython's socketserver,
# one after another, then one table.  See docs/BENCHMARKS.md.
#
#   bench/run.sh full|quick
#
# Environment: BENCH_BIN (build/bench); BENCH_SECONDS (1; quick: 0.5), the
# measured seconds of each run; BENCH_REPEAT (2; quick: 1): each scenario
# runs its servers that many times, round after round, and the table keeps
# each server's best run (the least disturbed by other work on the
# machine); BENCH_SERVER_CPU (0) and BENCH_LOAD_CPU (1): the cores the
# server and the load generator are pinned to; BENCH_ONLY (none): an
# extended regular expression, and only the scenarios whose names match
# run (e.g. 'c1000|idle', to check rows with a small BENCH_SECONDS).  Only
# loopback and Unix sockets are used; every process started here is
# stopped here, by its pid.
set -u
cd "$(dirname "$0")/.."

# c1000 and the idle rows (up to 19,000 connections) need as many
# descriptors in the server and in the load generator, both children of
# this shell: the hard limit is the ceiling.
ulimit -S -n "$(ulimit -H -n)" 2>/dev/null

wanted() { [ -z "${BENCH_ONLY:-}" ] || [[ $1 =~ $BENCH_ONLY ]]; }

MODE=${1:-full}
BIN=${BENCH_BIN:-build/bench}
if [ "$MODE" = quick ]; then
    SECS=${BENCH_QUICK_SECONDS:-0.5}
    REPEAT=1
else
    SECS=${BENCH_SECONDS:-1}
    REPEAT=${BENCH_REPEAT:-2}
fi
OUT=$BIN/results
mkdir -p "$OUT"
RES=$OUT/runs.txt       # one line per server run: the raw figures
LOG=$OUT/log.txt        # load generator and server messages
EXTRA=$OUT/extra.txt    # shutdown latency and idle connections
: >"$RES"
: >"$LOG"
: >"$EXTRA"
TMP=$(mktemp -d /tmp/sks-bench.XXXXXX)
HZ=$(getconf CLK_TCK)
SRV_PID=
START=$(date +%s)

cleanup() {
    [ -n "$SRV_PID" ] && stop_server
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- pinning ---------------------------------------------------------------
SERVER_CPU=${BENCH_SERVER_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_SRV="taskset -c $SERVER_CPU"
    PIN_LOAD="taskset -c $LOAD_CPU"
    PINNING="server on CPU $SERVER_CPU, load generator on CPU $LOAD_CPU"
else
    PIN_SRV= PIN_LOAD=
    PINNING="not pinned (taskset missing or a single CPU)"
fi

# --- CPython ---------------------------------------------------------------
# The real interpreter, not a version-manager shim, so the pid we start is
# the server's own.
PY=
if command -v python3 >/dev/null; then
    PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
    PYVER=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
fi
[ -z "$PY" ] && echo "bench: python3 not found: the CPython columns are skipped"

# --- server processes ------------------------------------------------------
# next_unix: a fresh Unix socket path in UADDR (each server its own).
n_unix=0
next_unix() {
    n_unix=$((n_unix + 1))
    UADDR="unix:$TMP/s$n_unix.sock"
}

# Starts "$@" pinned, waits (at most 10 s) for "listening on ADDRESS".
start_server() {
    : >"$TMP/srv.out"
    $PIN_SRV "$@" >"$TMP/srv.out" 2>>"$LOG" &
    SRV_PID=$!
    local i
    for i in $(seq 1000); do
        if grep -q '^listening on ' "$TMP/srv.out"; then
            SRV_ADDR=$(sed -n 's/^listening on //p' "$TMP/srv.out" | head -n 1)
            return 0
        fi
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.01
    done
    echo "bench: server did not start: $*" | tee -a "$LOG" >&2
    stop_server
    return 1
}

alive() {
    [ -r "/proc/$1/stat" ] && ! grep -qs '^[0-9]* ([^)]*) Z' "/proc/$1/stat"
}

# SIGTERM, up to 5 s to exit (the servers close gracefully), then SIGKILL.
stop_server() {
    local pid=$SRV_PID i
    SRV_PID=
    [ -z "$pid" ] && return
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 500); do
        alive "$pid" || break
        sleep 0.01
    done
    if alive "$pid"; then
        echo "bench: pid $pid ignored SIGTERM for 5 s: killed" >>"$LOG"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
}

# utime+stime of the process and of its reaped children, in ticks.
cpu_ticks() {
    local line rest
    read -r line <"/proc/$1/stat" || { echo 0; return; }
    rest=${line##*) }
    set -- $rest
    echo $((${12} + ${13} + ${14} + ${15}))
}

# Minor page faults of the process and of its reaped children.  Exact, and
# what a fresh thread stack or a copy-on-write page after fork costs shows
# here first.
minor_faults() {
    local line rest
    read -r line <"/proc/$1/stat" || { echo 0; return; }
    rest=${line##*) }
    set -- $rest
    echo $((${8} + ${9}))
}

status_field() {
    sed -n "s/^$2:[[:space:]]*\\([0-9]*\\).*/\\1/p" "/proc/$1/status" 2>/dev/null
}

children_of() {
    cat /proc/"$1"/task/*/children 2>/dev/null | tr -d ' \n'
}

# After the load: wait (at most 3 s) until the server has reaped every
# child and its request threads have ended, so their CPU time is counted.
settle() {
    local pid=$1 threads0=$2 i
    for i in $(seq 300); do
        if [ -z "$(children_of "$pid")" ] &&
           [ "$(status_field "$pid" Threads)" -le "$threads0" ]; then
            return
        fi
        sleep 0.01
    done
}

field() { # field NAME "RESULT k=v ..."
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# run_case SCENARIO GROUP ROLE LABEL PYTARGET LOADGEN-ARGS -- SERVER...
#   GROUP pairs a library server with its hand-written (ROLE ref) and CPython
#   (ROLE py) counterparts; ROLE is sks, ref, py or ceiling.  PYTARGET is the
#   rps ratio the library server must reach against CPython ("-": none).
run_case() {
    local scen=$1 group=$2 role=$3 label=$4 target=$5 lgargs=$6
    shift 7
    if ! start_server "$@"; then
        echo "$scen|$group|$role|$label|$target|0|0|0|0|1|0|0|0|0|0" >>"$RES"
        return
    fi
    local threads0 before after res hwm tmo flt0 flt1
    threads0=$(status_field "$SRV_PID" Threads)
    before=$(cpu_ticks "$SRV_PID")
    flt0=$(minor_faults "$SRV_PID")
    tmo=$(awk -v s="$SECS" 'BEGIN { printf "%d", s + 20 }')
    res=$($PIN_LOAD timeout -k 5 "$tmo" "$BIN/loadgen" $lgargs \
            --addr "$SRV_ADDR" --seconds "$SECS" --tmpdir "$TMP" 2>>"$LOG" |
          grep '^RESULT')
    settle "$SRV_PID" "$threads0"
    after=$(cpu_ticks "$SRV_PID")
    flt1=$(minor_faults "$SRV_PID")
    hwm=$(status_field "$SRV_PID" VmHWM)
    stop_server
    local total rps p50 p99 mx errs lost cpu
    total=$(field total "$res"); rps=$(field rps "$res")
    p50=$(field p50_us "$res"); p99=$(field p99_us "$res")
    mx=$(field max_us "$res"); errs=$(field errors "$res")
    lost=$(field lost "$res")
    cpu=$(awk -v t="$((after - before))" -v hz="$HZ" -v n="${total:-0}" \
          'BEGIN { if (n > 0) printf "%.3f", t / hz / n * 100000; else print 0 }')
    local load flt
    flt=$(awk -v f="$((flt1 - flt0))" -v n="${total:-0}" \
          'BEGIN { if (n > 0) printf "%.2f", f / n; else print 0 }')
    read -r load _ </proc/loadavg
    echo "$scen|$group|$role|$label|$target|${rps:-0}|${p50:-0}|${p99:-0}|${mx:-0}|${errs:-1}|${lost:-0}|$cpu|${hwm:-0}|$load|$flt" >>"$RES"
    printf '  %-22s %-30s %9s req/s  p99 %8s us  cpu %7s s/100k  faults %6s/req  errors %s\n' \
        "$scen" "$label" "${rps:-FAILED}" "${p99:-?}" "$cpu" "$flt" "${errs:-?}"
}

# The servers of one stream scenario.  $1 scenario, $2 loadgen args,
# $3 "tcp" or "unix", $4 "fork" to include the forking trio, $5..$6 the
# CPython targets for the threading and forking servers.
stream_scenario() {
    local scen=$1 lg=$2 fam=$3 fork=$4 tthr=$5 tfork=$6 a
    if [ "$fam" = tcp ]; then
        a=127.0.0.1:0
        run_case "$scen" thr sks "sks ThreadingTCPServer" "$tthr" "$lg" -- \
            "$BIN/sks_echo" threading $a
        run_case "$scen" thr ref "C thread-per-connection" - "$lg" -- \
            "$BIN/ref_thread" $a
        [ -n "$PY" ] && run_case "$scen" thr py "py ThreadingTCPServer" - "$lg" -- \
            "$PY" bench/py_echo.py threading $a
        if [ "$fork" = fork ]; then
            run_case "$scen" fork sks "sks ForkingTCPServer" "$tfork" "$lg" -- \
                "$BIN/sks_echo" forking $a
            run_case "$scen" fork ref "C fork-per-connection" - "$lg" -- \
                "$BIN/ref_fork" $a
            [ -n "$PY" ] && run_case "$scen" fork py "py ForkingTCPServer" - "$lg" -- \
                "$PY" bench/py_echo.py forking $a
        fi
        # The fiber model against the epoll ceiling (group fib: see
        # report.sh) and, in the same table, the threading server.
        run_case "$scen" fib sks "sks FiberTCPServer" - "$lg" -- \
            "$BIN/sks_echo" fiber $a
        run_case "$scen" thr ceiling "C epoll (ceiling)" - "$lg" -- \
            "$BIN/ref_epoll" $a
    else
        next_unix
        run_case "$scen" thr sks "sks ThreadingUnixStreamServer" "$tthr" "$lg" -- \
            "$BIN/sks_echo" threading-unix "$UADDR"
        next_unix
        run_case "$scen" thr ref "C thread-per-connection" - "$lg" -- \
            "$BIN/ref_thread" "$UADDR"
        next_unix
        [ -n "$PY" ] && run_case "$scen" thr py "py ThreadingUnixStreamServer" - "$lg" -- \
            "$PY" bench/py_echo.py threading-unix "$UADDR"
        next_unix
        run_case "$scen" thr ceiling "C epoll (ceiling)" - "$lg" -- \
            "$BIN/ref_epoll" "$UADDR"
    fi
}

dgram_scenario() {
    local scen=$1 lg=$2 fam=$3 a kind label
    if [ "$fam" = udp ]; then
        a=127.0.0.1:0 kind=udp label=UDPServer
    else
        next_unix
        a=$UADDR kind=unix-dgram label=UnixDatagramServer
    fi
    run_case "$scen" dgram sks "sks $label" 2 "$lg" -- "$BIN/sks_echo" $kind "$a"
    [ "$fam" = udp ] && run_case "$scen" fibu sks "sks FiberUDPServer" - "$lg" -- \
        "$BIN/sks_echo" fiber-udp "$a"
    [ "$fam" = unix ] && next_unix && a=$UADDR
    run_case "$scen" dgram ref "C recvfrom/sendto loop" - "$lg" -- "$BIN/ref_udp" "$a"
    [ "$fam" = unix ] && next_unix && a=$UADDR
    [ -n "$PY" ] && run_case "$scen" dgram py "py $label" - "$lg" -- \
        "$PY" bench/py_echo.py $kind "$a"
}

# rounds SCENARIO-FUNCTION ARGS...: the scenario REPEAT times over.
rounds() {
    local r
    wanted "$2" || return 0
    for r in $(seq "$REPEAT"); do
        "$@"
    done
}

# --- shutdown latency and idle connections ---------------------------------
shutdown_latency() {
    local n_c=$1 n_py=$2 r
    wanted shutdown || return 0
    r=$(timeout 60 "$BIN/shutdown_latency" "$n_c" | grep '^RESULT')
    echo "shutdown|sks ThreadingTCPServer|$r" >>"$EXTRA"
    printf '  %-22s %-30s %s\n' shutdown "sks" "${r#RESULT shutdown }"
    if [ -n "$PY" ]; then
        r=$(timeout 60 "$PY" bench/py_shutdown.py "$n_py" | grep '^RESULT')
        echo "shutdown|py ThreadingTCPServer|$r" >>"$EXTRA"
        printf '  %-22s %-30s %s\n' shutdown "py" "${r#RESULT shutdown }"
    fi
}

# Opens N connections (each served once), then reads the server's RSS and
# thread count while they are held open.
idle_case() {
    local n=$1 label=$2
    shift 2
    wanted "idle $n" || return 0
    start_server "$@" || return
    local rss0 thr0 rss thr ready=
    rss0=$(status_field "$SRV_PID" VmRSS)
    thr0=$(status_field "$SRV_PID" Threads)
    $PIN_LOAD timeout -k 5 60 "$BIN/loadgen" --mode idle --conns "$n" \
        --hold 1.5 --addr "$SRV_ADDR" >"$TMP/idle.out" 2>>"$LOG" &
    local lg=$! i
    for i in $(seq 600); do
        grep -q '^READY' "$TMP/idle.out" && { ready=1; break; }
        kill -0 "$lg" 2>/dev/null || break
        sleep 0.05
    done
    rss=$(status_field "$SRV_PID" VmRSS)
    thr=$(status_field "$SRV_PID" Threads)
    local got
    got=$(sed -n 's/^READY conns=\([0-9]*\).*/\1/p' "$TMP/idle.out")
    wait "$lg"
    stop_server
    [ -z "$ready" ] && got=0
    echo "idle|$label|conns=${got:-0} rss_kb=$rss rss0_kb=$rss0 threads=$thr threads0=$thr0" >>"$EXTRA"
    printf '  %-22s %-30s %s connections: RSS %s kB (idle %s kB), %s threads\n' \
        "idle $n" "$label" "${got:-0}" "$rss" "$rss0" "$thr"
}

# --- fiber context switch -------------------------------------------------
# ns per switch of the library's switch, of the portable fallback, and of
# swapcontext (the reference), on the server's CPU.
fiber_switch() {
    local b r impl
    wanted "fiber switch" || return 0
    for b in fiber_switch fiber_switch_portable; do
        timeout 60 $PIN_SRV "$BIN/$b" "$1" 2>>"$LOG" | grep '^RESULT' |
        while read -r _ what r; do
            impl=${r%% *}
            impl=${impl#impl=}
            # swapcontext is measured by both binaries: keep it once.
            [ "$b" = fiber_switch_portable ] && [ "$impl" = swapcontext ] && continue
            echo "switch|$what $impl|${r#* }" >>"$EXTRA"
            printf '  %-22s %-30s %s\n' "fiber $what" "$impl" "${r#* }"
        done
    done
}

# --- the run -----------------------------------------------------------------
echo "libsockserver benchmarks ($MODE): $SECS s per run, best of $REPEAT, $PINNING"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$PY" ] && echo "CPython: $PY ($PYVER)"

if [ "$MODE" = quick ]; then
    rounds stream_scenario "echo 16B c16" "--mode echo --conns 16 --size 16" tcp fork 1.3 -
    rounds stream_scenario "connect c16" "--mode connect --conns 16 --size 16" tcp fork 3 8
    rounds stream_scenario "connect-close c16" "--mode connect-close --conns 16 --size 16" tcp fork 3 8
    rounds dgram_scenario "udp 16 outstanding" "--mode dgram --conns 16 --size 16" udp
    rounds stream_scenario "unix echo c16" "--mode echo --conns 16 --size 16" unix - 1.3 -
    shutdown_latency 20 3
    fiber_switch 2000000
    idle_case 200 "sks ThreadingTCPServer" "$BIN/sks_echo" threading 127.0.0.1:0
    idle_case 200 "C thread-per-connection" "$BIN/ref_thread" 127.0.0.1:0
    idle_case 200 "sks FiberTCPServer" "$BIN/sks_echo" fiber 127.0.0.1:0
    [ -n "$PY" ] && idle_case 200 "py ThreadingTCPServer" "$PY" bench/py_echo.py threading 127.0.0.1:0
else
    rounds stream_scenario "echo 16B c1" "--mode echo --conns 1 --size 16" tcp fork 1.3 -
    rounds stream_scenario "echo 16B c16" "--mode echo --conns 16 --size 16" tcp fork 1.3 -
    rounds stream_scenario "echo 16B c128" "--mode echo --conns 128 --size 16" tcp - 1.3 -
    rounds stream_scenario "echo 4KiB c1" "--mode echo --conns 1 --size 4096" tcp - 1.3 -
    rounds stream_scenario "echo 4KiB c16" "--mode echo --conns 16 --size 4096" tcp - 1.3 -
    rounds stream_scenario "echo 4KiB c128" "--mode echo --conns 128 --size 4096" tcp - 1.3 -
    rounds stream_scenario "echo 16B c1000" "--mode echo --conns 1000 --size 16" tcp - 1.3 -
    rounds stream_scenario "echo 4KiB c1000" "--mode echo --conns 1000 --size 4096" tcp - 1.3 -
    rounds stream_scenario "connect c16" "--mode connect --conns 16 --size 16" tcp fork 3 8
    rounds stream_scenario "connect-close c16" "--mode connect-close --conns 16 --size 16" tcp fork 3 8
    rounds dgram_scenario "udp 16 outstanding" "--mode dgram --conns 16 --size 16" udp
    rounds stream_scenario "unix echo c16" "--mode echo --conns 16 --size 16" unix - 1.3 -
    rounds dgram_scenario "unix dgram 16" "--mode dgram --conns 16 --size 16" unix
    shutdown_latency 50 10
    fiber_switch 10000000
    idle_case 1000 "sks ThreadingTCPServer" "$BIN/sks_echo" threading 127.0.0.1:0
    idle_case 1000 "C thread-per-connection" "$BIN/ref_thread" 127.0.0.1:0
    [ -n "$PY" ] && idle_case 1000 "py ThreadingTCPServer" "$PY" bench/py_echo.py threading 127.0.0.1:0
    idle_case 1000 "C epoll (ceiling)" "$BIN/ref_epoll" 127.0.0.1:0
    idle_case 1000 "sks FiberTCPServer" "$BIN/sks_echo" fiber 127.0.0.1:0
    idle_case 10000 "sks ThreadingTCPServer" "$BIN/sks_echo" threading 127.0.0.1:0
    idle_case 10000 "C epoll (ceiling)" "$BIN/ref_epoll" 127.0.0.1:0
    idle_case 10000 "sks FiberTCPServer" "$BIN/sks_echo" fiber 127.0.0.1:0
    idle_case 19000 "sks FiberTCPServer" "$BIN/sks_echo" fiber 127.0.0.1:0
fi

bench/report.sh "$RES" "$EXTRA" >"$OUT/table.txt"
echo
cat "$OUT/table.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); $(($(date +%s) - START)) s"

if [ "$MODE" = full ]; then
    echo
    BENCH_BIN=$BIN BENCH_ONLY=${BENCH_ONLY:-} bench/syscalls.sh
fi
