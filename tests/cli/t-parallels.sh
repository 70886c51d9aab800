#!/bin/bash
# The parallels format: images qemu-img makes and a real Parallels image
# read the same by both tools (info, map, convert); qimg's create, convert
# and writes checked by qemu-img (cmp, check, compare); hostile headers.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# poke_le32/poke_le64 FILE OFFSET VALUE: little-endian fields
poke_le32() { poke_hex "$1" "$2" "$(printf '%08x' "$3" | sed 's/\(..\)\(..\)\(..\)\(..\)/\4\3\2\1/')"; }
poke_le64() {
    poke_le32 "$1" "$2" $(( $3 & 0xffffffff ))
    poke_le32 "$1" $(( $2 + 4 )) $(( ($3 >> 32) & 0xffffffff ))
}

# a raw source with data, a zero run and holes (20 MiB)
"$QEMU_IMG" create -q -f raw "$SCRATCH/src.raw" 20M
"$QEMU_IO" -f raw -c 'write -P 7 0 100k' -c 'write -P 9 3M 2M' -c 'write -P 3 10M 512' \
    -c 'write -z 12M 1M' -c 'write -P 5 19M 1M' "$SCRATCH/src.raw" >/dev/null ||
    fail "make src.raw"

# ---------------------------------------------- qemu-img's images, read
for cs in default 65536 4096 1536; do
    rm -rf "${IN:?}"/*
    opt=(); [ $cs = default ] || opt=(-o cluster_size=$cs)
    "$QEMU_IMG" convert -O parallels "${opt[@]}" "$SCRATCH/src.raw" p.img || fail "convert $cs"
    same_ro "info $cs" info p.img
    same_ro "info json $cs" info --output=json p.img
    same_ro "map $cs" map p.img
    same_ro "map json $cs" map --output=json p.img
    same_ro "compare $cs" compare -f parallels -F raw p.img "$SCRATCH/src.raw"
    same_ro "probe $cs" compare p.img "$SCRATCH/src.raw"
    check "convert from $cs" "$QIMG" convert -O raw p.img from.raw
    check "convert from $cs: content" cmp from.raw "$SCRATCH/src.raw"
done

# a guest size that is no whole number of clusters, and an empty image
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=65536 p.img 1000000
"$QEMU_IO" -f parallels -c 'write -P 1 950000 49664' p.img >/dev/null || fail "write tail"
same_ro "tail info" info p.img
same_ro "tail map" map --output=json p.img
same_ro "tail convert" convert -O raw p.img tail.raw
"$QIMG" convert -O raw p.img mine.raw && "$QEMU_IMG" convert -O raw p.img ref.raw
check "tail content" cmp mine.raw ref.raw

# ---------------------------------------------- the real Parallels image
if [ -r "$TOP/../shared/testdata/parallels-v1.bz2" ] && has_cmd real-image bzcat; then
    rm -rf "${IN:?}"/*
    bzcat "$TOP/../shared/testdata/parallels-v1.bz2" > v1.img
    same_ro "v1 info" info v1.img
    same_ro "v1 info json" info --output=json v1.img
    same_ro "v1 map" map v1.img
    same_ro "v1 map json" map --output=json v1.img
    same_ro "v1 check" check v1.img
    "$QIMG" convert -O raw v1.img v1.raw || fail "v1 convert"
    expect_eq "v1 content" "$(sha256sum v1.raw | cut -c1-16)" 15faf41ebc93b5f7
else
    SKIP_WHAT=real-image skip "../shared/testdata/parallels-v1.bz2 missing"
fi

# ---------------------------------------------- create: byte-identical
for args in "10M" "1G" "1000" "0" "-o cluster_size=65536 10M" "-o cluster_size=1000 5M" \
            "-o cluster_size=512 1M" "-o cluster_size=4M 100G"; do
    rm -rf "${IN:?}"/*
    # shellcheck disable=SC2086
    "$QEMU_IMG" create -q -f parallels ref.img $args
    # shellcheck disable=SC2086
    same "create $args" create -f parallels p.img $args
    # shellcheck disable=SC2086
    "$QIMG" create -q -f parallels mine.img $args
    check "create $args: cmp" cmp ref.img mine.img
done
rm -rf "${IN:?}"/*
same "create cluster 0" create -f parallels p.img -o cluster_size=0 1M
same "create too big" create -f parallels p.img -o cluster_size=512 3T
same "create help" create -f parallels -o help
same "create bad option" create -f parallels -o foo=1 p.img 1M
for p in off falloc full metadata foo; do
    rm -rf "${IN:?}"/*
    same "create preallocation=$p" create -q -f parallels -o preallocation=$p,cluster_size=65536 p.img 1M
done
for p in falloc full; do
    rm -rf "${IN:?}"/*
    "$QEMU_IMG" create -q -f parallels -o preallocation=$p,cluster_size=65536 ref.img 10M
    "$QIMG" create -q -f parallels -o preallocation=$p,cluster_size=65536 mine.img 10M
    check "create preallocation=$p: cmp" cmp ref.img mine.img
done

# ---------------------------------------------- writing
for cs in default 65536 4096; do
    rm -rf "${IN:?}"/*
    opt=(); [ $cs = default ] || opt=(-o cluster_size=$cs)
    "$QIMG" convert -O parallels "${opt[@]}" "$SCRATCH/src.raw" mine.img || fail "qimg convert $cs"
    "$QEMU_IMG" convert -O parallels "${opt[@]}" "$SCRATCH/src.raw" ref.img
    check "convert to $cs: qemu-img check" "$QEMU_IMG" check mine.img
    check "convert to $cs: compare" "$QEMU_IMG" compare -f parallels -F raw mine.img "$SCRATCH/src.raw"
    check "convert to $cs: same file as qemu-img's" cmp mine.img ref.img
    # qimg writes over an image with allocated clusters (partial clusters too)
    "$QEMU_IMG" create -q -f raw pat.raw 20M
    "$QEMU_IO" -f raw -c 'write -P 0x44 1536 3000' -c 'write -P 0x45 7M 70k' pat.raw >/dev/null
    "$QIMG" convert -n -O parallels pat.raw mine.img || fail "convert -n $cs"
    check "overwrite $cs: compare" "$QEMU_IMG" compare -f parallels -F raw mine.img pat.raw
    check "overwrite $cs: check" "$QEMU_IMG" check mine.img
done

# write through qemu-io's view: qimg's image updated in place by qimg (dd)
rm -rf "${IN:?}"/*
"$QIMG" create -q -f parallels -o cluster_size=65536 w.img 4M
"$QEMU_IMG" create -q -f raw pat.raw 4M
"$QEMU_IO" -f raw -c 'write -P 0x61 1000 70000' -c 'write -P 0x62 3M 512' pat.raw >/dev/null
"$QIMG" convert -n -O parallels pat.raw w.img || fail "convert -n into parallels"
check "convert -n: check" "$QEMU_IMG" check w.img
check "convert -n: compare" "$QEMU_IMG" compare -f parallels -F raw w.img pat.raw
expect_eq "inuse cleared on close" "$(od -An -tx4 -j44 -N4 w.img | tr -d ' ')" 00000000

# an image left open (inuse set) cannot be opened read-write; read-only it can
cp w.img u.img && poke_le32 u.img 44 0x746F6E59
same "unclean: rw refused" convert -n -f raw -O parallels pat.raw u.img
ref_rc "unclean: rw refused" 1
same_ro "unclean: info" info u.img

# ---------------------------------------------- hostile headers
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=65536 b.img 1M
"$QEMU_IO" -f parallels -c 'write -P 0xaa 0 128k' b.img >/dev/null
h() { cp b.img t.img; "$@"; }
h poke_le32 t.img 28 0;           same "tracks 0" info t.img;           ref_rc "tracks 0" 1
h poke_le32 t.img 28 0x7fffffff;  same "tracks huge" info t.img;        ref_rc "tracks huge" 1
h poke_le32 t.img 32 0x7fffffff;  same "bat huge" info t.img;           ref_rc "bat huge" 1
h poke_le32 t.img 16 3;           same "version 3" info t.img;          ref_rc "version 3" 0
h poke_le32 t.img 16 3;           same "version 3 probe" info -f parallels t.img
h poke_le32 t.img 64 0xffffff;    same "bat entry past EOF: map" map t.img
h poke_le32 t.img 64 0;           same "bat entry overlapping header: map" map t.img
# BAT that the file does not hold: a clear error (qemu reads it as zeros)
h poke_le32 t.img 32 0x1000000
out=$("$QIMG" info t.img 2>&1); rc=$?
expect_eq "bat past EOF refused" "$rc" 1
case $out in *"past the end of the file"*) pass "bat past EOF message";; *) fail "bat past EOF message" "$out";; esac
h poke_le64 t.img 36 0xffffffffffffffff
out=$("$QIMG" info t.img 2>&1); rc=$?
expect_eq "nb_sectors huge refused" "$rc" 1

# ---------------------------------------------- check and check -r
# same_fix NAME FILE ARGS...: the same output, and the repaired files equal
same_fix() {
    local name=$1 f=$2; shift 2
    same "$name" "$@"
    check "$name: same file" cmp "$SCRATCH/run.ref/work/$f" "$SCRATCH/run.new/work/$f"
}
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=65536 b.img 1M
"$QEMU_IO" -f parallels -c 'write -P 0xaa 0 128k' -c 'write -P 0xbb 512k 64k' b.img >/dev/null
cp b.img t.img
same "clean check" check t.img
same "clean check json" check --output=json t.img
poke_le32 t.img 44 0x746F6E59
same "unclean check" check t.img;                   ref_rc "unclean check" 2
same "unclean check json" check --output=json t.img
same_fix "unclean check -r leaks" t.img check -r leaks t.img
same_fix "unclean check -r all" t.img check -r all t.img;   ref_rc "unclean check -r all" 0
cp b.img t.img; head -c 100000 /dev/urandom >> t.img
same "leak check" check t.img;                      ref_rc "leak check" 3
same_fix "leak check -r leaks" t.img check -r leaks t.img
same_fix "leak check -r all" t.img check -r all t.img
cp b.img t.img; poke_le32 t.img 68 1000
same "outside check" check t.img;                   ref_rc "outside check" 2
same_fix "outside check -r leaks" t.img check -r leaks t.img
same_fix "outside check -r all" t.img check -r all t.img
cp b.img t.img; poke_le32 t.img 68 1000; poke_le32 t.img 44 0x746F6E59; head -c 4096 /dev/zero >> t.img
same_fix "everything check -r all" t.img check -r all t.img
same "everything check json" check --output=json t.img
# a fresh image whose BAT takes two clusters: qemu counts the second as leaked
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=65536 t.img 1G
same "big BAT check" check t.img
same_fix "big BAT check -r leaks" t.img check -r leaks t.img

# ---------------------------------------------- the format extension
# mkext IMAGE [DAMAGE]: append a Format Extension holding one dirty bitmap
# (its data in the next cluster) to a qemu-made image; DAMAGE spoils one field
cat > "$SCRATCH/mkext.py" <<'PY'
import hashlib, struct, sys
# mkext.py IMAGE [damage]: append a Format Extension with one dirty bitmap
# (its data in the next cluster) to a qemu-made parallels image
path, damage = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
img = bytearray(open(path, "rb").read())
tracks = struct.unpack_from("<I", img, 28)[0]
nb_sectors = struct.unpack_from("<Q", img, 36)[0]
cs = tracks * 512
end = (len(img) + cs - 1) // cs * cs
img += bytes(end - len(img))
ext_sector, data_sector = end // 512, end // 512 + tracks
gran = 128                                  # sectors per bit
bits = (nb_sectors + gran - 1) // gran
l1_size = ((bits + 63) // 64 * 8 + cs - 1) // cs
if damage == "l1":
    l1_size += 1
size = nb_sectors + (1 if damage == "size" else 0)
feat = struct.pack("<Q16sII", size, bytes(range(16)), gran if damage != "gran" else 3, l1_size)
feat += struct.pack("<Q", data_sector) + struct.pack("<Q", 1) * (l1_size - 1)
magic = 0x20385FAE252CB34A if damage != "unknown" else 0x1234
flags = 1 if damage == "flags" else 0
body = struct.pack("<QQII", magic, flags, len(feat), 0) + feat
body += bytes(-len(body) % 8) + bytes(24)          # end of features
if damage == "dup":
    body = body[:-24] + body[:-24] + bytes(24)
body += bytes(cs - 24 - len(body))
digest = hashlib.md5(body).digest()
if damage == "md5":
    digest = bytes(16)
ext = struct.pack("<Q", 0xAB234CEF23DCEA87 if damage != "magic" else 1) + digest + body
img += ext + bytes([0x0f]) * cs
struct.pack_into("<Q", img, 56, ext_sector)
open(path, "wb").write(img)
PY
mkext() { python3 "$SCRATCH/mkext.py" "$@" || fail "mkext $*"; }
if has_cmd format-extension python3; then
    rm -rf "${IN:?}"/*
    "$QEMU_IMG" create -q -f parallels -o cluster_size=65536 b.img 1M
    "$QEMU_IO" -f parallels -c 'write -P 0xaa 0 128k' b.img >/dev/null
    "$QEMU_IMG" create -q -f raw p.raw 1M
    "$QEMU_IO" -f raw -c 'write -P 0x33 300k 100k' p.raw >/dev/null
    cp b.img e.img && mkext e.img
    same_ro "ext info" info e.img
    same_ro "ext map" map --output=json e.img
    same_ro "ext check" check e.img
    for d in l1 size unknown flags dup md5 magic; do
        cp b.img t.img && mkext t.img $d
        same_ro "ext damaged $d: info" info t.img
    done
    cp b.img t.img && mkext t.img gran          # qemu-img aborts on this one
    out=$("$QIMG" info t.img 2>&1); rc=$?
    expect_eq "ext bad granularity refused" "$rc" 1
    # written read-write: qemu warns as we do; it cuts the extension off on
    # close, qimg keeps it (and its bitmap cluster) byte for byte
    cp e.img ext-before.img
    same "ext rw warning" convert -n -f raw -O parallels p.raw e.img
    ref_rc "ext rw warning" 0
    "$QIMG" convert -n -f raw -O parallels p.raw e.img 2>/dev/null || fail "ext convert -n"
    check "ext kept: qemu-img info opens it" "$QEMU_IMG" info e.img
    check "ext kept: compare" "$QEMU_IMG" compare -f parallels -F raw e.img p.raw
    check "ext kept: check" "$QEMU_IMG" check e.img
    check "ext kept: bytes" cmp -n 131072 <(tail -c +196609 ext-before.img) <(tail -c +196609 e.img)
    check "ext kept: the extension is there" cmp -s -n 8 <(tail -c +196609 e.img) <(printf "\x87\xea\xdc\x23\xef\x4c\x23\xab")
fi

# a virtual size far past the BAT (qemu-img map asserts on it): the part
# the BAT does not cover is one hole, answered at once
rm -rf "${IN:?}"/*
python3 - t.img <<'PY' || fail "make past-bat image"
import struct, sys
h = b"WithoutFreeSpace" + struct.pack("<IIIIIQIIIQ", 2, 16, 1, 1, 2, 0xffffffff, 0, 0, 0, 0)
open(sys.argv[1], "wb").write(h + struct.pack("<II", 0, 0) + bytes(512 - len(h) - 8))
PY
same_ro "past the BAT: info" info t.img
check "past the BAT: map" timeout 10 "$QIMG" map t.img
check "past the BAT: convert" timeout 20 "$QIMG" convert -O raw t.img t.raw

# a BAT entry pointing into the BAT itself (a 1 GiB image with 64 KiB
# clusters has a two-cluster BAT): qemu writes the guest's data over its
# BAT and leaves 16 corruptions; qimg refuses the write
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=65536 t.img 1G
poke_le32 t.img 64 1
"$QEMU_IMG" create -q -f raw s.raw 1G
"$QEMU_IO" -f raw -c 'write -P 0x77 0 64k' s.raw >/dev/null
cp t.img before.img
check_fail "overlapping BAT entry: write refused" "$QIMG" convert -n -f raw -O parallels --target-is-zero s.raw t.img
check "overlapping BAT entry: BAT untouched" cmp -n 131072 before.img t.img

# a parallels image under a qcow2 layer: read through the chain, committed into
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=65536 base.img 2M
"$QEMU_IO" -f parallels -c 'write -P 0x31 0 100k' base.img >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b base.img -F parallels top.qcow2
"$QEMU_IO" -f qcow2 -c 'write -P 0x32 64k 4k' -c 'write -P 0x33 1500k 64k' top.qcow2 >/dev/null
same_ro "chain info" info --backing-chain top.qcow2
same_ro "chain map" map --output=json top.qcow2
# qemu cannot reopen a parallels image read-write: commit into one fails
# (the node's number differs from run to run)
run_in_copy ref "$QEMU_IMG" commit top.qcow2
run_in_copy new "$QIMG_AS_QEMU" commit top.qcow2
expect_eq "commit into parallels refused" \
    "$(sed 's/#block[0-9]*/#block/' "$SCRATCH/run.new/err"; cat "$SCRATCH/run.new/rc")" \
    "$(sed 's/#block[0-9]*/#block/' "$SCRATCH/run.ref/err"; cat "$SCRATCH/run.ref/rc")"
