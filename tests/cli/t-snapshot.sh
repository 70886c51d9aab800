#!/bin/bash
# snapshot: usage errors and raw images (no internal snapshots); the -f and
# delete-by-id extensions.
. "$(dirname "$0")/lib.sh"
"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M

same no-action       snapshot r.raw
same list            snapshot -l r.raw
same list-U          snapshot -U -l r.raw
same list-opts       snapshot -l --image-opts driver=raw,file.filename=r.raw
same create          snapshot -c s r.raw
same create-q        snapshot -q -c s r.raw
same create-opts     snapshot -c s --image-opts driver=raw,file.filename=r.raw
same apply           snapshot -a s r.raw
same apply-opts      snapshot -a s --image-opts driver=raw,file.filename=r.raw
same delete          snapshot -d s r.raw
same delete-opts     snapshot -d s --image-opts driver=raw,file.filename=r.raw
same mix-l-c         snapshot -l -c s r.raw
same mix-c-c         snapshot -c s -c t r.raw
same mix-a-l         snapshot -a s -l r.raw
same mix-d-a         snapshot -d s -a s r.raw
same no-file         snapshot -l
same two-files       snapshot -l r.raw r.raw
same missing-file    snapshot -l nofile
same missing-file-c  snapshot -c s nofile
same U-rw            snapshot -U -c s r.raw
same U-none          snapshot -U r.raw
same U-rw-missing    snapshot -U -c s nofile
same missing-arg     snapshot -c
same unknown-opt     snapshot -x r.raw
same after-file      snapshot r.raw -c s
same attached        snapshot -cs r.raw
# our help text is our own: only the exit code and the first words agree
out=$("$QIMG_AS_QEMU" snapshot -h 2>&1); rc=$?
expect_eq help "$rc:${out%% version*}" "0:qemu-img"

# Extensions (qemu-img has neither): -f, and delete by id.
out=$(cd "$IN" && "$QIMG_AS_QEMU" snapshot -f raw -c s r.raw 2>&1); rc=$?
expect_eq f-accepted "$rc:$out" "1:qemu-img: Could not create snapshot 's': -95 (Operation not supported)"
out=$(cd "$IN" && "$QIMG_AS_QEMU" snapshot -f raw -l r.raw 2>&1); rc=$?
expect_eq f-list "$rc:$out" "0:"
out=$(cd "$IN" && "$QIMG_AS_QEMU" snapshot -f qcow2 -l r.raw 2>&1); rc=$?
expect_eq f-wrong-format "$rc" "1"
