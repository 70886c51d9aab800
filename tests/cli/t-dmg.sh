#!/bin/bash
# The dmg format (read-only): the real image of shared/testdata and images
# built from the specification by tests/cli/dmg-craft.py (property list or
# resource fork, several partitions, comment entries; raw, zero, ignore,
# zlib, bzip2 and ADC chunks) read the same by both tools where qemu reads
# them (info, map, compare, convert) and byte for byte against their
# source; bzip2 and ADC, which qemu 7.2 on Debian cannot read, against the
# source only; LZFSE refused by name; hostile trailers and tables.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1
CRAFT=$TOP/tests/cli/dmg-craft.py
has_pymod dmg-craft plistlib bz2 zlib || exit 0

# same_dmg NAME ARGS...: same_ro, without the lines Debian's qemu-img
# prints on every dmg open about its missing bzip2 and lzfse modules; qimg
# must print nothing of the kind
NOISE='^qemu: module block-block-dmg-'
same_dmg() {
    local name=$1; shift
    local a=$SCRATCH/ro.ref b=$SCRATCH/ro.new
    mkdir -p "$a" "$b"
    (cd "$IN" && "$QEMU_IMG" "$@" >"$a/out" 2>"$a/err.raw"; echo $? >"$a/rc")
    (cd "$IN" && "$QIMG_AS_QEMU" "$@" >"$b/out" 2>"$b/err"; echo $? >"$b/rc")
    grep -v "$NOISE" "$a/err.raw" > "$a/err"
    judge_runs "$name" "$a" "$b" "$@"
}

said() {   # said NAME TEXT: the last fails_bounded run's message holds TEXT
    if grep -qF "$2" "$SCRATCH/b.err"; then pass "$1"; else fail "$1" "$(cat "$SCRATCH/b.err")"; fi
}

# a source with random data, zeros and text (3 MiB and a partial sector)
SRC=$SCRATCH/src.raw
{ head -c 700000 /dev/urandom; head -c 900000 /dev/zero; seq 1 200000; } > "$SRC"
truncate -s 3200100 "$SRC"
PAD=$SCRATCH/pad.raw
cp "$SRC" "$PAD" && truncate -s $(( (3200100 + 511) / 512 * 512 )) "$PAD"

