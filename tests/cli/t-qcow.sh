#!/bin/bash
# The qcow (version 1) format: images qemu-img makes (plain, compressed,
# over a backing file) read the same by both tools; qimg's create, convert
# (with -c and -B) and writes the same files as qemu-img's, read back by
# qemu-img and by libqcow (python3-libqcow); commit empties the top as
# qemu does; rebase -u, which qemu-img cannot do for qcow; AES encryption;
# hostile headers.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# libqcow_sha IMAGE: sha256 of the guest data as libqcow reads it
libqcow_sha() {
    "$DEB_PYTHON" - "$1" <<'PY'
import hashlib, pyqcow, sys
f = pyqcow.file(); f.open(sys.argv[1])
h, off, size = hashlib.sha256(), 0, f.get_media_size()
while off < size:
    n = min(1 << 20, size - off); h.update(f.read_buffer_at_offset(n, off)); off += n
print(h.hexdigest())
PY
}

# a raw source with data, a zero run and holes (20 MiB)
"$QEMU_IMG" create -q -f raw "$SCRATCH/src.raw" 20M
"$QEMU_IO" -f raw -c 'write -P 7 0 100k' -c 'write -P 9 3M 2M' -c 'write -P 3 10M 512' \
    -c 'write -z 12M 1M' -c 'write -P 5 19M 1M' "$SCRATCH/src.raw" >/dev/null || fail "make src.raw"
"$QEMU_IMG" create -q -f raw "$SCRATCH/src2.raw" 20M
"$QEMU_IO" -f raw -c 'write -P 7 0 100k' -c 'write -P 4 3M 5000' -c 'write -P 5 19M 1M' \
    "$SCRATCH/src2.raw" >/dev/null || fail "make src2.raw"
SRC_SHA=$(sha "$SCRATCH/src.raw")

