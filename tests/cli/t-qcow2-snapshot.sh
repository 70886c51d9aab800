#!/bin/bash
# qcow2 internal snapshots against qemu-img: the same sequence of writes
# (qemu-io) and snapshot commands runs in two directories, with qemu-img in
# one and qimg in the other.  Each command prints the same (dates masked);
# after each one qemu-img check of qimg's image is clean and equal to the
# check of qemu's (same layout, same image end), both images read the same,
# and so does every snapshot.  Then mixed: snapshots made by one tool are
# listed, applied and deleted by the other.
. "$(dirname "$0")/lib.sh"

A=$SCRATCH/a B=$SCRATCH/b
mkdir -p "$A" "$B"

# dates and times change from run to run
mask() {
    sed -E -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}/DATE/' \
        -e 's/"date-(n?sec)": [0-9]+/"date-\1": N/'
}

# run DIR TOOL ARGS...: output in DIR/.out, DIR/.err, DIR/.rc
run() {
    local dir=$1 tool=$2; shift 2
    (cd "$dir" && "$tool" "$@" >.out 2>.err; echo $? >.rc)
}

# io IMAGE CMD...: qemu-io commands on the image in both directories
io() {
    local img=$1 c d; shift
    for d in "$A" "$B"; do
        for c in "$@"; do
            "$QEMU_IO" -f qcow2 -c "$c" "$d/$img" >/dev/null || echo "qemu-io failed: $c in $d"
        done
    done
}

# snapshot ids of an image (qemu-img's listing)
ids() { "$QEMU_IMG" snapshot -U -l "$1" | awk 'NR > 2 { print $1 }'; }

# compare_images NAME IMAGE: qimg's image B against qemu's A: check clean
# and the same report, same active data, same snapshot data, same listing.
compare_images() {
    local name=$1 img=$2 ca cb rcb=0 id
    ca=$(cd "$A" && "$QEMU_IMG" check "$img" 2>&1)
    cb=$(cd "$B" && "$QEMU_IMG" check "$img" 2>&1) || rcb=$?
    if [ "$rcb" = 0 ] && [ "$ca" = "$cb" ]; then pass "$name-check"
    else fail "$name-check" "rc $rcb" "$cb" "qemu's: $ca"; fi
    local out
    if out=$("$QEMU_IMG" compare -U -f qcow2 -F qcow2 "$A/$img" "$B/$img" 2>&1); then pass "$name-data"
    else fail "$name-data" "$out"; fi
    local la lb
    la=$("$QEMU_IMG" snapshot -U -l "$A/$img" | mask); lb=$("$QEMU_IMG" snapshot -U -l "$B/$img" | mask)
    expect_eq "$name-list" "$lb" "$la"
    for id in $(ids "$A/$img"); do
        rm -f "$SCRATCH/sa.raw" "$SCRATCH/sb.raw"
        if "$QEMU_IMG" convert -U -l "snapshot.id=$id" -O raw "$A/$img" "$SCRATCH/sa.raw" &&
           "$QEMU_IMG" convert -U -l "snapshot.id=$id" -O raw "$B/$img" "$SCRATCH/sb.raw" &&
           cmp -s "$SCRATCH/sa.raw" "$SCRATCH/sb.raw"; then pass "$name-snap$id"
        else fail "$name-snap$id" "snapshot $id differs"; fi
    done
}

# both NAME IMAGE ARGS...: "snapshot ARGS IMAGE" by qemu-img in A and by
# qimg in B: same stdout (masked), stderr and exit code, then compared.
both() {
    local name=$1 img=$2; shift 2
    run "$A" "$QEMU_IMG" snapshot "$@" "$img"
    run "$B" "$QIMG_AS_QEMU" snapshot "$@" "$img"
    local f ok=1 what=""
    for f in .out .err .rc; do
        if [ "$(mask <"$A/$f")" != "$(mask <"$B/$f")" ]; then
            ok=0; what="$what $f: $(diff <(mask <"$A/$f") <(mask <"$B/$f") | head -10)"
        fi
    done
    if [ $ok = 1 ]; then pass "$name"; else fail "$name" "snapshot $* $img" "$what"; fi
    # a listing changes nothing; an external data file resolves against
    # the working directory, so those images are not compared from here
    case " $* $img" in *" -l "*|*" df."*) ;; *) compare_images "$name" "$img" ;; esac
}

