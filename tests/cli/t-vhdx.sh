#!/bin/bash
# The VHDX driver: qemu-made disks read, shown, checked and converted as
# qemu-img does; qimg creates qemu's very layout and writes what qemu-img
# reads back; block status beyond qemu-img (holes and zeros in map); the
# log: a pending log laid over reads (read-only) or replayed (read-write,
# check -r), hostile logs refused; hostile headers, regions and tables;
# the real Hyper-V image; an independent reader (pyvhdi).
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1
CRAFT="python3 $TOP/tests/cli/vhdx-craft.py"

# every random field of a VHDX file zeroed: header CRCs, sequence numbers
# and GUIDs, the virtual disk id
masked() {
    python3 - "$1" <<'EOF'
import os, struct, sys
# the structures sit in the first 16 MiB; the rest is compared by cmp
f = bytearray(open(sys.argv[1], 'rb').read(16 << 20))
print(os.path.getsize(sys.argv[1]))
for h in (65536, 131072):
    f[h + 4:h + 48] = bytes(44)
r = 196608
for i in range(struct.unpack_from('<I', f, r + 8)[0]):
    e = r + 16 + 32 * i
    if f[e:e + 4] == bytes.fromhex('06a27c8b'):
        m = struct.unpack_from('<Q', f, e + 16)[0]
for i in range(struct.unpack_from('<H', f, m + 10)[0]):
    e = m + 32 + 32 * i
    if f[e:e + 4] == bytes.fromhex('ab12cabe'):
        o, l = struct.unpack_from('<II', f, e + 16)
        f[m + o:m + o + l] = bytes(l)
sys.stdout.buffer.write(f)
EOF
}

same_layout() {   # same_layout NAME QIMG-FILE QEMU-FILE
    if cmp -s <(masked "$2") <(masked "$3") && cmp -s -i 16M "$2" "$3"; then pass "$1"; else
        fail "$1" "$(cmp <(masked "$2") <(masked "$3") 2>&1)"; fi
}

# ------------------------------------------------ qemu-made images, read
"$QEMU_IMG" create -q -f vhdx d.vhdx 100M || fail "create d.vhdx"
"$QEMU_IO" -f vhdx -c "write -P 0x11 1M 64k" -c "write -P 0 20M 8M" -c "write -P 0x22 99M 512" \
    d.vhdx >/dev/null || fail "write d.vhdx"
"$QEMU_IMG" create -q -f vhdx -o subformat=fixed f.vhdx 20M || fail "create f.vhdx"
"$QEMU_IO" -f vhdx -c "write -P 0x33 1M 4k" f.vhdx >/dev/null || fail "write f.vhdx"
"$QEMU_IMG" create -q -f vhdx -o subformat=fixed,block_state_zero=off fz.vhdx 21M ||
    fail "create fz.vhdx"
"$QEMU_IO" -f vhdx -c "write -P 0x44 20M 1M" fz.vhdx >/dev/null || fail "write fz.vhdx"
"$QEMU_IMG" create -q -f vhdx -o block_size=1M,log_size=4M b1.vhdx 1G || fail "create b1"
"$QEMU_IO" -f vhdx -c "write -P 0x55 1021M 2M" b1.vhdx >/dev/null || fail "write b1"
# 256 MiB blocks: 16 a chunk, so the BAT interleaves a sector-bitmap entry
"$QEMU_IMG" create -q -f vhdx -o block_size=256M b256.vhdx 5G || fail "create b256"
"$QEMU_IO" -f vhdx -c "write -P 0x66 300M 1k" -c "write -P 0x67 4500M 1k" b256.vhdx \
    >/dev/null || fail "write b256"
"$QEMU_IMG" create -q -f vhdx -o block_state_zero=off z0.vhdx 64M || fail "create z0"

