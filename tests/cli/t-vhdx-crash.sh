#!/bin/bash
# Crash safety of VHDX metadata updates: every BAT change goes through the
# log, so a process that dies in the middle of one leaves an image that
# opens with the log replayed and every acknowledged write intact.
#  1. deterministic: blkdebug fails every in-place write of the BAT, so
#     the process stops after the log entry is stable and before the table
#     is updated: qimg reads the update from the log, qemu-img and qimg
#     replay it (qemu-img replaying qimg's log) to the same file;
#  2. random: a series of writers, each adding one block to what the one
#     before wrote, one of them killed with SIGKILL at a random moment:
#     everything the finished ones wrote is there, the killed one's block
#     is either complete or absent, and the image checks clean after
#     qemu-img's replay and after qimg's.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

MB=1048576
head -c $((40 * MB)) /dev/urandom >src.raw
truncate -s $((64 * MB)) src.raw

# what a prefix of N MiB of src.raw written into a 64 MiB disk reads as
expect_prefix() {   # expect_prefix FILE N: FILE (raw) holds src's first N MiB, zeros after
    cmp -s -n $(($2 * MB)) "$1" src.raw &&
        cmp -s -i $(($2 * MB)):0 -n $(((64 - $2) * MB)) "$1" /dev/zero
}

# ------------------------------------------------ 1. deterministic
"$QIMG" create -q -f vhdx -o block_size=1M d.vhdx 64M
bat_sector=$((2 * MB / 512))
printf '[inject-error]\nevent = "none"\niotype = "write"\nsector = "%d"\n' $bat_sector >rules.cfg
"$QIMG" convert -n -O vhdx --image-opts driver=raw,size=$((6 * MB)),file.filename=src.raw \
    "blkdebug:rules.cfg:d.vhdx" 2>/dev/null
expect_eq "the in-place BAT write failed" $? 1
expect_eq "the log is pending" "$("$QIMG" info --output=json d.vhdx | grep dirty-flag)" \
    '    "dirty-flag": true'
check_fail "qemu-img refuses it read-only" "$QEMU_IMG" info d.vhdx
"$QIMG" convert -O raw d.vhdx d.raw
check "qimg reads the update from the log" expect_prefix d.raw 6
cp d.vhdx byqemu.vhdx
cp d.vhdx byqimg.vhdx
"$QEMU_IMG" check -q -r all byqemu.vhdx
expect_eq "qemu-img replays qimg's log" $? 0
"$QIMG" check -q -r all byqimg.vhdx
expect_eq "qimg replays its log" $? 0
for f in byqemu byqimg; do
    check "$f: qemu-img check" "$QEMU_IMG" check -q $f.vhdx
    "$QEMU_IMG" convert -O raw $f.vhdx $f.raw
    check "$f: the data" expect_prefix $f.raw 6
done
check "both replays give the same file" cmp -i $((1 * MB)):$((1 * MB)) byqemu.vhdx byqimg.vhdx

# ------------------------------------------------ 2. random kills
dirty=0
for round in 1 2 3 4 5 6 7 8; do
    rm -f k.vhdx
    "$QIMG" create -q -f vhdx -o block_size=1M k.vhdx 64M
    victim=$((RANDOM % 30 + 2)) done_mb=0 killed=0
    for n in $(seq 1 32); do
        "$QIMG" convert -n -O vhdx --image-opts driver=raw,size=$((n * MB)),file.filename=src.raw \
            k.vhdx 2>/dev/null &
        pid=$!
        if [ $n = $victim ]; then
            sleep "0.00$((RANDOM % 9 + 1))"
            kill -9 $pid 2>/dev/null
        fi
        wait $pid 2>/dev/null
        rc=$?
        if [ $rc = 0 ]; then done_mb=$n; else killed=1; break; fi
    done
    "$QEMU_IMG" info k.vhdx >/dev/null 2>&1 || dirty=$((dirty + 1))
    "$QIMG" convert -O raw k.vhdx k.raw 2>/dev/null
    if expect_prefix k.raw $done_mb || { [ $killed = 1 ] && expect_prefix k.raw $((done_mb + 1)); }
    then pass "round $round: acknowledged writes intact (read-only)"; else
        fail "round $round: acknowledged writes intact (read-only)" "done=$done_mb killed=$killed"; fi
    cp k.vhdx kq.vhdx
    "$QEMU_IMG" check -q -r all kq.vhdx >/dev/null 2>&1
    "$QIMG" check -q -r all k.vhdx >/dev/null 2>&1
    for f in k kq; do
        check "round $round: $f checks clean" "$QEMU_IMG" check -q $f.vhdx
        "$QEMU_IMG" convert -O raw $f.vhdx $f.raw 2>/dev/null
        if expect_prefix $f.raw $done_mb || { [ $killed = 1 ] && expect_prefix $f.raw $((done_mb + 1)); }
        then pass "round $round: $f: acknowledged writes intact"; else
            fail "round $round: $f: acknowledged writes intact" "done=$done_mb killed=$killed"; fi
    done
done
echo "# $dirty of 8 kills left a pending log"

# ------------------------------------------------ 3. killed between flushes
# qimg bench writes 1 MiB blocks in order with a flush after each, so most
# of its time goes to BAT updates through the log; a kill at a random
# moment finds one half done more often than not.  After the replay the
# disk holds whole blocks of the pattern up to some block, zeros after it.
pattern_prefix() {   # pattern_prefix RAW: whole 0x5a blocks, then zeros
    python3 -c '
import sys
d = open(sys.argv[1], "rb").read()
n = len(d.rstrip(b"\0"))
n = (n + (1 << 20) - 1) >> 20 << 20
assert d[:n] == b"\x5a" * n and not d[n:].strip(b"\0"), n
' "$1"
}
dirty=0
for round in 1 2 3 4 5 6; do
    rm -f b.vhdx
    "$QIMG" create -q -f vhdx -o block_size=1M b.vhdx 64M
    "$QIMG" bench -q -w -f vhdx -c 64 -d 1 -s 1M -S 1M --flush-interval=1 --pattern=0x5a b.vhdx &
    pid=$!
    sleep "0.$((RANDOM % 9 + 1))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    "$QEMU_IMG" info b.vhdx >/dev/null 2>&1 || dirty=$((dirty + 1))
    "$QIMG" convert -O raw b.vhdx b.raw
    check "bench round $round: whole blocks (read-only, log laid over)" pattern_prefix b.raw
    cp b.vhdx bq.vhdx
    "$QEMU_IMG" check -q -r all bq.vhdx >/dev/null 2>&1
    "$QIMG" check -q -r all b.vhdx >/dev/null 2>&1
    for f in b bq; do
        check "bench round $round: $f checks clean" "$QEMU_IMG" check -q $f.vhdx
        "$QEMU_IMG" convert -O raw $f.vhdx $f.2.raw
        check "bench round $round: $f: the same data as read before the replay" cmp b.raw $f.2.raw
    done
done 2>/dev/null
echo "# $dirty of 6 bench kills left a pending log"
