#!/bin/bash
# dd: operands, messages and output against qemu-img 7.2, and against
# dd(1) where qimg follows it on purpose (count is counted after skip).
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

truncate -s 1M a
qio a 'write -P 1 0 64k'
qio a 'write -P 2 512k 4k'
qio a 'write -P 3 1020k 4k'               # data at the end
head -c 1000 /dev/zero | tr '\0' 'q' > u1000

# ---- messages and exit codes ----
same no-args          dd
same only-if          dd if=a
same only-of          dd of=x
same bad-operand      dd foo if=a of=x
same bad-operand-kv   dd foo=bar if=a of=x
same empty-key        dd =a
same bs-zero          dd bs=0 if=a of=x
same bs-neg           dd bs=-1 if=a of=x
same bs-big           dd bs=2G if=a of=x
same bs-huge          dd bs=99999999999999999999 if=a of=x
same bs-junk          dd bs=1x if=a of=x
same bs-empty         dd bs= if=a of=x
same count-neg        dd count=-1 if=a of=x
same count-junk       dd count=abc if=a of=x
same count-range      dd count=9999999999999999999 if=a of=x
same skip-junk        dd skip=abc if=a of=x
same skip-range       dd skip=9E if=a of=x
same missing-input    dd if=nonexist of=x
same bad-out-fmt      dd -O foo if=a of=x
same bad-out-fmt-2    dd -O foo if=nonexist of=x
same bad-in-fmt       dd -f foo if=a of=x
same bad-out-dir      dd if=a of=/nonexistent-dir/x
same bad-option       dd -n if=a of=x
same imgopts-and-f    dd --image-opts -f raw if=a of=x
same bs-checked-first dd if=nonexist of=x bs=0

# ---- output: qemu-img and qimg write the same bytes ----
# (checked by running both; the output file is compared after each run)
dd_same() {   # name, operands...
    local name=$1; shift
    same "$name" dd "$@" of=out
    if cmp -s "$SCRATCH/run.ref/work/out" "$SCRATCH/run.new/work/out"; then
        pass "$name-data"
    else
        fail "$name-data" "outputs differ: dd $*"
    fi
}
dd_same whole         if=a
dd_same bs64k         if=a bs=64k
dd_same bs-suffix     if=a bs=1.5k
dd_same count         if=a bs=4k count=3
dd_same count-k       if=a count=1k
dd_same count-zero    if=a count=0
dd_same count-big     if=a count=1 bs=1G
dd_same partial       if=a bs=1000 count=3
dd_same skip-only     if=a bs=64k skip=3
dd_same skip-partial  if=a bs=1000 skip=1048
dd_same skip-to-end   if=a skip=2048
dd_same skip-past-end if=a skip=2049
dd_same skip-huge     if=a skip=99999999999999999
dd_same unaligned-in  if=u1000
dd_same repeated      if=a bs=1k bs=2k count=1 count=2
dd_same force-share   -U if=a bs=64k count=2
dd_same format        -f raw -O raw if=a bs=64k count=2
dd_same image-opts    --image-opts if=driver=raw,file.filename=a count=8

# ---- deliberate difference: count counts after skip, as dd(1) ----
for args in "bs=64k count=4 skip=2" "bs=4k count=7 skip=13" "bs=1000 count=5 skip=3" "bs=512 skip=100 count=1"; do
    rm -f ref new
    dd if=a of=ref $args 2>/dev/null
    "$QIMG" dd if=a of=new $args
    rc=$?
    # raw outputs are whole 512-byte sectors: pad dd(1)'s output the same way
    size=$(stat -c %s ref); truncate -s $(( (size + 511) / 512 * 512 )) ref
    if [ $rc = 0 ] && cmp -s ref new; then pass "after-skip $args"; else fail "after-skip $args" "rc=$rc"; fi
done

# the output is verified by qemu-img too, and allocated as qemu-img's: every
# block written, zeros included (it once left zero blocks as holes)
rm -f new ref && "$QIMG" dd if=a of=new bs=64k && "$QEMU_IMG" dd if=a of=ref bs=64k
expect_eq qemu-compare "$("$QEMU_IMG" compare -f raw -F raw a new 2>&1)" "Images are identical."
sync new ref
expect_eq "raw output allocated as qemu-img's" "$(du -k new | cut -f1)" "$(du -k ref | cut -f1)"
"$QEMU_IMG" convert -O qcow2 a a.qcow2
for src in a.qcow2 a; do
    rm -f new.qcow2 ref.qcow2
    "$QIMG" dd -O qcow2 if=$src of=new.qcow2 bs=64k
    "$QEMU_IMG" dd -O qcow2 if=$src of=ref.qcow2 bs=64k
    expect_eq "dd -O qcow2 from $src: map as qemu-img's" \
        "$("$QEMU_IMG" map --output=json new.qcow2)" "$("$QEMU_IMG" map --output=json ref.qcow2)"
    check "dd -O qcow2 from $src: byte-identical to qemu-img's" cmp new.qcow2 ref.qcow2
done
