#!/bin/bash
# VHDX differencing disks beyond qemu-img (which opens none): a write into
# a block the child does not hold writes only the sectors it touches
# (PAYLOAD_BLOCK_PARTIALLY_PRESENT with the chunk's sector bitmap, MS-VHDX
# 2.5.1), every other sector still reads from the parent; a block whose
# every sector is written becomes fully present.  Read back by qimg, by
# pyvhdi (an independent reader), and after commit / rebase -b '' by
# qemu-img.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# the state of block B's BAT entry (payload entries interleaved with one
# sector bitmap entry every chunk_ratio: 2^23 * 512 / block size)
bat_state() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb"); b = int(sys.argv[2])
f.seek(192 << 10); t = f.read(64 << 10)
bat = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")
for i in range(struct.unpack_from("<I", t, 8)[0]):
    e = t[16 + 32 * i: 48 + 32 * i]
    if e[:16] == bat:
        off = struct.unpack_from("<Q", e, 16)[0]
f.seek(off + 8 * (b + b // ((1 << 23) * 512 // (8 << 20)))); print(struct.unpack("<Q", f.read(8))[0] & 7)
PY
}

"$QEMU_IMG" create -q -f vhdx -o block_size=8M base.vhdx 64M
"$QEMU_IO" -f vhdx -c "write -P 0x31 0 40M" base.vhdx >/dev/null
"$QEMU_IMG" convert -O raw base.vhdx "$SCRATCH/exp.raw"
"$QIMG" create -q -f vhdx -o block_size=8M -b base.vhdx -F vhdx top.vhdx
before=$(du -k top.vhdx | cut -f1)
# a sub-sector write over the parent's data, a few sectors, a partial
# zero write, a sector at the disk's end
ops=(w:0x100007:100:0x41 w:0x300000:4096:0x42 z:0x500200:1024 w:0x3fffe00:512:0x43)
qimg_io top.vhdx "${ops[@]}" || fail "qimg_io: partial writes"
qemu_io_ops raw "$SCRATCH/exp.raw" "${ops[@]}"
check "partial writes: the sectors written over the parent's" \
    "$QIMG" compare -q top.vhdx "$SCRATCH/exp.raw"
expect_eq "partial writes: block 0 partially present" "$(bat_state top.vhdx 0)" 7
expect_eq "partial writes: the last block partially present" "$(bat_state top.vhdx 7)" 7
expect_eq "partial writes: block 1 still not present" "$(bat_state top.vhdx 1)" 0
grown=$(( $(du -k top.vhdx | cut -f1) - before ))
if [ "$grown" -le 512 ]; then pass "partial writes cost what they touch (${grown} KiB)"
else fail "partial writes cost what they touch" "the file grew by ${grown} KiB"; fi
expect_eq "map: the sectors written at depth 0, the rest of the block at depth 1" \
    "$("$QIMG" map --output=json top.vhdx | sed -n 1,3p | cut -d, -f1-3)" \
    '[{ "start": 0, "length": 1048576, "depth": 1
{ "start": 1048576, "length": 512, "depth": 0
{ "start": 1049088, "length": 2096640, "depth": 1'
check "check: no errors" "$QIMG" check -q top.vhdx

# a block written in two halves becomes fully present; a whole block at once
ops=(w:0x1000000:0x400000:0x44 w:0x1400000:0x400000:0x45 w:0x1800000:0x800000:0x46
     w:0x900000:0x10000:0x47)
qimg_io top.vhdx "${ops[@]}" || fail "qimg_io: whole blocks"
qemu_io_ops raw "$SCRATCH/exp.raw" "${ops[@]}"
check "whole blocks: the data" "$QIMG" compare -q top.vhdx "$SCRATCH/exp.raw"
expect_eq "a block written in halves: fully present" "$(bat_state top.vhdx 2)" 6
expect_eq "a block written at once: fully present" "$(bat_state top.vhdx 3)" 6
expect_eq "a block written in part: partially present" "$(bat_state top.vhdx 1)" 7
"$QIMG" convert -O raw top.vhdx "$SCRATCH/top.raw"
check "convert flattens" cmp "$SCRATCH/top.raw" "$SCRATCH/exp.raw"
if has_pymod "pyvhdi reads partially present blocks" pyvhdi; then
    check "pyvhdi reads the partially present blocks over the parent" "$DEB_PYTHON" -c '
import pyvhdi, sys
p = pyvhdi.file(); p.open(sys.argv[1])
c = pyvhdi.file(); c.open(sys.argv[2])
c.set_parent(p)
assert c.read_buffer(c.get_media_size()) == open(sys.argv[3], "rb").read()
' base.vhdx top.vhdx "$SCRATCH/exp.raw"
fi

# convert into a new differencing disk: only what differs is written
"$QIMG" create -q -f vhdx -o block_size=8M -b base.vhdx -F vhdx conv.vhdx
check "convert -n -B into a differencing disk" \
    "$QIMG" convert -n -O vhdx -B base.vhdx top.vhdx conv.vhdx
check "convert -B: the data" "$QIMG" compare -q conv.vhdx "$SCRATCH/exp.raw"

# rebase -b '' makes the partial blocks whole; commit writes them down
cp top.vhdx flat.vhdx
check "rebase -b '': partial blocks made whole" "$QIMG" rebase -b "" flat.vhdx
check "rebase -b '': qemu-img check" "$QEMU_IMG" check -q flat.vhdx
check "rebase -b '': qemu-img reads the data" "$QEMU_IMG" compare -q flat.vhdx "$SCRATCH/exp.raw"
check "commit of partial blocks" "$QIMG" commit -q top.vhdx
check "commit: qemu-img check of the parent" "$QEMU_IMG" check -q base.vhdx
check "commit: the parent holds the data" "$QEMU_IMG" compare -q base.vhdx "$SCRATCH/exp.raw"
check "commit: the emptied child reads the parent" \
    "$QIMG" compare -q top.vhdx "$SCRATCH/exp.raw"
expect_eq "commit: the child holds nothing" \
    "$("$QIMG" map --output=json top.vhdx | grep -c '"depth": 0')" 0

# ------------------------------------------------ shrink gives the space back
pyvhdi_reads() {   # IMAGE RAW [PARENT]
    "$DEB_PYTHON" -c '
import pyvhdi, sys
c = pyvhdi.file(); c.open(sys.argv[1])
if len(sys.argv) > 3:
    p = pyvhdi.file(); p.open(sys.argv[3]); c.set_parent(p)
assert c.read_buffer(c.get_media_size()) == open(sys.argv[2], "rb").read()
' "$@"
}
kib() { du -k "$1" | cut -f1; }
for order in tail-last tail-first fixed; do
    rm -f s.vhdx
    o=block_size=1M
    [ $order = fixed ] && o=block_size=1M,subformat=fixed
    "$QEMU_IMG" create -q -f vhdx -o $o s.vhdx 64M
    if [ $order = tail-first ]; then w=(-c "write -P 0x52 60M 4M" -c "write -P 0x51 0 4M")
    else w=(-c "write -P 0x51 0 4M" -c "write -P 0x52 60M 4M"); fi
    "$QEMU_IO" -f vhdx "${w[@]}" s.vhdx >/dev/null
    "$QEMU_IMG" convert -O raw s.vhdx "$SCRATCH/s.raw"
    size0=$(stat -c %s s.vhdx) du0=$(kib s.vhdx)
    check "shrink ($order)" "$QIMG" resize -q --shrink s.vhdx 32M
    truncate -s 32M "$SCRATCH/s.raw"
    check "shrink ($order): qemu-img check" "$QEMU_IMG" check -q s.vhdx
    check "shrink ($order): qemu-img reads the data" "$QEMU_IMG" compare -q s.vhdx "$SCRATCH/s.raw"
    du1=$(kib s.vhdx) size1=$(stat -c %s s.vhdx)
    if [ $((du0 - du1)) -ge 4096 ]; then pass "shrink ($order): the dropped blocks' space given back"
    else fail "shrink ($order): the dropped blocks' space given back" "$du0 KiB -> $du1 KiB"; fi
    if [ $order != tail-first ]; then
        if [ $((size0 - size1)) -ge $((4 << 20)) ]; then pass "shrink ($order): the file cut"
        else fail "shrink ($order): the file cut" "$size0 -> $size1"; fi
    fi
    if has_pymod "pyvhdi reads a shrunk disk" pyvhdi; then
        check "shrink ($order): pyvhdi reads the data" pyvhdi_reads s.vhdx "$SCRATCH/s.raw"
    fi
    # grown again, written past the old end
    check "shrink ($order), grow again" "$QIMG" resize -q s.vhdx 64M
    "$QEMU_IO" -f vhdx -c "write -P 0x53 62M 2M" s.vhdx >/dev/null
    truncate -s 64M "$SCRATCH/s.raw"
    qio "$SCRATCH/s.raw" "write -P 0x53 62M 2M"
    check "shrink ($order), grow, write: qemu-img check" "$QEMU_IMG" check -q s.vhdx
    check "shrink ($order), grow, write: the data" "$QEMU_IMG" compare -q s.vhdx "$SCRATCH/s.raw"
done
# a differencing disk shrunk: its partial blocks and bitmaps past the end go
"$QIMG" create -q -f vhdx -o block_size=1M -b base.vhdx -F vhdx sd.vhdx
ops=(w:0x200200:512:0x61 w:0x3000000:0x1000:0x62 w:0x3f00000:0x80000:0x63)
qimg_io sd.vhdx "${ops[@]}" || fail "qimg_io: differencing writes"
"$QIMG" convert -O raw sd.vhdx "$SCRATCH/sd.raw"
check "shrink a differencing disk" "$QIMG" resize -q --shrink sd.vhdx 40M
truncate -s 40M "$SCRATCH/sd.raw"
check "shrink a differencing disk: the data" "$QIMG" compare -q sd.vhdx "$SCRATCH/sd.raw"
check "shrink a differencing disk: check" "$QIMG" check -q sd.vhdx
if has_pymod "pyvhdi reads a shrunk differencing disk" pyvhdi; then
    check "shrink a differencing disk: pyvhdi reads it over its parent" \
        pyvhdi_reads sd.vhdx "$SCRATCH/sd.raw" base.vhdx
fi

# ------------------------------------------------ a crash between the log and the bitmap
# blkdebug fails the in-place write of the first sector bitmap's first 4 KiB:
# the process stops after the log entry holding it is stable; qimg reads the
# partial writes through the log, and check -r replays it
"$QEMU_IMG" create -q -f vhdx -o block_size=1M cb.vhdx 64M
"$QEMU_IO" -f vhdx -c "write -P 0x11 0 64M" cb.vhdx >/dev/null
"$QIMG" create -q -f vhdx -o block_size=1M -b cb.vhdx -F vhdx ct.vhdx
# the bitmap entry follows the chunk's 4096 payload entries (2^23 sectors / 2048 a block)
sb_off=$(python3 - ct.vhdx <<'PY'
import struct, sys
f = open(sys.argv[1], "rb")
f.seek(192 << 10); t = f.read(64 << 10)
for i in range(struct.unpack_from("<I", t, 8)[0]):
    e = t[16 + 32 * i: 48 + 32 * i]
    if e[:16] == bytes.fromhex("6677c22d23f600429d64115e9bfd4a08"):
        bat = struct.unpack_from("<Q", e, 16)[0]
f.seek(bat + 8 * 4096); print(struct.unpack("<Q", f.read(8))[0] & ~((1 << 20) - 1))
PY
)
printf '[inject-error]\nevent = "none"\niotype = "write"\nsector = "%d"\n' $((sb_off / 512)) >sb.cfg
"$QEMU_IMG" convert -O raw cb.vhdx "$SCRATCH/c.raw"
ops=(w:0x100200:0x200:0x91 w:0x500000:0x3000:0x92)
out=$(qimg_io "blkdebug:sb.cfg:ct.vhdx" "${ops[@]}" 2>&1)
case $out in *"close:"*) pass "the bitmap's in-place write failed at the commit" ;;
    *) fail "the bitmap's in-place write failed at the commit" "$out" ;; esac
qemu_io_ops raw "$SCRATCH/c.raw" "${ops[@]}"
expect_eq "the log is pending" "$("$QIMG" info --output=json ct.vhdx | grep dirty-flag)" \
    '    "dirty-flag": true'
check "qimg reads the bitmap from the log" "$QIMG" compare -q ct.vhdx "$SCRATCH/c.raw"
check "check -r all replays the log" "$QIMG" check -q -r all ct.vhdx
expect_eq "the log replayed" "$("$QIMG" info --output=json ct.vhdx | grep dirty-flag)" \
    '    "dirty-flag": false'
check "replayed: the data" "$QIMG" compare -q ct.vhdx "$SCRATCH/c.raw"
if has_pymod "pyvhdi reads a replayed differencing disk" pyvhdi; then
    check "replayed: pyvhdi reads it over its parent" pyvhdi_reads ct.vhdx "$SCRATCH/c.raw" cb.vhdx
fi

# ------------------------------------------------ more chunks than bitmaps kept in memory
# 20 chunks of 4 GiB, each with a sector written (qimg keeps 16 bitmaps)
"$QEMU_IMG" create -q -f vhdx mb.vhdx 80G
"$QIMG" create -q -f vhdx -b mb.vhdx -F vhdx mt.vhdx
truncate -s 80G "$SCRATCH/m.raw"
ops=()
for c in $(seq 0 19); do ops+=(w:$((c * (4 << 30) + 4096 + c * 512)):512:$((c + 1))); done
qimg_io mt.vhdx "${ops[@]}" || fail "qimg_io: a sector in each of 20 chunks"
qemu_io_ops raw "$SCRATCH/m.raw" "${ops[@]}"
check "20 chunks: the data" "$QIMG" compare -q mt.vhdx "$SCRATCH/m.raw"
check "20 chunks: check" "$QIMG" check -q mt.vhdx
if has_pymod "pyvhdi reads 20 chunks" pyvhdi; then
    check "20 chunks: pyvhdi reads each sector" "$DEB_PYTHON" -c '
import pyvhdi, sys
p = pyvhdi.file(); p.open(sys.argv[1])
c = pyvhdi.file(); c.open(sys.argv[2]); c.set_parent(p)
for k in range(20):
    off = k * (4 << 30) + 4096 + k * 512
    assert c.read_buffer_at_offset(1536, off - 512) == bytes(512) + bytes([k + 1]) * 512 + bytes(512), k
' mb.vhdx mt.vhdx
fi