check "commit into parallels refused: base untouched" cmp base.img "$SCRATCH/run.new/work/base.img"

# the largest cluster qemu accepts (2 GiB) with a format extension: qemu
# reads the whole cluster into memory (2 GiB); qimg refuses within its budget
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=65536 t.img 1M
poke_le32 t.img 28 4186127
poke_le64 t.img 56 100
out=$( (ulimit -v 1048576; "$QIMG" info t.img) 2>&1); rc=$?
expect_eq "2 GiB extension cluster refused" "$rc" 1
case $out in *"too large"*) pass "2 GiB extension cluster: message";; *) fail "2 GiB extension cluster: message" "$out";; esac

# ---------------------------------------------- resize and measure (beyond qemu-img)
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f parallels -o cluster_size=4k r.img 4M || fail "create r.img"
"$QEMU_IO" -f parallels -c "write -P 0x11 0 1M" -c "write -P 0x22 3M 64k" r.img >/dev/null
"$QEMU_IMG" convert -f parallels -O raw r.img r.raw
# 100M of 4 KiB clusters: the BAT needs 26 clusters, the data in them moves
check "resize +96M (the BAT grows over data clusters)" "$QIMG" resize -q r.img 100M
expect_eq "resize: qemu-img check" "$("$QEMU_IMG" check r.img 2>&1 | head -1)" "No errors were found on the image."
check "resize: qemu-img reads the data" "$QEMU_IMG" compare -q -f parallels -F raw r.img r.raw
"$QIMG" bench -q -w -f parallels -c 1 -d 1 -s 64k -o 99M --pattern=0x33 r.img >/dev/null
truncate -s 100M r.raw; qio r.raw "write -P 0x33 99M 64k"
check "resize: a cluster written at the new end" "$QEMU_IMG" compare -q -f parallels -F raw r.img r.raw
check "resize --shrink 2M" "$QIMG" resize -q --shrink r.img 2M
truncate -s 2M r.raw
check "resize --shrink: qemu-img reads the data" "$QEMU_IMG" compare -q -f parallels -F raw r.img r.raw
expect_eq "resize --shrink: qemu-img check" "$("$QEMU_IMG" check r.img 2>&1 | head -1)" "No errors were found on the image."
out=$("$QIMG" resize -f parallels r.img 17T 2>&1)
expect_eq "resize past what 4 KiB clusters address" "$?: $out" \
    "1: qimg: Image size is too large for this cluster size"