# info of both images, human and json, dates and disk use masked
info_both() {
    local name=$1 img=$2 fmt ia ib
    for fmt in human json; do
        ia=$(cd "$A" && "$QEMU_IMG" info --output=$fmt "$img" | mask | grep -v -e 'disk size' -e actual-size)
        ib=$(cd "$B" && "$QIMG_AS_QEMU" info --output=$fmt "$img" | mask | grep -v -e 'disk size' -e actual-size)
        expect_eq "$name-info-$fmt" "$ib" "$ia"
    done
}

reads() {   # reads NAME FILE OFFSET LEN PATTERN
    if "$QEMU_IO" -f qcow2 -c "read -P $4 $2 $3" "$1" 2>&1 | grep -q '^read'; then return 0; fi
    return 1
}

# ---- the main sequence, over several layouts
sequence() {
    local tag=$1; shift
    local img=$tag.qcow2
    "$QEMU_IMG" create -q -f qcow2 "$@" "$A/$img" 4M
    cp "$A/$img" "$B/$img"
    # data, a preallocated zero cluster, plain zeros, and compressed
    # clusters sharing host clusters
    local c1='write -c -P 6 3584k 128k' c2='write -c -P 3 3M 64k'
    # compressed writes are whole clusters, into unallocated ones
    [ "$tag" = c2m ] && c1='read 0 512' c2='read 0 512'
    io "$img" 'write -P 1 0 1M' 'write -z 64k 64k' 'write -P 1 3M 64k' 'write -z 1M 64k' "$c1"
    both "$tag-c1" "$img" -c s1
    io "$img" 'write -P 2 0 512k' 'write -P 2 2M 128k' 'discard 3M 64k'
    both "$tag-c2" "$img" -c s2
    both "$tag-c2dup" "$img" -c s2
    io "$img" 'write -P 3 256k 512k' "$c2"
    both "$tag-list" "$img" -l
    info_both "$tag" "$img"
    both "$tag-a1" "$img" -a s1
    if reads "$B/$img" 0 1M 1; then pass "$tag-a1-reads"; else fail "$tag-a1-reads"; fi
    both "$tag-a2" "$img" -a 2
    if reads "$B/$img" 0 512k 2 && reads "$B/$img" 512k 512k 1; then pass "$tag-a2-reads"
    else fail "$tag-a2-reads"; fi
    io "$img" 'write -P 4 64k 64k'
    both "$tag-d1" "$img" -d s1
    both "$tag-a-id3" "$img" -a 3
    if reads "$B/$img" 0 64k 2 && reads "$B/$img" 64k 64k 2; then pass "$tag-a3-reads"
    else fail "$tag-a3-reads"; fi
    both "$tag-d2" "$img" -d s2
    both "$tag-c3" "$img" -c s3
    both "$tag-d2b" "$img" -d s2
    both "$tag-d3" "$img" -d s3
    both "$tag-empty" "$img" -l
}

sequence c64k
sequence c512 -o cluster_size=512
sequence c2m -o cluster_size=2M
sequence v2 -o compat=0.10
sequence l2ext -o extended_l2=on
sequence lazy64 -o lazy_refcounts=on,refcount_bits=64

