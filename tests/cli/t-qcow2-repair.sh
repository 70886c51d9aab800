#!/bin/bash
# qemu-img check -r leaks / -r all on qcow2 images damaged on purpose, and
# the repair of dirty images at a read-write open: qemu-img and qimg run
# on copies of the same image; stdout, stderr and exit code must be the
# same, the repaired files byte for byte the same, qemu-img check clean
# on qimg's result where it is on qemu's, and the guest data that was
# readable before the repair unchanged.
. "$(dirname "$0")/lib.sh"
need_cmd python3

REF=$SCRATCH/run.ref/work
NEW=$SCRATCH/run.new/work


# After `same NAME check -r MODE IMG`: both repaired files identical,
# qemu-img check of qimg's result as of qemu's, and the guest data of
# qimg's result equal to qemu's and (KEEP=1) to the data before.
after_repair() {
    local name=$1 img=$2
    if cmp -s "$REF/$img" "$NEW/$img"; then pass "$name: same file as qemu-img's"
    else fail "$name: same file as qemu-img's" "$(cmp "$REF/$img" "$NEW/$img" 2>&1 | head -1)"; fi
    local a b
    a=$("$QEMU_IMG" check "$REF/$img" >/dev/null 2>&1; echo $?)
    b=$("$QEMU_IMG" check "$NEW/$img" >/dev/null 2>&1; echo $?)
    expect_eq "$name: qemu-img check after (exit code)" "$b" "$a"
    if [ "$a" = 0 ]; then
        # a broken compressed cluster fails the read of both alike
        a=$("$QEMU_IMG" convert -O raw "$REF/$img" "$SCRATCH/ref.raw" 2>&1; echo $?)
        b=$("$QEMU_IMG" convert -O raw "$NEW/$img" "$SCRATCH/new.raw" 2>&1; echo $?)
        a=${a//$REF/}; b=${b//$NEW/}
        expect_eq "$name: reading the result as qemu-img's repair" "$b" "$a"
        [ "$a" = 0 ] || return 0
        cmp -s "$SCRATCH/ref.raw" "$SCRATCH/new.raw"
        expect_eq "$name: guest data as qemu-img's repair" "$?" 0
        # what could be read before (the image may grow: its old size)
        if [ "${KEEP:-1}" = 1 ] && [ -f "$SCRATCH/before.raw" ]; then
            cmp -s -n "$(stat -c %s "$SCRATCH/before.raw")" "$SCRATCH/before.raw" "$SCRATCH/new.raw"
            expect_eq "$name: guest data unchanged by the repair" "$?" 0
        fi
    fi
}

# The guest data before a repair, when the damaged image can be read.
save_before() {
    rm -f "$SCRATCH/before.raw"
    "$QEMU_IMG" convert -O raw "$IN/$1" "$SCRATCH/before.raw" 2>/dev/null ||
        rm -f "$SCRATCH/before.raw"
}

# repair NAME IMG RC_LEAKS RC_ALL: both modes on copies of $IN
repair() {
    local name=$1 img=$2 rc_leaks=$3 rc_all=$4
    save_before "$img"
    same "$name -r leaks" check -r leaks "$img"
    ref_rc "$name -r leaks" "$rc_leaks"
    after_repair "$name -r leaks" "$img"
    same "$name -r all" check -r all "$img"
    ref_rc "$name -r all" "$rc_all"
    after_repair "$name -r all" "$img"
}

# ================================================== damaged images
# Base (mkbase, lib.sh): 64 KiB clusters, reftable, refblock, L1, L2, data.
damage() {   # damage NAME RC_LEAKS RC_ALL COMMANDS
    mkbase
    eval "$4"
    repair "$1" b.qcow2 "$2" "$3"
}

damage "refcount too high" 0 0 'poke16 "$B" $((REFB + 2 * DC)) 2'
damage "refcount too low" 1 0 'poke16 "$B" $((REFB + 2 * DC)) 0'
damage "refcount too low, not 0" 2 0 'poke64 "$B" $((L2 + 8)) $((COPIED | D0)); poke64 "$B" $((L2 + 16)) $((COPIED | D0))'
damage "refcount of the header 0" 1 0 'poke16 "$B" "$REFB" 0'
damage "refcount of the refcount block 2" 0 0 'poke16 "$B" $((REFB + 2 * (REFB >> 16))) 2'
damage "refcount of the L1 table 0" 1 0 'poke16 "$B" $((REFB + 2 * (L1 >> 16))) 0'
damage "leaked clusters" 0 0 'truncate -s +128k "$B"; poke16 "$B" $((REFB + 2 * 23)) 1; poke16 "$B" $((REFB + 2 * 24)) 3'
damage "leak past the end of the file" 0 0 'poke16 "$B" $((REFB + 2 * 30)) 1'
damage "zeroed refcount block" 1 0 'dd if=/dev/zero of="$B" bs=64k seek=$((REFB >> 16)) count=1 conv=notrunc status=none'
KEEP=0 damage "two L2 entries share a cluster" 2 0 'poke64 "$B" $((L2 + 8)) $((COPIED | D0))'
KEEP=0 damage "L2 entry past EOF" 2 2 'poke64 "$B" "$L2" $((COPIED | 0x10000000))'
KEEP=0 damage "L2 entry just past EOF" 2 2 'poke64 "$B" "$L2" $((COPIED | 0x170000))'
KEEP=0 damage "L2 entry unaligned" 2 2 'poke64 "$B" "$L2" $((COPIED | D0 | 0x200))'
damage "L2 entry reserved bits" 2 2 'poke64 "$B" $((L2 + 24)) $((COPIED | D0 + 0x30000 | 2))'
damage "COPIED missing on data" 0 0 'poke64 "$B" "$L2" "$D0"'
damage "COPIED missing on L1" 0 0 'poke64 "$B" "$L1" "$L2"'
damage "COPIED set on shared data" 0 0 'poke16 "$B" $((REFB + 2 * DC)) 2; poke16 "$B" $((REFB + 2 * 23)) 0'
damage "L1 entry reserved bits" 2 2 'poke64 "$B" "$L1" $((COPIED | (1 << 56) | L2))'
damage "L1 entry unaligned" 2 2 'poke64 "$B" "$L1" $((COPIED | L2 | 0x200))'
damage "L1 entry past EOF" 2 2 'poke64 "$B" "$L1" $((COPIED | 0x9000000))'
damage "L1 entry without table" 2 1 'poke64 "$B" "$L1" "$COPIED"'
damage "preallocated zero cluster" 0 0 'poke64 "$B" $((L2 + 24)) $((D0 + 0x30000 | 1))'
damage "preallocated zero cluster unaligned" 2 0 'poke64 "$B" $((L2 + 24)) $((D0 + 0x30200 | 1))'
damage "compressed entry over a data cluster" 0 0 'poke64 "$B" $((L2 + 24)) $(((1 << 62) | D0 + 0x30000))'
KEEP=0 damage "compressed entry shares a data cluster" 2 0 'poke64 "$B" $((L2 + 24)) $(((1 << 62) | D0 + 0x20100))'
damage "compressed entry with COPIED" 2 2 'poke64 "$B" $((L2 + 24)) $(((3 << 62) | 0x80000))'
damage "compressed entry past EOF" 2 2 'poke64 "$B" $((L2 + 24)) $(((1 << 62) | (0x3fff << 48) | 0xf0000))'
damage "refcount block unaligned" 1 1 'poke64 "$B" "$REFT" $((REFB | 0x200))'
damage "refcount table reserved bits" 1 1 'poke64 "$B" "$REFT" $((REFB | 1))'
damage "refcount block outside the image" 2 0 'poke64 "$B" $((REFT + 8)) 0x7000000'
damage "refcount block on a data cluster" 1 0 'poke64 "$B" $((REFT + 8)) "$D0"'
damage "corrupt bit" 0 0 'poke64 "$B" 72 2'
damage "dirty bit" 0 0 'poke64 "$B" 72 1'
damage "holes, refcount 0" 1 0 'qw b.qcow2 "discard 128k 256k"; poke16 "$B" $((REFB + 2 * DC)) 0'
KEEP=0 damage "past EOF and refcount 0" 1 2 'poke64 "$B" "$L2" $((COPIED | 0x10000000)); poke16 "$B" $((REFB + 2 * (DC + 1))) 0'
damage "leaks, refcount 0, COPIED missing" 1 0 'poke16 "$B" $((REFB + 2 * (DC + 1))) 0; poke16 "$B" $((REFB + 2 * (DC + 2))) 3; poke64 "$B" "$L2" "$D0"; truncate -s +64k "$B"; poke16 "$B" $((REFB + 2 * 23)) 1'

# many refcount blocks (512-byte clusters), holes: the rebuild places new
# blocks and a two-cluster table first fit, as qemu
fresh
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=512 "$IN/m.qcow2" 12M
qw m.qcow2 "write -P 1 0 12M" "discard 1M 8k" "discard 3M 4k" "discard 5M 64k"
M=$IN/m.qcow2
MREFB=$(($(peek64 "$M" "$(peek64 "$M" 48)") & MASK))
dd if=/dev/zero of="$M" bs=512 seek=$((MREFB / 512)) count=1 conv=notrunc status=none
repair "many refcount blocks, first one zeroed" m.qcow2 1 0

# other refcount widths and an external data file
for o in refcount_bits=1 refcount_bits=8 refcount_bits=64 extended_l2=on data_file=d.raw; do
    fresh
    (cd "$IN" && "$QEMU_IMG" create -q -f qcow2 -o "$o" w.qcow2 8M) || fail "create $o"
    (cd "$IN" && "$QEMU_IO" -f qcow2 -c "write -P 7 0 256k" -c "write -P 8 3M 64k" w.qcow2 >/dev/null)
    W=$IN/w.qcow2
    WREFB=$(($(peek64 "$W" "$(peek64 "$W" 48)") & MASK))
    poke64 "$W" "$WREFB" 0
    truncate -s +64k "$W"
    repair "$o: refcounts cleared, file grown" w.qcow2 1 0
done

# snapshots (mks, lib.sh): shared clusters, a snapshot's L1 table lost
mks; poke16 "$S" $((SREFB + 2 * 6)) 1; repair "snapshot: shared cluster refcount 1" s.qcow2 2 0
mks; poke64 "$S" "$SL1" 0; repair "snapshot: L1 entry cleared" s.qcow2 0 0
mks; poke16 "$S" $((SREFB + 2 * 6)) 0; repair "snapshot: shared cluster refcount 0" s.qcow2 1 0

# extended L2 entries (mkx, lib.sh): subcluster bitmaps, unaligned entries
mkx; poke64 "$X" $((XL2 + 8)) 0x3ffffffff
KEEP=0 repair "subcluster allocated and zero" x.qcow2 2 2
mkx; poke64 "$X" $((XL2 + 40)) 1
repair "unallocated cluster with bitmap" x.qcow2 2 2
mkx; poke64 "$X" "$XL2" $((COPIED | XD0 | 0x200)); poke64 "$X" $((XL2 + 8)) 0x300000000
repair "extended L2 zero cluster unaligned" x.qcow2 2 0

# ================================================== dirty images
# lazy refcounts, writer killed: refcounts stale, dirty bit set
mklazy() {
    fresh
    "$QEMU_IMG" create -q -f qcow2 -o lazy_refcounts=on "$IN/lazy.qcow2" 8M
    "$QEMU_IO" -c 'write -P 1 0 1M' -c 'write -P 2 4M 64k' -c 'sigraise 9' "$IN/lazy.qcow2" \
        >/dev/null 2>&1
    expect_eq "lazy image is dirty" "$(($(peek64 "$IN/lazy.qcow2" 72) & 1))" 1
}
mklazy
save_before lazy.qcow2
same "dirty, stale refcounts -r all" check -r all lazy.qcow2
ref_rc "dirty, stale refcounts -r all" 0
after_repair "dirty, stale refcounts -r all" lazy.qcow2
expect_eq "dirty bit cleared" "$(peek64 "$NEW/lazy.qcow2" 72)" 0
same "dirty, stale refcounts -r leaks" check -r leaks lazy.qcow2
ref_rc "dirty, stale refcounts -r leaks" 1
# a read-write open repairs first (the check's lines on stderr), then works
for cmd in "resize lazy.qcow2 16M" "commit lazy.qcow2" "rebase -u -b '' lazy.qcow2" \
           "convert -n -O qcow2 before.raw lazy.qcow2"; do
    mklazy
    cp "$SCRATCH/before.raw" "$IN/before.raw"
    eval "same \"dirty image: $cmd\" $cmd"
    after_repair "dirty image: $cmd" lazy.qcow2
done
# a read-only open leaves it as it is
mklazy
same "dirty image: info" info lazy.qcow2
same "dirty image: map" map lazy.qcow2
expect_eq "dirty image: read-only open keeps the bit" "$(($(peek64 "$NEW/lazy.qcow2" 72) & 1))" 1
# qimg's own writer, killed: dirty, then repaired at the next open
mklazy
"$QIMG_AS_QEMU" resize "$IN/lazy.qcow2" 32M >/dev/null 2>&1
expect_eq "dirty image: qimg resize clears the bit" "$(peek64 "$IN/lazy.qcow2" 72)" 0
out=$("$QEMU_IMG" check "$IN/lazy.qcow2" 2>&1); rc=$?
expect_eq "dirty image: clean after qimg's repair at open" "$rc" 0

# ================================================== crash safety
# A writer killed with -9 at random points; then qimg check -r all must
# leave an image that qemu-img check finds clean, in which every cluster
# holds either its old or its new content, and every write that completed
# (was flushed) before the kill is there.
fresh
cd "$IN" || exit 1
truncate -s 16M src.raw
"$QEMU_IO" -f raw -c "write -P 0x42 0 16M" -c "write -P 0x43 5M 1M" -c "write -z 9M 1M" src.raw >/dev/null
truncate -s 16M new.raw
"$QEMU_IO" -f raw -c "write -P 0x42 0 16M" new.raw >/dev/null
# check_clusters MODE RESULT OLD NEW CLUSTER: prints the clusters that break
#   old-or-new: each cluster is its old or its new content
#   prefix:     new content up to some cluster, old content from there on
check_clusters() {
    python3 - "$@" <<'PY'
import sys
mode, cs = sys.argv[1], int(sys.argv[5])
res, old, new = (open(f, 'rb').read() for f in sys.argv[2:5])
chunks = range(0, len(res), cs)
if mode == 'old-or-new':
    bad = [i for i in chunks if res[i:i + cs] not in (old[i:i + cs], new[i:i + cs])]
else:
    k = next((i for i in chunks if res[i:i + cs] != new[i:i + cs]), len(res))
    bad = [i for i in chunks if i >= k and res[i:i + cs] != old[i:i + cs]]
print(len(bad))
PY
}
after_kill() {   # after_kill NAME: repair, then the checks
    local name=$1 out rc
    "$QIMG_AS_QEMU" check -r all t.qcow2 >repair.out 2>&1
    expect_eq "$name: check -r all" "$?" 0
    out=$("$QEMU_IMG" check t.qcow2 2>&1); rc=$?
    if [ $rc = 0 ]; then pass "$name: qemu-img check clean"
    else fail "$name: qemu-img check clean" "rc=$rc" "$(echo "$out" | head -3)"; fi
    "$QEMU_IMG" convert -O raw t.qcow2 t.raw
}
RANDOM=4242   # fixed kill points, different for each run
for o in cluster_size=4k cluster_size=4k,lazy_refcounts=on cluster_size=64k,refcount_bits=1 \
         cluster_size=16k,extended_l2=on; do
    rm -f old.qcow2
    "$QEMU_IMG" create -q -f qcow2 -o "$o" old.qcow2 16M
    "$QEMU_IO" -f qcow2 -c "write -P 0x41 2M 8M" -c "write -P 0x44 12M 64k" old.qcow2 >/dev/null
    "$QEMU_IMG" convert -O raw old.qcow2 old.raw
    cs=$(echo "$o" | sed 's/.*cluster_size=\([0-9]*\)k.*/\1/'); cs=$((cs * 1024))
    # convert -n (rate-limited: about a second of work); it writes its
    # tables back at the end (writeback cache, as qemu-img): any cluster
    # may keep its old content, none may hold anything else
    for run in 1 2; do
        name="kill -9 during convert -n ($o, run $run)"
        cp old.qcow2 t.qcow2
        "$QIMG_AS_QEMU" convert -n -m 1 -r 16M -O qcow2 src.raw t.qcow2 >/dev/null 2>&1 &
        pid=$!
        sleep "0.$((RANDOM % 8 + 1))"
        kill -9 $pid 2>/dev/null || fail "$name: timing" "convert ended before the kill"
        wait $pid 2>/dev/null
        after_kill "$name"
        expect_eq "$name: every cluster old or new" \
            "$(check_clusters old-or-new t.raw old.raw src.raw "$cs")" 0
    done
    # bench -w with a flush after every 4 KiB write, in order: a prefix of
    # the writes is there, the rest not at all
    name="kill -9 during bench -w --flush-interval=1 ($o)"
    # how fast flushes are depends on the disk: start late, then earlier
    # until the kill lands while bench still runs
    killed=0
    for delay in "0.$((RANDOM % 5 + 2))" 0.1 0.03 0.01; do
        cp old.qcow2 t.qcow2
        "$QIMG_AS_QEMU" bench -w -c 4096 -d 1 -s 4k -S 4k --pattern=0x42 \
            --flush-interval=1 -f qcow2 t.qcow2 >/dev/null 2>&1 &
        pid=$!
        sleep "$delay"
        if kill -9 $pid 2>/dev/null; then killed=1; break; fi
        wait $pid 2>/dev/null
    done
    [ $killed = 1 ] || fail "$name: timing" "bench ended before the kill"
    wait $pid 2>/dev/null
    after_kill "$name"
    expect_eq "$name: flushed writes there, the others not" \
        "$(check_clusters prefix t.raw old.raw new.raw 4096)" 0
    cmp -s -n 4096 t.raw new.raw
    expect_eq "$name: the kill came after the first write" "$?" 0
done
# snapshot -c and amend (refcount width rewritten) killed with SIGKILL at
# a random one of their writes: strace counts the writes of a full run,
# then delivers SIGKILL on entry to write n (2 <= n < the count) of another
# run, so the kill always lands mid-operation, never before it started or
# after it ended - whatever the speed of the disk.  The guest data never
# changes, and after qimg check -r all the image is clean.
rm -f sa.qcow2
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=512 sa.qcow2 32M
"$QEMU_IO" -f qcow2 -c "write -P 5 0 32M" sa.qcow2 >/dev/null
# writes OP...: the pwrite64 calls of a full run of OP on a copy of
# sa.qcow2 (left in done.qcow2)
writes() {
    cp sa.qcow2 done.qcow2
    # shellcheck disable=SC2068 # the command and its words
    strace -f -qq -o writes.log -e trace=pwrite64 "$QIMG_AS_QEMU" $@ done.qcow2 >/dev/null 2>&1 ||
        fail "strace: full run of $*"
    grep -c 'pwrite64(' writes.log
}
if has_cmd "SIGKILL during writes" strace; then
    for op in "snapshot -c snap" "amend -o refcount_bits=64"; do
        total=$(writes $op)
        [ "$total" -ge 10 ] || fail "$op: writes counted" "$total"
        differs_before=0 differs_after=0 runs=6
        for run in $(seq $runs); do
            n=$((2 + RANDOM % (total - 2)))
            name="SIGKILL at write $n of $total of $op"
            cp sa.qcow2 t.qcow2
            # (the shell's own "Killed" notice goes to /dev/null too)
            # shellcheck disable=SC2086 # op is split into its words
            { strace -f -qq -o /dev/null -e trace=pwrite64 -e inject=pwrite64:signal=KILL:when=$n \
                "$QIMG_AS_QEMU" $op t.qcow2 >/dev/null 2>&1; st=$?; } 2>/dev/null
            expect_eq "$name: killed mid-operation (exit status)" "$st" 137
            cmp -s sa.qcow2 t.qcow2 || differs_before=$((differs_before + 1))
            cmp -s done.qcow2 t.qcow2 || differs_after=$((differs_after + 1))
            after_kill "$name"
            "$QEMU_IMG" compare -q sa.qcow2 t.qcow2
            expect_eq "$name: guest data unchanged" "$?" 0
        done
        # a run cut in the middle leaves an image that is neither the one
        # before nor the one a full run makes (a late write may happen to
        # rewrite bytes as they were: most runs, not all)
        [ $((differs_before * 2)) -gt $runs ] && [ $((differs_after * 2)) -gt $runs ]
        expect_eq "$op: killed images differ from before ($differs_before/$runs) and from a full run ($differs_after/$runs)" "$?" 0
    done
fi

# a killed writer on a lazy-refcounts image: the next read-write open by
# qimg repairs it, and the convert run again completes
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on t.qcow2 16M
"$QIMG_AS_QEMU" bench -w -c 4096 -d 1 -s 4k -S 4k --flush-interval=1 -f qcow2 t.qcow2 >/dev/null 2>&1 &
pid=$!
sleep 0.4
kill -9 $pid 2>/dev/null || fail "lazy kill -9: timing" "bench ended before the kill"
wait $pid 2>/dev/null
expect_eq "lazy kill -9: left dirty" "$(($(peek64 t.qcow2 72) & 1))" 1
"$QIMG_AS_QEMU" convert -n -O qcow2 src.raw t.qcow2 2>repair.err
expect_eq "lazy kill -9: convert again" "$?" 0
expect_eq "lazy kill -9: dirty bit cleared" "$(peek64 t.qcow2 72)" 0
out=$("$QEMU_IMG" check t.qcow2 2>&1); rc=$?
expect_eq "lazy kill -9: qemu-img check clean" "$rc" 0
"$QEMU_IMG" compare -q src.raw t.qcow2
expect_eq "lazy kill -9: content" "$?" 0
cd "$TOP" || exit 1
