#!/bin/bash
# qcow2 internal snapshots at their limits, against qemu-img: snapshot -c
# when the table is full or a reference needs a refcount block the image
# cannot have (-EFBIG) or lacks (-EAGAIN); a snapshot whose L1 table is
# unaligned, too large, near 2^63 or past the end of the file, met by
# convert -l, measure -l, amend (downgrade), snapshot -a, snapshot -d and
# check.  Where qemu-img refuses before changing anything, both files must
# be byte for byte the same; where qemu leaks after a failure, qimg must
# leave the image as it was.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# base: 64 MiB, 512 bytes written at 0 (L2 table in cluster 4, data in 5)
mkbase_snap() {
    fresh
    mk t.qcow2 64M
    qw t.qcow2 "write -P 5 0 512"
}
L2=$((0x40000))

# both tools' copies of FILE after the last `same` are byte for byte equal
same_file() {
    if cmp -s "$SCRATCH/run.ref/work/$2" "$SCRATCH/run.new/work/$2"; then
        pass "$1: $2 as qemu-img leaves it"
    else
        fail "$1: $2 as qemu-img leaves it" \
            "$(cmp "$SCRATCH/run.ref/work/$2" "$SCRATCH/run.new/work/$2" 2>&1)"
    fi
}
# what qemu-img check says of qimg's copy of t.qcow2 (after the last `same`)
check_new() { "$QEMU_IMG" check "$SCRATCH/run.new/work/t.qcow2" 2>&1 | sed '/^Image end offset/d'; }
check_in() { "$QEMU_IMG" check "$IN/t.qcow2" 2>&1 | sed '/^Image end offset/d'; }
snaps_new() { "$QEMU_IMG" snapshot -l "$SCRATCH/run.new/work/t.qcow2" 2>&1; }

# ============================================================ snapshot -c
# the table holds the most snapshots qemu allows (the offset past the end
# of the file: its entries are never read)
mkbase_snap
poke64 t.qcow2 64 $((16 << 20))
poke32 t.qcow2 60 65536
same "-c: 65536 snapshots" snapshot -c test t.qcow2
ref_rc "-c: 65536 snapshots" 1
same_file "-c: 65536 snapshots" t.qcow2

# an L2 entry far beyond the file: qemu's refcount update answers EFBIG
# beyond what any refcount table covers, EAGAIN where a block is missing
# (not cases where qemu grows the refcount table far out: the host file
# system's largest file size then decides)
refuse_create() {
    local name=$1 entry=$2
    mkbase_snap
    poke64 t.qcow2 "$L2" "$entry"
    local before
    before=$(check_in)
    same "$name" snapshot -c test t.qcow2
    ref_rc "$name" 1
    # qemu leaks the L1 copy (and makes a refcount block): qimg undoes it all
    expect_eq "$name: qimg leaves the image as it was" "$(check_new)" "$before"
    expect_eq "$name: no snapshot" "$(snaps_new)" ""
}
refuse_create "-c: data cluster past 2^51 (EFBIG)" $((0xbfffffffffff0000))
refuse_create "-c: data cluster at 1 TiB (EAGAIN)" $((0x800000ffffff0000))
refuse_create "-c: compressed cluster at 1 TiB (EAGAIN)" $((0x4000010000000000))
# within reach: the snapshot is taken (both check the same afterwards)
mkbase_snap
poke64 t.qcow2 "$L2" $((0x8000000010000000))
same "-c: data cluster at 256 MiB" snapshot -c test t.qcow2
ref_rc "-c: data cluster at 256 MiB" 0
expect_eq "-c: data cluster at 256 MiB: check" "$(check_new)" \
    "$("$QEMU_IMG" check "$SCRATCH/run.ref/work/t.qcow2" 2>&1 | sed '/^Image end offset/d')"

# ===================================================== snapshot L1 table
# $SCRATCH/snap.qcow2: snapshot "test" (table entry at 0x70000)
mkbase_snap
"$QEMU_IMG" snapshot -c test t.qcow2 || fail "snapshot -c"
SN=$(peek64 t.qcow2 64)
cp t.qcow2 "$SCRATCH/snap.qcow2"

