#!/bin/bash
# VMDK streamOptimized against qemu-img 7.2: create byte-identical but for
# the CID; convert (with and without -c, every thread count) writes what
# qemu-img, python3-libvmdk (pyvmdk) read as the source and qemu-img checks
# clean, ending with an end-of-stream marker; files qemu-img and
# python3-vmdkstream write (the latter a real stream: directory at the end,
# footer) read, shown and mapped alike; writes qemu refuses refused alike;
# hostile footers, markers and grains: qemu's errors, in 2 s and 1 GiB.
. "$(dirname "$0")/lib.sh"
need_cmd python3

# the file with the descriptor's CID=... values blanked (the descriptor,
# sectors 1-20, up to its first NUL; random CIDs differ in length too)
no_cid() {
    python3 -c 'import re, sys; b = open(sys.argv[1], "rb").read()
desc = b[512:21 * 512].split(b"\0")[0]
desc = re.sub(rb"(\nCID=|parentCID=)[0-9a-f]+", rb"\1", desc)
sys.stdout.buffer.write(b[:512] + desc + b[21 * 512:])' "$1" | sha256sum
}
# le FILE OFFSET BITS VALUE (a negative offset counts from the end)
le() {
    python3 -c 'import os, struct, sys
f = open(sys.argv[1], "r+b"); off = int(sys.argv[2], 0)
f.seek(off if off >= 0 else os.path.getsize(sys.argv[1]) + off)
f.write(struct.pack("<I" if sys.argv[3] == "32" else "<Q", int(sys.argv[4], 0)))' "$@"
}
# first_grain FILE: byte offset of the first allocated grain (first table)
first_grain() {
    python3 -c 'import struct, sys
d = open(sys.argv[1], "rb").read()
h = d[:512]
if struct.unpack_from("<Q", h, 56)[0] == 2 ** 64 - 1:
    h = d[-1024:-512]
gd = struct.unpack_from("<Q", h, 56)[0]
gt = struct.unpack_from("<I", d, gd * 512)[0]
print(struct.unpack_from("<I", d, gt * 512)[0] * 512)' "$1"
}

# ---- a source: text, random bytes, zero runs, holes, an odd tail
SRC=$SCRATCH/src.raw
python3 - "$SRC" <<'PY'
import random, sys
r = random.Random(9)
b = bytearray(6 << 20)
text = b"".join(b"sector %d of the stream test\n" % i for i in range(40000))
b[0:len(text[:1 << 20])] = text[:1 << 20]
b[(2 << 20):(2 << 20) + 300000] = r.randbytes(300000)          # does not shrink
b[(3 << 20) + 4096:(3 << 20) + 8192] = b"\x01" * 4096
b[(5 << 20) + 100:(5 << 20) + 200] = bytes(range(100))
open(sys.argv[1], "wb").write(b)
PY
truncate -s $(((6 << 20) + 12800)) "$SRC"      # the last grain is partial
cp "$SRC" "$IN/src.raw"

# ---- create: qemu-img's file but for the CID
for opts in "" ",zeroed_grain=on" ",hwversion=14,toolsversion=12345,adapter_type=lsilogic" \
            ",compat6=on" ",adapter_type=buslogic"; do
    same "create streamOptimized$opts" create -f vmdk -o "subformat=streamOptimized$opts" s.vmdk 1G
    expect_eq "create streamOptimized$opts: the same file" \
        "$(no_cid "$SCRATCH/run.new/work/s.vmdk")" "$(no_cid "$SCRATCH/run.ref/work/s.vmdk")"
done
same "create streamOptimized of an odd size" create -f vmdk -o subformat=streamOptimized s.vmdk 1000000
expect_eq "odd size: the same file" \
    "$(no_cid "$SCRATCH/run.new/work/s.vmdk")" "$(no_cid "$SCRATCH/run.ref/work/s.vmdk")"
"$QEMU_IMG" create -q -f vmdk "$IN/base.vmdk" 6M
same "create streamOptimized over a backing file" \
    create -f vmdk -o subformat=streamOptimized -b base.vmdk -F vmdk s.vmdk
# what ESXi checks (see src/formats/vmdk/stream.c): version 3, compressed
# grains with markers, the tools and hardware versions in the descriptor
"$QIMG" create -q -f vmdk -o subformat=streamOptimized "$SCRATCH/h.vmdk" 64M
expect_eq "header version 3, flags 0x30003" \
    "$(python3 -c 'import struct, sys; print("%d %#x %d" % (struct.unpack_from("<II", open(sys.argv[1], "rb").read(), 4) + struct.unpack_from("<H", open(sys.argv[1], "rb").read(), 77)))' "$SCRATCH/h.vmdk")" \
    "3 0x30003 1"
check "ddb.toolsVersion" grep -aq 'ddb.toolsVersion = "2147483647"' "$SCRATCH/h.vmdk"

