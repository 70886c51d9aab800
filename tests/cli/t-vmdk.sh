#!/bin/bash
# The VMDK driver against qemu-img: every subformat qemu-img makes read,
# shown (info, map), checked and converted alike; what qimg creates and
# converts equal to qemu-img's files but for the random CID; a 3-deep
# delta chain; ZERO and RDONLY extents (qemu-img skips them, qimg reads
# them); extents outside the image's directory refused (CVE-2024-32498);
# hostile headers refused quickly; an independent reader (libvmdk) and a
# real ESXi image.
. "$(dirname "$0")/lib.sh"
need_cmd python3

# le FILE OFFSET BITS VALUE: patch one little-endian field
le() {
    python3 -c 'import struct, sys
f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2], 0))
f.write(struct.pack({"16": "<H", "32": "<I", "64": "<Q"}[sys.argv[3]], int(sys.argv[4], 0)))' "$@"
}
# unrandom FILE: a hash of the file with its CID masked (in the first
# 64 KiB, where descriptors are) and the NUL padding of that part dropped;
# the rest by its non-zero 64 KiB blocks (holes are not read)
unrandom() {
    python3 -c 'import hashlib, os, re, sys
f = open(sys.argv[1], "rb"); head = f.read(65536)
head = re.sub(rb"(?m)^(parent)?CID=[0-9a-f]*$", rb"\1CID=x", head).replace(b"\0", b"")
h = hashlib.sha256(head)
fd, end, off = f.fileno(), os.fstat(f.fileno()).st_size, 65536
while off < end:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    stop = os.lseek(fd, off, os.SEEK_HOLE)
    while off < stop:
        b = os.pread(fd, min(65536 - off % 65536, stop - off), off)
        if b.strip(b"\0"):
            h.update(off.to_bytes(8, "little") + b)
        off += len(b)
print(h.hexdigest())' "$1"
}
# same_files NAME DIR_A DIR_B: the same files, each equal but for the CID
same_files() {
    local name=$1 a=$2 b=$3 f bad=""
    [ "$(cd "$a" && ls)" = "$(cd "$b" && ls)" ] || bad="file lists differ: $(cd "$a" && ls) / $(cd "$b" && ls)"
    for f in $(cd "$a" && ls); do
        [ -f "$b/$f" ] || continue
        [ "$(unrandom "$a/$f")" = "$(unrandom "$b/$f")" ] || bad="$bad $f differs"
        # a descriptor file's length follows its CID's
        [ "$(stat -c %s "$a/$f")" -lt 65536 ] || [ "$(stat -c %s "$a/$f")" = "$(stat -c %s "$b/$f")" ] ||
            bad="$bad $f size differs"
    done
    if [ -z "$bad" ]; then pass "$name"; else fail "$name" "$bad"; fi
}

# ---- guest data: data, a zero run inside a grain, whole zero grains, holes
SRC=$SCRATCH/src.raw
python3 - "$SRC" <<'PY'
import sys
b = bytearray(6 << 20)
for i in range(70000): b[i] = (i * 7 + 1) & 0xff
b[(2 << 20) + 5000:(2 << 20) + 9000] = b"x" * 4000
b[(4 << 20) + 100:(4 << 20) + 200] = bytes(range(1, 101))
b[(6 << 20) - 512:] = b"\x5a" * 512
open(sys.argv[1], "wb").write(b)
PY
truncate -s 7M "$SRC"

SUBS="monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized"
for sub in $SUBS; do
    mkdir -p "$IN/$sub"
    "$QEMU_IMG" convert -O vmdk -o subformat=$sub "$SRC" "$IN/$sub/d.vmdk" || fail "qemu-img convert $sub"
done
mkdir -p "$IN/zg"
"$QEMU_IMG" convert -O vmdk -o zeroed_grain=on "$SRC" "$IN/zg/d.vmdk"
"$QEMU_IO" -f vmdk -c 'write -z 0 128k' -c 'write -P 0x61 3M 4k' "$IN/zg/d.vmdk" >/dev/null ||
    fail "qemu-io on zg"

