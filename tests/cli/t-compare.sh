#!/bin/bash
# compare: messages, offsets and exit codes against qemu-img 7.2.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# c1: 10 MiB of holes; c2/c3: one byte differs at 1000 / 5000000;
# c4: like c1 but 12 MiB; c5: 12 MiB with a byte at 11 MiB
truncate -s 10M c1 c2 c3 c6
qio c2 'write -P 7 1000 1'
qio c3 'write -P 7 5000000 1'
truncate -s 12M c4 c5 c9
qio c5 'write -P 7 11M 1'
qio c9 'write -P 7 11535336 1'
qio c6 'write -P 0 1M 64k'               # zeros written: same content, other status
cp c2 c10 && truncate -s 12M c10          # differs early and in size
# same data, different allocation: s1 64k data, s2 128k (zeros written), s3 hole in the middle
truncate -s 1M s1 s2 s3
qio s1 'write -P 1 0 64k'
qio s2 'write -P 1 0 64k'; qio s2 'write -P 0 64k 64k'
qio s3 'write -P 1 0 64k'; qio s3 'write -P 0 128k 64k'
# unaligned sizes: qemu-img sees whole 512-byte sectors
truncate -s 1000 u1 u2 u3
qio u2 'write -P 1 0 512'
printf x | dd of=u3 bs=1 seek=999 conv=notrunc 2>/dev/null
truncate -s 3000 t1; printf x | dd of=t1 bs=1 seek=2999 conv=notrunc 2>/dev/null
truncate -s 1000 t2
truncate -s 1048583 u4; printf x | dd of=u4 bs=1 seek=1048582 conv=notrunc 2>/dev/null
truncate -s 1M u5
# data everywhere, in a few extents, for the parallel path
truncate -s 40M big
for i in 0 3 7 11 19 23 31 37; do qio big "write -P $((i + 1)) ${i}M 1M"; done
cp big big2
qio big2 'write -P 99 24121345 1'        # the first difference is late...
cp big2 big3
qio big3 'write -P 99 38797315 1'           # ...and an earlier one must win in big3 vs big

same identical        compare c1 c1
same diff-1000        compare c1 c2
same diff-5000000     compare c1 c3
same size-warn-same   compare c1 c4
same size-diff-tail   compare c1 c5
same size-diff-tail2  compare c5 c1
same size-tail-unal   compare c1 c9
same early-diff-size  compare c1 c10
same zeros-vs-hole    compare c1 c6
same strict-size      compare -s c1 c4
same strict-same      compare -s c1 c1
same strict-status0   compare -s c1 c6
same strict-status    compare -s s1 s2
same strict-status2   compare -s s1 s3
same nonstrict-s1s3   compare s1 s3
same strict-s2s2      compare -s s2 s2
same unal-strict      compare -s u1 u2
same unal-diff0       compare u1 u2
same unal-diff999     compare u1 u3
same unal-size        compare t1 t2
same unal-1M7         compare u4 u5
same unal-1M7-rev     compare u5 u4
same big-identical    compare big big
same big-late-diff    compare big big2
same big-first-wins   compare big3 big
same big-first-wins2  compare -f raw -F raw big big3
same quiet-diff       compare -q c1 c2
same quiet-strict     compare -q -s c1 c4
same progress-small   compare -p s1 s1
same progress-tail    compare -p t1 t2
same progress-quiet   compare -p -q c1 c2
same force-share      compare -U c1 c2
same image-opts       compare --image-opts driver=raw,file.filename=c1 driver=raw,file.filename=c2
same one-name         compare c1
same no-name          compare
same three-names      compare c1 c2 c3
same missing-1        compare nonexist c1
same missing-2        compare c1 nonexist
same bad-fmt          compare -f foo c1 c2
same bad-cache        compare -T foo c1 c1
same bad-cache-1name  compare -T foo c1
same imgopts-and-f    compare --image-opts -f raw c1 c2
same bad-option       compare -x c1 c2
same missing-arg      compare c1 c2 -f
