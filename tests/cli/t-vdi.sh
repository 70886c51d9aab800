#!/bin/bash
# The VDI driver against qemu-img: images qemu-img makes (dynamic, static,
# data, zeros, holes) read, shown and checked alike; what qimg creates and
# converts equal to qemu-img's file but for the two random UUIDs; checks of
# damaged block maps; hostile headers refused with qemu's messages.
. "$(dirname "$0")/lib.sh"
need_cmd python3

# the file without its random image and snapshot UUIDs (0x188..0x1a7)
no_uuid() {
    python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[0x188:0x1a8] = bytes(32); sys.stdout.buffer.write(b)' "$1" | sha256sum
}
# le FILE OFFSET BITS VALUE: patch one little-endian field
le() {
    python3 -c 'import struct, sys
f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2], 0))
f.write(struct.pack("<I" if sys.argv[3] == "32" else "<Q", int(sys.argv[4], 0)))' "$@"
}
same_as_qemu_file() {   # NAME OURS THEIRS
    expect_eq "$1" "$(no_uuid "$2")" "$(no_uuid "$3")"
}

# ---- guest data: data, a zero run inside a block, whole zero blocks, holes
SRC=$SCRATCH/src.raw
python3 - "$SRC" <<'PY'
import sys
b = bytearray(8 << 20)
for i in range(4096): b[i] = (i * 7 + 1) & 0xff
b[(2 << 20) + 5000:(2 << 20) + 9000] = b"x" * 4000
b[(4 << 20) + 100:(4 << 20) + 200] = bytes(range(1, 101))
b[(8 << 20) - 512:] = b"\x5a" * 512
open(sys.argv[1], "wb").write(b)
PY
truncate -s 10M "$SRC"

"$QEMU_IMG" create -q -f vdi "$IN/dyn.vdi" 10M
"$QEMU_IMG" create -q -f vdi -o static=on "$IN/static.vdi" 3M
"$QEMU_IMG" create -q -f vdi "$IN/odd.vdi" 1000
"$QEMU_IMG" convert -O vdi "$SRC" "$IN/data.vdi"
"$QEMU_IMG" convert -O vdi -o static=on "$SRC" "$IN/sdata.vdi"
# zeros written over data (qemu-io), a partly written block
cp "$IN/data.vdi" "$IN/zeroed.vdi"
"$QEMU_IO" -f vdi -c 'write -z 4M 1M' -c 'write -P 0x61 9M 4k' "$IN/zeroed.vdi" >/dev/null ||
    fail "qemu-io on zeroed.vdi"

for f in dyn static odd data sdata zeroed; do
    same_ro "info $f" info "$f.vdi"
    same_ro "info json $f" info --output=json "$f.vdi"
    same_ro "map $f" map "$f.vdi"
    same_ro "map json $f" map --output=json "$f.vdi"
    same_ro "check $f" check "$f.vdi"
    same_ro "check json $f" check --output=json "$f.vdi"
    same "convert $f to raw" convert -O raw "$f.vdi" out.raw
    "$QIMG" convert -O raw "$IN/$f.vdi" "$SCRATCH/out.raw" &&
        "$QEMU_IMG" compare -q -f vdi -F raw "$IN/$f.vdi" "$SCRATCH/out.raw"
    check "guest bytes of $f" test $? = 0
done
"$QIMG" convert -O raw "$IN/data.vdi" "$SCRATCH/back.raw"
check "data.vdi reads as its source" cmp -s "$SCRATCH/back.raw" "$SRC"
same_ro "info -f vdi" info -f vdi data.vdi
# qemu-img refuses -r for vdi (63); on a clean image qimg finds nothing to do
"$QEMU_IMG" check -r all "$IN/data.vdi" >/dev/null 2>&1
expect_eq "qemu-img check -r all on a clean vdi" "$?" 63
cp "$IN/data.vdi" "$SCRATCH/r.vdi"
expect_eq "check -r all on a clean vdi" "$("$QIMG" check -r all "$SCRATCH/r.vdi" 2>&1; echo "rc=$?")" \
    "No errors were found on the image.
