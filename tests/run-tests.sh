#!/bin/bash
# Runs every test of qimg and ends with "N passed, N failed, N skipped".
#   unit tests (plain and under ASan+UBSan), CLI tests against qemu-img
#   (tests/cli), and a short fuzz run.
# TESTS=pattern limits the shell tests to matching file names.
# JOBS=n runs n tests at a time (default: the number of CPUs), the longest
# of the last run first; each test writes its own log, and the logs are
# reported in the order of the list as soon as a test and all before it
# have ended.  VERBOSE=1: a line per test with its counts and time.
set -u
cd "$(dirname "$0")/.."
export LC_ALL=C
B=${B:-build}
export QIMG=${QIMG:-$PWD/$B/qimg}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 1)}
passed=0 failed=0 skipped=0
failures=()
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/qimg-run.XXXXXX")
# interrupted: the tests still running are stopped (by their job ids)
trap 'kill $(jobs -rp) 2>/dev/null; rm -rf "$LOGS"' EXIT
trap 'exit 130' INT TERM

names=()     # test i: names[i], its command in cmds[i] (one string, eval'd)
cmds=()
add() { names+=("$1"); cmds+=("$2"); }

for t in "$B"/tests/test-*; do
    [ -x "$t" ] && add "unit/$(basename "$t")" "$(printf '%q' "$t")"
done
for t in "$B"/san-tests/test-*; do
    [ -x "$t" ] && add "asan/$(basename "$t")" \
        "env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(printf '%q' "$t")"
done
for t in tests/cli/t-*.sh; do
    [ -f "$t" ] || continue
    case "$t" in *${TESTS:-}*) ;; *) continue ;; esac
    add "$t" "bash $(printf '%q' "$t")"
done
if [ -x tests/fuzz/run.sh ]; then
    add "fuzz (short)" "tests/fuzz/run.sh short"
fi

# run I: test I's output in $LOGS/I.log, then its exit code and time in
# $LOGS/I.rc (written last: its presence means the test has ended)
run() {
    local i=$1 t0 rc
    t0=$(date +%s)
    eval "${cmds[$i]}" >"$LOGS/$i.log" 2>&1 </dev/null
    rc=$?
    echo "$rc $(( $(date +%s) - t0 ))" >"$LOGS/$i.rc.tmp"
    mv "$LOGS/$i.rc.tmp" "$LOGS/$i.rc"
}

# report I: count test I's PASS/FAIL/SKIP lines; a failing test's tail
report() {
    local i=$1 name=${names[$1]} log=$LOGS/$1.log rc secs p f s
    read -r rc secs <"$LOGS/$i.rc"
    if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$log"; then
        echo "FAIL $name (exit $rc, no test result)" >>"$log"
    fi
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    s=$(grep -c '^SKIP ' "$log")
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    grep '^SKIP ' "$log" | sed "s|^|  $name: |"
    if [ "$f" -gt 0 ]; then
        failures+=("$name")
        grep '^FAIL ' "$log" | sed "s|^|  $name: |"
        echo "---- $name output (tail) ----"
        tail -40 "$log"
    fi
    [ -n "${VERBOSE:-}" ] && echo "  $name: $p passed, $f failed, $s skipped ($secs s)"
    return 0
}

start=$(date +%s)
next_report=0
report_ended() {   # the tests that have ended, in list order, up to the first still running
    while [ $next_report -lt ${#names[@]} ] && [ -f "$LOGS/$next_report.rc" ]; do
        report $next_report
        next_report=$((next_report + 1))
    done
}
# Longest first (times of the last run, in $B/.test-times; a new test
# counts as long), so that a slow test does not start last.
TIMES=$B/.test-times
declare -A last_secs=()
if [ -f "$TIMES" ]; then
    while read -r secs name; do last_secs[$name]=$secs; done <"$TIMES"
fi
order=$(for i in "${!names[@]}"; do echo "${last_secs[${names[$i]}]:-999999} $i"; done |
        sort -k1,1nr -k2,2n | cut -d' ' -f2)
for i in $order; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        wait -n
        report_ended
    done
    run "$i" &
done
wait
report_ended
for i in "${!names[@]}"; do
    read -r _ secs <"$LOGS/$i.rc" && last_secs[${names[$i]}]=$secs
done
for name in "${!last_secs[@]}"; do echo "${last_secs[$name]} $name"; done >"$TIMES" 2>/dev/null

echo
echo "time: $(( $(date +%s) - start )) s ($JOBS jobs)"
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
