#!/bin/sh
# run_tests.sh TEST...: runs each test (a cmocka binary or a scripted
# test printing the same summary lines), each bounded in time, and ends
# with one summary line, alone on its line, that CI parses:
#
#   tests: N passed, N failed, N skipped
#
# Every skipped test is listed before it with its reason (the last line its
# test printed that says "skipped", which names the package that would lift
# it).  With CI=true, a skip that tests/skips_allowed does not allow counts
# as a failure: a CI machine has every package installed, so a skip there
# is a missing install step.
#
# Exit status: non-zero if any test failed, any binary crashed or timed out,
# or (CI=true) a skip was not allowed.
#
# Environment: TEST_TIMEOUT (seconds per binary, default 600); TEST_WRAP, a
# command that each binary runs under, where {} stands for its name (make
# valgrind: valgrind ... --log-file=DIR/{}.%p.log).
allowed=$(dirname "$0")/skips_allowed
passed=0 failed=0 skipped=0 broken="" skips="" refused=0
for t in "$@"; do
    name=$(basename "$t")
    out=$(mktemp)
    # shellcheck disable=SC2086 # TEST_WRAP is a command line
    timeout -k 10 "${TEST_TIMEOUT:-600}" ${TEST_WRAP:+$(printf '%s' "$TEST_WRAP" | sed "s|{}|$name|g")} \
        "$t" >"$out" 2>&1
    rc=$?
    cat "$out"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n 1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$out" | tail -n 1)
    # "NAME TEST: REASON" for each skipped test, from its own lines (the
    # list cmocka repeats after its summary is not read).
    these=$(awk -v bin="$name" '
        /^\[==========\] .*test\(s\) run\./ || /^\[  SKIPPED \] [0-9]+ test/ { done = 1 }
        done { next }
        /^\[ RUN      \] / { test = $4; why = "no reason given"; next }
        /skipped/ && !/^\[/ { why = $0; sub(/^[ \t]+/, "", why); next }
        /^\[  SKIPPED \] / && $4 == test { print bin " " test ": " why }' "$out")
    rm -f "$out"
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    skipped=$((skipped + ${s:-0}))
    [ -n "$these" ] && skips="$skips$these
"
    if [ "$rc" -ne 0 ] && [ -z "$f" ]; then
        broken="$broken $name(exit $rc)"
        failed=$((failed + 1))
    fi
done

# allowed_skip "NAME TEST: REASON": whether a line of tests/skips_allowed
# (a shell pattern) matches it.
allowed_skip() {
    while IFS= read -r pattern; do
        case $pattern in '#'* | '') continue ;; esac
        # shellcheck disable=SC2254 # the line is a pattern
        case $1 in $pattern) return 0 ;; esac
    done <"$allowed"
    return 1
}

if [ -n "$skips" ]; then
    echo "skipped:"
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        if [ "${CI:-}" = true ] && ! allowed_skip "$line"; then
            echo "  $line  [not allowed in CI: tests/skips_allowed]"
            refused=$((refused + 1))
        else
            echo "  $line"
        fi
    done <<EOF
$skips
EOF
fi
[ -n "$broken" ] && echo "crashed or timed out:$broken"
[ "$refused" -gt 0 ] && echo "CI: $refused skip(s) not allowed; install what they name, or allow them in tests/skips_allowed with the reason"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$refused" -eq 0 ]
