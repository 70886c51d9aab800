#!/bin/bash
# qcow2 persistent dirty bitmaps: qimg's bitmap edits against qemu-img's
# (messages, exit codes, the bitmaps qemu-img info lists, check clean),
# bitmaps made by one tool used by the other, dirty tracking of qemu-io's
# writes and of qimg's own writes (bitmap --dump), convert --bitmaps,
# measure, hostile bitmap directories, and where stored bitmaps land in the
# file (qemu stores them all again at every store).
. "$(dirname "$0")/lib.sh"

# Offset of the bitmaps extension's data in cluster 0 (0 when none).
ext_offset() {
    local f=$1 off type len
    off=$(peek32 "$f" 100)      # header_length
    while :; do
        type=$(peek32 "$f" "$off"); len=$(peek32 "$f" $((off + 4)))
        [ "$type" = 0 ] && { echo 0; return; }
        [ "$type" = $((0x23852875)) ] && { echo $((off + 8)); return; }
        off=$((off + 8 + (len + 7) / 8 * 8))
    done
}
# Offset of the bitmap directory's first entry.
dir_offset() { peek64 "$1" $(($(ext_offset "$1") + 16)); }

# Compare stderr/rc of qemu-img and qimg, with qemu's node name
# ("#block123", different each run) replaced.
same_node() {
    local name=$1; shift
    run_in_copy ref "$QEMU_IMG" "$@"
    run_in_copy new "$QIMG_AS_QEMU" "$@"
    local a b
    a=$(sed 's/#block[0-9]*/#blockN/' "$SCRATCH/run.ref/err"; cat "$SCRATCH/run.ref/out" "$SCRATCH/run.ref/rc")
    b=$(sed 's/#block[0-9]*/#blockN/' "$SCRATCH/run.new/err"; cat "$SCRATCH/run.new/out" "$SCRATCH/run.new/rc")
    expect_eq "$name" "$b" "$a"
}

# info of an image without the size on disk (layouts may differ).
info_of() {
    (cd "$(dirname "$1")" && "$QEMU_IMG" info --output=json "$(basename "$1")") | grep -v '"actual-size"'
}

# Run one bitmap command with both tools on copies of $IN/$img; then
# the resulting images must have the same info and be clean.
same_state() {
    local name=$1 img=$2; shift 2
    same "$name" bitmap "$@"
    local ref=$SCRATCH/run.ref/work/$img new=$SCRATCH/run.new/work/$img
    expect_eq "$name: info" "$(info_of "$new")" "$(info_of "$ref")"
    local out
    out=$("$QEMU_IMG" check "$new" 2>&1) || fail "$name: check" "$out"
    [ $? = 0 ] && pass "$name: check"
}

# ================================================= edits, one tool each
fresh
mk a.qcow2 10M
mk c4k.qcow2 10M -o cluster_size=4k
mk c512.qcow2 3M -o cluster_size=512
mk v2.qcow2 10M -o compat=0.10
mk big.qcow2 2T
mk big1.qcow2 2199023256064
cp "$IN/a.qcow2" "$IN/b.qcow2"
"$QEMU_IMG" bitmap --add "$IN/b.qcow2" b0 && "$QEMU_IMG" bitmap --add -g 4k --disable "$IN/b.qcow2" b1 ||
    fail "setup b.qcow2"
qw "$IN/b.qcow2" "write 0 4k" "write 3M 200k" "write 9M 1M"

same_state add a.qcow2 --add a.qcow2 b0
same_state add-g512 a.qcow2 --add -g 512 a.qcow2 b0
same_state add-g2G a.qcow2 --add -g 2G a.qcow2 b0
same_state add-4k a.qcow2 --add c4k.qcow2 b0
same_state add-4k-info c4k.qcow2 --add c4k.qcow2 b0
same_state add-c512 c512.qcow2 --add c512.qcow2 b0
same_state add-disable a.qcow2 --add --disable a.qcow2 b0
same_state add-clear-enable a.qcow2 --add -g 1M --disable --clear --enable a.qcow2 b0
same_state add-remove a.qcow2 --add --remove a.qcow2 b0
same_state add-second b.qcow2 --add b.qcow2 b2
same_state remove b.qcow2 --remove b.qcow2 b0
same_state remove-other b.qcow2 --remove b.qcow2 b1
same_state clear b.qcow2 --clear b.qcow2 b0
same_state disable b.qcow2 --disable b.qcow2 b0
same_state enable b.qcow2 --enable b.qcow2 b1
same_state merge-self b.qcow2 --merge b0 b.qcow2 b1
same_state merge-into-new b.qcow2 --add --merge b0 --merge b1 b.qcow2 nb
same_state merge-file b.qcow2 --merge b0 -b b.qcow2 -F qcow2 b.qcow2 b1
long=$(printf 'n%.0s' $(seq 1023))
same_state name-1023 a.qcow2 --add a.qcow2 "$long"
same_state big-2T big.qcow2 --add -g 512 big.qcow2 b0