# ---------------------------------------------- qemu-img's images, read
rm -rf "${IN:?}"/*
"$QEMU_IMG" convert -O qcow "$SCRATCH/src.raw" a.qcow
# (qemu-img 7.2 writes the compressed image, then exits 1)
"$QEMU_IMG" convert -c -O qcow "$SCRATCH/src.raw" c.qcow
"$QEMU_IMG" create -q -f qcow -b a.qcow -F qcow o.qcow
"$QEMU_IO" -f qcow -c 'write -P 0x55 1M 3000' -c 'write -P 0x56 8M 64k' o.qcow >/dev/null
for f in a.qcow c.qcow o.qcow; do
    same_ro "$f info" info "$f"
    same_ro "$f info json" info --output=json "$f"
    same_ro "$f info chain" info --backing-chain "$f"
    same_ro "$f map" map "$f"
    same_ro "$f map json" map --output=json "$f"
    same_ro "$f check" check "$f"
    same_ro "$f snapshot -l" snapshot -l "$f"
    same_ro "$f compare" compare "$f" "$SCRATCH/src.raw"
    "$QIMG" convert -O raw "$f" mine.raw || fail "convert $f"
    "$QEMU_IMG" convert -O raw "$f" ref.raw
    check "$f convert: content" cmp mine.raw ref.raw
done
same_ro "measure" measure -O qcow --size 1G
same "resize" resize a.qcow 30M
same "amend" amend -o size=30M a.qcow

# ---------------------------------------------- create: byte-identical
for args in "10M" "1000" "1G" "10G" "-b a.qcow -F qcow" "-b a.qcow -F qcow 5M" \
            "-b $SCRATCH/src.raw -F raw" "-o encryption=off 1M"; do
    # shellcheck disable=SC2086
    same "create $args" create -f qcow q.qcow $args
    rm -f ref.qcow mine.qcow
    # shellcheck disable=SC2086
    "$QEMU_IMG" create -q -f qcow ref.qcow $args
    # shellcheck disable=SC2086
    "$QIMG" create -q -f qcow mine.qcow $args
    check "create $args: cmp" cmp ref.qcow mine.qcow
done
for bad in "0" "-o encryption=on 1M" "-o encrypt.format=aes 1M" "-o encrypt.format=luks 1M" \
           "-o encrypt.format=foo 1M" "-o encryption=on,encrypt.format=luks 1M" \
           "-o encrypt.key-secret=s 1M" "-o cluster_size=4k 1M" "-o preallocation=metadata 1M" \
           "-o preallocation=full 1M" "-o preallocation=foo 1M" "-b a.qcow -F foo" "-o help"; do
    # shellcheck disable=SC2086
    same "create $bad" create -f qcow q.qcow $bad
done

# ---------------------------------------------- convert: qemu-img's file
rm -rf "${IN:?}"/*
"$QIMG" convert -O qcow "$SCRATCH/src.raw" mine.qcow || fail "convert to qcow"
"$QEMU_IMG" convert -O qcow "$SCRATCH/src.raw" ref.qcow
check "convert: same file" cmp mine.qcow ref.qcow
check "convert: compare" "$QEMU_IMG" compare mine.qcow "$SCRATCH/src.raw"
# compressed: qemu-img 7.2 exits 1 after writing the image; qimg exits 0
"$QIMG" convert -c -O qcow "$SCRATCH/src.raw" mine-c.qcow
expect_eq "convert -c: exit 0" "$?" 0
"$QEMU_IMG" convert -c -O qcow "$SCRATCH/src.raw" ref-c.qcow
expect_eq "convert -c: qemu-img exits 1" "$?" 1
check "convert -c: same file" cmp mine-c.qcow ref-c.qcow
check "convert -c: compare" "$QEMU_IMG" compare mine-c.qcow "$SCRATCH/src.raw"
same_ro "convert -c: map" map --output=json mine-c.qcow
same_ro "convert -c: human map refused" map mine-c.qcow
# over a backing file (512-byte clusters)
"$QEMU_IMG" convert -O qcow "$SCRATCH/src.raw" base.qcow
"$QIMG" convert -O qcow -B base.qcow -F qcow "$SCRATCH/src2.raw" mine-b.qcow || fail "convert -B"
"$QEMU_IMG" convert -O qcow -B base.qcow -F qcow "$SCRATCH/src2.raw" ref-b.qcow
check "convert -B: same file" cmp mine-b.qcow ref-b.qcow
check "convert -B: compare" "$QEMU_IMG" compare mine-b.qcow "$SCRATCH/src2.raw"
# libqcow, an independent reader, reads what qimg wrote
if has_pymod libqcow pyqcow; then
    expect_eq "libqcow reads qimg's qcow" "$(libqcow_sha mine.qcow)" "$SRC_SHA"
    expect_eq "libqcow reads qimg's compressed qcow" "$(libqcow_sha mine-c.qcow)" "$SRC_SHA"
fi

# ---------------------------------------------- writes inside clusters
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f raw A.raw 4M
"$QEMU_IO" -f raw -c 'write -P 0x41 0 4M' A.raw >/dev/null
OPS="w:4096:1000:2 w:70000:200000:3 w:3145216:1024:5 w:0x3f0000:0x10:6 w:512:512:7"
for kind in plain compressed backing; do
    case $kind in
    plain) "$QEMU_IMG" create -q -f qcow ref.qcow 4M ;;
    compressed) "$QEMU_IMG" convert -c -O qcow A.raw ref.qcow ;;
    backing) "$QEMU_IMG" create -q -f qcow -b A.raw -F raw ref.qcow ;;
    esac
    cp ref.qcow mine.qcow
    # shellcheck disable=SC2086
    qemu_io_ops qcow ref.qcow $OPS
    # shellcheck disable=SC2086
    qimg_io mine.qcow $OPS || fail "qimg writes ($kind)"
    check "partial writes, $kind: same file" cmp ref.qcow mine.qcow
done
# 4 KiB clusters over a backing file (qemu-img makes 512-byte ones, other
# tools do not): what a write leaves of a new cluster comes from the
# backing file (qemu 7.2 leaves zeros there)
python3 - t.qcow <<'PY' || fail "make a 4 KiB-cluster overlay"
import struct, sys
name = b"A.raw"
h = struct.pack(">IIQIIQBBHIQ", 0x514649fb, 1, 48, len(name), 0, 4 << 20, 12, 9, 0, 0, 56)
open(sys.argv[1], "wb").write(h + name + bytes(3) + bytes(512))
PY
same_ro "4k overlay info" info t.qcow
qimg_io t.qcow w:0x1200:512:9 || fail "write into 4k overlay"
"$QEMU_IMG" create -q -f raw exp.raw 4M
"$QEMU_IO" -f raw -c 'write -P 0x41 0 4M' -c 'write -P 9 0x1200 512' exp.raw >/dev/null
check "4k overlay: the rest of the cluster from the backing file" \
    "$QEMU_IMG" compare -f qcow -F raw t.qcow exp.raw

# ---------------------------------------------- commit and rebase
rm -rf "${IN:?}"/*
"$QEMU_IMG" convert -O qcow "$SCRATCH/src.raw" a.qcow
"$QEMU_IMG" create -q -f qcow -b a.qcow -F qcow o.qcow
"$QEMU_IO" -f qcow -c 'write -P 0x55 1M 3000' -c 'write -P 0x56 8M 64k' o.qcow >/dev/null
"$QEMU_IMG" convert -O raw o.qcow o.raw
# (qemu's mirror job writes the clusters of a request in no fixed order:
# the same content, clusters placed differently)
same "commit" commit o.qcow
check "commit: top emptied as qemu's" cmp "$SCRATCH/run.ref/work/o.qcow" "$SCRATCH/run.new/work/o.qcow"
check "commit: base content" "$QEMU_IMG" compare -f qcow -F raw "$SCRATCH/run.new/work/a.qcow" o.raw
same "commit -d" commit -d o.qcow
check "commit -d: top kept" cmp o.qcow "$SCRATCH/run.new/work/o.qcow"
# qemu-img cannot change a qcow image's backing file; qimg writes the new
# name where the old one was when it fits before the L1 table
"$QEMU_IMG" convert -O raw a.qcow a.raw
cp o.qcow r.qcow
"$QIMG" rebase -u -b a.raw -F raw r.qcow || fail "rebase -u"
same_ro "rebase -u: info" info r.qcow
check "rebase -u: reads over the new backing file" "$QEMU_IMG" compare r.qcow o.raw
"$QIMG" rebase -u -b "" r.qcow || fail "rebase -u none"
same_ro "rebase -u none: info" info r.qcow
cp o.qcow r.qcow
check_fail "rebase -u: a longer name is refused" "$QIMG" rebase -u -b a-much-longer-name.raw -F raw r.qcow
check "rebase -u refused: file untouched" cmp o.qcow r.qcow
"$QIMG" rebase -b "" r.qcow || fail "rebase safe"
check "rebase safe: content" "$QEMU_IMG" compare r.qcow o.raw
same_ro "rebase safe: info" info r.qcow

# ---------------------------------------------- AES encryption
# (qemu's legacy qcow encryption: AES-128-CBC, the guest sector as IV)
rm -rf "${IN:?}"/*
S=(--object secret,id=sec0,data=abc123)
enc() { echo "driver=qcow,file.filename=$1,encrypt.key-secret=sec0"; }
"$QEMU_IMG" create -q -f raw p.raw 4M
"$QEMU_IO" -f raw -c 'write -P 0x33 0 8k' -c 'write -P 0x44 100k 1000' -c 'write -P 0x45 3M 512' \
    p.raw >/dev/null
same "aes create" create "${S[@]}" -f qcow -o encrypt.format=aes,encrypt.key-secret=sec0 e.qcow 4M
check "aes create: same file" cmp "$SCRATCH/run.ref/work/e.qcow" "$SCRATCH/run.new/work/e.qcow"
same "aes create: unknown secret" create "${S[@]}" -f qcow -o encryption=on,encrypt.key-secret=nope e.qcow 4M
"$QEMU_IMG" convert "${S[@]}" -O qcow -o encrypt.format=aes,encrypt.key-secret=sec0 p.raw ref.qcow
"$QIMG" convert "${S[@]}" -O qcow -o encrypt.format=aes,encrypt.key-secret=sec0 p.raw mine.qcow ||
    fail "aes convert"
check "aes convert: same file" cmp ref.qcow mine.qcow
check "aes convert: qemu-img reads it" "$QEMU_IMG" compare "${S[@]}" --image-opts "$(enc mine.qcow)" \
    driver=raw,file.filename=p.raw
same_ro "aes info" info ref.qcow
same_ro "aes info json" info --output=json ref.qcow
same_ro "aes map without the secret" map ref.qcow
same_ro "aes map" map "${S[@]}" --image-opts "$(enc ref.qcow)"
same_ro "aes map json" map --output=json "${S[@]}" --image-opts "$(enc ref.qcow)"
same_ro "aes info by options" info "${S[@]}" --image-opts "$(enc ref.qcow)"
same_ro "aes convert from" convert "${S[@]}" --image-opts "$(enc ref.qcow)" -O raw from.raw
same_ro "aes wrong format option" map --image-opts driver=qcow,file.filename=ref.qcow,encrypt.format=luks
same_ro "aes format option on a plain image" map --image-opts driver=qcow,file.filename=p.raw,encrypt.format=aes
same_ro "aes unknown secret" map "${S[@]}" --image-opts driver=qcow,file.filename=ref.qcow,encrypt.key-secret=x
same "aes convert -c refused" convert "${S[@]}" -c -O qcow -o encrypt.format=aes,encrypt.key-secret=sec0 p.raw c.qcow
if has_pymod "libqcow aes" pyqcow; then
    expect_eq "libqcow decrypts qimg's aes qcow" "$("$DEB_PYTHON" -c '
import hashlib, pyqcow, sys
f = pyqcow.file(); f.set_password("abc123"); f.open(sys.argv[1])
print(hashlib.sha256(f.read_buffer_at_offset(f.get_media_size(), 0)).hexdigest())' mine.qcow)" "$(sha p.raw)"
fi
# writes of parts of sectors and clusters: the same file as qemu-io's
"$QEMU_IMG" create -q "${S[@]}" -f qcow -o encrypt.format=aes,encrypt.key-secret=sec0 ref.qcow 4M
cp ref.qcow mine.qcow
OPS="w:4096:1000:2 w:70000:200000:3 w:3145216:1024:5 w:0x3f0000:0x10:6 w:512:512:7"
args=()
for op in $OPS; do IFS=: read -r k a b c <<< "$op"; args+=(-c "write -P $c $a $b"); done
"$QEMU_IO" "${S[@]}" --image-opts "$(enc ref.qcow)" "${args[@]}" >/dev/null || fail "qemu-io aes writes"
# shellcheck disable=SC2086
python3 - "$LIBQIMG" secret,id=sec0,data=abc123 "$(enc mine.qcow)" $OPS <<'PY' || fail "qimg aes writes"
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.qimg_last_error.restype = ctypes.c_char_p
img = ctypes.c_void_p()
if lib.qimg_object_add(sys.argv[2].encode()) < 0 or lib.qimg_open_opts(ctypes.byref(img), sys.argv[3].encode(), 1) < 0:
    sys.exit(lib.qimg_last_error().decode())
for op in sys.argv[4:]:
    f = op.split(":")
    off, n = int(f[1], 0), int(f[2], 0)
    if lib.qimg_write(img, ctypes.c_uint64(off), bytes([int(f[3], 0)]) * n, ctypes.c_size_t(n)) < 0:
        sys.exit(op + ": " + lib.qimg_last_error().decode())
if lib.qimg_close(img) < 0:
    sys.exit(lib.qimg_last_error().decode())
PY
check "aes partial writes: same file" cmp ref.qcow mine.qcow

# ---------------------------------------------- hostile headers
rm -rf "${IN:?}"/*
"$QEMU_IMG" convert -O qcow "$SCRATCH/src.raw" b.qcow
hostile() {   # hostile NAME OFFSET BYTES VALUE...
    local name=$1; shift
    cp b.qcow t.qcow
    while [ $# -ge 3 ]; do poke_be t.qcow "$1" "$2" "$3"; shift 3; done
    same_ro "$name: info" info -f qcow t.qcow
    same_ro "$name: probed" info t.qcow
    same_ro "$name: convert" convert -f qcow -O raw t.qcow x.raw
}
hostile "bad magic" 0 4 0
hostile "version 2" 4 4 2
hostile "version 7" 4 4 7
hostile "size 1" 24 8 1
hostile "size huge" 24 8 0xffffffffffffffff
hostile "size past L1 limit" 24 8 0x7fffffffffffffff
hostile "cluster bits 8" 32 1 8
hostile "cluster bits 17" 32 1 17
hostile "l2 bits 5" 33 1 5
hostile "l2 bits 14" 33 1 14
hostile "AES without a secret" 36 4 1
same_ro "AES with a secret" convert --object secret,id=s,data=x --image-opts \
    driver=qcow,file.filename=t.qcow,encrypt.key-secret=s -O raw x.raw
hostile "unknown crypt method" 36 4 2
hostile "backing name too long" 8 8 48 16 4 2000
hostile "backing name past EOF" 8 8 0x100000 16 4 10
hostile "L1 past EOF" 40 8 0x100000000
hostile "L2 past EOF" 48 8 0x1000000000
hostile "cluster unaligned" 4096 8 0x2001
# a 256 TiB disk whose L1 table (1 GiB) lies past the end of the file:
# qimg opens it in bounded memory and maps it at once (qemu-img walks
# it a cluster at a time)
cp b.qcow t.qcow && poke_be t.qcow 24 8 0x1000000000000 && poke_be t.qcow 40 8 0x100000000
out=$( (ulimit -v 1048576; timeout 10 "$QIMG" map --output=json t.qcow) 2>&1); rc=$?
expect_eq "L1 of 1 GiB past EOF: map" "$rc:$out" \
    '0:[{ "start": 0, "length": 281474976710656, "depth": 0, "present": false, "zero": true, "data": false}]'
same_ro "L1 of 1 GiB past EOF: info" info t.qcow
