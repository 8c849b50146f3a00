#!/usr/bin/env bash
# test_fiber_tools.sh - the fiber files' annotations for ThreadSanitizer
# and valgrind do what they are for: tests/fiber_tools.c, built with them
# and without them (SKS_NO_TOOL_ANNOTATIONS, the negative control that
# shows each check can fail), under each tool.
#
#   BUILD=build tests/test_fiber_tools.sh      (make test sets BUILD)
SUITE=test_fiber_tools
. "$(dirname "$0")/deploy_lib.sh"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLAGS=(-O1 -g -std=c11 -D_POSIX_C_SOURCE=200809L -I"$ROOT/include")
FIBER_FILES=("$ROOT/tests/fiber_tools.c" "$ROOT/src/fiber_switch.c" "$ROOT/src/fiber_stack.c" "$ROOT/src/compat.c"
             "$ROOT/src/fiber_ctx_portable.c" "$ROOT/src/fiber_ctx_$(uname -m | tr - _).S")

# Both tools read the process's maps from /proc as they start.
[ -r /proc/self/maps ] || SUITE_SKIP="needs /proc (TSan and valgrind read /proc/self/maps)"

# build COMPILER NAME [FLAGS...]: $T/NAME from the fiber files.
build() {
    local cc=$1 name=$2
    shift 2
    "$cc" "${FLAGS[@]}" "$@" "${FIBER_FILES[@]}" -lpthread -lm -o "$T/$name" 2>"$T/$name.build" ||
        { fail "$name did not build: $(head -c 400 "$T/$name.build")"; return 1; }
}

# A race inside fiber B: TSan reports it with B's own stack, which ends at
# the fiber's first frame; without the annotations, the stack of the fiber
# parked before it (fiber_a) shows under B's.
test_tsan_sees_each_fiber_with_its_own_stack() {
    need clang clang || return
    [ -e "$ROOT/src/fiber_ctx_$(uname -m | tr - _).S" ] || { echo "  skipped: no hand-written switch for $(uname -m)"; return 77; }
    build clang tsan_on -fsanitize=thread || return 1
    build clang tsan_off -fsanitize=thread -DSKS_NO_TOOL_ANNOTATIONS || return 1
    local v
    for v in on off; do
        TSAN_OPTIONS=exitcode=66 "$T/tsan_$v" >"$T/tsan_$v.out" 2>&1
        grep -q 'WARNING: ThreadSanitizer: data race' "$T/tsan_$v.out" ||
            { fail "tsan_$v: no race reported: $(head -c 400 "$T/tsan_$v.out")"; return 1; }
        # The racing write's stack: from "Write" to the blank line.
        sed -n '/^  Write of size/,/^$/p' "$T/tsan_$v.out" | sed -n '/racy_write_in_b/,$p' >"$T/tsan_$v.stack"
        grep -q 'racy_write_in_b' "$T/tsan_$v.stack" || { fail "tsan_$v: the race is not the fiber's"; return 1; }
    done
    grep -q 'fiber_a' "$T/tsan_on.stack" &&
        { fail "annotated: fiber A's frames under fiber B's:"; cat "$T/tsan_on.stack"; return 1; }
    grep -q 'fiber_a' "$T/tsan_off.stack" ||
        { fail "the control without annotations showed B's stack right: the check proves nothing"; return 1; }
    echo "  annotated: $(grep -c '#' "$T/tsan_on.stack") frames, B's own; without: $(grep -c '#' "$T/tsan_off.stack"), A's among them"
}

# memcheck warns of a stack switch it was not told of (and may check the
# stack wrongly from there); registered stacks give no warning.
test_valgrind_knows_every_fiber_stack() {
    need valgrind valgrind || return
    # The system's compiler, whatever CC a sanitizer run set (valgrind
    # 3.19 cannot read clang 14's DWARF 5).
    build cc vg_on -gdwarf-4 || return 1
    build cc vg_off -gdwarf-4 -DSKS_NO_TOOL_ANNOTATIONS || return 1
    local v
    for v in on off; do
        timeout 120 valgrind --error-exitcode=9 "$T/vg_$v" >"$T/vg_$v.out" 2>&1 ||
            { fail "vg_$v under memcheck: $(tail -c 400 "$T/vg_$v.out")"; return 1; }
    done
    grep -q 'client switching stacks' "$T/vg_on.out" &&
        { fail "annotated: $(grep -m1 'switching stacks' "$T/vg_on.out")"; return 1; }
    grep -q 'client switching stacks' "$T/vg_off.out" ||
        { fail "the control without annotations drew no warning: the check proves nothing"; return 1; }
    echo "  annotated: no warning; without: $(grep -c 'client switching stacks' "$T/vg_off.out") 'client switching stacks?' warnings"
}

run_suite test_tsan_sees_each_fiber_with_its_own_stack test_valgrind_knows_every_fiber_stack