for f in d.vhdx f.vhdx fz.vhdx b1.vhdx b256.vhdx z0.vhdx; do
    same_ro "info $f" info "$f"
    same_ro "info json $f" info --output=json "$f"
    same_ro "check $f" check "$f"
    same_ro "check json $f" check --output=json "$f"
    "$QEMU_IMG" convert -O raw "$f" "$SCRATCH/ref.raw" || fail "qemu convert $f"
    "$QIMG" convert -O raw "$f" "$SCRATCH/new.raw" || fail "qimg convert $f"
    check "convert $f to raw" cmp "$SCRATCH/ref.raw" "$SCRATCH/new.raw"
    "$QIMG" convert -O qcow2 "$f" "$SCRATCH/new.qcow2" || fail "qimg convert $f to qcow2"
    check "convert $f to qcow2: compare" "$QEMU_IMG" compare -q "$f" "$SCRATCH/new.qcow2"
done
same_ro "compare vhdx with raw" compare -f vhdx -F raw d.vhdx "$SCRATCH/new.raw"
same_ro "-f vhdx on a raw file" info -f vhdx "$SCRATCH/new.raw"

# map: qemu-img calls every byte of a VHDX data (no block status); qimg
# tells data (with its file offset) from ZERO blocks and blocks never
# written, and holes of the file inside a block read as zeros
expect_eq "map json: data, zero and unallocated blocks" \
    "$("$QIMG" map --output=json d.vhdx)" \
'[{ "start": 0, "length": 1048576, "depth": 0, "present": true, "zero": true, "data": true, "offset": 8388608},
{ "start": 1048576, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 9437184},
{ "start": 1114112, "length": 7274496, "depth": 0, "present": true, "zero": true, "data": true, "offset": 9502720},
{ "start": 8388608, "length": 8388608, "depth": 0, "present": true, "zero": true, "data": false},
{ "start": 16777216, "length": 4194304, "depth": 0, "present": true, "zero": true, "data": true, "offset": 16777216},
{ "start": 20971520, "length": 8388608, "depth": 0, "present": true, "zero": false, "data": true, "offset": 20971520},
{ "start": 29360128, "length": 4194304, "depth": 0, "present": true, "zero": true, "data": true, "offset": 29360128},
{ "start": 33554432, "length": 67108864, "depth": 0, "present": true, "zero": true, "data": false},
{ "start": 100663296, "length": 3145728, "depth": 0, "present": true, "zero": true, "data": true, "offset": 33554432},
{ "start": 103809024, "length": 4096, "depth": 0, "present": true, "zero": false, "data": true, "offset": 36700160},
{ "start": 103813120, "length": 1044480, "depth": 0, "present": true, "zero": true, "data": true, "offset": 36704256}]'
expect_eq "map json: block_state_zero=off is unallocated" \
    "$("$QIMG" map --output=json z0.vhdx)" \
    '[{ "start": 0, "length": 67108864, "depth": 0, "present": false, "zero": true, "data": false}]'
expect_eq "map: the data of a fixed disk with offsets" \
    "$("$QIMG" map fz.vhdx)" \
    "Offset          Length          Mapped to       File
0x1400000       0x100000        0x1c00000       fz.vhdx"

# ------------------------------------------------ create: qemu's layout
for o in "" "log_size=4M" "block_size=1M" "block_size=256M" "subformat=fixed" \
         "subformat=fixed,block_state_zero=off" "block_state_zero=off" \
         "log_size=1500K,block_size=1500K" "block_size=512M"; do
    for size in 1 100M 1025M 200G; do
        case $o,$size in *fixed*,1025M | *fixed*,200G) continue ;; esac
        rm -f "$SCRATCH/q.vhdx" "$SCRATCH/r.vhdx"
        "$QEMU_IMG" create -q -f vhdx ${o:+-o $o} "$SCRATCH/r.vhdx" $size || fail "qemu create"
        "$QIMG" create -q -f vhdx ${o:+-o $o} "$SCRATCH/q.vhdx" $size || fail "qimg create"
        same_layout "create '$o' $size: qemu's layout" "$SCRATCH/q.vhdx" "$SCRATCH/r.vhdx"
    done
done
same "create message" create -f vhdx -o log_size=2M,subformat=dynamic c.vhdx 64M
for o in log_size=0 log_size=4G block_size=3M subformat=foo block_state_zero=x; do
    same "create -o $o refused" create -f vhdx -o $o c.vhdx 64M