# ----- refusals (the node name in qemu's messages differs per run)
same_node v2 bitmap --add v2.qcow2 b0
same_node name-1024 bitmap --add a.qcow2 "${long}x"
same_node too-big bitmap --add -g 512 big1.qcow2 b0
same_node gran-4G bitmap --add -g 4G a.qcow2 b0
same exists bitmap --add b.qcow2 b0
same exists-after bitmap --add --add b.qcow2 x
same missing-remove bitmap --remove b.qcow2 nope
same missing-clear bitmap --clear b.qcow2 nope
same missing-enable bitmap --enable b.qcow2 nope
same missing-disable bitmap --disable b.qcow2 nope
same missing-merge-src bitmap --merge nope b.qcow2 b0
same missing-merge-dst bitmap --merge b0 b.qcow2 nope
same missing-merge-file bitmap --merge nope -b a.qcow2 b.qcow2 b0
same stops-at-failure bitmap --disable --remove --clear b.qcow2 b0
expect_eq "stops-at-failure: state" "$(info_of "$SCRATCH/run.new/work/b.qcow2")" \
    "$(info_of "$SCRATCH/run.ref/work/b.qcow2")"

# ----- an in-use bitmap (the flag set as a crashed qemu leaves it)
cp "$IN/b.qcow2" "$IN/iu.qcow2"
d=$(dir_offset "$IN/iu.qcow2")
poke32 "$IN/iu.qcow2" $((d + 12)) 3
same info-in-use info --output=json iu.qcow2
for act in "--clear" "--enable" "--disable" "--merge b1" "--add"; do
    same_state "in-use $act" iu.qcow2 $act iu.qcow2 b0
done
same_state "in-use merge from it" iu.qcow2 --merge b0 iu.qcow2 b1
same_state "in-use remove" iu.qcow2 --remove iu.qcow2 b0
same_state "in-use add other" iu.qcow2 --add iu.qcow2 b5

# ================================================= interop both ways
fresh
mk x.qcow2 16M
cp "$IN/x.qcow2" "$IN/y.qcow2"
"$QIMG" bitmap --add "$IN/x.qcow2" q0 || fail "qimg add"
"$QIMG" bitmap --add -g 8k "$IN/x.qcow2" q1 || fail "qimg add"
"$QEMU_IMG" bitmap --add "$IN/y.qcow2" q0 || fail "qemu-img add"
"$QEMU_IMG" bitmap --add -g 8k "$IN/y.qcow2" q1 || fail "qemu-img add"
expect_eq "qimg's bitmaps listed by qemu-img" "$(info_of "$IN/x.qcow2" | sed 's/x.qcow2//')" \
    "$(info_of "$IN/y.qcow2" | sed 's/y.qcow2//')"
# qemu writes into both, then each tool merges in the other's image
for f in x y; do
    qw "$IN/$f.qcow2" "write 0 1k" "write 1M 100k" "write 15M 1M"
done
"$QEMU_IMG" bitmap --add --disable --merge q0 --merge q1 "$IN/x.qcow2" m || fail "qemu merges qimg's"
"$QIMG" bitmap --add --disable --merge q0 --merge q1 "$IN/y.qcow2" m || fail "qimg merges qemu's"
check "qemu-img check x" "$QEMU_IMG" check "$IN/x.qcow2"
check "qemu-img check y" "$QEMU_IMG" check "$IN/y.qcow2"
expect_eq "merge both ways" "$("$QIMG" bitmap --dump "$IN/x.qcow2" m)" \
    "$("$QIMG" bitmap --dump "$IN/y.qcow2" m)"
expect_eq "dump of a merge" "$("$QIMG" bitmap --dump "$IN/y.qcow2" m)" \
    "0 65536
