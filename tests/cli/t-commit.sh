#!/bin/bash
# commit: usage errors, rate limits, progress, and raw images (no backing).
. "$(dirname "$0")/lib.sh"
"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M
"$QEMU_IMG" create -q -f raw "$IN/b.raw" 1M

same probed          commit r.raw
same raw             commit -f raw r.raw
same raw-p           commit -p -f raw r.raw
same raw-q           commit -q -f raw r.raw
same raw-p-q         commit -p -q -f raw r.raw
same raw-d           commit -d -f raw r.raw
same base            commit -b b.raw -f raw r.raw
same base-p          commit -p -b b.raw -f raw r.raw
same base-d          commit -b b.raw -d -f raw r.raw
same base-self       commit -b r.raw -f raw r.raw
same rate            commit -r 1M -f raw r.raw
same rate-frac       commit -r 1.5k -f raw r.raw
same rate-zero       commit -r 0 -f raw r.raw
same rate-bad        commit -r foo -f raw r.raw
same rate-negative   commit -r -1 -f raw r.raw
same rate-huge       commit -r 99999999999999999999 -f raw r.raw
same rate-over-int64 commit -r 9223372036854775808 -f raw r.raw
same rate-bad-first  commit -r foo
same bad-cache       commit -t foo -f raw r.raw
same bad-cache-p     commit -p -t foo -f raw r.raw
same cache-none      commit -t none -f raw r.raw
same missing-file    commit nofile
same missing-file-p  commit -p nofile
same no-file         commit
same two-files       commit r.raw r.raw
same bad-cache-nofile commit -t foo
same image-opts      commit --image-opts driver=raw,file.filename=r.raw
same image-opts-fmt  commit --image-opts -f raw r.raw
same after-file      commit r.raw -f raw
same unknown-opt     commit -x r.raw
same missing-arg     commit -b
# our help text is our own: only the exit code and the first words agree
out=$("$QIMG_AS_QEMU" commit -h 2>&1); rc=$?
expect_eq help "$rc:${out%% version*}" "0:qemu-img"

# ---- commit reads only the layers above the base ----
# l0 <- l1 <- l2 (64 MiB, one L2 table each): committing l2 into l1 needs
# nothing of l0, not even its L2 table (read-ahead asked l0's block status
# for every range l2 and l1 leave unallocated).  strace -y names the file
# of each pread; the result is compared with qemu-img's.
if has_cmd "commit below the base" strace; then
    fresh
    mk l0.qcow2 64M
    mk l1.qcow2 64M -b l0.qcow2 -F qcow2
    mk l2.qcow2 64M -b l1.qcow2 -F qcow2
    qw l0.qcow2 "write -P 1 0 64M"
    qw l1.qcow2 "write -P 2 1M 64k" "write -P 2 40M 64k"
    qw l2.qcow2 "write -P 3 2M 64k" "write -P 3 50M 1M"
    L0_L2=$(($(peek64 "$IN/l0.qcow2" "$(peek64 "$IN/l0.qcow2" 40)") & MASK))
    cp -a "$IN" "$SCRATCH/ref-chain"
    (cd "$SCRATCH/ref-chain" && "$QEMU_IMG" commit -q l2.qcow2) || fail "qemu-img commit"
    (cd "$IN" && strace -f -y -e trace=pread64,fadvise64 -o "$SCRATCH/commit.strace" \
        "$QIMG_AS_QEMU" commit -q l2.qcow2) || fail "qimg commit"
    # reads of l0 from its L2 table on (what opening reads lies before it:
    # header, refcount table, L1 table)
    l0_deep=$(awk -v f="<$IN/l0.qcow2>" -v l2="$L0_L2" '
        index($0, "pread64(") && index($0, f) { split($0, a, ", "); o = a[length(a)]; sub(/\).*/, "", o)
                                                if (o + 0 >= l2 + 0) n++ }
        END { print n + 0 }' "$SCRATCH/commit.strace")
    l1_reads=$(grep -c "pread64(.*<$IN/l1.qcow2>" "$SCRATCH/commit.strace")
    expect_eq "commit into the parent: nothing of l0 read past its L1 table" "$l0_deep" 0
    [ "$l1_reads" -gt 0 ] && pass "commit into the parent: strace saw the reads of l1" ||
        fail "commit into the parent: strace saw no read of l1"
    for f in l1 l2; do
        expect_eq "commit into the parent: $f as qemu-img's" \
            "$("$QEMU_IMG" compare -q "$IN/$f.qcow2" "$SCRATCH/ref-chain/$f.qcow2"; echo $?)" 0
    done
    "$QEMU_IMG" check -q "$IN/l1.qcow2" && pass "commit into the parent: l1 checks clean" ||
        fail "commit into the parent: l1 check"
fi
