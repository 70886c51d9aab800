#!/bin/bash
# The qed format: images qemu-img makes read the same by both tools (info,
# map, check, convert); qimg's create, convert and writes checked by
# qemu-img (cmp, check, compare); backing chains (commit, rebase, -B);
# resize; the need-check flag; check -r; hostile headers and tables.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# a raw source with data, a zero run and holes (20 MiB)
"$QEMU_IMG" create -q -f raw "$SCRATCH/src.raw" 20M
"$QEMU_IO" -f raw -c 'write -P 7 0 100k' -c 'write -P 9 3M 2M' -c 'write -P 3 10M 512' \
    -c 'write -z 12M 1M' -c 'write -P 5 19M 1M' "$SCRATCH/src.raw" >/dev/null ||
    fail "make src.raw"

# ---------------------------------------------- qemu-img's images, read
for o in default cluster_size=4096 cluster_size=4096,table_size=2 table_size=16,cluster_size=1M; do
    rm -rf "${IN:?}"/*
    opt=(); [ $o = default ] || opt=(-o "$o")
    "$QEMU_IMG" convert -O qed "${opt[@]}" "$SCRATCH/src.raw" q.qed || fail "convert $o"
    "$QEMU_IO" -f qed -c 'write -z 3M 64k' -c 'write -z 15M 128k' q.qed >/dev/null
    "$QEMU_IO" -f raw -c 'write -z 3M 64k' "$SCRATCH/src.raw" >/dev/null
    same_ro "info $o" info q.qed
    same_ro "info json $o" info --output=json q.qed
    same_ro "map $o" map q.qed
    same_ro "map json $o" map --output=json q.qed
    same_ro "check $o" check q.qed
    same_ro "check json $o" check --output=json q.qed
    same_ro "compare $o" compare -f qed -F raw q.qed "$SCRATCH/src.raw"
    check "convert from $o" "$QIMG" convert -O raw q.qed from.raw
    check "convert from $o: content" cmp from.raw "$SCRATCH/src.raw"
done

# ---------------------------------------------- create: byte-identical
for args in "1G" "1000" "0" "-o cluster_size=4k 64M" "-o table_size=16 10G" "-o cluster_size=1M 1M"; do
    rm -rf "${IN:?}"/*
    # shellcheck disable=SC2086
    same "create $args" create -f qed q.qed $args
    # shellcheck disable=SC2086
    "$QEMU_IMG" create -q -f qed ref.qed $args 2>/dev/null
    # shellcheck disable=SC2086
    "$QIMG" create -q -f qed mine.qed $args 2>/dev/null
    check "create $args: cmp" cmp ref.qed mine.qed
done
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f raw r.raw 1M
"$QEMU_IMG" create -q -f qed b.qed 2M
for args in "-b r.raw -F raw" "-b b.qed -F qed" "-b b.qed -F qed 5M"; do
    # shellcheck disable=SC2086
    same "create $args" create -f qed q.qed $args
    # shellcheck disable=SC2086
    "$QEMU_IMG" create -q -f qed ref.qed $args
    # shellcheck disable=SC2086
    "$QIMG" create -q -f qed mine.qed $args
    check "create $args: cmp" cmp ref.qed mine.qed
done
same_ro "raw backing info" info ref.qed
for bad in cluster_size=1000 cluster_size=2k cluster_size=128M table_size=3 table_size=0 \
           table_size=32 cluster_size=4k,table_size=1 preallocation=metadata preallocation=foo \
           preallocation=full foo=1 cluster_size=64M,table_size=1 cluster_size=2M,table_size=16; do
    same "create $bad" create -f qed -o $bad q.qed 1T
done
same "create help" create -f qed -o help

# a table_size=1 image: qemu-img makes it, and no qemu opens it (its table
# check refuses a one-cluster table); qimg refuses it the same way
"$QEMU_IMG" create -q -f qed -o cluster_size=4k,table_size=1 t1.qed 1M
same_ro "table_size=1 info" info t1.qed
same_ro "table_size=1 map" map t1.qed

# ---------------------------------------------- convert: qemu-img's file
for o in default cluster_size=4096 cluster_size=4096,table_size=2 table_size=16,cluster_size=1M; do
    rm -rf "${IN:?}"/*
    opt=(); [ $o = default ] || opt=(-o "$o")
    "$QIMG" convert -O qed "${opt[@]}" "$SCRATCH/src.raw" mine.qed || fail "qimg convert $o"
    "$QEMU_IMG" convert -O qed "${opt[@]}" "$SCRATCH/src.raw" ref.qed
    check "convert to $o: same file as qemu-img's" cmp mine.qed ref.qed
    check "convert to $o: qemu-img check" "$QEMU_IMG" check mine.qed
    check "convert to $o: compare" "$QEMU_IMG" compare -f qed -F raw mine.qed "$SCRATCH/src.raw"
    expect_eq "convert to $o: need-check cleared" "$(od -An -tx1 -j16 -N1 mine.qed | tr -d ' ')" 00
    # into an existing image: zero runs become zero clusters
    "$QEMU_IMG" create -q -f qed "${opt[@]}" ref.qed 20M && cp ref.qed mine.qed
    "$QEMU_IMG" convert -n -O qed "$SCRATCH/src.raw" ref.qed
    "$QIMG" convert -n -O qed "$SCRATCH/src.raw" mine.qed || fail "qimg convert -n $o"
    check "convert -n $o: same file" cmp mine.qed ref.qed
done

# ---------------------------------------------- writes inside clusters
# the same writes by qemu-io and by qimg: the same file, clean
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f qed base.qed 4M
"$QEMU_IO" -f qed -c 'write -P 1 0 4M' base.qed >/dev/null
OPS="w:4096:1000:2 w:70000:200000:3 z:2097152:1000 w:3145216:1024:5 z:0x320000:0x40000 w:0x3f0000:0x10:6"
for b in none qed; do
    bopt=(); [ $b = none ] || bopt=(-b base.qed -F qed)
    "$QEMU_IMG" create -q -f qed "${bopt[@]}" ref.qed 4M && cp ref.qed mine.qed
    # shellcheck disable=SC2086
    qemu_io_ops qed ref.qed $OPS
    # shellcheck disable=SC2086
    qimg_io mine.qed $OPS || fail "qimg writes ($b)"
    check "partial writes, backing $b: same file" cmp ref.qed mine.qed
    check "partial writes, backing $b: check" "$QEMU_IMG" check mine.qed
done
# a zero cluster over a backing file, then written in part: the rest of the
# cluster still reads as zeros (qemu 7.2 copies the backing file's data in)
"$QEMU_IMG" create -q -f qed -b base.qed -F qed z.qed 4M
qimg_io z.qed z:0x100000:0x20000 w:0x101000:512:4 || fail "zero cluster write"
"$QIMG" convert -O raw z.qed z.raw || fail "zero cluster read"
"$QEMU_IMG" create -q -f raw exp.raw 4M
"$QEMU_IO" -f raw -c 'write -P 1 0 4M' -c 'write -z 0x100000 0x20000' -c 'write -P 4 0x101000 512' \
    exp.raw >/dev/null
check "zero cluster written in part: zeros kept" cmp z.raw exp.raw
check "zero cluster written in part: qemu-img reads it" "$QEMU_IMG" compare -f qed -F raw z.qed exp.raw

# qemu 7.2 counts clusters as bytes / (cluster_size - 1): one write of 16
# MiB or more into 4 KiB clusters takes (and maps) a cluster too many, and
# its check reports phantom leaks; qimg's file holds exactly what it wrote
"$QEMU_IMG" create -q -f qed -o cluster_size=4k,table_size=16 big.qed 64M
qimg_io big.qed w:0:20971520:3 || fail "20 MiB write"
expect_eq "20 MiB write: no cluster too many" "$(stat -c %s big.qed)" $((4096 + 65536 + 20971520 + 65536))
check "20 MiB write: qimg check clean" "$QIMG" check big.qed
"$QEMU_IMG" create -q -f raw exp.raw 64M
"$QEMU_IO" -f raw -c 'write -P 3 0 20M' exp.raw >/dev/null
check "20 MiB write: qemu-img reads it" "$QEMU_IMG" compare -f qed -F raw big.qed exp.raw
"$QEMU_IMG" convert -O qed -o cluster_size=4k "$SCRATCH/src.raw" ref.qed
"$QEMU_IO" -f qed -c 'write -P 8 0 17M' ref.qed >/dev/null
expect_eq "qemu-img's image: phantom leak" "$("$QEMU_IMG" check ref.qed >/dev/null 2>&1; echo $?)" 3
expect_eq "qemu-img's image: qimg finds no leak" "$("$QIMG" check ref.qed >/dev/null 2>&1; echo $?)" 0

# ---------------------------------------------- backing chains
rm -rf "${IN:?}"/*
"$QEMU_IMG" convert -O qed "$SCRATCH/src.raw" base.qed
"$QEMU_IMG" create -q -f raw src2.raw 20M
"$QEMU_IO" -f raw -c 'write -P 7 0 100k' -c 'write -P 9 3M 2M' -c 'write -P 4 10M 5000' \
    -c 'write -P 5 19M 1M' src2.raw >/dev/null
"$QEMU_IMG" convert -O qed -B base.qed -F qed src2.raw ref.qed
"$QIMG" convert -O qed -B base.qed -F qed src2.raw mine.qed || fail "convert -B"
check "convert -B: same file" cmp ref.qed mine.qed
check "convert -B: compare" "$QEMU_IMG" compare mine.qed src2.raw
same_ro "chain info" info --backing-chain ref.qed
same_ro "chain map" map --output=json ref.qed
same_ro "chain compare" compare ref.qed src2.raw
same "commit" commit ref.qed
check "commit: same base" cmp "$SCRATCH/run.ref/work/base.qed" "$SCRATCH/run.new/work/base.qed"
check "commit: same top" cmp "$SCRATCH/run.ref/work/ref.qed" "$SCRATCH/run.new/work/ref.qed"
same "commit -d" commit -d ref.qed
check "commit -d: same base" cmp "$SCRATCH/run.ref/work/base.qed" "$SCRATCH/run.new/work/base.qed"
same "rebase -u raw" rebase -u -b src2.raw -F raw ref.qed
check "rebase -u raw: same file" cmp "$SCRATCH/run.ref/work/ref.qed" "$SCRATCH/run.new/work/ref.qed"
same "rebase -u none" rebase -u -b "" ref.qed
check "rebase -u none: same file" cmp "$SCRATCH/run.ref/work/ref.qed" "$SCRATCH/run.new/work/ref.qed"
same "rebase safe none" rebase -b "" ref.qed
check "rebase safe none: same file" cmp "$SCRATCH/run.ref/work/ref.qed" "$SCRATCH/run.new/work/ref.qed"
check "rebase safe none: content" "$QEMU_IMG" compare "$SCRATCH/run.new/work/ref.qed" src2.raw
# a name longer than the header cluster holds
long=$(printf 'x%.0s' $(seq 1 70000))
cp ref.qed before.qed
check_fail "rebase -u name too long: refused" "$QIMG" rebase -u -b "$long" -F raw ref.qed
check "rebase -u name too long: file untouched" cmp before.qed ref.qed
# a qed image under a qcow2 layer
"$QEMU_IMG" create -q -f qcow2 -b base.qed -F qed top.qcow2
"$QEMU_IO" -f qcow2 -c 'write -P 0x32 64k 4k' -c 'write -P 0x33 1500k 64k' top.qcow2 >/dev/null
# (qemu's mirror job writes the two clusters of the 64 KiB write in the
# opposite order: the same content, clusters placed differently)
same "commit into qed" commit top.qcow2
check "commit into qed: same content" "$QEMU_IMG" compare "$SCRATCH/run.ref/work/base.qed" \
    "$SCRATCH/run.new/work/base.qed"
check "commit into qed: check" "$QEMU_IMG" check "$SCRATCH/run.new/work/base.qed"

# ---------------------------------------------- resize
for args in "30M" "+1000" "+1M" "10M" "--shrink 10M" "--preallocation=full +1M" "1P"; do
    # shellcheck disable=SC2086
    same "resize $args" resize ref.qed $args
    check "resize $args: same file" cmp "$SCRATCH/run.ref/work/ref.qed" "$SCRATCH/run.new/work/ref.qed"
done

# ---------------------------------------------- need-check and check -r
same_fix() {
    local name=$1 f=$2; shift 2
    same "$name" "$@"
    check "$name: same file" cmp "$SCRATCH/run.ref/work/$f" "$SCRATCH/run.new/work/$f"
}
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f qed -o cluster_size=4k b.qed 4M
"$QEMU_IO" -f qed -c 'write -P 1 0 64k' -c 'write -P 2 1M 8k' b.qed >/dev/null
L1=$((4096)) L2=$((0x15000))
damaged() {   # damaged NAME OFFSET BYTES VALUE...: t.qed with fields set, every check
    local name=$1; shift
    cp b.qed t.qed
    while [ $# -ge 3 ]; do poke_le t.qed "$1" "$2" "$3"; shift 3; done
    same "$name: info" info t.qed
    same "$name: map" map --output=json t.qed
    same "$name: check" check t.qed
    same "$name: check json" check --output=json t.qed
    same_fix "$name: check -r leaks" t.qed check -r leaks t.qed
    same_fix "$name: check -r all" t.qed check -r all t.qed
    same "$name: convert" convert -O raw t.qed x.raw
}
damaged "clean"
damaged "need-check" 16 8 2
damaged "L1 past EOF" $L1 8 0x10000000
damaged "L1 unaligned" $L1 8 0x15001
damaged "L1 onto L1" $((L1 + 8)) 8 $L1
damaged "L2 past EOF" $L2 8 0x123456000
damaged "L2 twice" $((L2 + 8)) 8 0x5000
damaged "L2 onto L1" $L2 8 $L1
damaged "need-check, L2 past EOF" 16 8 2 $L2 8 0x123456000
cp b.qed t.qed && head -c 10000 /dev/urandom >> t.qed
same "leak check" check t.qed; ref_rc "leak check" 3
same_fix "leak check -r all" t.qed check -r all t.qed
# an image left needing a check: a read-write open repairs it, as qemu's
cp b.qed t.qed && poke_le t.qed 16 8 2 && poke_le t.qed $L2 8 0x123456000
same_fix "need-check: repaired by a read-write open" t.qed resize t.qed 8M
# unknown autoclear bits are dropped by a read-write open
cp b.qed t.qed && poke_le t.qed 32 8 5
same_fix "unknown autoclear: cleared by a read-write open" t.qed resize t.qed 8M
# qimg's writes leave the flag clear
"$QIMG" convert -n -O qed "$SCRATCH/src.raw" b.qed 2>/dev/null
expect_eq "writes clear need-check" "$(od -An -tx1 -j16 -N1 b.qed | tr -d ' ')" 00

# a data cluster pointing at the L1 table: qemu writes the guest's data
# over the table; qimg refuses the write and leaves the table alone
cp b.qed t.qed && poke_le t.qed $L2 8 $L1 && cp t.qed before.qed
check_fail "L2 onto L1: write refused" qimg_io t.qed w:0:4096:0x77
check "L2 onto L1: L1 untouched" cmp before.qed t.qed

# ---------------------------------------------- hostile headers
rm -rf "${IN:?}"/*
"$QEMU_IMG" create -q -f qed -o cluster_size=4k b.qed 4M
"$QEMU_IO" -f qed -c 'write -P 1 0 64k' b.qed >/dev/null
hostile() {   # hostile NAME OFFSET BYTES VALUE
    cp b.qed t.qed && poke_le t.qed "$2" "$3" "$4"
    same "$1" info t.qed
}
hostile "bad magic" 0 4 0
hostile "cluster 1000" 4 4 1000
hostile "cluster 128M" 4 4 0x8000000
hostile "table 32" 8 4 32
hostile "table 3" 8 4 3
hostile "size huge" 48 8 0x7fffffffffffffff
hostile "size unaligned" 48 8 1000
hostile "L1 past EOF" 40 8 0x100000000
hostile "L1 unaligned" 40 8 4097
hostile "header size huge" 12 4 0xffffffff
hostile "unknown feature" 16 8 8
hostile "backing name outside" 16 8 1
hostile "unknown autoclear" 32 8 5
hostile "unknown compat" 24 8 5
cp b.qed t.qed && poke_le t.qed 16 8 1 && poke_le t.qed 12 4 2 && poke_le t.qed 60 4 5000
same "backing name too long" info t.qed
# the largest tables (16 x 64 MiB) in a file that does not hold them: a
# clear error, at once, in bounded memory
python3 - t.qed <<'PY' || fail "make huge-table image"
import struct, sys
h = struct.pack("<IIIIQQQQQII", 0x00444551, 64 << 20, 16, 1, 0, 0, 0, 64 << 20, 1 << 30, 0, 0)
open(sys.argv[1], "wb").write(h + bytes(4096 - len(h)))
PY
out=$( (ulimit -v 1048576; timeout 5 "$QIMG" info t.qed) 2>&1); rc=$?
expect_eq "huge table past EOF: refused" "$rc" 1
same_ro "huge table past EOF: as qemu" info t.qed