# bad_l1 WHAT RC [AT WIDTH VALUE]...: every operation on the snapshot with
# these fields of its entry set (RC: qemu-img's exit code, but for check)
bad_l1() {
    local what=$1 rc=$2; shift 2
    local op args
    for op in "convert -l test -O raw t.qcow2 o.raw" "measure -l test t.qcow2" \
              "amend -o compat=0.10 t.qcow2" "snapshot -a test t.qcow2" \
              "snapshot -d test t.qcow2" "check t.qcow2"; do
        fresh snap
        set_fields "$@"
        read -ra args <<<"$op"
        same "$what: ${op%% t.qcow2*}" "${args[@]}"
        same_file "$what: ${op%% t.qcow2*}" t.qcow2
        [ "${op%% *}" = check ] || ref_rc "$what: ${op%% t.qcow2*}" "$rc"
    done
}
set_fields() {
    while [ $# -ge 3 ]; do
        "be$2" "$3" | poke t.qcow2 $((SN + $1))
        shift 3
    done
}
bad_l1 "L1 offset unaligned" 1 0 64 $((0x400200))
bad_l1 "L1 size 2^28" 1 8 32 $((0x10000000))
bad_l1 "L1 size 4 Mi + 1" 1 8 32 $((0x400001))
bad_l1 "L1 offset near 2^63" 1 0 64 $((0x7fffffffffff0000))
bad_l1 "L1 ending past 2^63" 1 0 64 $((0x7fffffffffff0000)) 8 32 8192
# past the end of the file but within the limits: it reads as zeros
bad_l1 "L1 past the end" 0 0 64 $((16 << 20))

# apply of a snapshot whose L1 table fails the check changes nothing, even
# when the snapshot's size differs (qemu checks before resizing)
fresh snap
be32 $((0x10000000)) | poke t.qcow2 $((SN + 8))
be64 $((128 << 20)) | poke t.qcow2 $((SN + 48))     # disk_size in the extra data
same "-a: bad L1 and another size" snapshot -a test t.qcow2
same_file "-a: bad L1 and another size" t.qcow2

# ============================================ corrupt tables on the walk
# qemu marks the image corrupt, fails with EIO and writes nothing more
# (what it changed in memory stays there): the same messages, the same
# file (but for a snapshot -c that succeeds: its time), the same check.
# $SCRATCH/walk.qcow2: active L1 at 0x30000 -> L2 0x40000 (shared with
# snapshot test, whose L1 is at 0x60000), data written after it
fresh
mk t.qcow2 64M
qw t.qcow2 "write -P 5 0 512"
"$QEMU_IMG" snapshot -c test t.qcow2 || fail "snapshot -c"
qw t.qcow2 "write -P 6 64k 512"
cp t.qcow2 "$SCRATCH/walk.qcow2"
corrupt_walk() {
    local what=$1 at=$2 value=$3 op args
    for op in "snapshot -a test" "snapshot -d test" "snapshot -c new"; do
        fresh walk
        poke64 t.qcow2 "$at" "$value"
        read -ra args <<<"$op t.qcow2"
        same "$what: ${op}" "${args[@]}"
        [ "$op" = "snapshot -c new" ] || same_file "$what: ${op}" t.qcow2
        expect_eq "$what: ${op}: check" "$(check_new)" \
            "$("$QEMU_IMG" check "$SCRATCH/run.ref/work/t.qcow2" 2>&1 | sed '/^Image end offset/d')"
    done
}
corrupt_walk "data cluster unaligned" $((0x40000)) $((0x8000000000050200))
corrupt_walk "snapshot's L2 table unaligned" $((0x60000)) $((0x40200))
# the active table's: apply differs (qemu writes the snapshot's L1 with
# its stale COPIED flags before it meets the old table, qimg puts the
# flags right first), delete and create do not
for op in "snapshot -d test" "snapshot -c new"; do
    fresh walk
    poke64 t.qcow2 $((0x30000)) $((0x8000000000040200))
    read -ra args <<<"$op t.qcow2"
    same "active L2 table unaligned: ${op}" "${args[@]}"
    expect_eq "active L2 table unaligned: ${op}: check" "$(check_new)" \
        "$("$QEMU_IMG" check "$SCRATCH/run.ref/work/t.qcow2" 2>&1 | sed '/^Image end offset/d')"
done
