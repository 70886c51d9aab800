#!/bin/bash
# Differencing VHDs (beyond qemu-img, which reads them as if the parent did
# not exist): create -b, reads and writes through the sector bitmaps,
# commit, rebase (safe and -u, to another parent and to none), convert -B,
# the parent's unique id, loops, safe mode, hostile parent locators, a
# differencing disk built here from the specification, and python3-libvhdi
# (an independent reader) reading what qimg writes.
. "$(dirname "$0")/lib.sh"
need_cmd python3
cd "$IN" || exit 1

# w FILE OFFSET LEN PATTERN: qimg writes into FILE (a VHD), qemu-io the
# same into FILE's reference ref.raw
w() {
    "$QIMG" bench -q -w -f vpc -c 1 -d 1 -s "$3" -o "$2" --pattern="$4" "$1" >/dev/null ||
        fail "write $*"
    qio ref.raw "write -P $4 $2 $3"
}
# same_data NAME IMAGE RAW: qimg and qemu-img read IMAGE's guest data as RAW
same_data() {
    rm -f "$SCRATCH/out.raw"
    if ! "$QIMG" convert -O raw "$2" "$SCRATCH/out.raw" 2>"$SCRATCH/err"; then
        fail "$1" "$(cat "$SCRATCH/err")"
        return
    fi
    check "$1" cmp "$SCRATCH/out.raw" "$3"
}
# qemu_reads NAME IMAGE RAW: qemu-img reads IMAGE's guest data as RAW
qemu_reads() {
    rm -f "$SCRATCH/q.raw"
    "$QEMU_IMG" convert -O raw "$2" "$SCRATCH/q.raw" || { fail "$1" "qemu-img convert $2"; return; }
    check "$1" cmp "$SCRATCH/q.raw" "$3"
}
vsize() { "$QIMG" info --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

# ------------------------------------------------ create -b, write, read
"$QEMU_IMG" create -q -f vpc p.vhd 10M || fail "create p.vhd"
"$QEMU_IO" -f vpc -c "write -P 0x11 0 4M" -c "write -P 0x22 6M 1M" p.vhd >/dev/null || fail "write p.vhd"
"$QEMU_IMG" convert -f vpc -O raw p.vhd p.raw || fail "p.raw"
cp p.raw ref.raw
out=$("$QIMG" create -f vpc -b p.vhd -F vpc c.vhd 2>&1)
expect_eq "create -b" "$out" \
    "Formatting 'c.vhd', fmt=vpc size=$(vsize p.vhd) backing_file=p.vhd backing_fmt=vpc"
out=$("$QIMG" info c.vhd | grep '^backing')
expect_eq "info: backing file" "$out" "backing file: p.vhd
backing file format: vpc"
out=$("$QIMG" info --output=json c.vhd | grep -i backing)
expect_eq "info json: backing file" "$out" '    "backing-filename-format": "vpc",
    "full-backing-filename": "p.vhd",
    "backing-filename": "p.vhd",'
same_data "new child reads its parent" c.vhd p.raw
# whole and partial sectors, a block's first and last sector, across blocks
w c.vhd 1M 4096 0x33
w c.vhd 8M 512 0x44
w c.vhd 3000 100 0x55
w c.vhd 6291000 2000 0x66
w c.vhd 2047k 2k 0x77
same_data "child after writes" c.vhd ref.raw
out=$("$QIMG" map --output=json c.vhd | grep -c '"depth": 0')
expect_eq "map: the child holds 7 runs" "$out" 7
check "compare child with its data" "$QIMG" compare c.vhd ref.raw
cp c.vhd c0.vhd; cp p.vhd p0.vhd; cp ref.raw ref0.raw

# qemu-img reads the parent it was given (as a dynamic disk) unharmed
qemu_reads "qemu-img reads the parent" p.vhd p.raw

# ------------------------------------------------ python3-libvhdi reads it
libvhdi_reads() {   # libvhdi_reads NAME CHILD PARENT RAW
    if "$DEB_PYTHON" - "$2" "$3" "$4" <<'PY'; then pass "$1"; else fail "$1"; fi
import sys, pyvhdi
c, p = pyvhdi.file(), pyvhdi.file()
p.open(sys.argv[2]); c.open(sys.argv[1]); c.set_parent(p)
data = c.read_buffer(c.get_media_size())
ref = open(sys.argv[3], "rb").read()
bad = [i for i in range(0, len(ref), 512) if data[i:i + 512] != ref[i:i + 512]]
sys.exit(1 if bad or len(data) != len(ref) else 0)
PY
}
if has_pymod "$TEST_NAME libvhdi" pyvhdi; then
    # libvhdi 20210425 takes a sector as present when any earlier sector
    # of its bitmap byte is (it shifts without masking): runs that end on
    # a 4 KiB boundary are read right, so this image has only those
    "$QIMG" create -q -f vpc -b p.vhd -F vpc l.vhd || fail "create l.vhd"
    cp p.raw lref.raw
    for a in "1M 4096 0x33" "8M 4096 0x44" "3584 512 0x55" "2044k 8k 0x66"; do
        set -- $a
        "$QIMG" bench -q -w -f vpc -c 1 -d 1 -s "$2" -o "$1" --pattern="$3" l.vhd >/dev/null
        qio lref.raw "write -P $3 $1 $2"
    done
    libvhdi_reads "libvhdi reads qimg's child" l.vhd p.vhd lref.raw
    out=$("$DEB_PYTHON" -c 'import pyvhdi,sys; f=pyvhdi.file(); f.open(sys.argv[1]); print(f.get_disk_type(), f.get_parent_filename())' l.vhd)
    expect_eq "libvhdi: type and parent name" "$out" "4 p.vhd"
fi

# ------------------------------------------------ commit
cp c0.vhd c.vhd; cp p0.vhd p.vhd
out=$("$QIMG" commit c.vhd 2>&1)
expect_eq "commit" "$out" "Image committed."
qemu_reads "commit: parent holds the child's data (qemu-img reads it)" p.vhd ref.raw
same_data "commit: child reads the same" c.vhd ref.raw
expect_eq "commit: child emptied" "$("$QIMG" map --output=json c.vhd | grep -c '"depth": 0')" 0

# ------------------------------------------------ rebase
cp c0.vhd c.vhd; cp p0.vhd p.vhd
check "rebase to no parent" "$QIMG" rebase -b "" c.vhd
expect_eq "rebase to no parent: no backing file" "$("$QIMG" info c.vhd | grep -c backing)" 0
qemu_reads "rebase to no parent: qemu-img reads the data" c.vhd ref0.raw
same_data "rebase to no parent: qimg reads the data" c.vhd ref0.raw
"$QEMU_IMG" create -q -f vpc q.vhd 10M || fail "create q.vhd"
"$QEMU_IO" -f vpc -c "write -P 0x99 2M 4M" q.vhd >/dev/null || fail "write q.vhd"
cp c0.vhd c.vhd
check "rebase to another parent" "$QIMG" rebase -b q.vhd -F vpc c.vhd
expect_eq "rebase: new parent recorded" "$("$QIMG" info c.vhd | grep '^backing file:')" "backing file: q.vhd"
same_data "rebase to another parent: same data" c.vhd ref0.raw
# unsafe: the child's own sectors stay, the rest now reads q
cp c0.vhd c.vhd
check "rebase -u" "$QIMG" rebase -u -b q.vhd -F vpc c.vhd
"$QEMU_IMG" convert -f vpc -O raw q.vhd uref.raw
for a in "1M 4096 0x33" "8M 512 0x44" "3000 100 0x55" "6291000 2000 0x66" "2047k 2k 0x77"; do
    set -- $a
    qio uref.raw "write -P $3 $1 $2"
done
# the partial-sector writes copied their sectors' other bytes from p
"$QEMU_IO" -f raw -c "write -P 0x11 2560 440" -c "write -P 0x11 3100 484" \
    -c "write -P 0 6290944 56" -c "write -P 0x22 6293000 504" uref.raw >/dev/null
same_data "rebase -u: the child's sectors over the new parent" c.vhd uref.raw
# a dynamic disk given a parent: its blocks stay, the rest reads the parent
"$QEMU_IMG" create -q -f vpc d.vhd 10M
"$QEMU_IO" -f vpc -c "write -P 0x12 4M 2M" d.vhd >/dev/null
check "rebase -u of a dynamic disk" "$QIMG" rebase -u -b p.vhd -F vpc d.vhd
cp p.raw dref.raw; qio dref.raw "write -P 0x12 4M 2M"
same_data "rebase -u of a dynamic disk: reads through" d.vhd dref.raw
out=$("$QIMG" rebase -u -b x.qcow2 -F qcow2 c.vhd 2>&1)
expect_eq "rebase onto a non-VHD" "$?: $out" \
    "1: qimg: Could not change the backing file to 'x.qcow2': Operation not supported"

# ------------------------------------------------ convert -B, fixed parent
"$QEMU_IMG" create -q -f vpc -o subformat=fixed fp.vhd 10M || fail "create fp.vhd"
"$QEMU_IO" -f vpc -c "write -P 0x21 0 3M" fp.vhd >/dev/null
"$QEMU_IMG" convert -f vpc -O raw fp.vhd fp.raw
cp fp.raw fref.raw; qio fref.raw "write -P 0x31 1M 1M"
check "convert -B onto a fixed parent" "$QIMG" convert -f raw -O vpc -B fp.vhd -F vpc fref.raw cb.vhd
same_data "convert -B: same data" cb.vhd fref.raw

# ------------------------------------------------ refusals
out=$("$QIMG" create -f vpc -b p.qcow2 -F qcow2 x.vhd 2>&1)
"$QEMU_IMG" create -q -f qcow2 p.qcow2 10M
out=$("$QIMG" create -q -f vpc -b p.qcow2 -F qcow2 x.vhd 2>&1)
expect_eq "create -b over a qcow2" "$?: $out" \
    "1: qimg: x.vhd: The parent of a differencing VHD must be a VHD (backing format vpc, not 'qcow2')"
out=$("$QIMG" create -q -f vpc -b p.vhd -F vpc x.vhd 20M 2>&1)
expect_eq "create -b with another size" "$?: $out" \
    "1: qimg: x.vhd: A differencing VHD has the size of its parent 'p.vhd' ($(vsize p.vhd) bytes), not 20971520"
out=$("$QIMG" create -q -f vpc -o subformat=fixed -b p.vhd -F vpc x.vhd 2>&1)
expect_eq "create -b fixed" "$?: $out" \
    "1: qimg: x.vhd: A differencing VHD cannot be fixed (subformat=fixed with a backing file)"
# the parent is not the disk the child was made from
cp c0.vhd c.vhd; cp q.vhd p.vhd
out=$("$QIMG" convert -O raw c.vhd x.raw 2>&1)
case $out in
*"Could not open backing file: VHD parent 'p.vhd' has unique id"*"'rebase -u' accepts it)") pass "parent with another unique id" ;;
*) fail "parent with another unique id" "$out" ;;
esac
cp p0.vhd p.vhd
# a parent the user names by options is taken as given (no id check)
check "parent given by options: another unique id accepted" "$QIMG" convert --image-opts -O raw \
    driver=vpc,file.filename=c0.vhd,backing.driver=vpc,backing.file.filename=q.vhd x.raw
