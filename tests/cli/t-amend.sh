#!/bin/bash
# amend: usage errors, option lists, help, and raw (no amend support).
. "$(dirname "$0")/lib.sh"
"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M

same no-o            amend r.raw
same no-o-p          amend -p r.raw
same missing-arg     amend -o
same unknown-opt     amend -x -o a=1 r.raw
same no-file         amend -o size=2M
same two-files       amend -o size=2M r.raw r.raw
same two-files-p     amend -p -o size=2M r.raw r.raw
same missing-file    amend -o size=2M nofile
same missing-file-p  amend -p -o size=2M nofile
same raw-probed      amend -o size=2M r.raw
same raw             amend -f raw -o size=2M r.raw
same raw-p           amend -p -f raw -o size=2M r.raw
same raw-q           amend -q -p -f raw -o size=2M r.raw
same raw-force       amend --force -f raw -o x=1 r.raw
same raw-cache       amend -t none -f raw -o x=1 r.raw
same bad-cache       amend -t foo -f raw -o x=1 r.raw
same bad-cache-p     amend -p -t foo -f raw -o x=1 r.raw
same bad-list-lead   amend -o ,x r.raw
same bad-list-trail  amend -o x -o y, r.raw
same bad-list-p      amend -p -o ,x r.raw
same help-raw        amend -f raw -o help r.raw
same help-raw-nofile amend -f raw -o help
same help-q-raw      amend -f raw -o '?' r.raw
same help-in-list    amend -f raw -o size=1,help r.raw
same help-probed     amend -o help r.raw
same help-unknownfmt amend -f foo -o help
same help-missing    amend -o help nofile
same unknown-fmt     amend -f foo -o x=1 r.raw
same image-opts-fmt  amend --image-opts -f raw -o x=1 r.raw
same image-opts      amend --image-opts -o x=1 driver=raw,file.filename=r.raw
same image-opts-miss amend --image-opts -o x=1 driver=raw,file.filename=nofile
same after-file      amend r.raw -f raw -o x=1
same attached        amend -fraw -ox=1 r.raw
# our help text is our own: only the exit code and the first words agree
out=$("$QIMG_AS_QEMU" amend -h 2>&1); rc=$?
expect_eq help "$rc:${out%% version*}" "0:qemu-img"
