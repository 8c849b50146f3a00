# deploy_lib.sh - what the scripted tests share (sourced by
# test_activation.sh, test_haproxy.sh, test_reuseport.sh and test_http.sh):
# a temporary directory, background programs tracked by PID and killed at
# exit, bounded waits, free loopback ports, and the cmocka-style summary
# that tests/run_tests.sh reads ("[  PASSED  ] N test(s).", "[  FAILED  ]
# ...").
#
# A script sets SUITE, defines test_* functions, then calls run_suite with
# their names (or run_test for each, then summary).  Everything listens on
# 127.0.0.1, [::1] or a Unix path in $T.

set -u
BUILD=${BUILD:-build}
EX=$BUILD/examples
T=$(mktemp -d "${TMPDIR:-/tmp}/sks-${SUITE:-deploy}.XXXXXX")
declare -A PID OUT

cleanup() {
    local name
    for name in "${!PID[@]}"; do
        kill -KILL "${PID[$name]}" 2>/dev/null
        wait "${PID[$name]}" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT

have() { command -v "$1" >/dev/null 2>&1; }

# fail MESSAGE: say why, and fail the current test.
fail() {
    echo "  failure: $*"
    return 1
}

# start NAME PROGRAM [ARGS...]: runs it in the background, stdout to
# $T/NAME.out and stderr to $T/NAME.err; sets PID[NAME] and OUT[NAME].
start() {
    local name=$1
    shift
    # Emptied here, not only by the background job's redirection: a
    # wait_for right after must not read what an earlier server of the
    # same name wrote (its address) before the job has run.
    : >"$T/$name.out"
    : >"$T/$name.err"
    "$@" >"$T/$name.out" 2>"$T/$name.err" &
    PID[$name]=$!
    OUT[$name]=$T/$name.out
}

# wait_for NAME PATTERN FILE [SECONDS]: waits (5 s by default) until FILE
# has a line matching PATTERN while NAME runs.
wait_for() {
    local name=$1 pattern=$2 file=$3 ticks=$((${4:-5} * 50)) i
    for ((i = 0; i < ticks; i++)); do
        grep -qs -- "$pattern" "$file" && return 0
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.02
    done
    grep -qs -- "$pattern" "$file" && return 0
    echo "  $name: no '$pattern' in $file; stderr: $(head -c 400 "$T/$name.err")"
    return 1
}

# address_of NAME: the ADDRESS of the server's "listening on ADDRESS".
address_of() { sed -n '1s/^listening on //p' "${OUT[$1]}"; }

# wait_exit NAME SECONDS: waits for NAME to exit; sets STATUS (its exit
# status) and WAITED (the seconds waited).  If it outlives SECONDS: SIGKILL,
# STATUS=killed, and returns 1.
wait_exit() {
    local name=$1 pid=${PID[$1]} t0=$EPOCHREALTIME i
    for ((i = 0; i < $2 * 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    WAITED=$(awk "BEGIN { printf \"%.2f\", $EPOCHREALTIME - $t0 }")
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        STATUS=killed
    else
        wait "$pid"
        STATUS=$?
    fi
    unset "PID[$name]"
    [ "$STATUS" != killed ]
}

# stop NAME: SIGTERM, then waits (5 s at most; then SIGKILL); sets STATUS.
stop() {
    kill -TERM "${PID[$1]}" 2>/dev/null
    wait_exit "$1" 5 || true
}

# listening PORT: whether something listens on 127.0.0.1:PORT (from
# /proc, so that asking does not make a connection; where /proc is not
# mounted, from iproute2's ss, which asks the kernel over netlink).
listening() {
    local hex
    if [ ! -r /proc/net/tcp ]; then
        ss -Hltn "src 127.0.0.1:$1" | grep -q .
        return
    fi
    hex=$(printf '0100007F:%04X' "$1")
    awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' \
        /proc/net/tcp
}

# free_port: a TCP port nothing on this machine uses now (it may of course
# be taken before it is bound: callers retry; without /proc any port in
# the range is a candidate).
free_port() {
    local p
    for ((;;)); do
        p=$((20000 + RANDOM % 12000))
        # In any address column, local or remote: a conservative choice.
        grep -qs ":$(printf '%04X' "$p") " /proc/net/tcp /proc/net/tcp6 \
            /proc/net/udp /proc/net/udp6 || { echo "$p"; return; }
    done
}

# line_client [SOCAT-ADDRESS-OPTIONS...]: sends stdin, prints the replies;
# at most 10 s.  E.g. printf 'x\n' | line_client TCP:127.0.0.1:80,bind=...
line_client() { timeout 10 socat -t 5 -T 5 - "$@"; }

# need PROGRAM PACKAGE: returns 77 (the test is skipped) when PROGRAM is
# missing, saying which Debian package has it (tests/run_tests.sh lists
# that line as the skip's reason).
need() {
    have "$1" && return 0
    echo "  skipped: $1 not found (apt-get install $2)"
    return 77
}

# suite_needs PROGRAM PACKAGE: when PROGRAM is missing, every test of the
# suite is skipped (and counted) with that reason.
SUITE_SKIP=""
suite_needs() {
    have "$1" || SUITE_SKIP="${SUITE_SKIP:-$1 not found (apt-get install $2)}"
}

# The tests run so far: counts, and the names of those that failed.
PASSED=0 SKIPPED=0
FAILED=()

# run_test TEST [COMMAND...]: runs COMMAND (by default the test function
# TEST; status 0: passed, 77: skipped, else failed) and counts the result.
run_test() {
    local t=$1 rc
    [ $# -gt 1 ] && shift
    echo "[ RUN      ] $t"
    "$@"
    rc=$?
    if [ "$rc" = 0 ]; then
        echo "[       OK ] $t"
        PASSED=$((PASSED + 1))
    elif [ "$rc" = 77 ]; then
        echo "[  SKIPPED ] $t"
        SKIPPED=$((SKIPPED + 1))
    else
        echo "[  FAILED  ] $t"
        FAILED+=("$t")
    fi
}

# summary: prints the summary of the tests run, exits (1 if one failed).
summary() {
    local t
    echo "[==========] $SUITE: $((PASSED + SKIPPED + ${#FAILED[@]})) test(s) run."
    echo "[  PASSED  ] $PASSED test(s)."
    [ "$SKIPPED" -gt 0 ] && echo "[  SKIPPED ] $SKIPPED test(s)."
    if [ "${#FAILED[@]}" -gt 0 ]; then
        echo "[  FAILED  ] ${#FAILED[@]} test(s), listed below:"
        for t in "${FAILED[@]}"; do echo "[  FAILED  ] $t"; done
        exit 1
    fi
    exit 0
}

# skipped_suite: a test that does not run because of suite_needs.
skipped_suite() {
    echo "  skipped: $SUITE_SKIP"
    return 77
}

# run_suite TEST...: runs each test function (or, after a suite_needs that
# failed, skips each), prints the summary, exits.
run_suite() {
    local t
    echo "[==========] Running $# test(s)."
    for t in "$@"; do
        if [ -n "$SUITE_SKIP" ]; then run_test "$t" skipped_suite; else run_test "$t"; fi
    done
    summary
}