done
same "create too large" create -f vhdx c.vhdx 65T
# -o help: qemu-img's options, and backing_file/backing_fmt beyond it
expect_eq "create -o help: qemu-img's options" \
    "$("$QIMG_AS_QEMU" create -f vhdx -o help | grep -v '^  backing_')" \
    "$("$QEMU_IMG" create -f vhdx -o help)"

# ------------------------------------------------ writing: convert to vhdx
"$QEMU_IMG" create -q -f raw "$SCRATCH/src.raw" 160M
for at in 0 7M 30M 31M 100M 150M 159M; do
    "$QEMU_IO" -f raw -c "write -P 0x$(( ${#at} + 40 )) $at 1M" "$SCRATCH/src.raw" >/dev/null
done
"$QEMU_IO" -f raw -c "write -P 0x77 63207936 1536" "$SCRATCH/src.raw" >/dev/null
for o in "" "subformat=fixed" "block_size=1M" "block_size=256M" \
         "subformat=fixed,block_state_zero=off" "block_state_zero=off" "log_size=2M"; do
    rm -f "$SCRATCH/q.vhdx" "$SCRATCH/r.vhdx"
    "$QIMG" convert -O vhdx ${o:+-o $o} "$SCRATCH/src.raw" "$SCRATCH/q.vhdx" ||
        fail "qimg convert to vhdx '$o'"
    check "convert to vhdx '$o': qemu-img check" "$QEMU_IMG" check -q "$SCRATCH/q.vhdx"
    check "convert to vhdx '$o': qemu-img compare" \
        "$QEMU_IMG" compare -q "$SCRATCH/src.raw" "$SCRATCH/q.vhdx"
    "$QEMU_IMG" convert -O vhdx ${o:+-o $o} "$SCRATCH/src.raw" "$SCRATCH/r.vhdx"
    expect_eq "convert to vhdx '$o': the file size qemu-img gives" \
        "$(stat -c %s "$SCRATCH/q.vhdx")" "$(stat -c %s "$SCRATCH/r.vhdx")"
    "$QIMG" convert -O raw "$SCRATCH/q.vhdx" "$SCRATCH/back.raw"
    check "convert '$o' back to raw" cmp "$SCRATCH/src.raw" "$SCRATCH/back.raw"
    if has_pymod "pyvhdi reads '$o'" pyvhdi; then
        check "pyvhdi reads '$o'" "$DEB_PYTHON" -c '
import pyvhdi, sys
f = pyvhdi.file(); f.open(sys.argv[1])
raw = open(sys.argv[2], "rb")
n = f.get_media_size()
assert n == 160 << 20, n
while n:
    k = min(n, 8 << 20)
    assert f.read_buffer(k) == raw.read(k)
    n -= k
' "$SCRATCH/q.vhdx" "$SCRATCH/src.raw"
    fi
done
# writes into what qemu made, and what qimg made read by qemu-io
cp d.vhdx w.vhdx
"$QIMG" convert -n -O vhdx --image-opts "driver=raw,size=$((100 << 20)),file.filename=$SCRATCH/src.raw" \
    w.vhdx || fail "convert -n into w.vhdx"
"$QEMU_IMG" create -q -f raw "$SCRATCH/w.raw" 100M
dd if="$SCRATCH/src.raw" of="$SCRATCH/w.raw" bs=1M count=100 conv=notrunc status=none
check "convert -n into a qemu-made vhdx: check" "$QEMU_IMG" check -q w.vhdx
check "convert -n into a qemu-made vhdx: compare" "$QEMU_IMG" compare -q w.vhdx "$SCRATCH/w.raw"

# ------------------------------------------------ the real Hyper-V image
if ! has_cmd "hyper-v image" bzcat; then
    :   # counted as a SKIP by has_cmd
