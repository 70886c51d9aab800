#!/bin/bash
# The cloop format (read-only): images made by create_compressed_fs
# (cloop-utils) read the same by both tools (info, map, compare, convert)
# and byte for byte against their source; the real image of
# shared/testdata; cloop 4 images (beyond qemu: every block method, header
# first or last) from tests/cli/cloop-craft.py; hostile headers and tables.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1
CRAFT=$TOP/tests/cli/cloop-craft.py


# a source with patterns, a zero run and text (3 MiB + a partial block)
SRC=$SCRATCH/src.raw
{ head -c 700000 /dev/urandom; head -c 900000 /dev/zero; seq 1 200000; } > "$SRC"
truncate -s 3200000 "$SRC"
# padded: what a cloop of block size $1 holds
padded() { cp "$SRC" "$SCRATCH/pad.raw"; truncate -s $(( ($(stat -c %s "$SRC") + $1 - 1) / $1 * $1 )) "$SCRATCH/pad.raw"; }

# ------------------------------------------ create_compressed_fs images
if has_cmd create_compressed_fs create_compressed_fs; then
    for v in "65536 9" "4096 9" "65536 0" "131072 -1" "512 9"; do
        set -- $v
        rm -rf "${IN:?}"/*
        create_compressed_fs -q -B "$1" -L "$2" "$SRC" c.cloop >/dev/null 2>&1 ||
            { fail "create_compressed_fs -B $1 -L $2"; continue; }
        tag="B$1 L$2"
        same_ro "$tag info" info c.cloop
        same_ro "$tag info json" info --output=json c.cloop
        same_ro "$tag map" map c.cloop
        same_ro "$tag map json" map --output=json c.cloop
        padded "$1"
        same_ro "$tag compare" compare -f cloop -F raw c.cloop "$SCRATCH/pad.raw"
        same_ro "$tag compare probed" compare c.cloop "$SCRATCH/pad.raw"
        same_ro "$tag check" check c.cloop
        check "$tag convert" "$QIMG" convert -O raw c.cloop from.raw
        check "$tag content" cmp from.raw "$SCRATCH/pad.raw"
        # many workers on small blocks, out of order writes
        check "$tag convert -m 16 -W" "$QIMG" convert -m 16 -W -O qcow2 c.cloop from.qcow2
        check "$tag qcow2 content" "$QEMU_IMG" compare -f raw -F qcow2 "$SCRATCH/pad.raw" from.qcow2
        # reads that cut blocks (dd in odd pieces): the cache of decoded blocks
        check "$tag dd odd pieces" "$QIMG" dd if=c.cloop of=dd.raw bs=3000 -O raw
        check "$tag dd content" cmp dd.raw "$SCRATCH/pad.raw"
        same "$tag refuses writing" resize c.cloop +1M
    done
fi

# ------------------------------------------ the real image
if [ -r "$TOP/../shared/testdata/simple-pattern.cloop.bz2" ] && has_cmd real-image bzcat; then
    rm -rf "${IN:?}"/*
    bzcat "$TOP/../shared/testdata/simple-pattern.cloop.bz2" > sp.cloop
    same_ro "real info" info sp.cloop
    same_ro "real info json" info --output=json sp.cloop
    same_ro "real map json" map --output=json sp.cloop
    "$QIMG" convert -O raw sp.cloop sp.raw || fail "real convert"
    expect_eq "real content" "$(sha256sum sp.raw | cut -c1-16)" 7c77af2771e0f86b
else
    SKIP_WHAT=real-image skip "../shared/testdata/simple-pattern.cloop.bz2 missing"
fi

# ------------------------------------------ cloop 4 (beyond qemu)
if has_pymod cloop4 lzma; then
    padded 16384
    for m in zlib none xz lz4 lzo1x zlib,none,xz,lz4,lzo1x; do
        for w in first last; do
            rm -rf "${IN:?}"/*
            "$DEB_PYTHON" "$CRAFT" "$SRC" c4.cloop 16384 "$m" "$w" || { fail "craft $m $w"; continue; }
            expect_eq "v4 $m $w probed" "$("$QIMG" info --output=json c4.cloop |
                sed -n 's/.*"format": "\(.*\)".*/\1/p')" cloop
            check "v4 $m $w convert" "$QIMG" convert -O raw c4.cloop from.raw
            check "v4 $m $w content" cmp from.raw "$SCRATCH/pad.raw"
            check "v4 $m $w dd odd pieces" "$QIMG" dd if=c4.cloop of=dd.raw bs=5000 -O raw
            check "v4 $m $w dd content" cmp dd.raw "$SCRATCH/pad.raw"
        done
    done
    # qemu probes version 4 as raw and reads it as version 2 only when
    # every block is zlib: with other methods it refuses the table
    "$DEB_PYTHON" "$CRAFT" "$SRC" c4.cloop 16384 zlib,none first
    check_fail "qemu-img refuses a cloop 4 table" "$QEMU_IMG" info -f cloop c4.cloop
    # an unknown method
    poke8 c4.cloop 136 0x70
    fails_bounded "v4 unknown method" "$QIMG" info c4.cloop
    grep -q "unknown compression method 7 of block 0" "$SCRATCH/b.err" &&
        pass "v4 unknown method named" || fail "v4 unknown method named" "$(cat "$SCRATCH/b.err")"
