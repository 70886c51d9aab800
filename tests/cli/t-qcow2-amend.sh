#!/bin/bash
# qcow2 amend against qemu-img: every change made by qimg on one copy and by
# qemu-img on another (same stdout, stderr, exit code), then qemu-img check
# clean on qimg's result, qemu-img compare of the two results identical and
# qemu-img info --output=json equal (actual-size aside).  Every refusal too.
. "$(dirname "$0")/lib.sh"
need_cmd python3

# info without the fields that depend on the layout
info_json() {
    "$QEMU_IMG" info --output=json "$1" 2>&1 | grep -v '"actual-size"'
}

# amend_same NAME IMAGE ARGS...: `same` on "amend ARGS IMAGE", then the
# results of both tools are checked and compared.
amend_same() {
    local name=$1 img=$2; shift 2
    same "$name" amend "$@" "$img"
    local a=$SCRATCH/run.ref/work b=$SCRATCH/run.new/work
    [ "$(cat "$SCRATCH/run.ref/rc")" = 0 ] || return 0
    # qemu-img check clean after; a v2 image keeping bitmaps leaks their
    # clusters, as qemu's result does
    local out rca=0 rcb=0
    (cd "$a" && "$QEMU_IMG" check "$img" >/dev/null 2>&1) || rca=$?
    out=$(cd "$b" && "$QEMU_IMG" check "$img" 2>&1) || rcb=$?
    if [ "$rcb" = 0 ] || [ "$rca" = 3 -a "$rcb" = 3 ]; then pass "$name-check"
    else fail "$name-check" "rc $rcb, qemu's result: $rca" "$out"; fi
    if out=$("$QEMU_IMG" compare "$a/$img" "$b/$img" 2>&1); then pass "$name-compare"
    else fail "$name-compare" "$out"; fi
    local ia ib
    ia=$(cd "$a" && info_json "$img"); ib=$(cd "$b" && info_json "$img")
    expect_eq "$name-info" "$ib" "$ia"
}

# snapshots_kept NAME IMAGE SNAP...: after the last amend, every snapshot
# of qimg's result reads as in the original image.  (qemu 7.2 zeroes a
# cluster shared with a snapshot in place when it downgrades an image whose
# active layer has a preallocated zero cluster over it: its result loses
# snapshot data and fails qemu-img check; qimg gives the active layer a
# cluster of its own.)
snapshots_kept() {
    local name=$1 img=$2 sn; shift 2
    local b=$SCRATCH/run.new/work
    for sn in "$@"; do
        rm -f "$SCRATCH/sa.raw" "$SCRATCH/sb.raw"
        if "$QEMU_IMG" convert -U -l "$sn" -O raw "$IN/$img" "$SCRATCH/sa.raw" &&
           "$QEMU_IMG" convert -U -l "$sn" -O raw "$b/$img" "$SCRATCH/sb.raw" &&
           cmp -s "$SCRATCH/sa.raw" "$SCRATCH/sb.raw"; then pass "$name-snapshot-$sn"
        else fail "$name-snapshot-$sn" "snapshot $sn differs from the original"; fi
    done
}

# identical NAME IMAGE: after the last amend, qimg's file is byte for byte
# qemu-img's (header-only changes and the v2/v3 conversions lay out alike)
identical() {
    if cmp -s "$SCRATCH/run.ref/work/$2" "$SCRATCH/run.new/work/$2"; then pass "$1-identical"
    else fail "$1-identical" "$(cmp "$SCRATCH/run.ref/work/$2" "$SCRATCH/run.new/work/$2" 2>&1)"; fi
}

mk() { "$QEMU_IMG" create -q -f qcow2 "$@"; }
io() { local f=$1; shift; for c in "$@"; do "$QEMU_IO" -c "$c" "$f" >/dev/null || echo "qemu-io failed: $c"; done; }

# ---- images with data (made by qemu-img / qemu-io)
cd "$IN" || exit 1
mk -o compat=1.1 v3.qcow2 4M
io v3.qcow2 'write -P 1 0 192k' 'write -z 0 64k' 'write -z -u 64k 64k' 'write -z 1M 64k' \
    'write -P 3 2M 64k' 'write -c -P 4 3M 64k' 'write -P 5 3200k 4k'