1048576 131072
15728640 1048576"
expect_eq "dump q1 (8k)" "$("$QIMG" bitmap --dump "$IN/x.qcow2" q1)" \
    "0 8192
1048576 106496
15728640 1048576"
expect_eq "dump json" "$("$QIMG" bitmap --dump --output=json "$IN/x.qcow2" q0)" \
    '[{ "start": 0, "length": 65536 },
{ "start": 1048576, "length": 131072 },
{ "start": 15728640, "length": 1048576 }]'
"$QIMG" bitmap --add "$IN/x.qcow2" e
expect_eq "dump clean" "$("$QIMG" bitmap --dump "$IN/x.qcow2" e)" ""
expect_eq "dump clean json" "$("$QIMG" bitmap --dump --output json "$IN/x.qcow2" e)" "[]"
out=$("$QIMG" bitmap --dump "$IN/x.qcow2" nope 2>&1); rc=$?
expect_eq "dump missing" "$rc:$out" "1:qimg: Operation dump on bitmap nope failed: Dirty bitmap 'nope' not found"
# a qemu-io merge target read back by qemu-io's own view: qemu-img
# bitmap --merge into a disabled bitmap made by qimg, then dumped
"$QEMU_IMG" bitmap --add --disable "$IN/y.qcow2" fromq || fail add
"$QEMU_IMG" bitmap --merge q1 "$IN/y.qcow2" fromq || fail "qemu merge"
# (8k granules rounded out to the target's 64k)
expect_eq "qemu merge dumped" "$("$QIMG" bitmap --dump "$IN/y.qcow2" fromq)" \
    "$("$QIMG" bitmap --dump "$IN/y.qcow2" q0)"

# ================================================= dirty tracking
# the same writes by qemu-io and by qimg mark the same ranges
fresh
mk t.qcow2 8M
"$QEMU_IMG" bitmap --add "$IN/t.qcow2" g64k || fail add
"$QEMU_IMG" bitmap --add -g 512 "$IN/t.qcow2" g512 || fail add
"$QEMU_IMG" bitmap --add --disable "$IN/t.qcow2" off || fail add
"$QEMU_IO" -f raw -c "write -P 7 0 8M" "$IN/src.raw" >/dev/null 2>&1 || {
    truncate -s 8M "$IN/src.raw"; "$QEMU_IO" -f raw -c "write -P 7 64k 200k" -c "write -P 1 5M 3k" "$IN/src.raw" >/dev/null; }
truncate -s 8M "$IN/sparse.raw"
"$QEMU_IO" -f raw -c "write -P 7 64k 200k" -c "write -P 1 5M 3k" "$IN/sparse.raw" >/dev/null
dumps() { for b in g64k g512 off; do echo "$b:"; "$QIMG" bitmap --dump "$1" $b; done; }
track() {   # track NAME QEMU-COMMAND... -- QIMG-COMMAND...  (IMG is the target)
    local name=$1; shift
    local q=() i=()
    while [ "$1" != -- ]; do q+=("$1"); shift; done; shift
    i=("$@")
    cp "$IN/t.qcow2" "$SCRATCH/q.qcow2"; cp "$IN/t.qcow2" "$SCRATCH/i.qcow2"
    "${q[@]//IMG/$SCRATCH/q.qcow2}" >/dev/null 2>&1 || fail "$name: qemu run"
    "${i[@]//IMG/$SCRATCH/i.qcow2}" >/dev/null 2>&1 || fail "$name: qimg run"
    expect_eq "$name: dumps" "$(dumps "$SCRATCH/i.qcow2")" "$(dumps "$SCRATCH/q.qcow2")"
    expect_eq "$name: info" "$(info_of "$SCRATCH/i.qcow2" | sed 's/i.qcow2//')" \
        "$(info_of "$SCRATCH/q.qcow2" | sed 's/q.qcow2//')"
    check "$name: check" "$QEMU_IMG" check "$SCRATCH/i.qcow2"
    check "$name: compare" "$QEMU_IMG" compare "$SCRATCH/i.qcow2" "$SCRATCH/q.qcow2"
}
track "convert -n" "$QEMU_IMG" convert -n -f raw -O qcow2 "$IN/sparse.raw" IMG -- \
    "$QIMG" convert -n -f raw -O qcow2 "$IN/sparse.raw" IMG