# ---- reading what qemu-img makes
for sub in $SUBS zg; do
    same_ro "info $sub" info "$sub/d.vmdk"
    same_ro "info json $sub" info --output=json "$sub/d.vmdk"
    same_ro "map $sub" map "$sub/d.vmdk"
    same_ro "map json $sub" map --output=json "$sub/d.vmdk"
    same_ro "check $sub" check "$sub/d.vmdk"
    same_ro "check json $sub" check --output=json "$sub/d.vmdk"
    same_ro "compare $sub" compare "$sub/d.vmdk" "$SRC"
    rm -f "$SCRATCH/out.raw"
    "$QIMG" convert -O raw "$IN/$sub/d.vmdk" "$SCRATCH/out.raw"
    if [ $sub = zg ]; then
        "$QEMU_IMG" compare -q "$IN/$sub/d.vmdk" "$SCRATCH/out.raw"
        check "guest bytes of $sub" test $? = 0
    else
        check "guest bytes of $sub" cmp -s "$SCRATCH/out.raw" "$SRC"
    fi
done
same_ro "info -f vmdk" info -f vmdk monolithicSparse/d.vmdk
same_ro "info absolute name" info "$IN/twoGbMaxExtentFlat/d.vmdk"

# ---- create: every subformat and option, qemu-img's files but for the CID
n=0
for opts in "" subformat=monolithicFlat subformat=twoGbMaxExtentSparse subformat=twoGbMaxExtentFlat \
            zeroed_grain=on,adapter_type=lsilogic,hwversion=10,toolsversion=7 \
            compat6=on,adapter_type=legacyESX adapter_type=buslogic,subformat=twoGbMaxExtentFlat; do
    sizes="100M 2049M"
    case $opts in "" | subformat=twoGbMaxExtentFlat) sizes="100M 2049M 1000" ;; esac
    for size in $sizes; do
        n=$((n + 1))
        o=(); [ -z "$opts" ] || o=(-o "$opts")
        rm -rf "$SCRATCH/c.ref" "$SCRATCH/c.new" && mkdir -p "$SCRATCH/c.ref" "$SCRATCH/c.new"
        "$QEMU_IMG" create -f vmdk "${o[@]}" "$SCRATCH/c.ref/x.vmdk" $size >"$SCRATCH/c.ref.out" 2>&1
        "$QIMG_AS_QEMU" create -f vmdk "${o[@]}" "$SCRATCH/c.new/x.vmdk" $size >"$SCRATCH/c.new.out" 2>&1
        expect_eq "create $opts $size: output" "$(sed 's/c\.new/c.ref/' "$SCRATCH/c.new.out")" \
            "$(cat "$SCRATCH/c.ref.out")"
        same_files "create $opts $size: files" "$SCRATCH/c.ref" "$SCRATCH/c.new"
        check "create $opts $size: qemu-img check" "$QEMU_IMG" check "$SCRATCH/c.new/x.vmdk"
    done
done
# errors, as qemu-img's
rm -rf "${IN:?}/e" && mkdir -p "$IN/e" && "$QEMU_IMG" create -q -f vmdk "$IN/e/base.vmdk" 1M
"$QEMU_IMG" create -q -f qcow2 "$IN/e/q.qcow2" 1M
same "create: bad adapter" create -f vmdk -o adapter_type=IDE e/x.vmdk 1M
same "create: bad subformat" create -f vmdk -o subformat=vmfs e/x.vmdk 1M
same "create: compat6 and hwversion" create -f vmdk -o compat6=on,hwversion=4 e/x.vmdk 1M
same "create: flat with backing" create -f vmdk -o subformat=monolithicFlat -b base.vmdk -F vmdk e/x.vmdk
same "create: flat zeroed grain" create -f vmdk -o subformat=twoGbMaxExtentFlat,zeroed_grain=on e/x.vmdk 1M
same "create: qcow2 backing" create -f vmdk -b q.qcow2 -F qcow2 e/x.vmdk
same "create: zero size opens as qemu" create -f vmdk e/z.vmdk 0
same "info of a zero-sized image" info e/base.vmdk