# ------------------------------------------ the real image
if [ -r "$TOP/../shared/testdata/simple-dmg.dmg.bz2" ] && has_cmd real-image bzcat; then
    rm -rf "${IN:?}"/*
    bzcat "$TOP/../shared/testdata/simple-dmg.dmg.bz2" > s.dmg
    same_dmg "real info" info s.dmg
    same_dmg "real info json" info --output=json s.dmg
    same_dmg "real map" map s.dmg
    same_dmg "real map json" map --output=json s.dmg
    same_dmg "real check" check s.dmg
    same_dmg "real refuses writing" resize s.dmg +1M
    "$QIMG" convert -O raw s.dmg s.raw 2>err || fail "real convert"
    expect_eq "real content" "$(sha256sum s.raw | cut -c1-16)" 20647e0a98a830a6
    expect_eq "real convert prints nothing" "$(cat err)" ""
    "$QEMU_IMG" convert -O raw s.dmg q.raw 2>/dev/null
    check "real content as qemu reads it" cmp s.raw q.raw
else
    SKIP_WHAT=real-image skip "../shared/testdata/simple-dmg.dmg.bz2 missing"
fi

# ------------------------------------------ images qemu reads too
for v in "raw:100" "zlib:256,raw:100,zero:50,ignore:20" "zlib:2048,zero:7" \
         "zlib:256 --rsrc" "zlib:64,raw:3 --parts 3" "zlib:300,raw:5 --comment --parts 2" \
         "raw:16,zlib:16 --rsrc --parts 4"; do
    set -- $v
    rm -rf "${IN:?}"/*
    "$DEB_PYTHON" "$CRAFT" "$SRC" t.dmg "$@" || { fail "craft $v"; continue; }
    same_dmg "$v info" info t.dmg
    same_dmg "$v info json" info --output=json t.dmg
    same_dmg "$v map" map t.dmg
    same_dmg "$v map json" map --output=json t.dmg
    same_dmg "$v compare" compare -f dmg -F raw t.dmg "$PAD"
    check "$v convert" "$QIMG" convert -O raw t.dmg from.raw
    check "$v content" cmp from.raw "$PAD"
    check "$v convert -m 16 -W to qcow2" "$QIMG" convert -m 16 -W -O qcow2 t.dmg from.qcow2
    check "$v qcow2 content" "$QEMU_IMG" compare -f raw -F qcow2 "$PAD" from.qcow2
    check "$v dd odd pieces" "$QIMG" dd if=t.dmg of=dd.raw bs=3000 -O raw
    check "$v dd content" cmp dd.raw "$PAD"
done

# ------------------------------------------ bzip2 and ADC (beyond qemu 7.2)
for v in "bzip2:300" "adc:64" "adc:7,zlib:13,bzip2:29,raw:3,zero:5" "adc:100,bzip2:50 --rsrc --parts 2"; do
    set -- $v
    rm -rf "${IN:?}"/*
    "$DEB_PYTHON" "$CRAFT" "$SRC" t.dmg "$@" || { fail "craft $v"; continue; }
    # qemu warns it cannot read the chunks; qimg prints only what qemu prints on stdout
    expect_eq "$v info" "$("$QIMG_AS_QEMU" info t.dmg 2>&1)" "$("$QEMU_IMG" info t.dmg 2>/dev/null)"
    "$QIMG" convert -O raw t.dmg from.raw 2>err
    expect_eq "$v convert" "$?:$(cat err)" "0:"
    check "$v content" cmp from.raw "$PAD"
    check "$v dd odd pieces" "$QIMG" dd if=t.dmg of=dd.raw bs=5000 -O raw
    check "$v dd content" cmp dd.raw "$PAD"
done
check_fail "qemu-img 7.2 cannot read bzip2 or ADC chunks" "$QEMU_IMG" convert -O raw t.dmg q.raw

# ------------------------------------------ LZFSE: refused by name
rm -rf "${IN:?}"/*
"$DEB_PYTHON" "$CRAFT" "$SRC" t.dmg zlib:100,lzfse:100
fails_bounded "lzfse convert fails" "$QIMG" convert -O raw t.dmg out.raw
said "lzfse named" "LZFSE-compressed chunks (type 0x80000007)"

# ------------------------------------------ probing by the trailer (beyond qemu)
"$DEB_PYTHON" "$CRAFT" "$SRC" t.dmg zlib:100
cp t.dmg t.img
expect_eq "probed by its trailer" "$("$QIMG" info --output=json t.img |
    sed -n 's/.*"format": "\(.*\)".*/\1/p')" dmg
expect_eq "qemu-img probes it as raw" "$("$QEMU_IMG" info --output=json t.img 2>/dev/null |
    sed -n 's/.*"format": "\(.*\)".*/\1/p')" raw