out=$("$QIMG" resize -f parallels r.img 8T 2>&1)
expect_eq "resize to a BAT over 2 GiB" "$?: $out" "1: qimg: Catalog too large"
if [ -r "$TOP/../shared/testdata/parallels-v1.bz2" ] && has_cmd real-image-resize bzcat; then
    bzcat "$TOP/../shared/testdata/parallels-v1.bz2" > v1.img
    "$QEMU_IMG" convert -f parallels -O raw v1.img v1.raw
    check "resize the old-magic image +10M" "$QIMG" resize -q -f parallels v1.img +10M
    check "resize old magic: qemu-img reads the data" "$QEMU_IMG" compare -q -f parallels -F raw v1.img v1.raw
    expect_eq "resize old magic: qemu-img check" "$("$QEMU_IMG" check v1.img 2>&1 | head -1)" "No errors were found on the image."
fi
# measure: what create makes, what a copy takes
m() { "$QIMG" measure --output=json -O parallels "$@" | sed -n "s/.*\"$M\": \([0-9]*\).*/\1/p"; }
for o in cluster_size=1M cluster_size=4k; do
    rm -f "$SCRATCH/m.img"
    "$QEMU_IMG" create -q -f parallels -o "$o" "$SCRATCH/m.img" 20M
    expect_eq "measure -o $o --size: an empty image" "$(M=required m -o "$o" --size 20M)" "$(stat -c %s "$SCRATCH/m.img")"
    "$QEMU_IO" -f parallels -c "write -P 1 0 20M" "$SCRATCH/m.img" >/dev/null
    expect_eq "measure -o $o --size: every cluster written" "$(M=fully-allocated m -o "$o" --size 20M)" \
        "$(stat -c %s "$SCRATCH/m.img")"
    rm -f "$SCRATCH/m.img"
    "$QIMG" convert -O parallels -o "$o" r.raw "$SCRATCH/m.img"
    check "measure -o $o of data: the copy fits" \
        test "$(stat -c %s "$SCRATCH/m.img")" -le "$(M=required m -o "$o" r.raw)"
done