# ---- qimg writes: convert raw -> vmdk as qemu-img lays it out
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    for c in "" -c; do
        rm -rf "$SCRATCH/w.ref" "$SCRATCH/w.new" && mkdir -p "$SCRATCH/w.ref" "$SCRATCH/w.new"
        "$QEMU_IMG" convert $c -O vmdk -o subformat=$sub "$SRC" "$SCRATCH/w.ref/x.vmdk" 2>"$SCRATCH/w.ref.err"
        rc_ref=$?
        "$QIMG_AS_QEMU" convert $c -O vmdk -o subformat=$sub "$SRC" "$SCRATCH/w.new/x.vmdk" 2>"$SCRATCH/w.new.err"
        expect_eq "convert $c to $sub: exit code" $? $rc_ref
        expect_eq "convert $c to $sub: messages" "$(sed 's/w\.new/w.ref/g' "$SCRATCH/w.new.err")" \
            "$(cat "$SCRATCH/w.ref.err")"
        same_files "convert $c to $sub: qemu-img's files" "$SCRATCH/w.ref" "$SCRATCH/w.new"
        [ $rc_ref = 0 ] || continue    # -c into a flat extent: "invalid cluster size"
        check "convert $c to $sub: qemu-img check" "$QEMU_IMG" check "$SCRATCH/w.new/x.vmdk"
        check "convert $c to $sub: qemu-img compare" "$QEMU_IMG" compare "$SCRATCH/w.new/x.vmdk" "$SRC"
    done
done
# zeroed grains: zero writes over whole grains (qemu-img convert -n does them)
rm -rf "$SCRATCH/z.ref" "$SCRATCH/z.new" && mkdir -p "$SCRATCH/z.ref" "$SCRATCH/z.new"
for d in z.ref z.new; do
    "$QEMU_IMG" convert -O vmdk -o zeroed_grain=on "$SRC" "$SCRATCH/$d/x.vmdk"
done
truncate -s 7M "$SCRATCH/zero.raw"
"$QEMU_IMG" convert -n -O vmdk "$SCRATCH/zero.raw" "$SCRATCH/z.ref/x.vmdk"
"$QIMG" convert -n -O vmdk "$SCRATCH/zero.raw" "$SCRATCH/z.new/x.vmdk"
same_files "convert -n zeros into zeroed_grain=on" "$SCRATCH/z.ref" "$SCRATCH/z.new"
check "zeroed grains read as zeros" "$QEMU_IMG" compare "$SCRATCH/z.new/x.vmdk" "$SCRATCH/zero.raw"
# the CID changes on the first write, as qemu's: a descriptor file is padded to a sector
sub=twoGbMaxExtentFlat
rm -rf "$SCRATCH/cid" && mkdir -p "$SCRATCH/cid"
"$QEMU_IMG" create -q -f vmdk -o subformat=$sub "$SCRATCH/cid/x.vmdk" 1M
cid0=$(grep '^CID' "$SCRATCH/cid/x.vmdk")
"$QIMG" convert -n -O vmdk "$SRC" "$SCRATCH/cid/x.vmdk" 2>/dev/null   # a longer source: fails
printf 'hello' > "$SCRATCH/h.raw" && truncate -s 1M "$SCRATCH/h.raw"
"$QIMG" convert -n -O vmdk "$SCRATCH/h.raw" "$SCRATCH/cid/x.vmdk"
check "a write changes the CID" test "$(grep -a '^CID' "$SCRATCH/cid/x.vmdk")" != "$cid0"
expect_eq "descriptor padded to a sector" "$(stat -c %s "$SCRATCH/cid/x.vmdk")" 512
check "qemu-img reads it" "$QEMU_IMG" compare "$SCRATCH/cid/x.vmdk" "$SCRATCH/h.raw"