elif [ -f "$TOP/../shared/testdata/iotest-dynamic-1G.vhdx.bz2" ]; then
    bzcat "$TOP/../shared/testdata/iotest-dynamic-1G.vhdx.bz2" >hv.vhdx
    same_ro "info hyper-v" info hv.vhdx
    same_ro "check hyper-v" check hv.vhdx
    expect_eq "hyper-v content" "$("$QIMG" convert -O raw hv.vhdx "$SCRATCH/hv.raw" &&
        sha256sum "$SCRATCH/hv.raw" | cut -c1-16)" d3d112d8dab7fd36
    rm -f hv.vhdx "$SCRATCH/hv.raw"
else
    SKIP_WHAT="hyper-v image" skip "../shared/testdata is missing"
fi

# ------------------------------------------------ hostile images
"$QEMU_IMG" create -q -f vhdx base.vhdx 100M
qemu_refuses() {   # qemu_refuses NAME CASE [ARG]: both refuse alike
    $CRAFT base.vhdx x.vhdx "$2" ${3:+"$3"} || fail "craft $2"
    same_ro "$1" info x.vhdx
    expect_eq "$1 refused" "$(cat "$SCRATCH/ro.ref/rc")" 1
}
qemu_refuses "both headers damaged" headers-crc
qemu_refuses "region table count" region-count
qemu_refuses "unknown required region" region-unknown-required
qemu_refuses "regions overlap" region-overlap
qemu_refuses "block size 0" block-size 0
qemu_refuses "block size 3M" block-size 0x300000
qemu_refuses "block size 1G" block-size 0x40000000
qemu_refuses "block size 2^31" block-size 0x80000000
qemu_refuses "disk size 0" disk-size 0
qemu_refuses "disk size past 64T" disk-size $((65 << 40))
qemu_refuses "logical sector 1024" logical-sector 1024
qemu_refuses "metadata signature" meta-signature
qemu_refuses "metadata count" meta-count
qemu_refuses "metadata item outside its region" meta-item-offset
qemu_refuses "BAT entry past the end" bat-entry 0:$(((100 << 20) | 6))
qemu_refuses "BAT entry overlapping metadata" bat-entry 0:$(((3 << 20) | 6))
qemu_refuses "BAT entry over the header section" bat-entry 3:6
qemu_refuses "BAT entry offset overflow" bat-entry 3:0xfffffffffff00006
$CRAFT base.vhdx x.vhdx bat-entry 0:$(((100 << 20) | 6))
same_ro "check: BAT entry past the end" check x.vhdx
$CRAFT base.vhdx x.vhdx bat-entry 0:$(((3 << 20) | 6))
same_ro "check: BAT entry overlapping metadata" check --output=json x.vhdx
$CRAFT base.vhdx x.vhdx header1-crc
same_ro "one header damaged: the other" info x.vhdx
$CRAFT base.vhdx x.vhdx region-past-end
same_ro "BAT region past the end of the file reads as unallocated" info x.vhdx
# beyond qemu-img: the second region table when the first is damaged, and
# 4 KiB logical sectors
$CRAFT base.vhdx x.vhdx region1-crc
check "first region table damaged: the copy" "$QIMG" compare -q x.vhdx base.vhdx
$CRAFT base.vhdx x.vhdx regions-crc
check_fail "both region tables damaged" "$QIMG" info x.vhdx
$CRAFT base.vhdx x.vhdx logical-sector 4096
check "4 KiB logical sectors" "$QIMG" compare -q x.vhdx base.vhdx
# bounded: a clear error within 2 s and 1 GiB
for c in "block-size 0x80000000" "disk-size 0xffffffffffffffff" \
         "bat-entry 1:0xffffffffffffffff"; do
    $CRAFT base.vhdx x.vhdx $c
    out=$( (ulimit -v 1048576; timeout 2 "$QIMG" convert -O raw x.vhdx "$SCRATCH/x.raw") 2>&1)
    rc=$?
    if [ $rc = 1 ] && [ -n "$out" ]; then pass "hostile '$c': clear error"; else
        fail "hostile '$c': clear error" "rc=$rc: $out"; fi
done

