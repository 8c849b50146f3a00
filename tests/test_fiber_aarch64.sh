#!/usr/bin/env bash
# test_fiber_aarch64.sh - the fiber context switch on aarch64: test_fiber.c
# cross-built static (with tests/cross/cmocka.h), once with the
# hand-written aarch64 switch and once with the portable fallback, each run
# under qemu-user.  Each binary counts as one test here; its own cmocka
# lines are shown.  Needs Debian's gcc-aarch64-linux-gnu and qemu-user.
#
#   BUILD=build tests/test_fiber_aarch64.sh     (make test sets BUILD)
SUITE=test_fiber_aarch64
. "$(dirname "$0")/deploy_lib.sh"

have aarch64-linux-gnu-gcc ||
    skip_suite "aarch64-linux-gnu-gcc not found (apt-get install gcc-aarch64-linux-gnu)"
have qemu-aarch64 || skip_suite "qemu-aarch64 not found (apt-get install qemu-user)"

make --no-print-directory -s BUILD="$BUILD" aarch64-build >"$T/build.out" 2>&1 || {
    cat "$T/build.out"
    run_test test_cross_build false
    summary
}

# Each binary is bounded in time: qemu runs it at a fraction of native speed.
test_hand_written_switch() { timeout 120 qemu-aarch64 "$BUILD/aarch64/test_fiber"; }
test_portable_switch() { timeout 120 qemu-aarch64 "$BUILD/aarch64/test_fiber_portable"; }

run_suite test_hand_written_switch test_portable_switch