track "bench -w" "$QEMU_IMG" bench -w -c 20 -s 4k -S 12k -o 1M -f qcow2 IMG -- \
    "$QIMG" bench -w -c 20 -s 4k -S 12k -o 1M -f qcow2 IMG
track "bench -w unaligned" "$QEMU_IMG" bench -w -c 3 -s 1000 -o 70000 -f qcow2 IMG -- \
    "$QIMG" bench -w -c 3 -s 1000 -o 70000 -f qcow2 IMG
# a dump after qemu-io writes equals the written ranges rounded out
cp "$IN/t.qcow2" "$SCRATCH/w.qcow2"
qw "$SCRATCH/w.qcow2" "write 100 1" "write 70k 64k" "write -z 2M 1M" "discard 4M 64k" "write 8388096 512"
expect_eq "qemu-io writes dumped (64k)" "$("$QIMG" bitmap --dump "$SCRATCH/w.qcow2" g64k)" \
"0 196608
2097152 1048576
4194304 65536
8323072 65536"
expect_eq "qemu-io writes dumped (512)" "$("$QIMG" bitmap --dump "$SCRATCH/w.qcow2" g512)" \
"0 512
71680 65536
2097152 1048576
4194304 65536
8388096 512"
expect_eq "disabled bitmap untouched" "$("$QIMG" bitmap --dump "$SCRATCH/w.qcow2" off)" ""

# ================================================= hostile directories
fresh
mk h.qcow2 8M
"$QEMU_IMG" bitmap --add "$IN/h.qcow2" b0 || fail add
qw "$IN/h.qcow2" "write 0 64k"
d=$(dir_offset "$IN/h.qcow2")
t=$(peek64 "$IN/h.qcow2" "$d")
hostile() {   # hostile NAME OFFSET SIZE VALUE [same]: same = qemu-img info says the same
    local name=$1
    cp "$IN/h.qcow2" "$IN/x.qcow2"
    poke_hex "$IN/x.qcow2" "$2" "$(printf "%0$(($3 * 2))x" "$4")"
    [ "${5:-}" = same ] && same "hostile $name: info message" info x.qcow2
    local clean=0
    "$QEMU_IMG" check "$IN/x.qcow2" >/dev/null 2>&1 && clean=1
    for cmd in "info x.qcow2" "bitmap --clear x.qcow2 b0" "bitmap --add x.qcow2 b1" \
               "bitmap --remove x.qcow2 b0" "bitmap --dump x.qcow2 b0"; do
        run_in_copy new "$QIMG_AS_QEMU" $cmd
        local rc; rc=$(cat "$SCRATCH/run.new/rc")
        if [ "$rc" -gt 1 ] || grep -qi "sanitizer\|core dumped" "$SCRATCH/run.new/err" ||
           { [ "$rc" = 1 ] && ! [ -s "$SCRATCH/run.new/err" ]; }; then
            fail "hostile $name: $cmd" "rc=$rc" "$(cat "$SCRATCH/run.new/err")"
        else
            pass "hostile $name: $cmd"
        fi
        # whatever a command did, the image stays clean for qemu-img check
        if [ "$rc" = 0 ] && [ $clean = 1 ] && [ "${cmd#bitmap --dump}" = "$cmd" ] &&
           ! "$QEMU_IMG" check "$SCRATCH/run.new/work/x.qcow2" >/dev/null 2>&1; then
            fail "hostile $name: $cmd: check after"
        fi
    done
    rm -f "$IN/x.qcow2"
}
hostile "table offset past EOF" "$d" 8 $((1 << 40))
hostile "table offset unaligned" "$d" 8 $((t + 512))
hostile "table size huge" $((d + 8)) 4 $((0xffffffff)) same
hostile "table size 0" $((d + 8)) 4 0 same
hostile "granularity 8" $((d + 17)) 1 8 same
hostile "granularity 32" $((d + 17)) 1 32 same
hostile "name size 0" $((d + 18)) 2 0 same
hostile "name size past dir" $((d + 18)) 2 1000 same
hostile "extra data size" $((d + 20)) 4 $((0x7fffffff)) same
hostile "reserved flags" $((d + 12)) 4 $((1 << 10)) same
hostile "type 2" $((d + 16)) 1 2 same
hostile "table entry past EOF" "$t" 8 $((1 << 50))
hostile "table entry reserved bits" "$t" 8 $((0x10000 | 2))
hostile "table entry unaligned" "$t" 8 $((0x10200))
e=$(ext_offset "$IN/h.qcow2")
hostile "nb_bitmaps 2" "$e" 4 2 same
hostile "nb_bitmaps 0" "$e" 4 0 same
hostile "nb_bitmaps 65536" "$e" 4 65536 same
hostile "directory size 0" $((e + 8)) 8 0 same
hostile "directory size 8" $((e + 8)) 8 8 same
hostile "directory size huge" $((e + 8)) 8 $((1 << 40)) same
hostile "directory past EOF" $((e + 16)) 8 $((1 << 40))
hostile "directory unaligned" $((e + 16)) 8 $((d + 8)) same
hostile "directory on the header" $((e + 16)) 8 0 same

