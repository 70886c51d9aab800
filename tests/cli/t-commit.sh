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
