#!/bin/bash
# bitmap: usage errors in qemu-img's order, and raw images (no bitmaps).
. "$(dirname "$0")/lib.sh"
"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M
"$QEMU_IMG" create -q -f raw "$IN/b.raw" 1M

same no-action       bitmap r.raw b0
same nothing         bitmap
same g-no-add        bitmap --remove -g 64k -f raw r.raw b0
same g-zero          bitmap --remove -g 0 -f raw r.raw b0
same g-bad           bitmap --add -g foo -f raw r.raw b0
same g-negative      bitmap --add -g -5 r.raw b0
same g-huge          bitmap --add -g 99999999999999999999 r.raw b0
same g-bad-first     bitmap -g foo
same F-no-b          bitmap --add -F raw -f raw r.raw b0
same b-no-merge      bitmap --add -b b.raw -f raw r.raw b0
same b-no-merge-long bitmap --add --granularity 1k --source-file x r.raw b0
same one-arg         bitmap --add -f raw r.raw
same three-args      bitmap --add -f raw r.raw b0 c
same missing-file    bitmap --add nofile b0
same missing-src     bitmap --merge x -b nob -f raw r.raw b0
same src-bad-fmt     bitmap --merge x -b b.raw -F foo -f raw r.raw b0
same remove          bitmap --remove -f raw r.raw b0
same clear           bitmap --clear -f raw r.raw b0
same enable          bitmap --enable -f raw r.raw b0
same disable         bitmap --disable -f raw r.raw b0
same merge           bitmap --merge x -f raw r.raw b0
same merge-src       bitmap --merge x -b b.raw -f raw r.raw b0
same merge-probed    bitmap --merge x -b b.raw r.raw b0
same remove-empty    bitmap --remove -f raw r.raw ''
same add-empty       bitmap --add -f raw r.raw ''
same add-gran-100    bitmap --add -g 100 -f raw r.raw b0
same add-gran-256    bitmap --add -g 256 -f raw r.raw b0
same image-opts-fmt  bitmap --add --image-opts -f raw r.raw b0
same no-q            bitmap --add -q r.raw b0
same no-U            bitmap --add -U r.raw b0
same missing-arg     bitmap --merge
# our help text is our own: only the exit code and the first words agree
out=$("$QIMG_AS_QEMU" bitmap -h 2>&1); rc=$?
expect_eq help "$rc:${out%% version*}" "0:qemu-img"

# --add on a format without bitmaps names qemu's node, whose number
# changes from run to run: compare all but the number.
for args in "--add -f raw r.raw b0" "--add r.raw b0" "--add -g 64k --merge x -b b.raw -F raw r.raw b0"; do
    run_in_copy ref "$QEMU_IMG" bitmap $args
    run_in_copy new "$QIMG_AS_QEMU" bitmap $args
    a=$(sed 's/#block[0-9]*/#blockN/' "$SCRATCH/run.ref/err"; cat "$SCRATCH/run.ref/rc")
    b=$(sed 's/#block[0-9]*/#blockN/' "$SCRATCH/run.new/err"; cat "$SCRATCH/run.new/rc")
    expect_eq "add-raw: $args" "$b" "$a"
done