rc=0"
check "check -r all on a clean vdi: file unchanged" cmp -s "$SCRATCH/r.vdi" "$IN/data.vdi"
# qemu-img cannot shrink (nor grow) a vdi; qimg can (see below)
run_in_copy ref "$QEMU_IMG" resize --shrink data.vdi 2M
expect_eq "resize --shrink: qemu-img refuses" "$(cat "$SCRATCH/run.ref/err")" \
    "qemu-img: Image format driver does not support resize"
same "resize without --shrink" resize data.vdi 2M
same "compare vdi with vdi" compare data.vdi sdata.vdi
same "compare vdi with zeroed" compare data.vdi zeroed.vdi

# ---- create: the same file as qemu-img's but for the UUIDs
same "create -o help" create -f vdi -o help
for args in "10M" "-o static=on 3M" "1000" "-o static=off 2G" "-o size=5M"; do
    # shellcheck disable=SC2086
    "$QEMU_IMG" create -q -f vdi "$SCRATCH/ref.vdi" $args
    # shellcheck disable=SC2086
    "$QIMG" create -q -f vdi "$SCRATCH/new.vdi" $args
    same_as_qemu_file "create $args: same file" "$SCRATCH/new.vdi" "$SCRATCH/ref.vdi"
    expect_eq "create $args: same length" "$(stat -c %s "$SCRATCH/new.vdi")" "$(stat -c %s "$SCRATCH/ref.vdi")"
    rm -f "$SCRATCH/new.vdi" "$SCRATCH/ref.vdi"
done
same "create message" create -f vdi -o static=on n.vdi 3M
same "create too big" create -f vdi n.vdi 3000T
ref_rc "create too big" 1
same "create bad static" create -f vdi -o static=maybe n.vdi 1M
same "create backing (no such option)" create -f vdi -b data.vdi n.vdi 1M
"$QEMU_IMG" create -q -f vdi "$SCRATCH/u1.vdi" 1M
"$QIMG" create -q -f vdi "$SCRATCH/u2.vdi" 1M
"$QIMG" create -q -f vdi "$SCRATCH/u3.vdi" 1M
u2=$(od -An -tx1 -j 392 -N 32 "$SCRATCH/u2.vdi" | tr -d ' \n')
u3=$(od -An -tx1 -j 392 -N 32 "$SCRATCH/u3.vdi" | tr -d ' \n')
check "create: a new UUID each time" test "$u2" != "$u3"
# version 4 UUIDs, stored with the first fields little-endian as qemu does
check "create: UUID version nibble" test "$(od -An -tx1 -j 399 -N 1 "$SCRATCH/u2.vdi" | tr -d ' ')" \
    != "" -a "$(( 0x$(od -An -tx1 -j 399 -N 1 "$SCRATCH/u2.vdi" | tr -d ' ') >> 4 ))" = 4

# ---- write: convert into vdi (new blocks, block map, header)
for opt in static=off static=on; do
    rm -f "$SCRATCH/n.vdi" "$SCRATCH/r.vdi"
    "$QIMG" convert -O vdi -o $opt "$SRC" "$SCRATCH/n.vdi" || fail "qimg convert -o $opt"
    "$QEMU_IMG" convert -O vdi -o $opt "$SRC" "$SCRATCH/r.vdi"
    check "convert -o $opt: qemu-img check clean" "$QEMU_IMG" check -q "$SCRATCH/n.vdi"
    check "convert -o $opt: qemu-img compare" "$QEMU_IMG" compare -q "$SRC" "$SCRATCH/n.vdi"
    same_as_qemu_file "convert -o $opt: same layout as qemu-img" "$SCRATCH/n.vdi" "$SCRATCH/r.vdi"
done
"$QEMU_IMG" create -q -f qcow2 "$SCRATCH/c.qcow2" 8M
"$QEMU_IO" -f qcow2 -c 'write -P 7 3M 64k' -c 'write -z 5M 1M' -c 'write -P 9 7M 1M' \
    "$SCRATCH/c.qcow2" >/dev/null