# ------------------------------------------------ the log
"$QEMU_IMG" create -q -f vhdx before.vhdx 100M
cp before.vhdx after.vhdx
"$QEMU_IO" -f vhdx -c "write -P 0x33 0 1M" after.vhdx >/dev/null
$CRAFT after.vhdx dirty.vhdx log-pending before.vhdx
"$QEMU_IMG" convert -O raw after.vhdx "$SCRATCH/after.raw"
# qemu-img refuses to read it; qimg reads it with the log laid over
check_fail "qemu-img refuses a pending log read-only" "$QEMU_IMG" info dirty.vhdx
expect_eq "pending log: dirty-flag" \
    "$("$QIMG" info --output=json dirty.vhdx | grep dirty-flag)" '    "dirty-flag": true'
"$QIMG" convert -O raw dirty.vhdx "$SCRATCH/dirty.raw"
check "pending log read-only: reads replayed" cmp "$SCRATCH/after.raw" "$SCRATCH/dirty.raw"
cp dirty.vhdx keep.vhdx
"$QIMG" check dirty.vhdx >/dev/null 2>&1
expect_eq "check of a pending log: corruption" $? 2
check "check read-only left it alone" cmp dirty.vhdx keep.vhdx
same "check -r all replays" check -r all dirty.vhdx
same "check -r all replays (json)" check -r all --output=json dirty.vhdx
same "check -r leaks replays" check -r leaks dirty.vhdx
cp dirty.vhdx r1.vhdx
"$QEMU_IMG" check -q -r all r1.vhdx
cp dirty.vhdx r2.vhdx
"$QIMG" check -q -r all r2.vhdx
same_layout "replay: the file qemu's replay gives" r2.vhdx r1.vhdx
cp dirty.vhdx rw.vhdx
"$QIMG" convert -n -O vhdx "$SCRATCH/after.raw" rw.vhdx
check "read-write open replays: qemu-img check" "$QEMU_IMG" check -q rw.vhdx
check "read-write open replays: content" "$QEMU_IMG" compare -q rw.vhdx "$SCRATCH/after.raw"
# hostile logs: refused (qemu-img silently ignores them and reads stale data)
for c in log-bad-crc log-loop; do
    $CRAFT after.vhdx x.vhdx $c before.vhdx
    out=$( (ulimit -v 1048576; timeout 2 "$QIMG" info x.vhdx) 2>&1)
    rc=$?
    case $out in *"VHDX log of 'x.vhdx' is corrupt"*) ok=1 ;; *) ok=0 ;; esac
    if [ $rc = 1 ] && [ $ok = 1 ]; then pass "$c: refused"; else fail "$c: refused" "rc=$rc: $out"; fi
    cp x.vhdx y.vhdx
    "$QIMG" check -r all y.vhdx >/dev/null 2>&1
    expect_eq "$c: check -r all discards it" $? 0
    check "$c: then qemu-img check is clean" "$QEMU_IMG" check -q y.vhdx
done
# a log GUID that no entry carries: an update stopped between setting it
# and writing its first entry; an empty log, as qemu-img reads it
$CRAFT base.vhdx lg.vhdx log-guid-only
same_ro "a log GUID without entries: an empty log" info lg.vhdx
same_ro "a log GUID without entries: check" check lg.vhdx
cp lg.vhdx lg2.vhdx
"$QIMG" convert -n -O vhdx "$SCRATCH/after.raw" lg2.vhdx
check "a log GUID without entries: written, qemu-img check" "$QEMU_IMG" check -q lg2.vhdx
check "a log GUID without entries: written, the data" \
    "$QEMU_IMG" compare -q lg2.vhdx "$SCRATCH/after.raw"
$CRAFT after.vhdx x.vhdx log-target-header
check_fail "a log writing over the headers is refused" "$QIMG" info x.vhdx

# ------------------------------------------------ resize (beyond qemu-img)
same "shrink without --shrink refused as qemu-img" resize d.vhdx 50M
cp d.vhdx s.vhdx
"$QEMU_IMG" convert -O raw s.vhdx "$SCRATCH/s.raw"
for size in 50M 20000k 100M; do
    out=$("$QIMG_AS_QEMU" resize --shrink s.vhdx $size 2>&1)
    expect_eq "shrink (and grow back) to $size" "$out" "Image resized."
    truncate -s $size "$SCRATCH/s.raw"
    check "shrink to $size: qemu-img check" "$QEMU_IMG" check -q s.vhdx
    check "shrink to $size: the data (zeros past the smallest end)" \
        "$QEMU_IMG" compare -q s.vhdx "$SCRATCH/s.raw"