# ---- convert into streamOptimized: qemu-img and pyvmdk read the source
conv() {   # NAME ARGS...: qimg converts $SRC into $SCRATCH/o.vmdk
    local name=$1; shift
    rm -f "$SCRATCH/o.vmdk"
    if ! "$QIMG" convert "$@" -O vmdk -o subformat=streamOptimized "$SRC" "$SCRATCH/o.vmdk"; then
        fail "$name: convert"
        return
    fi
    check "$name: qemu-img compare" "$QEMU_IMG" compare -q -f raw -F vmdk "$SRC" "$SCRATCH/o.vmdk"
    check "$name: qemu-img check" "$QEMU_IMG" check -q "$SCRATCH/o.vmdk"
    expect_eq "$name: ends with an end-of-stream marker" \
        "$(tail -c 512 "$SCRATCH/o.vmdk" | tr -d '\0' | wc -c)" 0
}
conv "convert"
if has_pymod "pyvmdk reads qimg's stream" pyvmdk; then
    "$DEB_PYTHON" - "$SCRATCH/o.vmdk" "$SRC" >"$SCRATCH/py.out" 2>&1 <<'PY'
import pyvmdk, sys
h = pyvmdk.handle()
h.open(sys.argv[1])
h.open_extent_data_files()
src = open(sys.argv[2], "rb").read()
data = h.read_buffer(h.get_media_size())
print("same" if data == src else "differs: %d %d" % (len(data), len(src)))
PY
    expect_eq "pyvmdk reads qimg's stream" "$(cat "$SCRATCH/py.out")" same
fi

cp "$SCRATCH/o.vmdk" "$IN/ours.vmdk"
conv "convert -c" -c
conv "convert -m 1" -m 1
conv "convert -W -m 16" -W -m 16
conv "convert -S 0" -S 0
same "convert -C into streamOptimized" convert -C -O vmdk -o subformat=streamOptimized src.raw o.vmdk
# what qimg wrote, read by both tools alike
same_ro "info of qimg's stream" info ours.vmdk
same_ro "map of qimg's stream" map --output=json ours.vmdk
same_ro "map (human) of qimg's stream" map ours.vmdk
same "qimg's stream to raw" convert -O raw ours.vmdk out.raw
same "qimg's stream to qcow2 -c" convert -c -O qcow2 ours.vmdk out.qcow2
# ---- what qemu-img writes, read alike
VMDK_CHECK=true
if "$QIMG" check "$IN/base.vmdk" 2>&1 | grep -q "does not support checks"; then
    VMDK_CHECK=false
    SKIP_WHAT="$TEST_NAME check" skip "the vmdk driver has no check yet"
fi
"$QEMU_IMG" convert -O vmdk -o subformat=streamOptimized "$SRC" "$IN/qemu.vmdk"
"$QEMU_IMG" convert -c -O vmdk -o subformat=streamOptimized,zeroed_grain=on "$SRC" "$IN/qemuz.vmdk"
"$QEMU_IMG" create -q -f vmdk -o subformat=streamOptimized "$IN/empty.vmdk" 100M
for f in qemu qemuz empty; do
    same_ro "info $f" info "$f.vmdk"
    same_ro "info json $f" info --output=json "$f.vmdk"
    same_ro "map $f" map --output=json "$f.vmdk"
    $VMDK_CHECK && same_ro "check $f" check "$f.vmdk"
    same "convert $f to raw" convert -O raw "$f.vmdk" out.raw
    same "convert $f to a stream" convert -O vmdk -o subformat=streamOptimized "$f.vmdk" o.vmdk
done

# ---- python3-vmdkstream: it only writes (a real stream: grain tables
# with markers, the directory at the end, footer, end-of-stream marker)
if has_pymod "python3-vmdkstream streams read" VMDKstream; then
    "$DEB_PYTHON" -c 'import sys, VMDKstream; VMDKstream.convert_to_stream(sys.argv[1], sys.argv[2])' \
        "$SRC" "$IN/vs.vmdk" || fail "VMDKstream convert"
    same_ro "info of a VMDKstream file" info vs.vmdk
    same_ro "map of a VMDKstream file" map --output=json vs.vmdk
    same "VMDKstream file to raw" convert -O raw vs.vmdk out.raw
    "$QIMG" convert -O raw "$IN/vs.vmdk" "$SCRATCH/vs.raw"
    check "VMDKstream file reads as its source" cmp "$SCRATCH/vs.raw" "$SRC"
    # the footer read as qemu: past the file's end rounded up to a sector
    head -c -100 "$IN/vs.vmdk" > "$IN/vs-cut.vmdk"
    same_ro "VMDKstream file cut inside its end-of-stream marker" info vs-cut.vmdk
fi