"$QIMG" convert -O vdi "$SCRATCH/c.qcow2" "$SCRATCH/c.vdi"
check "qcow2 to vdi: compare" "$QEMU_IMG" compare -q "$SCRATCH/c.qcow2" "$SCRATCH/c.vdi"
check "qcow2 to vdi: check" "$QEMU_IMG" check -q "$SCRATCH/c.vdi"
"$QIMG" convert -O qcow2 "$SCRATCH/c.vdi" "$SCRATCH/c2.qcow2"
check "vdi to qcow2: compare" "$QEMU_IMG" compare -q "$SCRATCH/c.qcow2" "$SCRATCH/c2.qcow2"
# over an image with blocks already there (-n): rewrites and new blocks
cp "$IN/data.vdi" "$SCRATCH/w1.vdi"
cp "$IN/data.vdi" "$SCRATCH/w2.vdi"
"$QIMG" convert -n -O vdi "$SCRATCH/c.qcow2" "$SCRATCH/w1.vdi"
"$QEMU_IMG" convert -n -O vdi "$SCRATCH/c.qcow2" "$SCRATCH/w2.vdi"
same_as_qemu_file "convert -n into data.vdi: same file" "$SCRATCH/w1.vdi" "$SCRATCH/w2.vdi"
check "convert -n: check" "$QEMU_IMG" check -q "$SCRATCH/w1.vdi"
check "convert -n: compare" "$QEMU_IMG" compare -q -f qcow2 -F vdi "$SCRATCH/c.qcow2" "$SCRATCH/w1.vdi"
# a written static image allocates nothing new
cp "$IN/static.vdi" "$SCRATCH/s.vdi"
"$QEMU_IMG" create -q -f raw "$SCRATCH/p.raw" 3M
"$QEMU_IO" -f raw -c 'write -P 0x3c 1M 700k' "$SCRATCH/p.raw" >/dev/null
"$QIMG" convert -n -O vdi "$SCRATCH/p.raw" "$SCRATCH/s.vdi"
expect_eq "static stays its size" "$(stat -c %s "$SCRATCH/s.vdi")" "$(stat -c %s "$IN/static.vdi")"
check "static written: compare" "$QEMU_IMG" compare -q -F vdi "$SCRATCH/p.raw" "$SCRATCH/s.vdi"
check "static written: check" "$QEMU_IMG" check -q "$SCRATCH/s.vdi"

# ---- resize: qemu-img cannot; qimg grows, moving the first host blocks
# to the end when the block map outgrows its room (past 128 MiB here)
for f in data sdata; do
    cp "$IN/$f.vdi" "$SCRATCH/g.vdi"
    for size in +1M 100M 129M 2G; do
        out=$("$QIMG" resize "$SCRATCH/g.vdi" "$size" 2>&1)
        expect_eq "grow $f to $size" "$out" "Image resized."
        check "grow $f to $size: qemu-img check" "$QEMU_IMG" check -q "$SCRATCH/g.vdi"
        check "grow $f to $size: reads as before" "$QEMU_IMG" compare -q -F vdi "$SRC" "$SCRATCH/g.vdi"
    done
    expect_eq "grow $f: size" "$("$QEMU_IMG" info --output=json "$SCRATCH/g.vdi" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" \
        2147483648
done
expect_eq "grown static image: file size" "$(stat -c %s "$SCRATCH/g.vdi")" $(( (2048 << 20) + 1024 + (1 << 20) ))
"$QEMU_IMG" create -q -f vdi "$SCRATCH/g.vdi" 10M
"$QIMG" resize -q "$SCRATCH/g.vdi" 1G
"$QEMU_IO" -f vdi -c 'write -P 0x42 700M 4k' "$SCRATCH/g.vdi" >/dev/null
check "grown empty image takes writes" "$QEMU_IMG" check -q "$SCRATCH/g.vdi"
check "grown empty image: data" "$QEMU_IO" -f vdi -c 'read -P 0x42 700M 4k' -c 'read -P 0 0 700M' "$SCRATCH/g.vdi"
out=$("$QIMG" resize "$SCRATCH/g.vdi" 3000T 2>&1)
expect_eq "grow past the limit" "$out" \
    "qimg: Unsupported VDI image size (size is 0xbb80000000000, max supported is 0x1fffff8000000)"

