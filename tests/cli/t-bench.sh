#!/bin/bash
# bench: options, messages and exit codes against qemu-img 7.2; output lines
# equal but for the measured time; writes leave the pattern in the image.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

truncate -s 1M t.raw
truncate -s 0 empty.raw
"$QEMU_IMG" create -q -f qcow2 t.qcow2 1M
# the qcow2 checks wait for qimg's qcow2 driver
have_qcow2=0
"$QIMG" --help | grep -q '^Supported formats:.* qcow2' && have_qcow2=1
[ $have_qcow2 = 1 ] || echo "note: qimg has no qcow2 driver yet, qcow2 checks skipped"
# Like `same`, but "Run completed in X.XXX seconds." may differ in X; the
# line itself must have qemu's shape.
TIME_RE='^Run completed in [0-9]+\.[0-9]{3} seconds\.$'
same_bench() {
    local name=$1; shift
    run_in_copy ref "$QEMU_IMG" "$@"
    run_in_copy new "$QIMG_AS_QEMU" "$@"
    local a=$SCRATCH/run.ref b=$SCRATCH/run.new f what=""
    for f in err rc; do
        cmp -s "$a/$f" "$b/$f" || what="$what $f differs:
$(diff "$a/$f" "$b/$f" | head -10)
"
    done
    if grep -q '^Run completed' "$a/out" && ! grep -Eq "$TIME_RE" "$b/out"; then
        what="${what}no 'Run completed in X.XXX seconds.' line: $(cat "$b/out")
"
    fi
    local norm='s/^Run completed in [0-9]*\.[0-9]* seconds\.$/Run completed in T seconds./'
    if ! diff <(sed "$norm" "$a/out") <(sed "$norm" "$b/out") >/dev/null; then
        what="${what}out differs:
$(diff <(sed "$norm" "$a/out") <(sed "$norm" "$b/out") | head -10)
"
    fi
    if [ -z "$what" ]; then pass "$name"; else fail "$name" "qemu-img $*" "$what"; fi
}

# ---- argument errors ----
same bench-no-file          bench
same bench-two-files        bench t.raw t.raw
same bench-missing-arg      bench -c
same bench-bad-option       bench -x t.raw
same bench-bad-long         bench --foo t.raw
same bench-object           bench --object secret,id=s,data=x t.raw
same bench-count-junk       bench -c abc t.raw
same bench-count-suffix     bench -c 1x t.raw
same bench-count-empty      bench -c '' t.raw
same bench-count-neg        bench -c -5 t.raw
same bench-count-big        bench -c 99999999999 t.raw
same bench-depth-junk       bench -d x t.raw
same bench-depth-neg        bench -c 2 -d -1 t.raw
same bench-pattern-big      bench --pattern=256 t.raw
same bench-pattern-junk     bench --pattern=x t.raw
same bench-pattern-neg      bench --pattern=-1 t.raw
same bench-bufsize-neg      bench -s -1 t.raw
same bench-bufsize-junk     bench -s x t.raw
same bench-bufsize-big      bench -s 3G t.raw
same bench-step-junk        bench -S x t.raw
same bench-step-big         bench -S 3G t.raw
same bench-step-neg         bench -S -1 t.raw
same bench-offset-neg       bench -o -1 t.raw
same bench-offset-junk      bench -o x t.raw
same bench-offset-big       bench -o 8E t.raw
same bench-flush-read       bench --flush-interval=10 t.raw
same bench-flush-depth      bench -w --flush-interval=10 t.raw
same bench-flush-junk       bench -w --flush-interval=x t.raw
same bench-flush-neg        bench -w --flush-interval=-1 -f raw t.raw
same bench-flush-uint       bench -w -d 1 --flush-interval=4294967295 -c 1 t.raw
same bench-flush-abbrev     bench --flush -w -c 1 t.raw
same bench-flush-nofile     bench --flush-interval=10
same bench-aio-bad          bench -i foo t.raw
same bench-aio-native       bench -i native -c 2 t.raw
same bench-native           bench -n -c 2 t.raw
same bench-native-threads   bench -n -i threads -c 2 t.raw
same bench-native-missing   bench -n nonexist
same bench-cache-bad        bench -t foo t.raw
same bench-missing-file     bench nonexist
same bench-bad-fmt          bench -f foo t.raw
same bench-share-write      bench -U -w -c 1 t.raw
same bench-imgopts-fmt      bench --image-opts -f raw -c 1 driver=raw,file.filename=t.raw
same bench-past-end         bench -c 1 -s 1k -o 1024k t.raw
same bench-past-end-4k      bench -c 1 -o 1025k t.raw
same bench-wrap-fail        bench -c 1000 -w -f raw --pattern=0xab -d 4 -s 512 -S 1024 -o 1000000 --flush-interval=100 t.raw
same bench-offset-max       bench -o 9223372036854775807 -c 1 t.raw