# ---- compressed grains without markers (flag 0x10000 alone): one grain
# that inflates, one stored grain longer than a grain (qemu inflates only a
# grain's worth of bytes: an error)
python3 - "$IN/nomark.vmdk" <<'PY'
import random, struct, sys, zlib
h = b"KDMV" + struct.pack("<IIQQQQIQQQB", 1, 0x10001, 256, 128, 1, 1, 512, 0, 2, 8, 0)
h = (h + b"\n \r\n" + struct.pack("<H", 1)).ljust(512, b"\0")
desc = b'# Disk DescriptorFile\nversion=1\nCID=11223344\nparentCID=ffffffff\ncreateType="monolithicSparse"\n\nRW 256 SPARSE "nomark.vmdk"\n'
out = bytearray(h + desc.ljust(512, b"\0") + struct.pack("<I", 3).ljust(512, b"\0") + bytes(2048))
out = out.ljust(8 * 512, b"\0")
sectors = []
for data in (zlib.compress(b"grain text " * 5957 + b"x" * 9),
             zlib.compress(random.Random(1).randbytes(65536), 0)):
    sectors.append(len(out) // 512)
    out += data
    out = out.ljust((len(out) + 511) // 512 * 512, b"\0")
struct.pack_into("<II", out, 3 * 512, *sectors)
open(sys.argv[1], "wb").write(out)
PY
same_ro "no markers: info" info nomark.vmdk
same_ro "no markers: map" map --output=json nomark.vmdk
same "no markers: convert" convert -O raw nomark.vmdk out.raw
ref_rc "no markers: convert" 1

# ---- writes qemu refuses: a grain twice, part of a grain
cp "$IN/qemu.vmdk" "$IN/w.vmdk"
same "write over written grains" convert -n -O vmdk src.raw w.vmdk
ref_rc "write over written grains" 1
"$QEMU_IMG" create -q -f vmdk -o subformat=streamOptimized "$IN/w2.vmdk" 6M
same "convert -n into an empty stream" convert -n -O vmdk src.raw w2.vmdk

# ---- hostile files
bounded() {   # NAME ARGS...: both tools alike, and qimg within 2 s CPU and 1 GiB
    local name=$1; shift
    same "$name" "$@"
    (cd "$IN" && ulimit -v 1048576 -t 2 && "$QIMG" "$@" >/dev/null 2>&1; echo $? >"$SCRATCH/b.rc")
    local rc; rc=$(cat "$SCRATCH/b.rc")
    check "$name: an exit code, not a signal ($rc)" test "$rc" -lt 128
}
hostile() {   # NAME BASE OFFSET BITS VALUE: patch a copy of BASE, info and convert
    local name=$1
    cp "$IN/$2" "$IN/h.vmdk"
    le "$IN/h.vmdk" "$3" "$4" "$5"
    bounded "$name: info" info h.vmdk
    bounded "$name: convert" convert -O raw h.vmdk out.raw
}
g=$(first_grain "$IN/qemu.vmdk")
hostile "grain of size 0" qemu.vmdk $((g + 8)) 32 0
hostile "grain of size two grains" qemu.vmdk $((g + 8)) 32 0x20000
hostile "grain of size two grains + 1" qemu.vmdk $((g + 8)) 32 0x20001
hostile "grain of size 4 GiB - 1" qemu.vmdk $((g + 8)) 32 0xffffffff
hostile "grain of a short size" qemu.vmdk $((g + 8)) 32 10
hostile "grain with a broken zlib header" qemu.vmdk $((g + 12)) 32 0
hostile "grain marker with another LBA" qemu.vmdk "$g" 64 12345
hostile "grain table entry past EOF" qemu.vmdk $((27 * 512)) 32 0x7fffffff
hostile "grain directory past EOF" qemu.vmdk 56 64 0x100000
hostile "grain directory offset overflow" qemu.vmdk 56 64 0xfffffffffffffff
if [ -f "$IN/vs.vmdk" ]; then
    gv=$(first_grain "$IN/vs.vmdk")
    hostile "footer magic" vs.vmdk -1024 32 0x12345678
    hostile "footer marker type" vs.vmdk -1524 32 2
    hostile "footer marker size" vs.vmdk -1528 32 1
    hostile "end-of-stream marker type" vs.vmdk -500 32 7
    hostile "end-of-stream marker value" vs.vmdk -512 64 1
    hostile "footer directory past EOF" vs.vmdk -968 64 0x100000
    hostile "footer directory offset overflow" vs.vmdk -968 64 0xffffffffffffffff
    hostile "footer version 4" vs.vmdk -1020 32 4
    hostile "footer capacity 0" vs.vmdk -1012 64 0
    hostile "footer grain size 2^40" vs.vmdk -1004 64 0x10000000000
    hostile "footer grain table entries 2^31" vs.vmdk -980 32 0x80000000
    hostile "stream grain size 4 GiB - 1" vs.vmdk $((gv + 8)) 32 0xffffffff
    head -c 1024 "$IN/vs.vmdk" > "$IN/short.vmdk"
    bounded "a stream shorter than its footer" info short.vmdk
    head -c 2048 "$IN/vs.vmdk" > "$IN/short.vmdk"
    bounded "a stream of header and footer only" info short.vmdk
fi