# ---- refcount overflow: qemu refuses (EINVAL) and leaks the L1 copy;
# qimg refuses the same way and leaves the image clean.
"$QEMU_IMG" create -q -f qcow2 -o refcount_bits=2 "$A/r2.qcow2" 1M
cp "$A/r2.qcow2" "$B/r2.qcow2"
io r2.qcow2 'write -P 1 0 64k'
both r2-c1 r2.qcow2 -c s1
both r2-c2 r2.qcow2 -c s2
run "$A" "$QEMU_IMG" snapshot -c s3 r2.qcow2
run "$B" "$QIMG_AS_QEMU" snapshot -c s3 r2.qcow2
expect_eq r2-c3-refused "$(cat "$B/.rc"; cat "$B/.err")" "$(cat "$A/.rc"; cat "$A/.err")"
out=$("$QEMU_IMG" check "$B/r2.qcow2" 2>&1); rc=$?
expect_eq r2-c3-clean "$rc" 0
run "$A" "$QEMU_IMG" snapshot -a s1 r2.qcow2
run "$B" "$QIMG_AS_QEMU" snapshot -a s1 r2.qcow2
expect_eq r2-a1-refused "$(cat "$B/.rc"; cat "$B/.err")" "$(cat "$A/.rc"; cat "$A/.err")"
out=$("$QEMU_IMG" check "$B/r2.qcow2" 2>&1); rc=$?
expect_eq r2-a1-clean "$rc" 0
# qemu's image keeps the leaked L1 copy: repaired, the two agree again
"$QEMU_IMG" check -q -r leaks "$A/r2.qcow2" >/dev/null 2>&1
both r2-d1 r2.qcow2 -d s1
both r2-a2 r2.qcow2 -a s2

"$QEMU_IMG" create -q -f qcow2 -o refcount_bits=1 "$A/r1.qcow2" 1M
cp "$A/r1.qcow2" "$B/r1.qcow2"
both r1-empty r1.qcow2 -c s1
io r1.qcow2 'write -P 1 0 64k'
run "$B" "$QIMG_AS_QEMU" snapshot -c s2 r1.qcow2
expect_eq r1-refused "$(cat "$B/.rc"; cat "$B/.err")" "1
qemu-img: Could not create snapshot 's2': -22 (Invalid argument)"
out=$("$QEMU_IMG" check "$B/r1.qcow2" 2>&1); rc=$?
expect_eq r1-clean "$rc" 0

# ---- errors
"$QEMU_IMG" create -q -f qcow2 "$A/e.qcow2" 1M
cp "$A/e.qcow2" "$B/e.qcow2"
both e-apply-missing e.qcow2 -a nosuch
both e-delete-missing e.qcow2 -d nosuch
both e-c e.qcow2 -c x
both e-delete-by-id-missing e.qcow2 -d 2
(cd "$A" && "$QEMU_IMG" create -q -f qcow2 -o data_file=e.raw df.qcow2 1M)
(cd "$B" && "$QEMU_IMG" create -q -f qcow2 -o data_file=e.raw df.qcow2 1M)
both df-create df.qcow2 -c s1
both df-apply df.qcow2 -a s1
both df-delete df.qcow2 -d s1
both df-list df.qcow2 -l
# a zero-sized disk: no L1 table
"$QEMU_IMG" create -q -f qcow2 "$A/z.qcow2" 0
cp "$A/z.qcow2" "$B/z.qcow2"
both z-c z.qcow2 -c s
both z-a z.qcow2 -a s
both z-d z.qcow2 -d s

# ---- resize between snapshots: apply restores the size
"$QEMU_IMG" create -q -f qcow2 "$A/rs.qcow2" 1M
cp "$A/rs.qcow2" "$B/rs.qcow2"
io rs.qcow2 'write -P 1 0 64k'
both rs-c1 rs.qcow2 -c small
for d in "$A" "$B"; do "$QEMU_IMG" resize -q "$d/rs.qcow2" 3M; done
io rs.qcow2 'write -P 2 2M 64k'
both rs-c2 rs.qcow2 -c big
both rs-a1 rs.qcow2 -a small
info_both rs rs.qcow2
both rs-a2 rs.qcow2 -a big
info_both rs2 rs.qcow2