mk -o compat=0.10 v2.qcow2 4M
io v2.qcow2 'write -P 1 0 192k' 'write -z 1M 64k' 'write -c -P 4 3M 64k' 'write -P 5 3200k 4k'
mk base.qcow2 4M
io base.qcow2 'write -P 9 0 4M'
mk -b base.qcow2 -F qcow2 over.qcow2 4M
io over.qcow2 'write -P 1 0 192k' 'write -z 0 64k' 'write -z -u 64k 64k' 'write -z 1M 64k' \
    'write -c -P 4 3M 64k' 'write -z 3200k 4k'
mk snap.qcow2 4M
io snap.qcow2 'write -P 1 0 1M' 'write -z 2M 64k'
"$QEMU_IMG" snapshot -c s1 snap.qcow2
io snap.qcow2 'write -P 2 64k 64k' 'write -z 128k 64k' 'write -z 2M 128k'
"$QEMU_IMG" snapshot -c s2 snap.qcow2
io snap.qcow2 'write -z -u 512k 64k'
mk -b base.qcow2 -F qcow2 snapover.qcow2 4M
io snapover.qcow2 'write -P 1 0 128k' 'write -z 1M 64k'
"$QEMU_IMG" snapshot -c s1 snapover.qcow2
io snapover.qcow2 'write -z 0 64k' 'write -z 2M 64k'
mk -o cluster_size=4k small.qcow2 8M
io small.qcow2 'write -P 7 0 3M' 'write -z 4M 1M' 'write -P 8 6M 8k'
mk -o data_file=data.raw df.qcow2 4M
io df.qcow2 'write -P 6 0 1M'
cp data.raw other.raw
mk -o data_file=data2.raw,data_file_raw=on dfraw.qcow2 4M
mk -o compression_type=zstd zstd.qcow2 4M
io zstd.qcow2 'write -c -P 3 0 64k'
mk -o compression_type=zstd zstd0.qcow2 4M
io zstd0.qcow2 'write -P 3 0 64k'
mk -o lazy_refcounts=on lazy.qcow2 4M
io lazy.qcow2 'write -P 1 0 1M'
mk -o extended_l2=on el2.qcow2 4M
mk bm.qcow2 4M
"$QEMU_IMG" bitmap --add bm.qcow2 b0
cp snap.qcow2 snapgrown.qcow2
"$QEMU_IMG" resize -q snapgrown.qcow2 8M
mk -o refcount_bits=8 rc8.qcow2 4M
io rc8.qcow2 'write -P 1 0 1M'

# a v2 header followed by an extension qemu does not know (kept as is)
mk -o compat=0.10 unk.qcow2 4M
io unk.qcow2 'write -P 1 0 64k'
printf '\x12\x34\x56\x78\x00\x00\x00\x05hello\x00\x00\x00' |
    dd of=unk.qcow2 bs=1 seek=72 conv=notrunc 2>/dev/null
# a v3 header of 104 bytes (no compression type byte): qemu rewrites 112
mk short.qcow2 4M
python3 - <<'PY'
import struct
with open('short.qcow2', 'r+b') as f:
    d = bytearray(f.read(4096))
    hl = struct.unpack('>I', d[100:104])[0]
    exts = bytes(d[hl:])
    d[100:104] = struct.pack('>I', 104)
    d[104:] = exts + bytes(len(d) - 104 - len(exts))
    f.seek(0); f.write(d)
PY
# lazy refcounts, not closed cleanly (repaired when opened, as qemu does)
cp lazy.qcow2 dirty.qcow2
printf '\x01' | dd of=dirty.qcow2 bs=1 seek=79 conv=notrunc 2>/dev/null
# a snapshot with vm state: 5 GiB cannot be described by v2, 4 GiB - 1 can
mk vm5g.qcow2 1M
"$QEMU_IMG" snapshot -c s vm5g.qcow2
so=$(peek64 vm5g.qcow2 64)
cp vm5g.qcow2 vm4g.qcow2
printf '\x00\x00\x00\x01\x40\x00\x00\x00' | dd of=vm5g.qcow2 bs=1 seek=$((so + 40)) conv=notrunc 2>/dev/null
printf '\x00\x00\x00\x00\xff\xff\xff\xff' | dd of=vm4g.qcow2 bs=1 seek=$((so + 40)) conv=notrunc 2>/dev/null
# 4 GiB images: several L1 entries and a full refcount table for -p
mk big.qcow2 4G
io big.qcow2 'write -P 1 0 64k' 'write -z 1G 64k' 'write -P 2 2G 64k' 'write -z 3G 64k' 'write -P 3 3900M 64k'
mk -o compat=0.10 big2.qcow2 4G
io big2.qcow2 'write -P 1 0 64k' 'write -P 2 2G 64k'
"$QEMU_IMG" snapshot -c s big2.qcow2
# qemu-iotests 112: the new width's first block fills up with its own
# count, the new table lands past it and needs a second block, so qemu walks
# its table four times, not three (its progress goes back from 66.67% to 50%)
mk -o refcount_bits=1,cluster_size=512 walks4.qcow2 64k
io walks4.qcow2 "write 0 $((58 * 512))"

