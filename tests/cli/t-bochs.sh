#!/bin/bash
# Bochs growing images: those bximage makes (create, convert from flat),
# the real image of shared/testdata and a version 1 header read, shown and
# mapped as qemu-img does; what qimg creates byte-identical to bximage's
# file and what it writes read by qemu-img and by bximage; hostile headers
# refused with qemu's words, or (where qemu 7.2 reads silent zeros) with
# qimg's own error.
. "$(dirname "$0")/lib.sh"
has_cmd "bximage" bximage || exit 0
TESTDATA=${TESTDATA:-$TOP/../shared/testdata}
cd "$SCRATCH" || exit 1

# bx ARGS...: bximage without questions or its banner
bx() { bximage -q "$@" >/dev/null 2>&1; }
vsize() { "$QEMU_IMG" info --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

# ---- fixtures: guest data in flat, then growing images by bximage
"$QEMU_IMG" create -q -f raw src.raw 4M
"$QEMU_IO" -f raw -c "write -P 0x11 0 64k" -c "write -P 0x22 1000k 8k" -c "write -P 0x33 3M 256k" \
    -c "write -P 0x44 4095k 1k" -c "write -P 0x55 2049k 512" src.raw >/dev/null || fail "write src.raw"
bx -func=convert -imgmode=growing src.raw "$IN/data.bochs" || fail "bximage convert"
bx -func=create -hd=10M -imgmode=growing "$IN/empty10.bochs" || fail "bximage create"
# version 1: the disk size right after the extent size (no timestamp)
cp "$IN/data.bochs" "$IN/v1.bochs"
python3 - "$IN/v1.bochs" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
disk = struct.unpack_from("<Q", d, 0x58)[0]
struct.pack_into("<I", d, 0x40, 0x10000)
struct.pack_into("<Q", d, 0x54, disk)
d[0x5c:0x60] = bytes(4)
open(sys.argv[1], "wb").write(d)
PY
names="data empty10 v1"
if [ -f "$TESTDATA/empty.bochs.bz2" ] && has_cmd "real bochs image" bzcat; then
    bzcat "$TESTDATA/empty.bochs.bz2" >"$IN/real.bochs"
    names="$names real"
    "$QIMG" convert -O raw "$IN/real.bochs" real.raw || fail "convert real.bochs"
    expect_eq "the real bximage image reads as its README says" \
        "$(sha256sum real.raw | cut -c1-16):$(stat -c %s real.raw)" "85e614bc2ef17bec:1032192"
else
    skip "shared/testdata/empty.bochs.bz2 missing"
fi

for f in $names; do
    same_ro "info $f" info "$f.bochs"
    same_ro "info json $f" info --output=json "$f.bochs"
    same_ro "map $f" map "$f.bochs"
    same_ro "map json $f" map --output=json "$f.bochs"
    same_ro "check $f" check "$f.bochs"
    same_ro "info -f bochs $f" info -f bochs "$f.bochs"
    same "convert $f to raw" convert -O raw "$f.bochs" out.raw
    same "convert $f to qcow2" convert -O qcow2 "$f.bochs" out.qcow2
done
same_ro "compare with its source" compare -f bochs -F raw data.bochs ../src.raw
"$QIMG" convert -O raw "$IN/data.bochs" back.raw
check "bximage's growing image reads as its source" cmp -s back.raw src.raw
"$QIMG" convert -O raw "$IN/v1.bochs" back1.raw
check "a version 1 header reads as version 2" cmp -s back1.raw src.raw
same_ro "-f bochs on a raw file" info -f bochs ../src.raw
# qemu reads only "Growing" redologs: another subtype probes as raw
cp "$IN/empty10.bochs" "$IN/undo.bochs"
printf 'Undoable\0' | poke "$IN/undo.bochs" 48
same_ro "an Undoable redolog is no bochs image" info undo.bochs
same_ro "-f bochs on an Undoable redolog" info -f bochs undo.bochs

# ---- create: bximage's file byte for byte
for mb in 10 100 2000; do
    rm -f bx.img q.img
    bx -func=create -hd=${mb}M -imgmode=growing bx.img || fail "bximage create ${mb}M"
    "$QIMG_AS_QEMU" create -q -f bochs q.img "$(vsize bx.img)" || fail "create ${mb}M"
    check "create -f bochs ${mb}M: bximage's file" cmp -s q.img bx.img
done
expect_eq "create -f bochs: the Formatting line" "$("$QIMG_AS_QEMU" create -f bochs c.bochs 1M)" \
    "Formatting 'c.bochs', fmt=bochs size=1048576"
check_fail "create -f bochs beyond 8 TiB fails" "$QIMG" create -q -f bochs big.bochs 9T

# ---- convert -O bochs: qemu-img and bximage read it; with -S 512 it is
# bximage's own conversion but for the timestamp bximage stamps (0x54)
rm -f c.bochs
"$QIMG" convert -O bochs src.raw c.bochs || fail "convert -O bochs"
"$QEMU_IMG" compare -q -f raw -F bochs src.raw c.bochs
check "convert -O bochs: qemu-img reads the source" test $? = 0
bx -func=convert -imgmode=flat c.bochs c-flat.raw || fail "bximage reads c.bochs"
check "convert -O bochs: bximage reads the source" cmp -s c-flat.raw src.raw
rm -f s.bochs
"$QIMG" convert -S 512 -O bochs src.raw s.bochs || fail "convert -S 512 -O bochs"
nostamp() { head -c 84 "$1"; tail -c +89 "$1"; }
check "convert -S 512 -O bochs: bximage's conversion" cmp -s <(nostamp s.bochs) <(nostamp "$IN/data.bochs")

# ---- writes into bximage's image (partial sectors, new and old extents)
cp "$IN/data.bochs" w.bochs
qimg_io w.bochs w:100:10:0x61 w:65000:2000:0x62 w:3145728:4096:0x63 w:4194000:304:0x64 ||
    fail "qimg writes into w.bochs"
python3 - <<'PY'
d = bytearray(open("src.raw", "rb").read())
for o, n, b in ((100, 10, 0x61), (65000, 2000, 0x62), (3145728, 4096, 0x63), (4194000, 304, 0x64)):
    d[o:o + n] = bytes([b]) * n
open("want.raw", "wb").write(d)
PY
"$QEMU_IMG" convert -f bochs -O raw w.bochs w.raw
check "writes: qemu-img reads them" cmp -s w.raw want.raw
bx -func=convert -imgmode=flat w.bochs w-flat.raw
check "writes: bximage reads them" cmp -s w-flat.raw want.raw

# a file with bytes after its last extent (a crash after the file grew):
# a new extent there starts from a zeroed bitmap, the file does not shrink
cp "$IN/data.bochs" t.bochs
head -c 20000 /dev/urandom >>t.bochs
size=$(stat -c %s t.bochs)
qimg_io t.bochs w:2621440:512:0x66 || fail "qimg writes after trailing bytes"
"$QEMU_IO" -r -f bochs -c "read -P 0x66 2621440 512" -c "read -P 0 2621952 7680" t.bochs >/dev/null
check "a new extent over trailing bytes reads as written and zeros" test $? = 0
check "the file did not shrink" test "$(stat -c %s t.bochs)" -ge "$size"

# ---- hostile headers
# le32 FILE OFFSET VALUE
le32() { python3 -c 'import struct, sys
d = bytearray(open(sys.argv[1], "rb").read()); struct.pack_into("<I", d, int(sys.argv[2], 0), int(sys.argv[3], 0))
open(sys.argv[1], "wb").write(d)' "$@"; }
le64() { python3 -c 'import struct, sys
d = bytearray(open(sys.argv[1], "rb").read()); struct.pack_into("<Q", d, int(sys.argv[2], 0), int(sys.argv[3], 0))
open(sys.argv[1], "wb").write(d)' "$@"; }
# refused by qemu: the same words and exit code
qemu_refuses() {   # NAME FIELD-WRITER ARGS...
    local name=$1; shift
    cp "$IN/data.bochs" "$IN/h.bochs"
    "$@"
    same_ro "hostile: $name" info h.bochs
    same_ro "hostile: $name (convert)" convert -O raw h.bochs ../h.raw
}
qemu_refuses "catalog 0xffffffff" le32 "$IN/h.bochs" 0x48 0xffffffff
qemu_refuses "catalog 0x40000000" le32 "$IN/h.bochs" 0x48 0x40000000
qemu_refuses "catalog too small for the disk" le64 "$IN/h.bochs" 0x58 0x7f00000000000000
qemu_refuses "extent 0" le32 "$IN/h.bochs" 0x50 0
qemu_refuses "extent 2 GiB" le32 "$IN/h.bochs" 0x50 0x80000000
qemu_refuses "extent 3000" le32 "$IN/h.bochs" 0x50 3000
# accepted by qemu 7.2, which converts them to zeros with exit 0: qimg
# refuses them (bounded: 1 GiB, 2 s of CPU)
beyond_qemu() {   # NAME PATTERN FIELD-WRITER ARGS...
    local name=$1 pattern=$2 out rc qrc; shift 2
    cp "$IN/data.bochs" h.bochs
    "$@"
    "$QEMU_IMG" convert -O raw h.bochs hq.raw >/dev/null 2>&1; qrc=$?
    out=$( (ulimit -v 1048576 -t 2; "$QIMG" convert -O raw h.bochs h.raw) 2>&1); rc=$?
    if [ $qrc = 0 ] && [ $rc = 1 ] && [[ $out == *"$pattern"* ]]; then pass "hostile (qemu-img reads zeros): $name"
    else fail "hostile (qemu-img reads zeros): $name" "qemu-img exit $qrc, qimg exit $rc: $out"; fi
}
beyond_qemu "header size 0xffffffff" "catalog (512 entries at offset 4294967295) ends past the end" \
    le32 h.bochs 0x44 0xffffffff
beyond_qemu "header size 0" "header size 0" le32 h.bochs 0x44 0
beyond_qemu "bitmap size 0xffffffff" "bitmap size 4294967295" le32 h.bochs 0x4c 0xffffffff
beyond_qemu "bitmap size 0" "bitmap size 0" le32 h.bochs 0x4c 0
beyond_qemu "bitmap too small for the extent" "bitmap size 1" le32 h.bochs 0x4c 1
beyond_qemu "catalog entry past the file" "catalog entry 3 points past the end" le32 h.bochs 0x20c 4000
beyond_qemu "catalog entry 0xfffffffe" "points past the end" le32 h.bochs 0x200 0xfffffffe
cp "$IN/data.bochs" h.bochs && truncate -s 2000 h.bochs
out=$("$QIMG" info h.bochs 2>&1)
check "hostile: catalog cut by the file's end" test $? = 1 -a -n "$out"
