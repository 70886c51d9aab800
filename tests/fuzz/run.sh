#!/bin/bash
# Runs the libFuzzer targets (build/fuzz/fuzz-*) on the seed corpus.
#   run.sh short   every target for FUZZ_SECONDS (default 20 s in total,
#                  split between targets): replays the seeds, then mutates
#   run.sh long    every target for FUZZ_SECONDS each (default 600)
# Prints "PASS fuzz-NAME" or "FAIL fuzz-NAME"; a crash, leak, timeout or
# out-of-memory leaves its reproducer in $FUZZ_OUT (default
# build/fuzz/artifacts/) and the path is printed.
# FUZZ_DIR overrides where the binaries are (e.g. build-foo/fuzz).
set -u
cd "$(dirname "$0")/../.."
mode=${1:-short}
FUZZ_DIR=${FUZZ_DIR:-${B:-build}/fuzz}
FUZZ_OUT=${FUZZ_OUT:-$FUZZ_DIR/artifacts}
SEEDS=tests/fuzz/corpus

case $mode in
short) total=${FUZZ_SECONDS:-20} ;;
long)  total=${FUZZ_SECONDS:-600} ;;
*) echo "usage: $0 short|long" >&2; exit 2 ;;
esac

targets=()
for src in tests/fuzz/fuzz-*.c; do
    [ -f "$src" ] && targets+=("$(basename "$src" .c)")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "FAIL fuzz (no targets in tests/fuzz)"
    exit 1
fi
per_target=$total
[ "$mode" = short ] && per_target=$(( total / ${#targets[@]} ))
[ "$per_target" -ge 1 ] || per_target=1
mkdir -p "$FUZZ_OUT"

for t in "${targets[@]}"; do
    bin=$FUZZ_DIR/$t
    if [ ! -x "$bin" ]; then
        echo "FAIL $t (no binary $bin: make fuzz-build)"
        continue
    fi
    # New inputs go to a scratch corpus (long runs keep theirs under
    # FUZZ_OUT); the committed seeds are only read.
    if [ "$mode" = long ]; then
        work=$FUZZ_OUT/corpus-$t
        mkdir -p "$work"
    else
        work=$(mktemp -d "${TMPDIR:-/tmp}/qimg-fuzz.XXXXXX")
    fi
    log=$FUZZ_OUT/$t.log
    # make check wants the same exploration each run: a fixed seed
    seed=()
    [ "$mode" = short ] && seed=(-seed=1)
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$bin" "${seed[@]}" -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 \
        -max_len=1048576 -print_final_stats=1 \
        -artifact_prefix="$FUZZ_OUT/$t-" "$work" "$SEEDS" >"$log" 2>&1
    rc=$?
    [ "$mode" = long ] || rm -rf "$work"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "PASS $t (${per_target} s, ${runs:-?} runs)"
    else
        echo "FAIL $t (exit $rc, log $log)"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|fuzz-open: )' "$log" | head -5 | sed 's/^/    /'
        grep -E 'Test unit written to' "$log" | sed 's/^/    /'
    fi
done