# ---- byte for byte where qemu's layout is followed
amend_same id-v2 v3.qcow2 -o compat=0.10; identical id-v2 v3.qcow2
amend_same id-v2-over over.qcow2 -o compat=0.10; identical id-v2-over over.qcow2
amend_same id-v3 v2.qcow2 -o compat=1.1; identical id-v3 v2.qcow2
amend_same id-lazy v3.qcow2 -o lazy_refcounts=on; identical id-lazy v3.qcow2
amend_same id-lazy-off lazy.qcow2 -o lazy_refcounts=off; identical id-lazy-off lazy.qcow2
amend_same id-unk-v3 unk.qcow2 -o compat=1.1; identical id-unk-v3 unk.qcow2
amend_same id-unk-lazy unk.qcow2 -o compat=1.1,lazy_refcounts=on; identical id-unk-lazy unk.qcow2
amend_same id-short short.qcow2 -o lazy_refcounts=on; identical id-short short.qcow2
amend_same id-dirty-off dirty.qcow2 -o lazy_refcounts=off; identical id-dirty-off dirty.qcow2
amend_same id-dirty-v2 dirty.qcow2 -o compat=0.10; identical id-dirty-v2 dirty.qcow2
amend_same id-vm4g vm4g.qcow2 -o compat=0.10; identical id-vm4g vm4g.qcow2
amend_same id-df df.qcow2 -o data_file=other.raw; identical id-df df.qcow2
amend_same id-dfraw dfraw.qcow2 -o data_file_raw=off; identical id-dfraw dfraw.qcow2
amend_same id-big-v2 big.qcow2 -o compat=0.10; identical id-big-v2 big.qcow2
amend_same id-rc8 v3.qcow2 -o refcount_bits=8
cmp -s -n 512 "$SCRATCH/run.ref/work/v3.qcow2" "$SCRATCH/run.new/work/v3.qcow2" &&
    pass id-rc8-header || fail id-rc8-header "headers differ"
# the data file name can be removed (the image then needs data-file=)
same df-empty amend -o data_file= df.qcow2
identical df-empty df.qcow2
same refuse-vm5g amend -o compat=0.10 vm5g.qcow2

# ---- changes, each against qemu-img
for img in v3.qcow2 over.qcow2 snap.qcow2 snapover.qcow2 small.qcow2 zstd0.qcow2 lazy.qcow2 bm.qcow2; do
    amend_same "v2-$img" "$img" -o compat=0.10
done
amend_same v2-snap-again snap.qcow2 -o compat=0.10
snapshots_kept v2-snap snap.qcow2 s1 s2
amend_same v2-snapover-again snapover.qcow2 -o compat=0.10
snapshots_kept v2-snapover snapover.qcow2 s1
for img in v2.qcow2; do
    amend_same "v3-$img" "$img" -o compat=1.1
    amend_same "v3-lazy-$img" "$img" -o compat=1.1,lazy_refcounts=on
    amend_same "v3-rc8-$img" "$img" -o compat=1.1,refcount_bits=8
done
for img in v3.qcow2 over.qcow2 snap.qcow2 small.qcow2 rc8.qcow2 df.qcow2; do
    for bits in 1 2 4 8 16 32 64; do
        amend_same "rc$bits-$img" "$img" -o refcount_bits=$bits
    done
    [ "$img" = snap.qcow2 ] && snapshots_kept "rc-$img" "$img" s1 s2
done
for img in v3.qcow2 lazy.qcow2 snap.qcow2; do
    amend_same "lazy-on-$img" "$img" -o lazy_refcounts=on
    amend_same "lazy-off-$img" "$img" -o lazy_refcounts=off