# ---- a 3-deep delta chain made by qemu-img
rm -rf "${IN:?}/chain" && mkdir -p "$IN/chain"
(cd "$IN/chain" && "$QEMU_IMG" create -q -f vmdk base.vmdk 4M &&
    "$QEMU_IO" -f vmdk -c 'write -P 1 0 1M' -c 'write -P 2 3M 64k' base.vmdk >/dev/null &&
    "$QEMU_IMG" create -q -f vmdk -b base.vmdk -F vmdk mid.vmdk &&
    "$QEMU_IO" -f vmdk -c 'write -P 3 512k 64k' -c 'write -P 4 2M 4k' mid.vmdk >/dev/null &&
    "$QEMU_IMG" create -q -f vmdk -b mid.vmdk -F vmdk top.vmdk &&
    "$QEMU_IO" -f vmdk -c 'write -P 5 3M 512' top.vmdk >/dev/null) || fail "make the chain"
same_ro "chain: info" info chain/top.vmdk
same_ro "chain: info --backing-chain" info --backing-chain chain/top.vmdk
same_ro "chain: info json" info --output=json chain/top.vmdk
same_ro "chain: map" map chain/top.vmdk
same_ro "chain: map json" map --output=json chain/top.vmdk
same "chain: convert" convert -O raw chain/top.vmdk out.raw
same_ro "chain: compare with itself through qemu-img" compare chain/top.vmdk chain/top.vmdk
"$QEMU_IMG" convert -O raw "$IN/chain/top.vmdk" "$SCRATCH/chain.ref.raw"
rm -f "$SCRATCH/chain.raw" && "$QIMG" convert -O raw "$IN/chain/top.vmdk" "$SCRATCH/chain.raw"
check "chain: guest bytes" cmp -s "$SCRATCH/chain.raw" "$SCRATCH/chain.ref.raw"
# a delta disk made by qimg over a qemu-img base, written by qimg
rm -rf "$SCRATCH/d" && mkdir -p "$SCRATCH/d" && cp "$IN/chain/base.vmdk" "$SCRATCH/d/"
(cd "$SCRATCH/d" && "$QIMG" create -q -f vmdk -b base.vmdk -F vmdk top.vmdk &&
    "$QIMG" bench -w -c 1 -o 4096 -s 512 --pattern=0x61 -f vmdk top.vmdk >/dev/null) ||
    fail "qimg delta disk: create and write"
check "qimg delta disk: its write and the parent's data around it" "$QEMU_IO" -f vmdk \
    -c 'read -P 0x61 4096 512' -c 'read -P 1 0 4096' -c 'read -P 1 4608 60k' "$SCRATCH/d/top.vmdk"
check "qimg delta disk: qemu-img check" "$QEMU_IMG" check "$SCRATCH/d/top.vmdk"
expect_eq "qimg delta disk: parent CID" \
    "$(grep -a '^parentCID' "$SCRATCH/d/top.vmdk")" "$(grep -a '^CID' "$SCRATCH/d/base.vmdk" | sed 's/^/parent/')"
# a parent changed after the child was made: reads of the child fail, as in qemu
rm -rf "${IN:?}/stale" && cp -a "$IN/chain" "$IN/stale"
"$QEMU_IO" -f vmdk -c 'write -P 9 0 512' "$IN/stale/mid.vmdk" >/dev/null
same "chain: stale parent CID" convert -m 1 -O raw stale/top.vmdk out.raw
ref_rc "chain: stale parent CID" 1