# ---- a snapshot whose L1 table is larger than the active one (as with VM
# state past the disk): apply grows the active table
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=512 "$A/g.qcow2" 1M
cp "$A/g.qcow2" "$B/g.qcow2"
io g.qcow2 'write -P 1 0 64k'
both g-c g.qcow2 -c s
for d in "$A" "$B"; do
    # l1_size of the entry: 64 (its cluster holds 64 entries, the rest zeros)
    off=$(od -An -tx1 -j64 -N8 "$d/g.qcow2" | tr -d ' \n')
    printf '\x00\x00\x00\x40' | dd of="$d/g.qcow2" bs=1 seek=$((16#$off + 8)) conv=notrunc status=none
done
io g.qcow2 'write -P 2 0 32k'
both g-a g.qcow2 -a s
if reads "$B/g.qcow2" 0 64k 1; then pass g-reads; else fail g-reads; fi

# ---- mixed: qimg's snapshots used by qemu-img and the other way round
M=$SCRATCH/m
mkdir -p "$M"
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4k "$M/m.qcow2" 2M
"$QEMU_IO" -c 'write -P 1 0 1M' "$M/m.qcow2" >/dev/null
check mix-qimg-c1 "$QIMG_AS_QEMU" snapshot -c s1 "$M/m.qcow2"
"$QEMU_IO" -c 'write -P 2 0 512k' "$M/m.qcow2" >/dev/null
check mix-qemu-c2 "$QEMU_IMG" snapshot -c s2 "$M/m.qcow2"
"$QEMU_IO" -c 'write -P 3 128k 128k' "$M/m.qcow2" >/dev/null
la=$("$QEMU_IMG" snapshot -l "$M/m.qcow2"); lb=$("$QIMG_AS_QEMU" snapshot -l "$M/m.qcow2")
expect_eq mix-list "$lb" "$la"
check mix-qemu-a1 "$QEMU_IMG" snapshot -a s1 "$M/m.qcow2"
if reads "$M/m.qcow2" 0 1M 1; then pass mix-qemu-a1-reads; else fail mix-qemu-a1-reads; fi
check mix-qimg-a2 "$QIMG_AS_QEMU" snapshot -a s2 "$M/m.qcow2"
if reads "$M/m.qcow2" 0 512k 2 && reads "$M/m.qcow2" 512k 512k 1; then pass mix-qimg-a2-reads
else fail mix-qimg-a2-reads; fi
check mix-check1 "$QEMU_IMG" check "$M/m.qcow2"
check mix-qimg-d1 "$QIMG_AS_QEMU" snapshot -d s1 "$M/m.qcow2"
check mix-check2 "$QEMU_IMG" check "$M/m.qcow2"
check mix-qemu-c3 "$QEMU_IMG" snapshot -c s3 "$M/m.qcow2"
check mix-qimg-d2 "$QIMG_AS_QEMU" snapshot -d s2 "$M/m.qcow2"
check mix-check3 "$QEMU_IMG" check "$M/m.qcow2"
check mix-qemu-d3 "$QEMU_IMG" snapshot -d s3 "$M/m.qcow2"
check mix-check4 "$QEMU_IMG" check "$M/m.qcow2"
if reads "$M/m.qcow2" 0 512k 2 && reads "$M/m.qcow2" 512k 512k 1; then pass mix-end-reads
else fail mix-end-reads; fi

# delete by id (qimg's extension): two snapshots with one name
"$QEMU_IMG" create -q -f qcow2 "$M/i.qcow2" 1M
"$QEMU_IO" -c 'write -P 1 0 64k' "$M/i.qcow2" >/dev/null
"$QIMG_AS_QEMU" snapshot -c dup "$M/i.qcow2"
"$QEMU_IO" -c 'write -P 2 0 64k' "$M/i.qcow2" >/dev/null
"$QIMG_AS_QEMU" snapshot -c dup "$M/i.qcow2"
check id-delete "$QIMG_AS_QEMU" snapshot -d 2 "$M/i.qcow2"
expect_eq id-left "$(ids "$M/i.qcow2")" 1
check id-check "$QEMU_IMG" check "$M/i.qcow2"
check id-apply-left "$QEMU_IMG" snapshot -a dup "$M/i.qcow2"
if reads "$M/i.qcow2" 0 64k 1; then pass id-reads; else fail id-reads; fi

# ---- crash safety: qimg killed (strace's fault injection) before each of
# its writes and discards in turn.  qemu-img check then finds leaks at
# worst; after qimg check -r all it is clean; the disk reads as before (or,
# for apply, as the snapshot), and every snapshot left reads as it did.
C=$SCRATCH/crash
mkdir -p "$C"
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4k "$C/k0.qcow2" 1M
"$QEMU_IO" -c 'write -P 1 0 512k' -c 'write -c -P 2 512k 64k' -c 'write -z 8k 4k' "$C/k0.qcow2" >/dev/null
"$QEMU_IMG" snapshot -c old "$C/k0.qcow2"
"$QEMU_IO" -c 'write -P 3 64k 128k' -c 'write -c -P 4 544k 8k' "$C/k0.qcow2" >/dev/null
"$QEMU_IMG" convert -O raw "$C/k0.qcow2" "$C/active.raw"
"$QEMU_IMG" convert -l old -O raw "$C/k0.qcow2" "$C/old.raw"

# crash_point NAME N SYSCALL ARGS...: kill at the Nth SYSCALL; 1 when the
# command ended before it (no such call)
crash_point() {
    local name=$1 n=$2 sc=$3; shift 3
    cp "$C/k0.qcow2" "$C/k.qcow2"
    local st
    # (the shell's own "Killed" notice goes to /dev/null too)
    { strace -f -o /dev/null -e trace="$sc" -e inject="$sc":signal=KILL:when="$n" \
        "$QIMG_AS_QEMU" snapshot "$@" "$C/k.qcow2" >/dev/null 2>&1; st=$?; } 2>/dev/null
    [ $st = 137 ] || return 1
    # Leaks, and COPIED flags missing where the refcount fell to 1 (a
    # needless copy on the next write) are all a crash may leave.  Create
    # alone may leave COPIED over a raised refcount: nothing else refers to
    # the cluster while the new snapshot is not in the table.
    local out bad rc=0 ok='OFLAG_COPIED .* refcount=1$'
    [ "$name" = create ] && ok='OFLAG_COPIED '
    out=$("$QEMU_IMG" check "$C/k.qcow2" 2>&1) || rc=$?
    bad=$(grep ERROR <<<"$out" | grep -Ev "$ok")
    if [ -z "$bad" ] && [ $rc != 1 ]; then pass "$name-$sc$n-safe"
    else fail "$name-$sc$n-safe" "rc $rc" "$bad"; fi
    "$QIMG_AS_QEMU" check -q -r all "$C/k.qcow2" >/dev/null 2>&1
    rc=0
    out=$("$QEMU_IMG" check "$C/k.qcow2" 2>&1) || rc=$?
    if [ $rc = 0 ]; then pass "$name-$sc$n-repaired"; else fail "$name-$sc$n-repaired" "$out"; fi
    rm -f "$C/now.raw"
    "$QEMU_IMG" convert -O raw "$C/k.qcow2" "$C/now.raw"
    if cmp -s "$C/now.raw" "$C/active.raw" ||
       { [ "$name" = apply ] && cmp -s "$C/now.raw" "$C/old.raw"; }; then pass "$name-$sc$n-disk"
    else fail "$name-$sc$n-disk" "the disk reads neither as before nor as the snapshot"; fi
    local sn
    for sn in $("$QEMU_IMG" snapshot -l "$C/k.qcow2" | awk 'NR > 2 { print $2 }'); do
        rm -f "$C/now.raw"
        "$QEMU_IMG" convert -l "$sn" -O raw "$C/k.qcow2" "$C/now.raw"
        if cmp -s "$C/now.raw" "$C/$( [ "$sn" = old ] && echo old || echo active).raw"; then
            pass "$name-$sc$n-snapshot-$sn"
        else fail "$name-$sc$n-snapshot-$sn" "snapshot $sn changed"; fi
    done
    return 0
}

if has_cmd "crash points" strace; then
    for op in "create -c new" "apply -a old" "delete -d old"; do
        set -- $op
        for sc in pwrite64 fallocate; do
            n=1
            while crash_point "$1" $n $sc "$2" "$3"; do n=$((n + 1)); done
            [ $n -gt 1 ] || [ $sc = fallocate ] || fail "$1-$sc-no-crash-point"
        done
    done
fi
