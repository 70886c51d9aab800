#!/bin/bash
# User-Mode Linux cow files (qemu-img 7.2 no longer knows the format, so the
# oracles are uml-utilities and the layout): files uml_mkcow makes (version
# 3) and files of every header version written from the layout
# (cow-craft.py) read through their backing file byte for byte, checked
# against uml_moo's merge; qimg's writes, create, convert -B, rebase and
# commit read back by uml_moo; create byte-identical to uml_mkcow; hostile
# headers refused with a message, bounded.
. "$(dirname "$0")/lib.sh"
has_cmd "uml-utilities" uml_mkcow uml_moo || exit 0
CRAFT=$TOP/tests/cli/cow-craft.py
cd "$SCRATCH" || exit 1

# moo COW OUT: uml_moo's merge of COW and its backing file (quietly)
moo() { rm -f "$2"; uml_moo "$1" "$2" >/dev/null 2>&1; }
# expect_data NAME IMAGE RAW: qimg reads IMAGE as RAW, byte for byte
expect_data() {
    rm -f out.raw
    if "$QIMG" convert -O raw "$2" out.raw && cmp -s out.raw "$3"; then pass "$1"
    else fail "$1" "$(cmp out.raw "$3" 2>&1)"; fi
}
# patterned FILE SIZE SEED: deterministic bytes
patterned() {
    python3 -c 'import sys; n, s = int(sys.argv[2]), int(sys.argv[3])
sys.stdout.buffer.write(bytes((i * 131 + s + i // 512) & 0xff for i in range(n)))' "$1" "$2" "$3" >"$1"
}
# expected RAW BASE OFF:LEN:BYTE...: BASE with the writes applied
expected() {
    local out=$1 base=$2; shift 2
    python3 - "$out" "$base" "$@" <<'PY'
import sys
d = bytearray(open(sys.argv[2], "rb").read())
for w in sys.argv[3:]:
    o, n, b = (int(x, 0) for x in w.split(":"))
    d[o:o + n] = bytes([b]) * n
open(sys.argv[1], "wb").write(d)
PY
}

patterned base.raw 1048576 7
patterned other.raw 1048576 9
uml_mkcow v3.cow base.raw >/dev/null || fail "uml_mkcow v3.cow"

# ---- reading what uml_mkcow writes
expect_data "uml_mkcow's cow reads as its backing file" v3.cow base.raw
expect_eq "info" "$("$QIMG_AS_QEMU" info v3.cow)" "image: v3.cow
file format: cow
virtual size: 1 MiB (1048576 bytes)
disk size: $("$QIMG_AS_QEMU" info --output=json v3.cow | sed -n 's/.*"actual-size": \([0-9]*\).*/\1/p' |
    python3 -c 'import sys; n = int(sys.stdin.read()); print("%d KiB" % (n // 1024))')
backing file: $SCRATCH/base.raw
backing file format: raw"
"$QIMG_AS_QEMU" info --output=json v3.cow >info.json
check "info json: the backing file and format" python3 -c '
import json, sys
i = json.load(open("info.json"))
assert i["format"] == "cow" and i["virtual-size"] == 1048576, i
assert i["backing-filename"] == sys.argv[1] and i["backing-filename-format"] == "raw", i' "$SCRATCH/base.raw"
expect_eq "map of an empty cow: all from the backing file" "$("$QIMG_AS_QEMU" map --output=json v3.cow)" \
    '[{ "start": 0, "length": 1048576, "depth": 1, "present": true, "zero": false, "data": true, "offset": 0}]'
expect_eq "probed as cow" "$("$QIMG" info v3.cow | sed -n 's/^file format: //p')" cow

# ---- writes (partial sectors, runs over bitmap bytes), read by uml_moo
cp v3.cow w.cow
W=(0:4096:0x11 100:10:0x22 5000:1:0x33 65536:70000:0x44 1048000:576:0x55)
qimg_io w.cow "w:${W[0]}" "w:${W[1]}" "w:${W[2]}" "w:${W[3]}" "w:${W[4]}" || fail "qimg writes into w.cow"
expected want.raw base.raw "${W[@]}"
expect_data "writes read back through the backing file" w.cow want.raw
moo w.cow moo.raw
check "uml_moo merges what qimg wrote" cmp -s moo.raw want.raw
"$QIMG" map --output=json w.cow >map.json
check "map: written sectors at their data offset, the rest from the backing file" python3 -c '
import json
m = json.load(open("map.json"))
raw, img = open("want.raw", "rb").read(), open("w.cow", "rb").read()
pos = 0
for e in m:
    assert e["start"] == pos, e
    if e["depth"] == 0:
        assert img[e["offset"]:e["offset"] + e["length"]] == raw[pos:pos + e["length"]], e
    else:
        assert e["depth"] == 1 and e["offset"] == pos, e
    pos += e["length"]
assert pos == len(raw) and len(m) == 7, m'

# ---- every header version (crafted from the layout), checked by uml_moo
MT=$(stat -c %Y base.raw)
for v in 1 2 3 3b; do
    python3 "$CRAFT" "$v" "c$v.cow" "$SCRATCH/base.raw" 1048576 "$MT" 0:0x61 9:0x62 2047:0x63 700:0x64 ||
        fail "craft version $v"
    moo "c$v.cow" "m$v.raw" || fail "uml_moo reads version $v"
    expect_data "version $v reads as uml_moo merges it" "c$v.cow" "m$v.raw"
done
ALIGN=512 python3 "$CRAFT" 3 a512.cow "$SCRATCH/base.raw" 1048576 "$MT" 3:0x71 || fail "craft align 512"
moo a512.cow ma.raw
expect_data "version 3 with 512-byte alignment" a512.cow ma.raw
# writes into a version 2 file: uml_moo still reads it
cp c2.cow w2.cow
qimg_io w2.cow w:1000:3000:0x7a || fail "qimg writes into version 2"
moo w2.cow mw2.raw
expected want2.raw m2.raw 1000:3000:0x7a
check "a write into version 2 reads back in uml_moo" cmp -s mw2.raw want2.raw

# ---- create: the file uml_mkcow makes, byte for byte
"$QIMG_AS_QEMU" create -q -f cow -b base.raw new.cow
check "create -f cow -b base.raw: uml_mkcow's file" cmp -s new.cow v3.cow
mkdir -p sub
(cd sub && "$QIMG_AS_QEMU" create -q -f cow -b ../base.raw n2.cow)
expect_eq "a relative -b is taken against the image's directory and stored absolute" \
    "$("$QIMG" info sub/n2.cow | sed -n 's/^backing file: //p')" "$SCRATCH/base.raw"
check_fail "create -f cow without a backing file fails" "$QIMG" create -q -f cow nob.cow 1M
check_fail "create -f cow -F qcow2 fails" "$QIMG" create -q -f cow -b base.raw -F qcow2 f.cow

# ---- convert -O cow -B: only what differs from the backing file is stored
"$QIMG" convert -O cow -B base.raw want.raw conv.cow || fail "convert -O cow -B"
moo conv.cow mconv.raw
check "convert -O cow -B: uml_moo reads the source" cmp -s mconv.raw want.raw
expect_data "convert -O cow -B: qimg reads the source" conv.cow want.raw
"$QIMG" convert -f raw -O qcow2 want.raw src.qcow2
"$QIMG" convert -O raw conv.cow conv-copy.raw && "$QEMU_IMG" compare -q src.qcow2 conv-copy.raw
check "convert cow -> raw equals qemu-img's reading of the source" test $? = 0

# ---- rebase (safe and -u) and commit, checked by uml_moo
cp w.cow r.cow
"$QIMG_AS_QEMU" rebase -b other.raw r.cow || fail "rebase"
expect_eq "rebase: the new backing file" "$("$QIMG" info r.cow | sed -n 's/^backing file: //p')" \
    "$SCRATCH/other.raw"
expect_data "rebase keeps the content" r.cow want.raw
moo r.cow mr.raw
check "rebase: uml_moo accepts it (time) and reads the content" cmp -s mr.raw want.raw
cp w.cow c.cow
cp base.raw cbase.raw
"$QIMG_AS_QEMU" rebase -u -b cbase.raw c.cow || fail "rebase -u"
"$QIMG_AS_QEMU" commit -q c.cow || fail "commit"
check "commit: the backing file holds the content" cmp -s cbase.raw want.raw
expect_eq "commit: the cow file is empty" "$("$QIMG" map --output=json c.cow)" \
    '[{ "start": 0, "length": 1048576, "depth": 1, "present": true, "zero": false, "data": true, "offset": 0}]'
moo c.cow mc.raw
check "commit: uml_moo still takes the pair (mtime updated)" cmp -s mc.raw want.raw

# ---- safe mode: the backing file the image names is not opened
check_fail "safe mode refuses the backing file" env QIMG_SAFE=1 "$QIMG" convert -O raw v3.cow s.raw

# ---- hostile headers: an error with a message, bounded
# hostile NAME FILE PATTERN: qimg info and convert fail with PATTERN, in
# 1 GiB and 2 s of CPU
hostile() {
    local out rc
    out=$( (ulimit -v 1048576 -t 2; "$QIMG" convert -O raw "$2" h.raw) 2>&1); rc=$?
    if [ $rc = 1 ] && [[ $out == *"$3"* ]]; then pass "hostile: $1"
    else fail "hostile: $1" "exit $rc: $out"; fi
}
damage() {   # damage OUT OFFSET HEX|A (4096 'a's)
    cp v3.cow "$1"
    python3 -c 'import sys
f, o, h = sys.argv[1], int(sys.argv[2], 0), sys.argv[3]
d = bytearray(open(f, "rb").read()); b = b"a" * 4096 if h == "A" else bytes.fromhex(h)
d[o:o + len(b)] = b; open(f, "wb").write(d)' "$@"
}
damage h1.cow 20 00001000;          hostile "sector size 4096" h1.cow "sector size 4096"
damage h2.cow 24 00000000;          hostile "alignment 0" h2.cow "alignment 0"
damage h3.cow 24 00000003;          hostile "alignment 3" h3.cow "alignment 3"
damage h4.cow 24 80000000;          hostile "alignment 2 GiB" h4.cow "alignment"
damage h5.cow 12 4000000000000000;  hostile "size 2^62: bitmap past the file" h5.cow "past the end of the file"
damage h6.cow 12 ffffffffffffffff;  hostile "size 2^64-1" h6.cow "too large"
damage h7.cow 32 A;                 hostile "backing name not NUL-terminated" h7.cow "not terminated"
damage h8.cow 28 00000001;          hostile "cow format 1" h8.cow "format 1"
damage h9.cow 4 00000004;           hostile "version 4 with -f cow" "json:{\"driver\":\"cow\",\"file\":{\"filename\":\"h9.cow\"}}" "version 4"
head -c 100 v3.cow >h10.cow;        hostile "header cut short" h10.cow "cut short"
damage h11.cow 32 "$(printf '%s' "$SCRATCH/h11.cow" | od -An -tx1 | tr -d ' \n')00"
hostile "backing file is the image itself (a loop)" h11.cow "infinite loop"
damage h12.cow 32 "$(printf '%s' "$SCRATCH/missing.raw" | od -An -tx1 | tr -d ' \n')00"
hostile "backing file missing" h12.cow "missing.raw"
python3 "$CRAFT" 1 h13.cow "$SCRATCH/base.raw" 1048576 "$MT" && truncate -s 200 h13.cow
hostile "version 1 cut inside its header" "json:{\"driver\":\"cow\",\"file\":{\"filename\":\"h13.cow\"}}" "cut short"