done
for o in "" "subformat=fixed" "block_size=1M" "block_size=256M" "subformat=fixed,block_state_zero=off"; do
    rm -f g.vhdx
    "$QIMG" create -q -f vhdx ${o:+-o $o} g.vhdx 100M
    "$QEMU_IO" -f vhdx -c "write -P 0x12 0 3M" -c "write -P 0x13 99M 1M" -c "write -P 0x14 100351k 1k" \
        g.vhdx >/dev/null
    "$QEMU_IMG" convert -O raw g.vhdx "$SCRATCH/g.raw"
    for size in +1M 1G 300G; do
        out=$("$QIMG_AS_QEMU" resize g.vhdx $size 2>&1)
        expect_eq "grow '$o' to $size" "$out" "Image resized."
        truncate -s $size "$SCRATCH/g.raw"
        check "grow '$o' to $size: qemu-img check" "$QEMU_IMG" check -q g.vhdx
        # qemu-img reads every byte of a VHDX: 300 GiB are compared by qimg
        cmp_tool=$QEMU_IMG
        [ $size = 300G ] && cmp_tool=$QIMG
        check "grow '$o' to $size: the data, zeros after" "$cmp_tool" compare -q g.vhdx "$SCRATCH/g.raw"
    done
    "$QEMU_IO" -f vhdx -c "write -P 0x15 200G 1M" g.vhdx >/dev/null
    check "grow '$o': qemu-io writes past the old end, check" "$QEMU_IMG" check -q g.vhdx
done

# ------------------------------------------------ differencing (beyond qemu-img)
rm -f base.vhdx top.vhdx
"$QEMU_IMG" create -q -f vhdx base.vhdx 100M
"$QEMU_IO" -f vhdx -c "write -P 0x11 0 10M" -c "write -P 0x12 50M 1M" base.vhdx >/dev/null
"$QEMU_IMG" convert -O raw base.vhdx "$SCRATCH/exp.raw"
out=$("$QIMG_AS_QEMU" create -f vhdx -b base.vhdx -F vhdx top.vhdx 2>&1)
expect_eq "create -b" "$out" "Formatting 'top.vhdx', fmt=vhdx size=104857600 log_size=1048576 block_size=0 backing_file=base.vhdx backing_fmt=vhdx"
check_fail "qemu-img refuses differencing VHDX" "$QEMU_IMG" info top.vhdx
expect_eq "info: the parent" "$("$QIMG" info top.vhdx | grep '^backing')" \
    "backing file: base.vhdx
backing file format: vhdx"
check "reads through the parent" "$QIMG" compare -q top.vhdx "$SCRATCH/exp.raw"
"$QIMG" bench -q -w -f vhdx -c 4 -d 1 -s 64k -S 16M -o 1M --pattern=0x77 top.vhdx >/dev/null
python3 -c '
import sys
f = open(sys.argv[1], "r+b")
for i in range(4):
    f.seek((1 << 20) + i * (16 << 20)); f.write(b"\x77" * 65536)
