#!/usr/bin/env bash
# test_fibers_gdb.sh - tools/sks_fibers_gdb.py against a live fiber server
# (examples/echo_fiber_server): gdb attaches in batch mode, `sks-fibers bt`
# lists every fiber of every loop with its state, what it runs and its
# backtrace, and the server serves on unharmed once gdb has detached.
#
#   BUILD=build tests/test_fibers_gdb.sh      (make test sets BUILD)
SUITE=test_fibers_gdb
. "$(dirname "$0")/deploy_lib.sh"
suite_needs gdb gdb
SCRIPT=$(cd "$(dirname "$0")/.." && pwd)/tools/sks_fibers_gdb.py
SERVER=$EX/echo_fiber_server
# Set when the server has the portable switch (no hand-written first frame).
PORTABLE_SWITCH=$(nm "$SERVER" 2>/dev/null | grep -q ' sks__fctx_start$' || echo 1)
CLIENTS=3

# echo_on FD LINE: LINE comes back on the connection FD within 5 s.
echo_on() {
    local got
    printf '%s\n' "$2" >&"$1" || return 1
    IFS= read -r -t 5 got <&"$1" && [ "$got" = "$2" ]
}

test_sks_fibers_lists_parked_fibers_with_their_backtraces() {
    # Attaching needs ptrace rights over a process that is not gdb's
    # child: root's, or anyone's where Yama allows it (ptrace_scope 0).
    local scope
    [ -r /proc/self/status ] || { echo "  skipped: needs /proc (gdb attaches through it)"; return 77; }
    scope=$(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null || echo 0)
    if [ "$(id -u)" != 0 ] && [ "$scope" != 0 ]; then
        echo "  skipped: gdb may not attach here (kernel.yama.ptrace_scope $scope, not root)"
        return 77
    fi
    # musl has no libthread_db, and its system calls no unwind tables: gdb
    # finds neither a thread's loop pointer nor the frame that holds it.
    if grep -aq 'ld-musl' "$SERVER"; then
        echo "  skipped: gdb cannot find a musl program's fiber loops (no libthread_db, no unwind tables in musl)"
        return 77
    fi
    start srv "$SERVER" 127.0.0.1:0
    wait_for srv '^listening on ' "${OUT[srv]}" 10 || return 1
    local port i out fds=()
    port=$(address_of srv)
    port=${port##*:}
    for ((i = 0; i < CLIENTS; i++)); do
        exec {fd}<>"/dev/tcp/127.0.0.1/$port" || { fail "connect"; return 1; }
        fds+=("$fd")
        echo_on "$fd" "hello $i" || { fail "no echo before gdb"; return 1; }
    done
    # Each handler is now parked in readline, waiting for its next line.
    out=$(timeout 120 gdb -batch -nx -p "${PID[srv]}" -x "$SCRIPT" -ex 'sks-fibers bt' 2>&1)
    echo "$out" | grep -E '^loop |^  fiber ' | sed 's/^/  /'
    local parked acceptors loops frames
    parked=$(echo "$out" | grep -cE '^  fiber 0x[0-9a-f]+ +parked on fd [0-9]+ \(read\) +runs .*<request_fiber> handler .*<example_echo_handle>')
    acceptors=$(echo "$out" | grep -cE '^  fiber 0x[0-9a-f]+ +parked on fd [0-9]+ \(read\) +runs .*<acceptor>')
    loops=$(echo "$out" | grep -cE '^loop 0x[0-9a-f]+ on thread [0-9]+ \(LWP [0-9]+\): [0-9]+ fibers')
    # Every parked request fiber's backtrace runs from the wait, through
    # readline and the handler, down to the fiber's first frame.
    frames=$(echo "$out" | grep -cE '^#[0-9]+ (.* in )?example_echo_handle ')
    [ "$parked" = "$CLIENTS" ] || { fail "$parked request fibers listed parked, want $CLIENTS:"; echo "$out" | tail -30; return 1; }
    [ "$loops" -ge 1 ] && [ "$acceptors" = "$loops" ] || { fail "$loops loops, $acceptors acceptors"; return 1; }
    # The portable switch (make test-portable) has no readable saved frame:
    # there each parked fiber's backtrace is refused, by name, not made up.
    if [ -n "$PORTABLE_SWITCH" ]; then
        [ "$(echo "$out" | grep -c 'no backtrace: .*portable switch')" = $((CLIENTS + loops)) ] ||
            { fail "portable switch: not every backtrace refused:"; echo "$out" | tail -30; return 1; }
        [ "$frames" = 0 ] || { fail "portable switch: $frames backtraces made up"; return 1; }
    else
        [ "$frames" = "$CLIENTS" ] || { fail "$frames backtraces through the handler, want $CLIENTS"; return 1; }
        echo "$out" | grep -qE '^#[0-9]+ (.* in )?sks_rfile_readline' || { fail "no readline frame"; return 1; }
        # (clang's assembler names the frame sks.fctx_start to gdb.)
        [ "$(echo "$out" | grep -cE '^#[0-9]+ (.* in )?sks(__|\.)fctx_start ')" = $((CLIENTS + loops)) ] ||
            { fail "not every backtrace ends at the fiber's first frame"; return 1; }
    fi
    for ((i = 0; i < CLIENTS; i++)); do
        echo_on "${fds[i]}" "again $i" || { fail "no echo after gdb detached"; return 1; }
        exec {fds[i]}>&-
    done
    stop srv
    [ "$STATUS" = 0 ] || { fail "exit status $STATUS"; return 1; }
}

if [ ! -x "$SERVER" ]; then
    echo "[  FAILED  ] $SERVER is not built"
    echo "[  FAILED  ] 1 test(s)."
    exit 1
fi
run_suite test_sks_fibers_lists_parked_fibers_with_their_backtraces
