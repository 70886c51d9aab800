#!/bin/bash
# Runs every test of qimg and ends with "N passed, N failed".
#   unit tests (plain and under ASan+UBSan), CLI tests against qemu-img,
#   interop tests, and a short fuzz run.
# TESTS=pattern limits the shell tests to matching file names.
set -u
cd "$(dirname "$0")/.."
export LC_ALL=C
B=${B:-build}
export QIMG=${QIMG:-$PWD/$B/qimg}
passed=0 failed=0
failures=()

count_output() {   # reads a test's output; counts PASS/FAIL lines
    local name=$1 log=$2
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failures+=("$name")
        grep '^FAIL ' "$log" | sed "s|^|  $name: |"
    fi
}

run_one() {   # name, command...
    local name=$1; shift
    local log
    log=$(mktemp)
    "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] && ! grep -q '^FAIL ' "$log"; then
        echo "FAIL $name (exit $rc, no test result)" >>"$log"
    fi
    count_output "$name" "$log"
    if [ $rc -ne 0 ] || grep -q '^FAIL ' "$log"; then
        echo "---- $name output (tail) ----"
        tail -40 "$log"
    fi
    rm -f "$log"
}

start=$(date +%s)
for t in $B/tests/test-*; do
    [ -x "$t" ] && run_one "unit/$(basename "$t")" "$t"
done
for t in $B/san-tests/test-*; do
    [ -x "$t" ] && run_one "asan/$(basename "$t")" env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$t"
done
for t in tests/cli/t-*.sh tests/interop/t-*.sh; do
    [ -f "$t" ] || continue
    case "$t" in *${TESTS:-}*) ;; *) continue ;; esac
    run_one "$t" bash "$t"
done
if [ -x tests/fuzz/run.sh ]; then
    run_one "fuzz (short)" tests/fuzz/run.sh short
fi
echo
echo "time: $(( $(date +%s) - start )) s"
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
