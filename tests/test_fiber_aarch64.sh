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

suite_needs aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
suite_needs qemu-aarch64 qemu-user

if [ -z "$SUITE_SKIP" ] &&
    ! make --no-print-directory -s BUILD="$BUILD" aarch64-fiber-build >"$T/build.out" 2>&1; then
    cat "$T/build.out"
    run_test test_cross_build false
    summary
fi

# Each binary is bounded in time: qemu runs it at a fraction of native speed.
test_hand_written_switch() { timeout 120 qemu-aarch64 "$BUILD/aarch64/test_fiber"; }
test_portable_switch() { timeout 120 qemu-aarch64 "$BUILD/aarch64/test_fiber_portable"; }

run_suite test_hand_written_switch test_portable_switch