# a 2 TiB disk with one block: map in one pass over the block map
"$QEMU_IMG" create -q -f vdi "$IN/big.vdi" 2T
"$QEMU_IO" -f vdi -c 'write -P 0x21 1T 4k' "$IN/big.vdi" >/dev/null
same_ro "sparse 2 TiB: map" map --output=json big.vdi
same "sparse 2 TiB: convert to qcow2" convert -O qcow2 big.vdi big.qcow2
# measure (qemu-img cannot): exact where block status is
"$QIMG" convert -O vdi "$IN/big.vdi" "$SCRATCH/big2.vdi"
expect_eq "measure of a sparse 2 TiB disk" \
    "$("$QIMG" measure -O vdi "$IN/big.vdi" | sed -n 's/^required size: //p')" \
    "$(stat -c %s "$SCRATCH/big2.vdi")"
rm -f "$SCRATCH/big2.vdi"
out=$("$QIMG" measure -O vdi --size 3000T 2>&1); rc=$?
expect_eq "measure too big" "$out (exit $rc)" \
    "qimg: Unsupported VDI image size (size is 0xbb80000000000, max supported is 0x1fffff8000000) (exit 1)"

# ---- check: damaged block maps (qemu's lines and exit codes)
# data.vdi maps blocks 0, 2, 4, 7 to host blocks 0..3
bm=512
cp "$IN/data.vdi" "$IN/dup.vdi";   le "$IN/dup.vdi" $((bm + 8)) 32 0
cp "$IN/data.vdi" "$IN/dup2.vdi";  le "$IN/dup2.vdi" $((bm + 16)) 32 1
cp "$IN/data.vdi" "$IN/large.vdi"; le "$IN/large.vdi" $((bm + 8)) 32 50
cp "$IN/data.vdi" "$IN/count.vdi"; le "$IN/count.vdi" 0x184 32 9
cp "$IN/data.vdi" "$IN/all.vdi"
le "$IN/all.vdi" $((bm + 8)) 32 0; le "$IN/all.vdi" $((bm + 16)) 32 77
le "$IN/all.vdi" $((bm + 4)) 32 0xfffffffe; le "$IN/all.vdi" 0x184 32 7
for f in dup dup2 large count all; do
    same_ro "check $f" check "$f.vdi"
    same_ro "check json $f" check --output=json "$f.vdi"
    same_ro "map $f" map --output=json "$f.vdi"