done
for img in v3.qcow2 v2.qcow2 snap.qcow2 small.qcow2 over.qcow2; do
    amend_same "grow-$img" "$img" -o size=64M
    amend_same "shrink-$img" "$img" -o size=1M
done
amend_same df-rename df.qcow2 -o data_file=data.raw
amend_same df-raw-off dfraw.qcow2 -o data_file_raw=off
amend_same df-raw-on dfraw.qcow2 -o data_file_raw=on
amend_same combo v3.qcow2 -o refcount_bits=8,lazy_refcounts=on,size=8M
amend_combo_down() { amend_same "$@"; }
amend_combo_down combo-down v3.qcow2 -o refcount_bits=16,compat=0.10,size=8M
amend_same nothing v3.qcow2 -o compat=1.1,refcount_bits=16

# ---- progress
amend_same p-v2 v3.qcow2 -p -o compat=0.10
amend_same p-v3 v2.qcow2 -p -o compat=1.1
amend_same p-rc v3.qcow2 -p -o refcount_bits=64
amend_same p-up-rc v2.qcow2 -p -o compat=1.1,refcount_bits=8
amend_same p-snap-v2 snap.qcow2 -p -o compat=0.10
amend_same p-lazy v3.qcow2 -p -o lazy_refcounts=on
amend_same p-rc1-fail snap.qcow2 -p -o refcount_bits=1
for o in compat=0.10 refcount_bits=8 refcount_bits=1 refcount_bits=64,lazy_refcounts=on,size=6G \
         refcount_bits=16,compat=0.10 size=7G,compat=0.10; do
    amend_same "p-big-$o" big.qcow2 -p -o "$o"
done
for o in compat=1.1 compat=1.1,refcount_bits=8 compat=1.1,refcount_bits=32,size=5G; do
    amend_same "p-big2-$o" big2.qcow2 -p -o "$o"
done
amend_same p-big2-down big2.qcow2 -p -o compat=1.1,refcount_bits=2
amend_same p-walks4 walks4.qcow2 -p -o refcount_bits=64
if cmp -s "$SCRATCH/run.ref/work/walks4.qcow2" "$SCRATCH/run.new/work/walks4.qcow2"; then
    pass "p-walks4: the same bytes as qemu-img's"
else
    fail "p-walks4: the same bytes as qemu-img's"
fi

# ---- refusals
amend_same no-rc1-snap snap.qcow2 -o refcount_bits=1
for o in compat=foo compat= refcount_bits=3 refcount_bits=0 refcount_bits=128 refcount_bits=foo \
         lazy_refcounts=foo backing_file=x backing_fmt=raw data_file=x data_file_raw=on \
         cluster_size=4k extended_l2=on compression_type=zstd preallocation=off encryption=on \
         encrypt.keyslot=1 encrypt.new-secret=x encrypt.format=luks foo=1 size=1000 \
         size=foo encrypt.keyslot=1,compat=foo refcount_bits=3,backing_file=x \
         data_file_raw=on,backing_file=x size=1000,refcount_bits=8 lazy_refcounts=on,size=1000; do
    amend_same "refuse-$o" v3.qcow2 -o "$o"
done
for o in lazy_refcounts=on refcount_bits=8 compat=1.1,size=1000 size=8M; do
    amend_same "refuse-v2-$o" v2.qcow2 -o "$o"
done
amend_same refuse-v2-snap-size snapgrown.qcow2 -o compat=0.10
amend_same refuse-v2-rc8 rc8.qcow2 -o compat=0.10
amend_same refuse-v2-df df.qcow2 -o compat=0.10
amend_same refuse-v2-el2 el2.qcow2 -o compat=0.10
amend_same refuse-v2-zstd zstd.qcow2 -o compat=0.10
amend_same refuse-v2-lazy v3.qcow2 -o compat=0.10,lazy_refcounts=on
amend_same refuse-v2-rc v3.qcow2 -o compat=0.10,refcount_bits=8
amend_same refuse-v2-size-snap snap.qcow2 -o compat=0.10,size=8M
amend_same help-fmt v3.qcow2 -f qcow2 -o help
amend_same help-probed v3.qcow2 -o help
same help-nofile amend -f qcow2 -o help x
same help-q amend -f qcow2 -o '?' x