fi

# ------------------------------------------ hostile headers and tables
rm -rf "${IN:?}"/*
# mkcl NAME BLOCK_SIZE N_BLOCKS OFFSETS [DATA-KIND]: a version 2 image
mkcl() {
    "$DEB_PYTHON" - "$@" <<'PY'
import struct, sys, zlib
name, bs, n, offs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
kind = sys.argv[5] if len(sys.argv) > 5 else "ok"
pre = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
block = {"ok": zlib.compress(b"\1" * 512), "short": zlib.compress(b"\1" * 256),
         "long": zlib.compress(bytes(1 << 20)), "bad": b"x" * 20}[kind]
base = 136 + 8 * (len(offs.split(",")))
table = b"".join(struct.pack(">Q", eval(o, {"base": base, "len": len(block)})) for o in offs.split(","))
open(name, "wb").write(pre.ljust(128, b"\0") + struct.pack(">II", bs, n) + table + block)
PY
}
ok_offsets="base,base+len"
for c in "bs0 0 1" "bs513 513 1" "bsbig 134217728 1" "nbmax 512 4294967295" \
         "nbtoomany 512 268435456"; do
    set -- $c
    mkcl "$1.cloop" "$2" "$3" "$ok_offsets"
    same_ro "hostile $1 info" info "$1.cloop"
    same_ro "hostile $1 convert" convert -O raw "$1.cloop" out.raw
done
mkcl nonmono.cloop 512 2 "base+8,base+len,base"
same_ro "hostile not monotonic" info nonmono.cloop
mkcl hugeblock.cloop 512 1 "base,base+(200<<20)"
same_ro "hostile huge block" info hugeblock.cloop
for k in bad short long; do
    mkcl "$k.cloop" 512 1 "$ok_offsets" "$k"
    same_ro "hostile $k block info" info "$k.cloop"
    same_ro "hostile $k block convert" convert -O raw "$k.cloop" out.raw
    fails_bounded "hostile $k block bounded" "$QIMG" convert -O raw "$k.cloop" out.raw
done
# beyond qemu: offsets past the end of the file, over the table, a table
# bigger than the file (qemu reads zeros for them)
mkcl past.cloop 512 1 "base,base+len+100"
fails_bounded "hostile offset past EOF" "$QIMG" info past.cloop
grep -q "offset past the end of the file at index 1" "$SCRATCH/b.err" &&
    pass "hostile offset past EOF named" || fail "hostile offset past EOF named" "$(cat "$SCRATCH/b.err")"
mkcl over.cloop 512 1 "base-8,base+len"
fails_bounded "hostile block over the table" "$QIMG" info over.cloop
mkcl many.cloop 512 50000000 "$ok_offsets"
fails_bounded "hostile table larger than the file" "$QIMG" info many.cloop
grep -q "too small for 50000000 blocks" "$SCRATCH/b.err" &&
    pass "hostile table larger than the file named" ||
    fail "hostile table larger than the file named" "$(cat "$SCRATCH/b.err")"
head -c 100 past.cloop > cut.cloop
fails_bounded "hostile file cut in the header" "$QIMG" convert -f cloop -O raw cut.cloop out.raw