' "$SCRATCH/exp.raw"
check "written: the child's blocks over the parent's" "$QIMG" compare -q top.vhdx "$SCRATCH/exp.raw"
"$QIMG" check top.vhdx >/dev/null
expect_eq "check differencing" $? 0
"$QIMG" convert -O raw top.vhdx "$SCRATCH/top.raw"
check "convert flattens" cmp "$SCRATCH/top.raw" "$SCRATCH/exp.raw"
expect_eq "map: the sectors written at depth 0, the parent's data around them at depth 1" \
    "$("$QIMG" map --output=json top.vhdx | sed -n 1,3p | cut -d, -f1-3)" \
    '[{ "start": 0, "length": 1048576, "depth": 1
{ "start": 1048576, "length": 65536, "depth": 0
{ "start": 1114112, "length": 9371648, "depth": 1'
if has_pymod "pyvhdi reads differencing" pyvhdi; then
    check "pyvhdi reads the differencing disk over its parent" "$DEB_PYTHON" -c '
import pyvhdi, sys
p = pyvhdi.file(); p.open(sys.argv[1])
c = pyvhdi.file(); c.open(sys.argv[2])
assert c.get_disk_type() == 4
c.set_parent(p)
assert c.read_buffer(c.get_media_size()) == open(sys.argv[3], "rb").read()
' base.vhdx top.vhdx "$SCRATCH/exp.raw"
fi
# a parent changed since: its data write GUID is no longer the linkage
"$QEMU_IO" -f vhdx -c "write -P 0x13 90M 4k" base.vhdx >/dev/null
out=$("$QIMG" compare top.vhdx "$SCRATCH/exp.raw" 2>&1)
case $out in *"is not the disk this differencing disk was made from"*) pass "a changed parent is refused" ;;
    *) fail "a changed parent is refused" "$out" ;; esac

# ------------------------------------------------ rebase and commit (beyond qemu-img)
rm -f b1.vhdx b2.vhdx c.vhdx
"$QEMU_IMG" create -q -f vhdx b1.vhdx 64M
"$QEMU_IO" -f vhdx -c "write -P 0x21 0 16M" b1.vhdx >/dev/null
"$QEMU_IMG" create -q -f vhdx b2.vhdx 64M
"$QEMU_IO" -f vhdx -c "write -P 0x22 8M 16M" b2.vhdx >/dev/null
"$QIMG" create -q -f vhdx -b b1.vhdx -F vhdx c.vhdx
"$QIMG" bench -w -q -c 2 -d 1 -s 64k -S 32M -o 4M --pattern=0x77 c.vhdx >/dev/null
"$QIMG" convert -O raw c.vhdx "$SCRATCH/c.raw"
check "rebase onto another parent" "$QIMG" rebase -b b2.vhdx -F vhdx c.vhdx
expect_eq "rebase: the new parent" "$("$QIMG" info c.vhdx | grep '^backing file:')" \
    "backing file: b2.vhdx"
check "rebase: the same guest data" "$QIMG" compare -q c.vhdx "$SCRATCH/c.raw"
cp c.vhdx flat.vhdx
check "rebase -b '': no parent" "$QIMG" rebase -b "" flat.vhdx
check "rebase -b '': qemu-img opens it, check" "$QEMU_IMG" check -q flat.vhdx
check "rebase -b '': qemu-img reads the same data" "$QEMU_IMG" compare -q flat.vhdx "$SCRATCH/c.raw"
cp flat.vhdx d1.vhdx
check "rebase -u: a dynamic disk gets a parent" "$QIMG" rebase -u -b b1.vhdx -F vhdx d1.vhdx
check "rebase -u: its data unchanged (unwritten blocks stay zero)" \
    "$QIMG" compare -q d1.vhdx "$SCRATCH/c.raw"
check "commit into the parent" "$QIMG" commit -q c.vhdx
check "commit: the parent holds the data" "$QEMU_IMG" compare -q b2.vhdx "$SCRATCH/c.raw"
check "commit: qemu-img check of the parent" "$QEMU_IMG" check -q b2.vhdx
check "commit: the emptied child, linked to the changed parent" \
    "$QIMG" compare -q c.vhdx "$SCRATCH/c.raw"
expect_eq "commit: the child holds nothing" \
    "$("$QIMG" map --output=json c.vhdx | grep -c '"depth": 0')" 0
if has_pymod "pyvhdi reads a rebased, committed child" pyvhdi; then
    check "pyvhdi reads the child over the committed parent" "$DEB_PYTHON" -c '
import pyvhdi, sys
p = pyvhdi.file(); p.open(sys.argv[1])
c = pyvhdi.file(); c.open(sys.argv[2])
c.set_parent(p)
assert c.read_buffer(c.get_media_size()) == open(sys.argv[3], "rb").read()
' b2.vhdx c.vhdx "$SCRATCH/c.raw"
fi