done
same "check dup: exit code" check dup.vdi
ref_rc "check dup" 2
# check -r: qemu-img refuses it for vdi (63); qimg repairs what it can (an
# entry past the map or sharing a host block becomes unallocated, the
# blocks in use move down so that the count is right): qemu-img check is
# clean after it and every other block keeps its data
"$QEMU_IMG" check -r all "$IN/all.vdi" >/dev/null 2>&1
expect_eq "qemu-img check -r all on vdi: not supported" "$?" 63
for c in dup:2 dup2:4 large:2 count: all:2,4; do
    f=${c%%:*} lost=${c#*:}
    cp "$IN/$f.vdi" "$SCRATCH/r.vdi"
    out=$("$QIMG" check -r all "$SCRATCH/r.vdi" 2>&1); rc=$?
    expect_eq "check -r all $f: exit code" "$rc" 0
    case "$out" in
    *"were found and repaired"*"No errors were found on the image."*) pass "check -r all $f: repaired" ;;
    *) fail "check -r all $f: repaired" "$out" ;;
    esac
    check "check -r all $f: qemu-img check clean" "$QEMU_IMG" check -q "$SCRATCH/r.vdi"
    cp "$SRC" "$SCRATCH/want.raw"
    for b in ${lost//,/ }; do
        dd if=/dev/zero of="$SCRATCH/want.raw" bs=1M seek="$b" count=1 conv=notrunc status=none
    done
    check "check -r all $f: the other blocks keep their data" \
        "$QEMU_IMG" compare -q -f raw -F vdi "$SCRATCH/want.raw" "$SCRATCH/r.vdi"
done
same "convert with a block past EOF" convert -O raw large.vdi o.raw

# ---- hostile headers: qemu's messages, a non-zero exit, bounded memory
hostile() {   # NAME FIELD BITS VALUE [FIELD BITS VALUE]...
    local name=$1; shift
    cp "$IN/dyn.vdi" "$IN/h.vdi"
    while [ $# -gt 0 ]; do le "$IN/h.vdi" "$1" "$2" "$3"; shift 3; done
    same_ro "hostile $name: info" info h.vdi
    same_ro "hostile $name: info -f vdi" info -f vdi h.vdi
}
hostile "bad signature" 0x40 32 0x12345678
hostile "version 1.2" 0x44 32 0x00010002
hostile "version 2.1" 0x44 32 0x00020001
hostile "unaligned block map" 0x154 32 0x201
hostile "unaligned data" 0x158 32 0x401
hostile "sector size" 0x168 32 1024
hostile "block size" 0x178 32 0x200000
hostile "disk larger than the map" 0x170 64 0xb00000
hostile "disk a byte larger" 0x170 64 10485761
hostile "odd disk size" 0x170 64 1000
hostile "link uuid" 0x1a8 32 1
hostile "parent uuid" 0x1b8 32 1
hostile "too many blocks" 0x180 32 0x40000000 0x170 64 0
hostile "huge header size" 0x48 32 0xffffffff
hostile "image type 3" 0x4c 32 3
hostile "block map past EOF" 0x154 32 0x10000000
same_ro "block map past EOF: map" map --output=json h.vdi
same_ro "block map past EOF: check" check h.vdi
hostile "data over the block map" 0x158 32 0x200
hostile "block map after the data" 0x158 32 0x200 0x154 32 0x400
hostile "64M blocks, empty map" 0x180 32 0x4000000 0x170 64 0

# The largest map qemu allows (2 GiB) in a 1 KiB file: qemu reads it all
# (2 GiB of memory); qimg keeps only what the file holds, the rest reads as
# entry 0 as qemu reads it.
cp "$IN/dyn.vdi" "$IN/max.vdi"
le "$IN/max.vdi" 0x180 32 0x1fffff80
le "$IN/max.vdi" 0x170 64 0x1fffff8000000
out=$( (ulimit -v 1048576; timeout 5 "$QIMG" info "$IN/max.vdi") 2>&1 ); rc=$?
expect_eq "largest block map in 1 GiB: exit code" "$rc" 0
expect_eq "largest block map in 1 GiB: size" "$(echo "$out" | grep '^virtual size')" \
    "virtual size: 512 TiB (562949819203584 bytes)"
same_ro "largest block map: info" info max.vdi
le "$IN/max.vdi" 0x170 64 0x1fffff8000001
same_ro "disk size past the maximum" info max.vdi
le "$IN/max.vdi" 0x40 32 0
same_ro "disk size past the maximum before the signature" info -f vdi max.vdi
cp "$IN/dyn.vdi" "$IN/short.vdi"
truncate -s 300 "$IN/short.vdi"
same_ro "truncated header" info -f vdi short.vdi
cp "$IN/dyn.vdi" "$IN/short.vdi"
truncate -s 600 "$IN/short.vdi"
same_ro "truncated block map" map --output=json short.vdi

# ---- a vdi image under a qcow2 overlay: info, map, commit into the vdi
rm -rf "${IN:?}"/*
"$QEMU_IMG" convert -O vdi "$SRC" "$IN/base.vdi"
(cd "$IN" && "$QEMU_IMG" create -q -f qcow2 -b base.vdi -F vdi top.qcow2 &&
    "$QEMU_IO" -f qcow2 -c 'write -P 0x66 1M 64k' -c 'write -P 0x67 9M 1M' top.qcow2 >/dev/null) ||
    fail "chain fixture"
same_ro "chain: info --backing-chain" info --backing-chain --output=json top.qcow2
same_ro "chain: map" map --output=json top.qcow2
same "chain: commit into vdi" commit top.qcow2
"$QIMG" commit -q "$IN/top.qcow2"
check "chain: committed vdi checks clean" "$QEMU_IMG" check -q "$IN/base.vdi"
check "chain: committed vdi holds the overlay" "$QEMU_IMG" compare -q "$IN/top.qcow2" "$IN/base.vdi"

# ---- a hostile block map of N entries past the end of a 1 KiB file (all
# read as block 0): qemu prints a finding per entry; qimg prints the same
# up to 100000 findings, then how many more there are (counts and exit
# code as qemu's)
hostile_map() {   # hostile_map FILE BLOCKS
    "$QEMU_IMG" create -q -f vdi "$1" 1M &&
        python3 -c 'import struct, sys
d = bytearray(open(sys.argv[1], "rb").read()); n = int(sys.argv[2])
struct.pack_into("<I", d, 0x180, n); struct.pack_into("<Q", d, 0x170, n << 20)
open(sys.argv[1], "wb").write(d)' "$1" "$2"
}
if has_cmd "$TEST_NAME hostile map" python3; then
    rm -rf "${IN:?}"/*
    hostile_map "$IN/h.vdi" 50000
    same_ro "check of 50000 shared blocks: as qemu" check h.vdi
    hostile_map "$IN/max.vdi" $((0x1fffff80))
    start=$(date +%s)
    "$QIMG" check "$IN/max.vdi" >"$SCRATCH/out" 2>"$SCRATCH/err"; rc=$?
    expect_eq "check of the largest hostile map: exit code" "$rc" 2
    check "check of the largest hostile map: within 20 s" test $(( $(date +%s) - start )) -le 20
    expect_eq "check of the largest hostile map: lines" "$(wc -l <"$SCRATCH/err")" 100002
    expect_eq "check of the largest hostile map: what is left out" "$(tail -2 "$SCRATCH/err")" \
        "ERROR: 536770782 more block map errors not listed
ERROR: allocated blocks mismatch, is 536870783, should be 0"
    expect_eq "check of the largest hostile map: count" "$(sed -n 2p "$SCRATCH/out")" \
        "536870783 errors were found on the image."
fi

# ---- shrink (beyond qemu-img): the blocks past the end go, the last host
# blocks move into their holes, and the file ends after the last one
for st in off on; do
    rm -f "$SCRATCH/s.vdi"
    "$QEMU_IMG" create -q -f vdi -o static=$st "$SCRATCH/s.vdi" 10M
    "$QEMU_IO" -f vdi -c "write -P 0x11 0 2M" -c "write -P 0x22 5M 1M" -c "write -P 0x33 9M 1M" \
        -c "write -P 0x44 1M 1M" "$SCRATCH/s.vdi" >/dev/null
    "$QEMU_IMG" convert -f vdi -O raw "$SCRATCH/s.vdi" "$SCRATCH/s.raw"
    for size in 6M 1536k; do
        check "static=$st: shrink to $size" "$QIMG" resize -q --shrink "$SCRATCH/s.vdi" "$size"
        truncate -s "$size" "$SCRATCH/s.raw"
        expect_eq "static=$st: shrink to $size: qemu-img check" \
            "$("$QEMU_IMG" check "$SCRATCH/s.vdi" 2>&1 | head -1)" "No errors were found on the image."
        check "static=$st: shrink to $size: data" "$QEMU_IMG" compare -q -f vdi -F raw "$SCRATCH/s.vdi" "$SCRATCH/s.raw"
    done
    expect_eq "static=$st: shrunk file" "$(stat -c %s "$SCRATCH/s.vdi")" $((512 + 512 + (2 << 20)))
done
# a damaged map is not shrunk
if has_cmd "$TEST_NAME shrink damaged" python3; then
    hostile_map "$SCRATCH/d.vdi" 50000
    out=$("$QIMG" resize --shrink "$SCRATCH/d.vdi" 1M 2>&1)
    expect_eq "shrink a damaged map: refused" "$?: $out" \
        "1: qimg: Cannot shrink a VDI image whose block map is damaged (see qemu-img check)"
fi