# a loop of parents
"$QEMU_IMG" create -q -f vpc lb.vhd 10M
"$QIMG" create -q -f vpc -b lb.vhd -F vpc la.vhd
"$QIMG" rebase -u -b la.vhd -F vpc lb.vhd
out=$(timeout 5 "$QIMG" convert -O raw la.vhd x.raw 2>&1)
expect_eq "loop of parents" "$?: $out" "1: qimg: Could not open 'la.vhd': Backing file 'la.vhd' creates an infinite loop."
# safe mode: the parent named only inside the image is not opened
out=$("$QIMG" --safe convert -O raw c0.vhd x.raw 2>&1)
expect_eq "safe mode" "$?: $out" \
    "1: qimg: Could not open 'c0.vhd': Could not open backing file: safe mode: image names a backing file 'p.vhd' that was not given"
out=$("$QIMG" info c0.vhd 2>&1 | grep -c '^backing file: p.vhd')
expect_eq "info of a child whose parent is gone" "$out" 1

# ------------------------------------------------ built here from the spec
# mkdiff OUT PARENT [locators...]: a differencing disk over PARENT (64 KiB
# blocks) with block 1 and block 3 allocated; block 1's bitmap marks
# sectors 4-7 and 8-15 present (data 0xab), block 3's none.  Locators:
# "w2ru:TEXT", "w2ku:TEXT", "macx:TEXT" (with data space in sectors),
# "name:TEXT" (the parent unicode name), "raw:CODE:OFF:LEN" (hostile).
mkdiff() {
    python3 - "$@" <<'PY'
import struct, sys, uuid
out, parent, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
pf = open(parent, "rb").read(512)
def csum(b, at):
    b = bytearray(b); b[at:at + 4] = bytes(4)
    return (~sum(b)) & 0xffffffff
size = struct.unpack(">Q", pf[48:56])[0]
bs, sectors = 65536, 65536 // 512
entries = (size + bs - 1) // bs
bat_off = 1536
bat_len = (entries * 4 + 511) // 512 * 512
f = bytearray(pf)
f[16:24] = struct.pack(">Q", 512); f[60:64] = struct.pack(">I", 4)
f[68:84] = uuid.uuid4().bytes
f[64:68] = struct.pack(">I", csum(f, 64))
h = bytearray(1024)
h[0:8] = b"cxsparse"; h[8:16] = b"\xff" * 8
h[16:24] = struct.pack(">Q", bat_off); h[24:28] = struct.pack(">I", 0x10000)
h[28:32] = struct.pack(">I", entries); h[32:36] = struct.pack(">I", bs)
h[40:56] = pf[68:84]
loc_data, off, slot = b"", bat_off + bat_len, 0
for s in specs:
    kind, _, text = s.partition(":")
    if kind == "name":
        n = text.encode("utf-16-be"); h[64:64 + len(n)] = n; continue
    if kind == "raw":
        code, o, l = text.split(":")
        h[576 + 24 * slot:600 + 24 * slot] = struct.pack(">4sIIIQ", code.encode(), 1, int(l, 0), 0, int(o, 0))
        slot += 1; continue
    code = {"w2ru": b"W2ru", "w2ku": b"W2ku", "macx": b"MacX"}[kind]
    d = text.encode("utf-8" if kind == "macx" else "utf-16-le")
    room = (len(d) + 511) // 512 * 512
    h[576 + 24 * slot:600 + 24 * slot] = struct.pack(">4sIIIQ", code, room // 512, len(d), 0, off)
    loc_data += d + bytes(room - len(d)); off += room; slot += 1
h[36:40] = struct.pack(">I", csum(h, 36))
bat = bytearray(b"\xff" * bat_len)
blocks = b""
def block(bitmap):
    return bytes(bitmap) + b"\xab" * bs
bm1 = bytearray(512); bm1[0] = 0x0f; bm1[1] = 0xff
for i, bm in ((1, bm1), (3, bytearray(512))):
    bat[4 * i:4 * i + 4] = struct.pack(">I", (off + len(blocks)) // 512)
    blocks += block(bm)
img = bytes(f) + bytes(h) + bytes(bat) + loc_data + blocks + bytes(f)
open(out, "wb").write(img)
PY
}
# the data it holds: the parent's with block 1's sectors 4-15 of 0xab
"$QEMU_IMG" convert -f vpc -O raw p0.vhd sref.raw
qio sref.raw "write -P 0xab $((65536 + 4 * 512)) $((12 * 512))"
mkdiff s1.vhd p0.vhd "w2ru:.\\p0.vhd" "w2ku:C:\\VMs\\p0.vhd" "name:p0.vhd"
same_data "spec-built child (W2ru)" s1.vhd sref.raw
expect_eq "spec-built child: parent" "$("$QIMG" info s1.vhd | grep '^backing file:')" "backing file: p0.vhd"
expect_eq "spec-built child: map" "$("$QIMG" map --output=json s1.vhd | grep '"depth": 0')" \
    '{ "start": 67584, "length": 6144, "depth": 0, "present": true, "zero": false, "data": true, "offset": 6144},'
mkdir -p sub; cp p0.vhd sub/parent.vhd; cp p0.vhd pp.vhd
mkdiff s2.vhd p0.vhd "w2ku:C:\\VMs\\pp.vhd" "name:C:\\VMs\\pp.vhd"
same_data "W2ku and name unusable: found by file name" s2.vhd sref.raw
mkdiff s2.vhd p0.vhd "w2ku:\\nowhere\\p0.vhd" "w2ru:sub\\parent.vhd"
same_data "W2ru with a subdirectory" s2.vhd sref.raw
mkdiff s3.vhd p0.vhd "macx:file://localhost$IN/sub/par%65nt.vhd"
same_data "MacX file URL" s3.vhd sref.raw
mkdiff s4.vhd p0.vhd "name:p0.vhd"
same_data "parent unicode name only" s4.vhd sref.raw
if has_pymod "$TEST_NAME libvhdi spec-built" pyvhdi; then
    libvhdi_reads "libvhdi agrees on the spec-built child" s1.vhd p0.vhd sref.raw
fi

# ------------------------------------------------ hostile parent locators
hostile() {   # hostile NAME FILE EXPECTED-MESSAGE
    local out rc
    out=$(timeout 2 "$QIMG" info "$2" 2>&1); rc=$?
    expect_eq "$1" "$rc: $out" "1: qimg: Could not open '$2': $3"
}
size=$(stat -c %s s1.vhd)
mkdiff h.vhd p0.vhd "raw:W2ru:$((size + 512)):16"
hostile "locator past the end of the file" h.vhd "VHD parent locator 0 points past the end of the file"
mkdiff h.vhd p0.vhd "raw:W2ku:0x7ffffffffffffff0:64"
hostile "locator offset huge" h.vhd "VHD parent locator 0 points past the end of the file"
mkdiff h.vhd p0.vhd "raw:W2ru:1536:0x7fffffff"
hostile "locator length huge" h.vhd "VHD parent locator 0 is too long (2147483647 bytes)"
mkdiff h.vhd p0.vhd
hostile "no parent named" h.vhd "Differencing VHD image names no parent"
mkdiff h.vhd p0.vhd "raw:Mac :999999999:5" "name:p0.vhd"
same_data "an alias locator is not read" h.vhd sref.raw
mkdiff h.vhd p0.vhd "w2ru:json:{\"driver\":\"null-co\"}"
out=$("$QIMG" info h.vhd | grep '^backing file:')
expect_eq "a json: locator is a plain file name" "$out" 'backing file: ./json:{"driver":"null-co"}'
mkdiff h.vhd p0.vhd "w2ru:nbd://127.0.0.1:1/x"
expect_eq "a protocol locator is a plain file name" "$("$QIMG" info h.vhd | grep '^backing file:')" \
    "backing file: ./nbd://127.0.0.1:1/x"

# ------------------------------------------------ resize a child
cp c0.vhd c.vhd; cp p0.vhd p.vhd; cp ref0.raw rz.raw
check "resize a child +3M" "$QIMG" resize -q c.vhd +3M
truncate -s $(( $(stat -c %s rz.raw) + (3 << 20) )) rz.raw
same_data "resize a child: past its parent's end, zeros" c.vhd rz.raw
check "resize a child --shrink 5M" "$QIMG" resize -q --shrink c.vhd 5M
truncate -s 5M rz.raw
same_data "resize a child --shrink" c.vhd rz.raw