# ------------------------------------------ hostile images
rm -rf "${IN:?}"/*
"$DEB_PYTHON" - "$CRAFT" <<'PY'
import importlib.util, plistlib, struct, sys, zlib
spec = importlib.util.spec_from_file_location("dc", sys.argv[1])
dc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dc)
R, Z, LAST = 1, 0x80000005, 0xffffffff
raw = bytes(range(256)) * 2

def build(name, blocks, body, sectors=2, xml=None, koly=None):
    if xml is None:
        xml = plistlib.dumps({"resource-fork": {"blkx": [
            {"Attributes": "0x0050", "CFName": "p", "Data": b, "ID": "0", "Name": "p"} for b in blocks]}})
    k = koly or dc.koly(len(body), 0, 0, len(body), len(xml), sectors)
    open(name, "wb").write(body + xml + k)

def one(chunks, sectors=2):
    return [dc.mish(0, sectors, chunks + [(LAST, 0, sectors, 0, 0, 0)])]

build("gap.dmg", one([(R, 0, 0, 1, 0, 512), (R, 0, 3, 1, 512, 512)], 4), raw + raw, 4)
build("unsorted.dmg", one([(R, 0, 1, 1, 512, 512), (R, 0, 0, 1, 0, 512)]), raw + raw)
build("overlap.dmg", one([(R, 0, 0, 2, 0, 1024), (R, 0, 1, 1, 512, 512)]), raw + raw)
build("hugecount.dmg", one([(R, 0, 0, 200000, 0, 1024)]), raw + raw)
build("hugelen.dmg", one([(Z, 0, 0, 2, 0, 100 << 20)]), raw + raw)
build("pasteof.dmg", one([(R, 0, 0, 2, 1 << 30, 1024)]), raw + raw)
build("rawshort.dmg", one([(R, 0, 0, 2, 0, 100)]), raw + raw)
bomb = zlib.compress(bytes(64 << 20))
build("bomb.dmg", one([(Z, 0, 0, 2, 0, len(bomb))]), bomb)
small = zlib.compress(bytes(100))
build("shortz.dmg", one([(Z, 0, 0, 2, 0, len(small))]), small)
build("badz.dmg", one([(Z, 0, 0, 2, 0, 1024)]), raw + raw)
build("nochunks.dmg", [dc.mish(0, 0, [])], b"")
build("noblkx.dmg", [], b"")
m = one([(R, 0, 0, 2, 0, 1024)])[0]
build("countlie.dmg", [m[:200] + struct.pack(">I", 0x7fffffff) + m[204:]], raw + raw)
build("cutmish.dmg", [m[:100]], raw + raw)
build("hugedisk.dmg", one([(R, 0, 0, 2, 0, 1024)]), raw + raw, 1 << 62)
# the trailer lies about the property list, the fork, the sector count
good = plistlib.dumps({"resource-fork": {"blkx": [{"Data": m}]}})
build("xmlpast.dmg", None, raw + raw, xml=good, koly=dc.koly(1024, 0, 0, 1024, 1 << 40, 2))
build("xmlshort.dmg", None, raw + raw, xml=good, koly=dc.koly(1024, 0, 0, 1024, 100, 2))
build("rsrcpast.dmg", None, raw + raw, xml=b"", koly=dc.koly(1024, 0, 1 << 40, 0, 0, 2))
fork = bytearray(dc.resource_fork([m]))
struct.pack_into(">I", fork, 8, 0x7fffffff)
open("rsrclie.dmg", "wb").write(raw + raw + fork + dc.koly(1024, 1024, len(fork), 0, 0, 2))
fork = bytearray(dc.resource_fork([m]))
struct.pack_into(">I", fork, 256, 0x7ffffff0)
open("rsrcentry.dmg", "wb").write(raw + raw + fork + dc.koly(1024, 1024, len(fork), 0, 0, 2))
build("notxml.dmg", None, raw + raw, xml=b"<plist><dict><key>resource-fork</key" * 3)
build("deep.dmg", None, raw + raw, xml=b"<plist>" + b"<array>" * 100000 + b"</array>" * 100000 + b"</plist>")
build("emptykoly.dmg", None, b"", xml=b"", koly=b"koly" + bytes(508))
open("nokoly.dmg", "wb").write(bytes(2000))
open("tiny.dmg", "wb").write(b"koly")
PY
# qemu's own words where it says something sensible
for f in hugecount hugelen emptykoly nokoly tiny; do
    same_dmg "hostile $f" info $f.dmg
done
same_dmg "hostile gap: sectors in no chunk" convert -O raw gap.dmg out.raw
same_dmg "hostile bomb stops at the chunk's size" convert -O raw bomb.dmg out.raw
same_dmg "hostile short zlib chunk" convert -O raw shortz.dmg out.raw
same_dmg "hostile bad zlib chunk" convert -O raw badz.dmg out.raw
same_dmg "hostile entry count from the table's length" convert -O raw countlie.dmg out.raw
# beyond qemu: chunks in any order
"$QIMG" convert -O raw unsorted.dmg out.raw
"$QEMU_IMG" convert -O raw overlap.dmg ref.raw 2>/dev/null    # the first chunk's bytes, qemu's reading
check "unsorted chunks read" cmp out.raw ref.raw
# clear errors, bounded, where qemu crashes, reads zeros or overlaps
for c in "overlap:chunks overlap at sector 1" "pasteof:stored past the end of the file" \
         "rawshort:stores 100 bytes for 2 sectors" "nochunks:has no chunks" "noblkx:has no chunks" \
         "cutmish:too short" "hugedisk:too large" "xmlpast:lies past the end of the file" \
         "rsrcpast:lies past the end of the file" "rsrclie:data lies outside it" \
         "rsrcentry:runs past the fork's data" "notxml:not valid XML" "deep:not one qimg reads" \
         "xmlshort:not valid XML"; do
    f=${c%%:*}
    fails_bounded "hostile $f" "$QIMG" convert -O raw $f.dmg out.raw
    said "hostile $f named" "${c#*:}"
done
for f in gap bomb shortz badz; do
    fails_bounded "hostile $f bounded" "$QIMG" convert -O raw $f.dmg out.raw
done