# ================================================= convert --bitmaps, measure
fresh
mk s.qcow2 4M
for b in a b c; do "$QEMU_IMG" bitmap --add "$IN/s.qcow2" $b || fail "add $b"; done
"$QEMU_IMG" bitmap --disable "$IN/s.qcow2" b && "$QEMU_IMG" bitmap --add -g 4k "$IN/s.qcow2" d ||
    fail "setup s.qcow2"
qw "$IN/s.qcow2" "write 0 64k" "write 1M 5k" "write -z 3M 100k"
cp "$IN/s.qcow2" "$IN/iu.qcow2"
poke32 "$IN/iu.qcow2" $(($(dir_offset "$IN/iu.qcow2") + 12)) 3
# a and b in use (entries of 32 bytes: 24, a 1-byte name, padding):
# convert names them last to first, as qemu-img (qemu-iotests qemu-img-bitmaps)
cp "$IN/iu.qcow2" "$IN/iu2.qcow2"
poke32 "$IN/iu2.qcow2" $(($(dir_offset "$IN/iu2.qcow2") + 32 + 12)) 1
mk v2.qcow2 4M -o compat=0.10
mk have.qcow2 4M
"$QEMU_IMG" bitmap --add "$IN/have.qcow2" c || fail "add c"
truncate -s 4M "$IN/r.raw"
dumps_all() { for b in a b c d; do echo "$b:"; "$QIMG" bitmap --dump "$1" $b 2>&1; done; }
conv() {   # conv NAME TARGET ARGS...: same output, then same bitmaps in the target
    local name=$1 tgt=$2; shift 2
    same "$name" convert "$@"
    local ref=$SCRATCH/run.ref/work/$tgt new=$SCRATCH/run.new/work/$tgt
    [ -e "$ref" ] || return 0
    expect_eq "$name: target info" "$(info_of "$new")" "$(info_of "$ref")"
    expect_eq "$name: target dumps" "$(dumps_all "$new")" "$(dumps_all "$ref")"
    [ "${tgt%.qcow2}" = "$tgt" ] || check "$name: target check" "$QEMU_IMG" check "$new"
}
conv "convert --bitmaps" o.qcow2 --bitmaps -O qcow2 s.qcow2 o.qcow2
conv "convert --bitmaps 4k clusters" o.qcow2 --bitmaps -O qcow2 -o cluster_size=4k s.qcow2 o.qcow2
conv "convert --bitmaps -c" o.qcow2 --bitmaps -c -O qcow2 s.qcow2 o.qcow2
conv "convert --bitmaps -n" have.qcow2 --bitmaps -n -O qcow2 s.qcow2 have.qcow2
conv "convert --bitmaps into v2" o.qcow2 --bitmaps -O qcow2 -o compat=0.10 s.qcow2 o.qcow2
conv "convert --bitmaps to raw" o.raw --bitmaps -O raw s.qcow2 o.raw
conv "convert --bitmaps from raw" o.qcow2 --bitmaps -O qcow2 r.raw o.qcow2
conv "convert --bitmaps from v2" o.qcow2 --bitmaps -O qcow2 v2.qcow2 o.qcow2
conv "convert --bitmaps in-use" o.qcow2 --bitmaps -O qcow2 iu.qcow2 o.qcow2
conv "convert --bitmaps --skip-broken" o.qcow2 --bitmaps --skip-broken-bitmaps -O qcow2 iu.qcow2 o.qcow2
conv "convert --bitmaps two in-use" o.qcow2 --bitmaps -O qcow2 iu2.qcow2 o.qcow2
conv "convert --bitmaps --skip-broken two in-use" o.qcow2 --bitmaps --skip-broken-bitmaps -O qcow2 iu2.qcow2 o.qcow2
same "measure with bitmaps" measure -O qcow2 s.qcow2
same "measure with bitmaps json" measure --output=json -O qcow2 -o cluster_size=4k s.qcow2
same "measure into v2" measure -O qcow2 -o compat=0.10 s.qcow2

