#!/bin/bash
# qcow2 read side against qemu-img: images made by qemu-img and qemu-io with
# every option set; info (human, json), map (human, json) and the converted
# raw content must be the same.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# same_ro (lib.sh): both tools read the very same files in $IN

# mk NAME "CREATE-OPTS" [qemu-io commands...]: a 4 MiB image written by qemu-io
mk() {
    local name=$1 opts=$2; shift 2
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    if ! (cd "$IN" && "$QEMU_IMG" create -q -f qcow2 ${opts:+-o "$opts"} "$name" 4M); then
        fail "create $name" "qemu-img create -o $opts"
        return 1
    fi
    if [ ${#args[@]} -gt 0 ] && ! (cd "$IN" && "$QEMU_IO" -f qcow2 "${args[@]}" "$name" >/dev/null); then
        fail "write $name" "qemu-io ${args[*]}"
        return 1
    fi
}

# The writes every image gets: data, partial clusters, zero writes, a
# discard, a write in the middle of a cluster (subclusters with extended L2).
STD_IO=("write -P 0xaa 0 200k" "write -P 0x11 300k 3k" "write -z 512k 128k"
        "write -P 0x22 1M 64k" "discard 1M 32k" "write -P 0x33 2105344 4k"
        "write -z 2113536 2k" "write -P 0x44 4193792 512")

raw_same() {   # NAME IMAGE [qemu-img convert options]
    local name=$1 img=$2; shift 2
    rm -f "$SCRATCH/ref.raw" "$SCRATCH/new.raw"
    "$QEMU_IMG" convert "$@" -O raw "$IN/$img" "$SCRATCH/ref.raw"
    local rc1=$?
    "$QIMG" convert "$@" -O raw "$IN/$img" "$SCRATCH/new.raw"
    local rc2=$?
    if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && cmp -s "$SCRATCH/ref.raw" "$SCRATCH/new.raw"; then
        pass "$name"
    else
        fail "$name" "convert rc $rc1/$rc2 or content differs"
    fi
}

compare_all() {   # IMAGE
    local img=$1
    same_ro "info $img" info "$img"
    same_ro "info json $img" info --output=json "$img"
    same_ro "map $img" map "$img"
    same_ro "map json $img" map --output=json "$img"
    raw_same "convert $img" "$img"
}

declare -A OPTS=(
    [default]=""
    [c512]="cluster_size=512"
    [c4k]="cluster_size=4k"
    [c2m]="cluster_size=2M"
    [v2]="compat=0.10"
    [rb1]="refcount_bits=1"
    [rb8]="refcount_bits=8"
    [rb64]="refcount_bits=64"
    [lazy]="lazy_refcounts=on"
    [extl2]="extended_l2=on"
    [extl2c32k]="extended_l2=on,cluster_size=32k"
    [zstd]="compression_type=zstd"
    [premeta]="preallocation=metadata"
    [prefull]="preallocation=full"
)
for k in default c512 c4k c2m v2 rb1 rb8 rb64 lazy extl2 extl2c32k zstd premeta prefull; do
    mk "$k.qcow2" "${OPTS[$k]}" "${STD_IO[@]}" && compare_all "$k.qcow2"
done

# compressed images (zlib and zstd), also from a compressed source with holes
"$QEMU_IMG" convert -O raw "$IN/default.qcow2" "$SCRATCH/src.raw"
"$QEMU_IMG" convert -c -O qcow2 "$SCRATCH/src.raw" "$IN/cz.qcow2"
"$QEMU_IMG" convert -c -O qcow2 -o compression_type=zstd "$SCRATCH/src.raw" "$IN/czstd.qcow2"
"$QEMU_IMG" convert -c -O qcow2 -o cluster_size=4k "$SCRATCH/src.raw" "$IN/cz4k.qcow2"
"$QEMU_IMG" convert -c -O qcow2 -o cluster_size=2M "$SCRATCH/src.raw" "$IN/cz2m.qcow2"
# compressible and incompressible data mixed, so some clusters stay plain
head -c 1M /dev/urandom > "$SCRATCH/rand"
"$QEMU_IO" -f raw -c "write -P 0x5a 1536k 512k" "$SCRATCH/src.raw" >/dev/null
dd if="$SCRATCH/rand" of="$SCRATCH/src.raw" bs=64k seek=40 conv=notrunc status=none
"$QEMU_IMG" convert -c -O qcow2 "$SCRATCH/src.raw" "$IN/cmix.qcow2"
"$QEMU_IMG" convert -c -O qcow2 -o compression_type=zstd,cluster_size=512 "$SCRATCH/src.raw" "$IN/cmix512.qcow2"
for img in cz czstd cz4k cz2m cmix cmix512; do
    compare_all "$img.qcow2"
done

# external data file, plain and raw
mk "df.qcow2" "data_file=df.data" "${STD_IO[@]}" && compare_all "df.qcow2"
mk "dfr.qcow2" "data_file=dfr.data,data_file_raw=on" "${STD_IO[@]}" && compare_all "dfr.qcow2"

# a 3-deep backing chain: base (raw) <- mid (qcow2) <- top (qcow2, v2)
"$QEMU_IMG" create -q -f raw "$IN/base.raw" 4M
"$QEMU_IO" -f raw -c "write -P 0x61 0 4M" "$IN/base.raw" >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b base.raw -F raw "$IN/mid.qcow2" 4M
"$QEMU_IO" -f qcow2 -c "write -P 0x62 64k 1M" -c "write -z 2M 64k" "$IN/mid.qcow2" >/dev/null
"$QEMU_IMG" create -q -f qcow2 -o compat=0.10 -b mid.qcow2 -F qcow2 "$IN/top.qcow2" 4M
"$QEMU_IO" -f qcow2 -c "write -P 0x63 512k 4k" -c "discard 3M 64k" "$IN/top.qcow2" >/dev/null
compare_all top.qcow2
compare_all mid.qcow2
same_ro "info backing chain" info --backing-chain top.qcow2
same_ro "info backing chain json" info --backing-chain --output=json top.qcow2
raw_same "convert --target-image-opts" top.qcow2 -m 1
# extended L2 over a backing file: unallocated subclusters read the backing
"$QEMU_IMG" create -q -f qcow2 -o extended_l2=on -b base.raw -F raw "$IN/sub.qcow2" 4M
"$QEMU_IO" -f qcow2 -c "write -P 0x64 8k 2k" -c "write -z 40k 4k" "$IN/sub.qcow2" >/dev/null
compare_all sub.qcow2
# a shorter backing file: past its end reads zeros
"$QEMU_IMG" create -q -f qcow2 "$IN/short.qcow2" 1M
"$QEMU_IMG" create -q -f qcow2 -b short.qcow2 -F qcow2 "$IN/long.qcow2" 4M
compare_all long.qcow2

# snapshots, bitmaps, lazy refcounts left dirty
mk snap.qcow2 "" "write -P 0x71 0 64k"
"$QEMU_IMG" snapshot -c first "$IN/snap.qcow2"
"$QEMU_IO" -f qcow2 -c "write -P 0x72 0 64k" "$IN/snap.qcow2" >/dev/null
"$QEMU_IMG" snapshot -c "a longer snapshot name" "$IN/snap.qcow2"
compare_all snap.qcow2
same_ro "snapshot -l" snapshot -l snap.qcow2
mk bm.qcow2 ""
"$QEMU_IMG" bitmap --add "$IN/bm.qcow2" b0
"$QEMU_IMG" bitmap --add -g 128k --disable "$IN/bm.qcow2" second
same_ro "info bitmaps" info bm.qcow2
same_ro "info bitmaps json" info --output=json bm.qcow2

# the unknown header extension is ignored, and a v3 header longer than 112
cp "$IN/default.qcow2" "$IN/ext.qcow2"
printf '\x12\x34\x56\x78\x00\x00\x00\x04abcd\x00\x00\x00\x00' |
    dd of="$IN/ext.qcow2" bs=1 seek=$((0x70)) conv=notrunc status=none  # replaces the feature table
compare_all ext.qcow2

# concurrent reads: convert with 8 workers equals qemu's output
raw_same "convert -m 8" cmix.qcow2 -m 8 -W

echo done