# ---- runs: same lines, measured time aside ----
same_bench bench-read          bench -c 1000 t.raw
[ $have_qcow2 = 1 ] && same_bench bench-read-qcow2 bench -c 200 -d 8 t.qcow2
same_bench bench-count-zero    bench -c 0 t.raw
same_bench bench-count-hex     bench -c 0x10 t.raw
same_bench bench-count-blank   bench -c ' 5' t.raw
same_bench bench-quiet         bench -q -c 10 t.raw
same_bench bench-bufsize-zero  bench -c 100 -s 0 t.raw
same_bench bench-step-zero     bench -S 0 -c 3 t.raw
same_bench bench-offset-frac   bench -o 1.5k -c 2 t.raw
same_bench bench-depth-big     bench -d 100 -c 5 t.raw
same_bench bench-depth-zero    bench -d 0 -c 0 t.raw
same_bench bench-wrap          bench -c 600 -s 1k -S 3k -o 1020k t.raw
same_bench bench-io-uring      bench -i io_uring -c 2 t.raw
same_bench bench-native-direct bench -n -t none -c 20 t.raw
same_bench bench-threads-native bench -i threads -n -t none -c 2 t.raw
same_bench bench-cache-modes   bench -t writethrough -c 20 t.raw
same_bench bench-share         bench -U -c 5 t.raw
same_bench bench-imgopts       bench --image-opts -c 3 driver=raw,file.filename=t.raw
same_bench bench-pattern-mzero bench --pattern=-0 -c 1 t.raw
same_bench bench-write-probed  bench -w -c 10 t.raw
same_bench bench-write-flush   bench -w -f raw -c 300 -d 4 --flush-interval=16 t.raw
same_bench bench-write-nodrain bench -w -f raw -c 300 -d 4 --flush-interval=4 --no-drain t.raw
[ $have_qcow2 = 1 ] && same_bench bench-write-qcow2 bench -w -c 64 -d 16 --pattern=7 t.qcow2

# ---- writes leave the pattern where qemu-img would ----
"$QEMU_IMG" create -q -f qcow2 w.qcow2 1M
"$QEMU_IMG" create -q -f qcow2 w-ref.qcow2 1M
# 258 KiB: requests at 3k + 6k*i stop at 255k+2k, then wrap back to 3k
truncate -s 258k w.raw
truncate -s 258k w-ref.raw
args=(-w -c 100 -d 8 -s 2k -S 6k -o 3k --pattern=0xa5)
if "$QIMG" bench "${args[@]}" -f raw w.raw >/dev/null 2>&1 &&
   "$QEMU_IMG" bench "${args[@]}" -f raw w-ref.raw >/dev/null 2>&1; then
    check bench-pattern-raw cmp w.raw w-ref.raw
    # the first request lands at -o: 2 KiB of 0xa5 at 3 KiB
    check bench-pattern-qemu-io "$QEMU_IO" -f raw -c 'read -P 0xa5 3k 2k' -c 'read -P 0 0 3k' w.raw
else
    fail bench-pattern-raw "bench -w failed"
fi
if [ $have_qcow2 = 0 ]; then
    :
elif "$QIMG" bench -w -c 40 -d 4 -s 8k --pattern=0x3c w.qcow2 >/dev/null 2>&1 &&
   "$QEMU_IMG" bench -w -c 40 -d 4 -s 8k --pattern=0x3c w-ref.qcow2 >/dev/null 2>&1; then
    check bench-pattern-qcow2 "$QEMU_IMG" compare -f qcow2 -F qcow2 w.qcow2 w-ref.qcow2
    check bench-pattern-qcow2-check "$QEMU_IMG" check -q w.qcow2
    check bench-pattern-qcow2-io "$QEMU_IO" -f qcow2 -c 'read -P 0x3c 0 320k' w.qcow2
else
    fail bench-pattern-qcow2 "bench -w on qcow2 failed"
fi

# ---- where qimg differs on purpose ----
# qemu-img waits forever with -d 0 (nothing is ever sent); qimg refuses.
out=$("$QIMG_AS_QEMU" bench -d 0 -c 5 t.raw 2>&1); rc=$?
expect_eq bench-depth-zero-refused "$rc:$out" "1:qemu-img: Invalid queue depth specified"
# qemu-img divides by zero on an empty image; qimg reports the failed read.
out=$("$QIMG_AS_QEMU" bench -c 2 empty.raw 2>"$SCRATCH/err"); rc=$?
expect_eq bench-empty-image "$rc:$out:$(cat "$SCRATCH/err")" \
    "1:Sending 2 read requests, 4096 bytes each, 64 in parallel (starting at offset 0, step size 4096):qemu-img: Failed request: Input/output error"
out=$("$QIMG_AS_QEMU" bench -c 2 -s 0 empty.raw 2>/dev/null); rc=$?
expect_eq bench-empty-zero-len "$rc:$(echo "$out" | head -1)" "0:Sending 2 read requests, 0 bytes each, 64 in parallel (starting at offset 0, step size 0)"
