#!/bin/sh
# Runs each cmocka test binary given, each bounded in time, and ends with
# one summary line "tests: N passed, N failed".  Exit status: non-zero if
# any test failed or any binary crashed or timed out.
passed=0 failed=0 broken=""
for t in "$@"; do
    out=$(mktemp)
    timeout -k 10 600 "$t" >"$out" 2>&1
    rc=$?
    cat "$out"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n 1)
    rm -f "$out"
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ "$rc" -ne 0 ] && [ -z "$f" ]; then
        broken="$broken $t(exit $rc)"
        failed=$((failed + 1))
    fi
done
[ -n "$broken" ] && echo "crashed or timed out:$broken"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