# ---- descriptors written by hand: ZERO and RDONLY extents, VMFS, CRLF
rm -rf "${IN:?}/hand" && mkdir -p "$IN/hand"
head -c 1M "$SRC" > "$IN/hand/a.bin"
tail -c 1M "$SRC" > "$IN/hand/b.bin"
desc() {   # desc FILE CREATE-TYPE EXTENT-LINES...
    local f=$1 t=$2; shift 2
    { printf '# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType="%s"\n\n# Extent description\n' "$t"
      printf '%s\n' "$@"; } > "$IN/hand/$f"
}
desc flat.vmdk monolithicFlat 'RW 2048 FLAT "a.bin" 0' 'RW 1024 FLAT "b.bin" 1024'
desc vmfs.vmdk vmfs 'RW 2048 VMFS "a.bin"'
desc zero.vmdk monolithicFlat 'RW 2048 FLAT "a.bin" 0' 'RW 4096 ZERO' 'RDONLY 2048 FLAT "b.bin" 0'
desc badline.vmdk vmfs 'RW 2048 VMFS "a.bin" 1'
desc badtype.vmdk monolithicSparse 'RW 2048 FLAT "a.bin" 0'
sed 's/$/\r/' "$IN/hand/flat.vmdk" > "$IN/hand/crlf.vmdk"
for f in flat vmfs crlf; do
    same_ro "hand: info $f" info hand/$f.vmdk
    same_ro "hand: map $f" map --output=json hand/$f.vmdk
    same "hand: convert $f" convert -O raw hand/$f.vmdk out.raw
done
same_ro "hand: invalid extent line" info hand/badline.vmdk
same_ro "hand: unsupported create type" info hand/badtype.vmdk
python3 - "$SRC" "$SCRATCH/zero.ref" <<'PY'
import sys
s = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(s[:1 << 20] + bytes(2 << 20) + s[-(1 << 20):])
PY
rm -f "$SCRATCH/zero.out" && "$QIMG" convert -O raw "$IN/hand/zero.vmdk" "$SCRATCH/zero.out"
check "ZERO and RDONLY extents read (qemu-img skips them)" cmp -s "$SCRATCH/zero.out" "$SCRATCH/zero.ref"
expect_eq "ZERO extent in map" \
    "$("$QIMG" map --output=json "$IN/hand/zero.vmdk" | sed -n 2p)" \
    '{ "start": 1048576, "length": 2097152, "depth": 0, "present": true, "zero": true, "data": false},'
out=$("$QIMG" bench -w -c 1 -o $((6000 * 512)) -s 512 -f vmdk "$IN/hand/zero.vmdk" 2>&1 >/dev/null)
expect_eq "RDONLY extent refuses writes" "$out" \
    "qimg: Failed request: Permission denied"
out=$("$QIMG" bench -w -c 1 -o $((512 * 512)) -s 512 --pattern=0x61 -f vmdk "$IN/hand/zero.vmdk" 2>&1)
check "RW extent of the same disk takes writes" cmp -s <(head -c $((512 * 513)) "$IN/hand/a.bin" | tail -c 512) \
    <(printf 'a%.0s' $(seq 512))
check "RDONLY extent: its file untouched" cmp -s "$IN/hand/b.bin" <(tail -c 1M "$SRC")

# ---- extents outside the image's directory are refused (CVE-2024-32498)
rm -rf "$SCRATCH/cve" && mkdir -p "$SCRATCH/cve/d"
echo secret > "$SCRATCH/cve/x"
ln -s ../x "$SCRATCH/cve/d/link"
mkfifo "$SCRATCH/cve/d/fifo"
mkdir -p "$SCRATCH/cve/d/dir"
cvedesc() { printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n# Extent description\nRW 2 FLAT "%s" 0\n' "$2" > "$SCRATCH/cve/d/$1"; }
cvedesc abs.vmdk /etc/passwd
cvedesc up.vmdk ../x
cvedesc link.vmdk link
cvedesc dev.vmdk /dev/zero
cvedesc fifo.vmdk fifo
cvedesc dir.vmdk dir
cvedesc deep.vmdk dir/../../x
for f in abs up link dev fifo dir deep; do
    out=$(timeout 5 "$QIMG" info "$SCRATCH/cve/d/$f.vmdk" 2>&1); rc=$?
    expect_eq "extent $f refused (exit 1)" $rc 1
    case $out in *secret* | *root:*) fail "extent $f: content shown" ;; *) pass "extent $f: no content shown" ;; esac
    out=$(timeout 5 "$QIMG" convert -O raw "$SCRATCH/cve/d/$f.vmdk" "$SCRATCH/cve/out.raw" 2>&1); rc=$?
    expect_eq "convert with extent $f refused" $rc 1
