#!/bin/bash
# qemu-img measure with raw output: --size or a file, options, errors.
. "$(dirname "$0")/lib.sh"

"$QEMU_IMG" create -q -f raw "$IN/a.raw" 1M
truncate -s 1G "$IN/big.raw"
"$QEMU_IMG" create -q -f raw "$IN/odd.raw" 513

for s in 0 1 511 512 1G 1.5M 9223372036854775807; do
    same "measure --size $s" measure --size "$s"
    same "measure --size $s json" measure --size "$s" --output=json
done
for f in a.raw big.raw odd.raw; do
    same "measure $f" measure "$f"
    same "measure $f json" measure -f raw "$f" --output json
done
same "measure -O raw" measure --size 1G -O raw
same "measure -o preallocation" measure --size 1G -O raw -o preallocation=full
same "measure --size overrides -o size" measure --size 1G -o size=2G
same "measure --size twice" measure --size 1G --size 2G
same "measure -U" measure -U big.raw
same "measure --image-opts" measure --image-opts driver=raw,file.filename=big.raw

same "measure nothing" measure
same "measure size and file" measure --size 1G big.raw
same "measure two files" measure a.raw big.raw
for s in 1x -1 16E 8E 1Gi ''; do
    same "measure bad size '$s'" measure --size "$s"
done
same "measure unknown -O" measure --size 1G -O foo
same "measure unknown option" measure --size 1G -o x=1
same "measure -o help" measure --size 1G -o help
same "measure bad -o list" measure -o ,x big.raw
same "measure bad -o size" measure -o size=1x --size 1G
same "measure bad -o bool" measure -O raw a.raw -o nocow=foo
same "measure -o out of range" measure --size 1G -o extent_size_hint=16E
same "measure -f without file" measure --size 1G -f raw
same "measure -l without file" measure --size 1G -l snap
same "measure --image-opts without file" measure --size 1G --image-opts
same "measure -l on raw" measure -l snap big.raw
same "measure -l snapshot.id on raw" measure -l snapshot.id=1 big.raw
same "measure -l bad key" measure -l snapshot.foo=1 big.raw
same "measure unknown -f" measure -f foo big.raw
same "measure missing file" measure nonexist
same "measure bad output" measure --output=foo
same "measure bad output first" measure --output=foo --size 1x
same "measure bad size first" measure --size 1x --output=foo
