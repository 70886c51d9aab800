#!/bin/bash
# qemu-img resize on raw images: absolute and relative sizes, shrinking,
# preallocation, errors; the resized files are compared too.
. "$(dirname "$0")/lib.sh"

"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M
qio "$IN/r.raw" "write -P 5 600k 8k"
"$QEMU_IMG" create -q -f raw "$IN/big.raw" 1G

same_file() {
    local name=$1 file=$2
    local a=$SCRATCH/run.ref/work/$file b=$SCRATCH/run.new/work/$file
    local sa sb ma mb
    sa=$(stat -c %s "$a"); sb=$(stat -c %s "$b")
    ma=$("$QEMU_IMG" map -f raw --output=json "$a"); mb=$("$QEMU_IMG" map -f raw --output=json "$b")
    if [ "$sa" = "$sb" ] && [ "$ma" = "$mb" ] && cmp -s "$a" "$b"; then
        pass "$name"
    else
        fail "$name" "size $sa vs $sb" "map qemu: $ma" "map qimg: $mb"
    fi
}

for args in "r.raw 2M" "r.raw +1M" "-f raw r.raw 2M" "-f raw r.raw 1M" "-f raw r.raw +0" \
            "--shrink r.raw -1M" "--shrink -f raw r.raw 1M" "--shrink -f raw r.raw 511" \
            "--shrink -f raw r.raw -- -1" "--shrink -f raw r.raw 600k" "-f raw r.raw 3G" \
            "-f raw --preallocation=full r.raw 2M" "-f raw --preallocation=falloc r.raw +1M" \
            "-f raw --preallocation=off r.raw +1M" "-q -f raw r.raw 5M" \
            "--image-opts driver=raw,file.filename=r.raw 6M" "-f raw r.raw 0x200000" \
            "-f raw r.raw 1.5M" "-f raw r.raw ' 2M'" "-f raw r.raw -- -+1M" \
            "--shrink -f raw r.raw -- -+1M" "--shrink -f raw big.raw -- -1G"; do
    eval "set -- $args"
    same "resize $args" resize "$@"
    f=r.raw; case "$args" in *big.raw*) f=big.raw ;; esac
    same_file "resize $args: file" $f
done

# refusals and errors
same "resize shrink without --shrink" resize r.raw -1M
same "resize shrink without --shrink (--)" resize r.raw -- -1M
same "resize shrink absolute" resize -f raw r.raw 511
same "resize to 0" resize -f raw r.raw 0
same "resize to 0 --shrink" resize --shrink -f raw r.raw 0
same "resize below 0" resize -f raw r.raw -- -5M
same "resize below 0 --shrink" resize --shrink -f raw r.raw -- -2M
same "resize to exactly 0 relative" resize --shrink -f raw r.raw -- -1M
for s in 1x +1x 16E 8E +8E 9223372036854775807 +9223372036854775807 -- - + '' +-1M 1Gi 1.5; do
    same "resize bad size '$s'" resize -f raw r.raw "$s"
done
same "resize above the block layer limit" resize -f raw big.raw 9223372035781033985
same "resize prealloc same size" resize -f raw --preallocation=full r.raw 1M
same "resize prealloc shrink" resize -f raw --preallocation=full --shrink r.raw 512k
same "resize prealloc metadata" resize -f raw --preallocation=metadata r.raw +1M
same "resize prealloc bad" resize -f raw --preallocation=foo r.raw +1M
same "resize prealloc bad wins" resize --shrink --preallocation=foo a 1M 2M
same "resize missing file" resize nonexist 1M
same "resize missing file, bad size" resize nonexist 1x
same "resize no size" resize r.raw
same "resize nothing" resize
same "resize prealloc bad, nothing else" resize --preallocation=foo
same "resize extra argument" resize -f raw r.raw 1M 2M
same "resize -U refused" resize -U r.raw 1M
same "resize --image-opts with -f" resize --image-opts -f raw driver=raw,file.filename=r.raw 6M
same "resize unknown format" resize -f foo r.raw 2M
