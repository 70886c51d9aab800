#!/bin/bash
# Fixtures the test matrix cannot make with qemu-img create + qemu-io (its
# rows are one file each, written in place), made by convert instead and
# checked as the matrix checks a row: vmdk's multi-file subformats
# (monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, over 2 GiB so
# that a disk spans extents) and streamOptimized, each written by qimg and
# by qemu-img from one deterministic source (data, a written zero run,
# holes, data across the 2 GiB extent boundary): qimg's files pass
# qemu-img check and compare, qemu-img's read the same through qimg with
# the same info and map, the descriptors and file lists alike; a 3-deep
# vmdk delta chain; vpc and vhdx differencing disks made by convert -B
# (qemu-img creates neither), read by pyvhdi over their parents.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1
# a descriptor with its random CIDs masked
unrandom() { sed -e 's/^CID=[0-9a-f]*$/CID=x/' -e 's/^parentCID=[0-9a-f]*$/parentCID=x/' "$1" | tr -d '\000'; }

# src.raw: 2148 MiB, sparse
python3 - "$SCRATCH/src.raw" <<'PY'
import sys
f = open(sys.argv[1], "wb")
def put(off, n, seed):
    f.seek(off); f.write(bytes((i * 7 + seed) & 0xff for i in range(256)) * (n // 256))
put(0, 1 << 20, 1)
f.seek(1 << 20); f.write(bytes(1 << 20))              # zeros, written
put(5 << 20, 64 << 10, 2)
put((2047 << 20) + 4096, 2 << 20, 3)                   # across 2 GiB
put((2148 << 20) - 1024, 1024, 4)
f.truncate(2148 << 20)
PY
SRC=$SCRATCH/src.raw
# what libvmdk reads at the data's offsets
spots() {   # IMAGE
    "$DEB_PYTHON" -c 'import sys, hashlib, pyvmdk
h = pyvmdk.handle(); h.open(sys.argv[1]); h.open_extent_data_files()
d = hashlib.sha256()
for off, n in ((0, 3 << 20), (5 << 20, 64 << 10), ((2047 << 20), 3 << 20), ((2148 << 20) - 4096, 4096)):
    d.update(h.read_buffer_at_offset(n, off))
print(h.get_media_size(), d.hexdigest())' "$1"
}
raw_spots() {
    python3 -c 'import sys, hashlib
f = open(sys.argv[1], "rb"); d = hashlib.sha256()
for off, n in ((0, 3 << 20), (5 << 20, 64 << 10), ((2047 << 20), 3 << 20), ((2148 << 20) - 4096, 4096)):
    f.seek(off); d.update(f.read(n))
print(2148 << 20, d.hexdigest())' "$1"
}

for sub in monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized; do
    rm -rf q r && mkdir q r
    check "$sub: qimg convert" "$QIMG" convert -O vmdk -o subformat=$sub "$SRC" q/x.vmdk
    check "$sub: qemu-img convert" "$QEMU_IMG" convert -O vmdk -o subformat=$sub "$SRC" r/x.vmdk
    expect_eq "$sub: the files qemu-img writes" "$(cd q && ls)" "$(cd r && ls)"
    if [ $sub != streamOptimized ]; then
        expect_eq "$sub: the descriptor qemu-img writes" "$(unrandom q/x.vmdk)" "$(unrandom r/x.vmdk)"
    fi
    check "$sub: qemu-img check of qimg's" "$QEMU_IMG" check -q q/x.vmdk
    check "$sub: qemu-img compare of qimg's" "$QEMU_IMG" compare -q q/x.vmdk "$SRC"
    check "$sub: qimg reads qemu-img's" "$QIMG" compare -q r/x.vmdk "$SRC"
    expect_eq "$sub: info of qemu-img's as qemu-img" \
        "$("$QIMG" info r/x.vmdk 2>&1 | grep -v '^disk size')" \
        "$("$QEMU_IMG" info r/x.vmdk 2>&1 | grep -v '^disk size')"
    expect_eq "$sub: map of qemu-img's as qemu-img" \
        "$("$QIMG" map --output=json r/x.vmdk 2>&1)" "$("$QEMU_IMG" map --output=json r/x.vmdk 2>&1)"
    expect_eq "$sub: map of qimg's as qemu-img's" \
        "$("$QEMU_IMG" map --output=json q/x.vmdk 2>&1 | sed 's/"offset": [0-9]*/"offset": N/')" \
        "$("$QEMU_IMG" map --output=json r/x.vmdk 2>&1 | sed 's/"offset": [0-9]*/"offset": N/')"
    if has_pymod "libvmdk reads $sub" pyvmdk; then
        expect_eq "$sub: libvmdk reads qimg's" "$(spots q/x.vmdk)" "$(raw_spots "$SRC")"
    fi
done

# a 3-deep vmdk delta chain written by qimg, and the same by qemu-img/qemu-io
small() { head -c $((8 << 20)) "$SRC" > "$1"; }
for who in qimg qemu; do
    rm -rf c-$who && mkdir c-$who
    small "$SCRATCH/exp-$who.raw"
    tool=$QIMG; [ $who = qemu ] && tool=$QEMU_IMG
    ops1=(w:0x10000:0x10000:0x61 w:0x300000:0x1000:0x62 z:0x0:0x1000)
    ops2=(w:0x18000:0x200:0x71 z:0x300000:0x800 w:0x7ff000:0x1000:0x72)
    # each delta written before its child is made (a write changes the
    # CID its child names: qemu and qimg then refuse to write the child)
    (cd c-$who && "$tool" convert -O vmdk "$SCRATCH/exp-$who.raw" base.vmdk &&
        "$tool" create -q -f vmdk -b base.vmdk -F vmdk mid.vmdk) || fail "$who: the chain"
    if [ $who = qimg ]; then qimg_io c-$who/mid.vmdk "${ops1[@]}" || fail "qimg: writes into mid"
    else qemu_io_ops vmdk c-$who/mid.vmdk "${ops1[@]}"; fi
    (cd c-$who && "$tool" create -q -f vmdk -b mid.vmdk -F vmdk top.vmdk) || fail "$who: the top"
    if [ $who = qimg ]; then qimg_io c-$who/top.vmdk "${ops2[@]}" || fail "qimg: writes into top"
    else qemu_io_ops vmdk c-$who/top.vmdk "${ops2[@]}"; fi
    qemu_io_ops raw "$SCRATCH/exp-$who.raw" "${ops1[@]}" "${ops2[@]}"
done
for f in base mid top; do
    check "3-deep chain: qemu-img check of qimg's $f" "$QEMU_IMG" check -q c-qimg/$f.vmdk
done
check "3-deep chain: qemu-img reads qimg's top" "$QEMU_IMG" compare -q c-qimg/top.vmdk "$SCRATCH/exp-qimg.raw"
check "3-deep chain: qimg reads qemu's top" "$QIMG" compare -q c-qemu/top.vmdk "$SCRATCH/exp-qemu.raw"
expect_eq "3-deep chain: info --backing-chain as qemu-img" \
    "$(cd c-qemu && "$QIMG" info --backing-chain top.vmdk | grep -v '^disk size\|^cid\|^parent cid')" \
    "$(cd c-qemu && "$QEMU_IMG" info --backing-chain top.vmdk | grep -v '^disk size\|^cid\|^parent cid')"
expect_eq "3-deep chain: map as qemu-img" \
    "$(cd c-qemu && "$QIMG" map --output=json top.vmdk)" "$(cd c-qemu && "$QEMU_IMG" map --output=json top.vmdk)"
expect_eq "3-deep chain: qimg's map as qemu-img's" \
    "$(cd c-qimg && "$QEMU_IMG" map --output=json top.vmdk | sed 's/"offset": [0-9]*/"offset": N/')" \
    "$(cd c-qemu && "$QEMU_IMG" map --output=json top.vmdk | sed 's/"offset": [0-9]*/"offset": N/')"
check "3-deep chain: convert flattens" "$QIMG" convert -O raw c-qimg/top.vmdk "$SCRATCH/flat.raw"
check "3-deep chain: the flattened data" cmp "$SCRATCH/flat.raw" "$SCRATCH/exp-qimg.raw"

# vpc and vhdx differencing disks made by convert -B from a qcow2 overlay
# of the same base: what the overlay holds is written, nothing else
small "$SCRATCH/base.raw"
"$QEMU_IMG" create -q -f qcow2 -b "$SCRATCH/base.raw" -F raw "$SCRATCH/mod.qcow2"
"$QEMU_IO" -f qcow2 -c "write -P 0x81 0x20000 0x10000" -c "write -z 0x100000 0x100000" \
    -c "write -P 0x82 0x7ffe00 0x200" "$SCRATCH/mod.qcow2" >/dev/null
"$QEMU_IMG" convert -O raw "$SCRATCH/mod.qcow2" "$SCRATCH/mod.raw"
for fmt in vpc vhdx; do
    rm -rf d && mkdir d
    o=force_size=on     # a VHD of 8 MiB exactly, as its source
    [ $fmt = vhdx ] && o=block_size=1M
    check "$fmt differencing: the parent by convert" \
        "$QIMG" convert -O $fmt -o $o "$SCRATCH/base.raw" d/base.$fmt
    check "$fmt differencing: convert -B" \
        env -C d "$QIMG" convert -O $fmt -o $o -B base.$fmt -F $fmt "$SCRATCH/mod.qcow2" top.$fmt
    expect_eq "$fmt differencing: the parent" "$(cd d && "$QIMG" info top.$fmt | grep '^backing file:')" \
        "backing file: base.$fmt"
    check "$fmt differencing: the data" "$QIMG" compare -q d/top.$fmt "$SCRATCH/mod.raw"
    if [ $fmt = vhdx ]; then    # qemu-img checks no VHD
        check "$fmt differencing: qimg check" "$QIMG" check -q d/top.$fmt
        check "$fmt differencing: qemu-img check of the parent" "$QEMU_IMG" check -q d/base.$fmt
    fi
    held=$("$QIMG" map --output=json d/top.$fmt | grep '"depth": 0' | grep -o '"length": [0-9]*' |
        awk '{ s += $2 } END { print s + 0 }')
    if [ "$held" -le $((4 << 20)) ] && [ "$held" -gt 0 ]; then
        pass "$fmt differencing: holds only what differs ($held bytes)"
    else fail "$fmt differencing: holds only what differs" "$held bytes"; fi
    if has_pymod "pyvhdi reads a $fmt differencing disk" pyvhdi; then
        check "$fmt differencing: pyvhdi reads it over its parent" "$DEB_PYTHON" -c '
import pyvhdi, sys
p = pyvhdi.file(); p.open(sys.argv[1])
c = pyvhdi.file(); c.open(sys.argv[2])
c.set_parent(p)
assert c.read_buffer(c.get_media_size()) == open(sys.argv[3], "rb").read()
' d/base.$fmt d/top.$fmt "$SCRATCH/mod.raw"
    fi
done
