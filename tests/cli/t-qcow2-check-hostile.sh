#!/bin/bash
# qemu-img check on the hostile qcow2 images of t-qcow2-hostile.sh (single
# fields of small qemu-made images patched; the catalogue is
# /work/shared/reference/hostile-images.md): check, check --output=json and
# check -r all must print and exit as qemu-img's, and -r all leave the same
# file.  An image opened for a check is read as qemu's check reads it:
# tables past the end of the file read as zeros, no refcount table is
# tolerated, the snapshot table is read by the check itself.
. "$(dirname "$0")/lib.sh"
need_cmd python3
cd "$IN" || exit 1

hostile_bases   # $SCRATCH/{base,comp,snap}.qcow2

# be64/be32/be16, poke, fresh SRC, hdr_be: lib.sh

# checks NAME: the three commands on t.qcow2, then the repaired files
checks() {
    local name=$1
    same "$name: check" check t.qcow2
    same "$name: check json" check --output=json t.qcow2
    same "$name: check -r all" check -r all t.qcow2
    [ "${SAME_FILE:-1}" = 1 ] || return 0
    if cmp -s "$SCRATCH/run.ref/work/t.qcow2" "$SCRATCH/run.new/work/t.qcow2"; then
        pass "$name: -r all, same file as qemu-img's"
    else
        fail "$name: -r all, same file as qemu-img's"
    fi
}

# ------------------------------------------------------ header fields
hdr_be 36 32 0xffffffff;               checks l1-size-huge
hdr_be 36 32 0x00400001;               checks l1-size-over-32m
hdr_be 40 64 0x30200;                  checks l1-offset-unaligned
hdr_be 48 64 0x1234567890abcdef;       checks reftable-offset-unaligned
hdr_be 48 64 0xffffffffffff0000;       checks reftable-offset-huge
hdr_be 56 32 0x00020001;               checks reftable-clusters-over-8m
# no refcount table: a check opens it (every refcount 0), -r all rebuilds
hdr_be 56 32 0;                        checks reftable-clusters-0
# the snapshot table: counts over 65536 read what follows (the header,
# guest data); an unaligned offset
hdr_be 60 32 0xffffffff;               checks snapshots-count-huge
hdr_be 60 32 65537;                    checks snapshots-count-65537
hdr_be 64 64 0x30200 snap;             checks snapshots-offset-unaligned
hdr_be 60 32 5 snap;                   checks snapshots-past-eof
hdr_be 100 32 0xffffffff;              checks header-length-huge
hdr_be 72 64 0x1;                      checks dirty
hdr_be 72 64 0x2;                      checks corrupt
# nb_snapshots with a later fatal header error
fresh snap; be32 5 | poke t.qcow2 60; be64 0x30200 | poke t.qcow2 40
checks snapshots-and-bad-l1

# ------------------------------------------------- tables and entries
# an L1 table bigger than the file: zeros past its end (guest data
# before).  -r all fails in both (an L2 write over the L1 table marks the
# image corrupt), but qemu's refcount repairs were still in its cache and
# never reach the disk, while qimg wrote them before the COPIED fixes: the
# files differ in those refcounts only
hdr_be 36 32 0x00100000;               SAME_FILE=0 checks l1-past-eof
L1=$((0x30000))
fresh base; be64 0x80000000ffff0000 | poke t.qcow2 $L1;  checks l2-past-eof
fresh base; be64 0x8000000000050200 | poke t.qcow2 $L1;  checks l2-unaligned
fresh base; be64 0x8000000000042a00 | poke t.qcow2 $L1;  checks l1-entry-unaligned
L2=$(( $(peek64 "$SCRATCH/base.qcow2" $L1) & 0x00fffffffffffe00 ))
l2e_at() { fresh base; be64 "$1" | poke t.qcow2 "$L2"; }
l2e_at 0x8000000fffff0000;             checks data-past-eof
l2e_at 0xbfffffffffff0000;             checks data-huge-offset
l2e_at 0x80000000ffff0000;             checks data-huge-physical-offset
l2e_at 0x8000000000050200;             checks data-unaligned
l2e_at 0x8000000000000000;             checks data-at-offset-0
l2e_at 0x40003fffffff0000;             checks compressed-huge-offset
CL2=$(( $(peek64 "$SCRATCH/comp.qcow2" $L1) & 0x00fffffffffffe00 ))
fresh comp; be64 $(( 0x4000000000000000 | (0xff << 54) | 0xfffff00 )) | poke t.qcow2 "$CL2"
checks compressed-past-eof
fresh comp; be64 $(( 0x4000000000000000 | 0 )) | poke t.qcow2 "$CL2"
checks compressed-over-header
fresh comp; CDATA=$(( $(peek64 "$SCRATCH/comp.qcow2" "$CL2") & ((1 << 54) - 1) ))
head -c 64 /dev/zero | tr '\0' '\377' | poke t.qcow2 "$CDATA"
checks compressed-garbage
# snapshot entries: extra data over 1024 bytes (cut by -r all); with the
# cut data qemu's table size must still fit an int: one byte more and the
# entry is dropped as overhanging
SN=$(peek64 "$SCRATCH/snap.qcow2" 64)
for extra in 0x04040404 0x7fffffd4 0x7fffffd5 0xfffffff0; do
    fresh snap; be32 $extra | poke t.qcow2 $((SN + 36)); checks "snapshot-extra-$extra"