done
out=$(QIMG_ALLOW_EXTERNAL_EXTENTS=1 "$QIMG" convert -O raw "$SCRATCH/cve/d/up.vmdk" "$SCRATCH/cve/out.raw" 2>&1)
check "QIMG_ALLOW_EXTERNAL_EXTENTS=1 allows ../x" cmp -s <(head -c 7 "$SCRATCH/cve/out.raw") "$SCRATCH/cve/x"
check "extents.0.filename names it" "$QIMG" info \
    "json:{\"file.filename\":\"$SCRATCH/cve/d/up.vmdk\",\"extents.0.filename\":\"$SCRATCH/cve/x\"}"

# ---- hostile headers: qemu-img's message, or a clear error; fast, bounded
"$QEMU_IMG" create -q -f vmdk "$SCRATCH/h.vmdk" 64M
"$QEMU_IO" -f vmdk -c 'write -P 1 0 64k' "$SCRATCH/h.vmdk" >/dev/null
hostile() {   # NAME OFFSET BITS VALUE [OUR-ERROR]: a damaged copy, read by both
    local name=$1 out
    rm -rf "${IN:?}/host" && mkdir -p "$IN/host" && cp "$SCRATCH/h.vmdk" "$IN/host/h.vmdk"
    le "$IN/host/h.vmdk" "$2" "$3" "$4"
    if [ $# -ge 5 ]; then
        # qemu-img gets it wrong (see the report): qimg refuses at open
        out=$("$QIMG_AS_QEMU" info "$IN/host/h.vmdk" 2>&1)
        expect_eq "hostile $name: refused" "$out" "qemu-img: Could not open '$IN/host/h.vmdk': $5"
    else
        same_ro "hostile $name: info" info host/h.vmdk
        same "hostile $name: convert" convert -O raw host/h.vmdk out.raw
    fi
    local t0=$SECONDS
    (ulimit -v 1048576; timeout 2 "$QIMG" convert -O raw "$IN/host/h.vmdk" "$SCRATCH/h.out" 2>/dev/null)
    check "hostile $name: within 2 s and 1 GiB" test $? -le 1 -a $((SECONDS - t0)) -le 2
}
hostile version4 4 32 4
hostile "grain 1 GiB+" 20 64 0x200080
hostile "grain 0" 20 64 0
hostile "huge grain" 20 64 0xffffffffffffff
hostile "gtes 513" 44 32 513
hostile "gtes 0" 44 32 0
hostile "capacity 2^62" 12 64 0x4000000000000000 "L1 size too big"
hostile "capacity huge, L1 too big" 12 64 0x1000000000000 "L1 size too big"
hostile "capacity, L1 just too big" 12 64 $(((32 << 20) * 65536 + 1)) "L1 size too big"
hostile "grain offset past EOF" 64 64 0x100000
hostile "GD past EOF" 56 64 0x10000000
hostile "GD at 2^60" 56 64 0x1000000000000000
hostile "GD at end, no footer" 56 64 0xffffffffffffffff
hostile "GT past EOF" $((26 * 512 + 512)) 32 0x7fffffff
hostile "GTE past EOF" $((27 * 512)) 32 0x7ffffff0
hostile "GTE zeroed without the flag" $((27 * 512)) 32 1
same_ro "hostile GTE past EOF: check" check host/h.vmdk
# version 3 (changed block tracking) opens read-only only
rm -rf "${IN:?}/host" && mkdir -p "$IN/host" && cp "$SCRATCH/h.vmdk" "$IN/host/h.vmdk"
le "$IN/host/h.vmdk" 4 32 3
same "version 3 read-write" convert -n -O vmdk host/h.vmdk host/h.vmdk
same_ro "version 3 read-only" info host/h.vmdk
# descriptors: missing CID, tiny file, a descriptor inside the descriptor's extent
printf 'version=1\ncreateType="monolithicFlat"\nRW 2 FLAT "a.bin" 0\n' > "$IN/hand/nocid.vmdk"
same_ro "descriptor without CID" info hand/nocid.vmdk
printf 'KDM' > "$IN/hand/tiny.vmdk"
same_ro "3-byte file" info -f vmdk hand/tiny.vmdk

# ---- an independent reader: libvmdk reads what qimg writes
PY3=python3
python3 -c 'import pyvmdk' 2>/dev/null || PY3=/usr/bin/python3
if $PY3 -c 'import pyvmdk' 2>/dev/null; then
    for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
        rm -rf "$SCRATCH/lv" && mkdir -p "$SCRATCH/lv"
        "$QIMG" convert -O vmdk -o subformat=$sub "$SRC" "$SCRATCH/lv/x.vmdk"
        got=$($PY3 - "$SCRATCH/lv/x.vmdk" <<'PY'
import hashlib, sys, pyvmdk
h = pyvmdk.handle()
h.open(sys.argv[1])
h.open_extent_data_files()
n = h.get_media_size()
d = hashlib.sha256()
off = 0
while off < n:
    d.update(h.read_buffer_at_offset(min(1 << 20, n - off), off))
    off += 1 << 20
print(d.hexdigest())
PY
)
        expect_eq "libvmdk reads qimg's $sub" "$got" "$(sha256sum < "$SRC" | cut -d' ' -f1)"
    done
else
    SKIP_WHAT="libvmdk reads qimg's files" skip "python3-libvmdk (pyvmdk) missing"
fi

# ---- a real image: ESXi's sparse extent with a version 3 header
T=$TOP/../shared/testdata/iotest-version3.vmdk.bz2
if [ -f "$T" ] && has_cmd "ESXi version 3 image" bzcat; then
    bzcat "$T" > "$IN/v3.vmdk"
    same_ro "v3: info" info v3.vmdk
    same_ro "v3: map" map --output=json v3.vmdk
    same_ro "v3: check" check v3.vmdk
    rm -f "$SCRATCH/v3.raw" && "$QIMG" convert -O raw "$IN/v3.vmdk" "$SCRATCH/v3.raw"
    expect_eq "v3: content" "$(sha256sum < "$SCRATCH/v3.raw" | cut -c1-16)" 0859bb3397bc1d30
elif [ ! -f "$T" ]; then
    SKIP_WHAT="ESXi version 3 image" skip "missing $T"
fi

# ---- resize (qemu-img resizes no vmdk): grow sparse and flat; shrink refused
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat zeroed_grain; do
    o=subformat=$sub; [ $sub = zeroed_grain ] && o=zeroed_grain=on
    rm -rf "$SCRATCH/rs" && mkdir -p "$SCRATCH/rs"
    "$QEMU_IMG" create -q -f vmdk -o $o "$SCRATCH/rs/a.vmdk" 4M
    "$QEMU_IO" -f vmdk -c 'write -P 1 0 1M' -c 'write -P 2 4095k 1k' "$SCRATCH/rs/a.vmdk" >/dev/null
    "$QEMU_IMG" convert -O raw "$SCRATCH/rs/a.vmdk" "$SCRATCH/rs/ref.raw"
    for to in +1M 1G; do
        out=$("$QIMG_AS_QEMU" resize "$SCRATCH/rs/a.vmdk" $to 2>&1)
        expect_eq "resize $sub $to" "$out" "Image resized."
        truncate -s $to "$SCRATCH/rs/ref.raw"
        check "resize $sub $to: qemu-img check" "$QEMU_IMG" check "$SCRATCH/rs/a.vmdk"
        check "resize $sub $to: qemu-img compare" "$QEMU_IMG" compare "$SCRATCH/rs/a.vmdk" "$SCRATCH/rs/ref.raw"
    done
    "$QEMU_IO" -f vmdk -c 'write -P 7 1023M 64k' "$SCRATCH/rs/a.vmdk" >/dev/null
    check "resize $sub: qemu-io writes the new part" "$QEMU_IO" -f vmdk -c 'read -P 7 1023M 64k' "$SCRATCH/rs/a.vmdk"
    if $PY3 -c 'import pyvmdk' 2>/dev/null; then
        got=$($PY3 -c 'import sys, pyvmdk
h = pyvmdk.handle(); h.open(sys.argv[1]); h.open_extent_data_files()
print(h.get_media_size(), h.read_buffer_at_offset(4, (1023 << 20)).hex())' "$SCRATCH/rs/a.vmdk")
        expect_eq "resize $sub: libvmdk reads it" "$got" "1073741824 07070707"
    fi
    out=$("$QIMG_AS_QEMU" resize --shrink "$SCRATCH/rs/a.vmdk" 2M 2>&1)
    expect_eq "resize $sub: shrink refused as qemu-img" "$out" \
        "qemu-img: Image format driver does not support resize"
done
# growing past a twoGbMaxExtent disk's last extent: t-vmdk-grow.sh

# ---- measure (qemu-img measures no vmdk): qemu-img's layout is "required" big
jf() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }
for size in 1G 3T; do
    m=$("$QIMG_AS_QEMU" measure --output=json -O vmdk --size $size)
    rm -f "$SCRATCH/m.vmdk" && "$QEMU_IMG" create -q -f vmdk "$SCRATCH/m.vmdk" $size
    expect_eq "measure --size $size: required" "$(echo "$m" | jf required)" "$(stat -c %s "$SCRATCH/m.vmdk")"
done
for sub in monolithicSparse twoGbMaxExtentSparse monolithicFlat; do
    m=$("$QIMG_AS_QEMU" measure --output=json -O vmdk -o subformat=$sub "$SRC")
    rm -rf "$SCRATCH/ms" && mkdir -p "$SCRATCH/ms"
    "$QIMG" convert -O vmdk -o subformat=$sub "$SRC" "$SCRATCH/ms/x.vmdk"
    total=$(cat "$SCRATCH/ms"/* | wc -c)
    check "measure $sub: a copy fits in required" test "$total" -le "$(echo "$m" | jf required)"
    check "measure $sub: required <= fully allocated" \
        test "$(echo "$m" | jf required)" -le "$(echo "$m" | jf fully-allocated)"
done

# ---- a partial write to a later extent of a delta disk copies the rest of
# its grain from the parent at the guest offset (qemu-img uses the offset
# inside the extent: it would copy the parent's first grain here)
rm -rf "$SCRATCH/cow" && mkdir -p "$SCRATCH/cow"
(cd "$SCRATCH/cow" && "$QEMU_IMG" create -q -f vmdk base.vmdk 3G &&
    "$QEMU_IO" -f vmdk -c 'write -P 0x11 0 64k' -c 'write -P 0x22 2G 64k' base.vmdk >/dev/null &&
    "$QEMU_IMG" create -q -f vmdk -o subformat=twoGbMaxExtentSparse -b base.vmdk -F vmdk top.vmdk &&
    "$QIMG" bench -w -c 1 -o $((2 << 30)) -s 512 --pattern=0x33 -f vmdk top.vmdk >/dev/null) ||
    fail "write into the second extent of a delta disk"
expect_eq "partial grain of a later extent: the parent's bytes at the guest offset" \
    "$("$QEMU_IO" -f vmdk -c 'read -v 2147484160 4' "$SCRATCH/cow/top.vmdk" | head -1 | cut -c1-22)" \
    "80000200:  22 22 22 22"
check "partial grain of a later extent: qemu-img check" "$QEMU_IMG" check "$SCRATCH/cow/top.vmdk"
