#!/bin/bash
# rebase: usage errors, progress, and raw images (no backing files).
. "$(dirname "$0")/lib.sh"
"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M
"$QEMU_IMG" create -q -f raw "$IN/b.raw" 1M

same no-b            rebase r.raw
same no-b-F          rebase -F raw r.raw
same no-file         rebase -b b.raw -F raw
same two-files       rebase -b b.raw -F raw r.raw r.raw
same no-F            rebase -b b.raw r.raw
same safe            rebase -b b.raw -F raw r.raw
same safe-f          rebase -b b.raw -F raw -f raw r.raw
same safe-p          rebase -p -b b.raw -F raw -f raw r.raw
same safe-q          rebase -q -p -b b.raw -F raw -f raw r.raw
same unsafe-p        rebase -p -u -b b.raw -F raw -f raw r.raw
same unsafe-no-b     rebase -u r.raw
same unsafe-no-b-f   rebase -u -f raw r.raw
same unsafe-no-F     rebase -u -b b.raw -f raw r.raw
same empty-b         rebase -b '' r.raw
same empty-b-F       rebase -b '' -F raw -f raw r.raw
same missing-new     rebase -b nob -F raw -f raw r.raw
same missing-new-p   rebase -p -b nob -F raw -f raw r.raw
if "$QIMG_AS_QEMU" --help | grep -q '^Supported formats:.* qcow2'; then
    same new-bad-fmt rebase -b b.raw -F qcow2 -f raw r.raw
fi
same bad-F           rebase -b b.raw -F foo -f raw r.raw
same bad-F-p         rebase -p -b b.raw -F foo -f raw r.raw
same missing-file    rebase -b b.raw -F raw nofile
same missing-file-p  rebase -p -b b.raw -F raw nofile
same bad-cache       rebase -b b.raw -F raw -t foo r.raw
same bad-src-cache-p rebase -p -b b.raw -F raw -T foo r.raw
same U               rebase -U -b b.raw -F raw -f raw r.raw
same image-opts      rebase -b b.raw -F raw --image-opts driver=raw,file.filename=r.raw
same after-file      rebase r.raw -u -f raw
same unknown-opt     rebase -x r.raw
same missing-arg     rebase -b
# our help text is our own: only the exit code and the first words agree
out=$("$QIMG_AS_QEMU" rebase -h 2>&1); rc=$?
expect_eq help "$rc:${out%% version*}" "0:qemu-img"