done
fresh snap; be16 0xffff | poke t.qcow2 $((SN + 14));  checks snapshot-name-past-eof
fresh snap; be64 0x400200 | poke t.qcow2 "$SN";       checks snapshot-l1-unaligned
fresh snap; be32 0x10000000 | poke t.qcow2 $((SN + 8)); checks snapshot-l1-too-large
# refcount table entries with bit 63 set: the block is read with EIO (as
# qemu), -r all cannot grow the file to it (a size from 2^63 is refused
# before the file is asked) and rebuilds.  (A block merely far past EOF
# would make both grow the file to it, where the file system allows.)
RT=$(peek64 "$SCRATCH/base.qcow2" 48)
fresh base; be64 0x8000000000110000 | poke t.qcow2 "$RT";             checks reftable-bit63
fresh base; be64 0xfffffffffff00000 | poke t.qcow2 $((RT + 40));      checks reftable-past-2-63

# ------------------------------------ random damage to snapshot tables
# Seeded byte and field changes in the table of images with three
# snapshots (v3 and v2; qemu's v2 files end off a sector boundary): check
# and -r all as qemu-img, the repaired files the same unless qemu marked
# the image corrupt (then its repairs still in its caches are lost, ours
# were written).  Seeds found differences once: a snapshot L1 offset from
# 2^63 (qemu: out of memory), an L1 COPIED fix over an inactive L1 table
# (stops the check), a rebuild still broken (fixed counts), a table past
# an unaligned end of file, the name of an overlapped structure.
mk3() {   # mk3 FILE [create options]
    local f=$SCRATCH/$1.qcow2; shift
    "$QEMU_IMG" create -q -f qcow2 "$@" "$f" 4M
    for i in 1 2 3; do
        "$QEMU_IO" -f qcow2 -c "write -P $i $((i * 64))k 64k" "$f" >/dev/null
        "$QEMU_IMG" snapshot -c "s$i" "$f"
    done
    "$QEMU_IO" -f qcow2 -c "write -P 4 0 32k" "$f" >/dev/null
}
mk3 three
mk3 three2 -o compat=0.10
damage() {   # damage SRC SEED: t.qcow2
    fresh "$1"
    python3 - t.qcow2 "$2" <<'EOF2'
import random, struct, sys
f, seed = sys.argv[1], int(sys.argv[2])
d = bytearray(open(f, 'rb').read())
sn = struct.unpack_from('>Q', d, 64)[0]
r = random.Random(seed)
for _ in range(r.randint(1, 3)):
    kind = r.random()
    if kind < 0.6:
        d[sn + r.randint(0, 200)] = r.randint(0, 255)
    elif kind < 0.8:
        rel = r.choice([8, 12, 14, 36, 80, 84, 86, 108])
        fmt = '>I' if rel in (8, 36, 80, 108) else '>H'
        v = r.choice([0, 1, 7, 8, 16, 23, 24, 100, 1024, 1025, 4000, 65535, 0x7fffffff])
        struct.pack_into(fmt, d, sn + rel, v & (0xffff if fmt == '>H' else 0xffffffff))
    else:
        struct.pack_into('>I', d, 60, r.choice([0, 1, 2, 3, 4, 5, 10, 1000]))
open(f, 'wb').write(d)
EOF2
}
for case in three:1023 three:2002 three:9029 three2:7035 three2:7048 three2:7082 \
            $(for k in $(seq 20); do echo "three:$((12000 + k))" "three2:$((13000 + k))"; done); do
    src=${case%:*} seed=${case#*:}
    damage "$src" "$seed"
    same "$case: check" check t.qcow2
    damage "$src" "$seed"
    same "$case: check -r all" check -r all t.qcow2
    if grep -q "Marking image as corrupt" "$SCRATCH/run.ref/err" ||
       cmp -s "$SCRATCH/run.ref/work/t.qcow2" "$SCRATCH/run.new/work/t.qcow2"; then
        pass "$case: -r all, same file as qemu-img's"
    else
        fail "$case: -r all, same file as qemu-img's"
    fi
done
cd "$TOP" || exit 1
