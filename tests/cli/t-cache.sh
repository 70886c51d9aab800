#!/bin/bash
# Cache modes: none and directsync use O_DIRECT; unaligned requests (probe
# sector, odd offsets, file tails) must still work, as in qemu-img.
. "$(dirname "$0")/lib.sh"
cd "$SCRATCH"
head -c 1000000 /dev/urandom > odd.raw          # not a multiple of 512
truncate -s 1M t.raw
for mode in none directsync writethrough writeback unsafe; do
    rm -f out.raw
    if "$QIMG" convert -T $mode -t $mode odd.raw out.raw 2>err; then
        if "$QEMU_IMG" compare -f raw -F raw odd.raw out.raw >/dev/null; then
            pass "convert -t/-T $mode (probed, odd size)"
        else
            fail "convert -t/-T $mode (probed, odd size)" "content differs"
        fi
    else
        fail "convert -t/-T $mode (probed, odd size)" "$(cat err)"
    fi
    out=$("$QIMG" bench -t $mode -c 10 -s 512 -o 100 -f raw t.raw 2>&1); rc=$?
    expect_eq "bench -t $mode, unaligned offset: exit code" "$rc" 0
    out=$("$QIMG" bench -w -t $mode -c 10 -s 700 -o 3 --pattern=0x41 -f raw t.raw 2>&1); rc=$?
    expect_eq "bench -w -t $mode, unaligned size: exit code" "$rc" 0
done
want=$(head -c 3 /dev/zero | cat - <(head -c 7000 /dev/zero | tr '\0' 'A') | cmp - <(head -c 7003 t.raw) && echo same)
expect_eq "unaligned O_DIRECT writes landed" "$want" same