# ================================================= resize: bitmaps follow the size
for sz in 100G 3M 4M; do
    same "resize $sz" resize --shrink s.qcow2 $sz
    expect_eq "resize $sz: info" "$(info_of "$SCRATCH/run.new/work/s.qcow2")" \
        "$(info_of "$SCRATCH/run.ref/work/s.qcow2")"
    expect_eq "resize $sz: dumps" "$(dumps_all "$SCRATCH/run.new/work/s.qcow2")" \
        "$(dumps_all "$SCRATCH/run.ref/work/s.qcow2")"
    check "resize $sz: check" "$QEMU_IMG" check "$SCRATCH/run.new/work/s.qcow2"
done
same "resize with an in-use bitmap" resize iu.qcow2 8M

# ================================================= where stored bitmaps land
# qemu stores every bitmap again whenever it stores one (new data clusters
# and tables, in directory order, then a new directory); a removal first
# writes the directory without it.  Each tool runs the same sequence on its
# own copy: the files have the same size, the same clusters in use, and so
# the same measure of the file read as raw (qemu-iotest 190's case).
layout() {   # layout TOOL FILE CLUSTER-SIZE SIZE: bitmap edits by TOOL
    local t=$1 f=$2
    "$QEMU_IMG" create -q -f qcow2 -o cluster_size=$3 "$f" "$4" &&
    "$QEMU_IO" -c 'write -P 1 0 1M' "$f" >/dev/null &&
    "$t" bitmap --add -g 4k "$f" a && "$t" bitmap --add "$f" b &&
    "$QEMU_IO" -c 'write -P 2 2M 1M' "$f" >/dev/null &&
    "$t" bitmap --add -g 512 "$f" c && "$t" bitmap --disable "$f" a &&
    "$t" bitmap --add "$f" d && "$t" bitmap --merge b "$f" d &&
    "$t" bitmap --remove "$f" b && "$t" bitmap --clear "$f" c &&
    "$t" bitmap --enable "$f" a || echo "sequence failed"
    stat -c %s "$f"
    "$QEMU_IMG" check "$f" 2>&1
    info_of "$f"
    # (what is required depends on the file's holes: not compared)
    "$QEMU_IMG" measure -O qcow2 -f raw "$f" 2>&1 | sed '/^required size:/ s/[0-9][0-9]*/SIZE/'
}
for spec in 64k:64M 512:8M 2M:1G 64k:3G; do
    cs=${spec%:*} sz=${spec#*:}
    mkdir -p "$SCRATCH/lay-new" "$SCRATCH/lay-ref"
    expect_eq "bitmap edits, cluster size $cs, $sz: same layout" \
        "$(layout "$QIMG" "$SCRATCH/lay-new/t.qcow2" "$cs" "$sz")" \
        "$(layout "$QEMU_IMG" "$SCRATCH/lay-ref/t.qcow2" "$cs" "$sz")"
    rm -rf "$SCRATCH"/lay-*
done
# qemu-iotest 190: a 2 TiB image, 2 MiB clusters, a 512-byte bitmap
# (256 table entries, no data) stored again when the second is added
big() {
    "$QEMU_IMG" create -q -f qcow2 -o cluster_size=2M "$2" 2T &&
    "$1" bitmap --add --granularity 512 -f qcow2 "$2" b1 &&
    "$1" bitmap --add -g 2M -f qcow2 "$2" b2 || echo "add failed"
    stat -c %s "$2"
    "$QEMU_IMG" measure -O qcow2 -f raw "$2" 2>&1 | sed '/^required size:/ s/[0-9][0-9]*/SIZE/'
    "$QEMU_IMG" measure -O qcow2 -o cluster_size=64k -f qcow2 "$2" 2>&1
}
mkdir -p "$SCRATCH/big-new" "$SCRATCH/big-ref"
expect_eq "2 TiB image, two bitmaps: same file and measures" \
    "$(big "$QIMG" "$SCRATCH/big-new/t.qcow2")" "$(big "$QEMU_IMG" "$SCRATCH/big-ref/t.qcow2")"
rm -rf "$SCRATCH"/big-*
