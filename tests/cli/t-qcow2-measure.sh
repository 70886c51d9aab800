#!/bin/bash
# qemu-img measure -O qcow2: required and fully-allocated sizes, human and
# json, for --size over a grid of sizes and options, and for source images
# (raw with data, zeros and holes; qcow2 v2/v3, with bitmaps, with a
# backing file); option errors as qemu-img prints them.
. "$(dirname "$0")/lib.sh"

# sources
truncate -s 10M "$IN/src.raw"
"$QEMU_IO" -f raw -c "write -P 1 0 4k" -c "write -P 2 1M 100k" -c "write -P 3 5000k 3k" \
    -c "write -z 6M 1M" "$IN/src.raw" >/dev/null
"$QEMU_IMG" create -q -f qcow2 "$IN/s3.qcow2" 10M
"$QEMU_IO" -c "write -P 1 0 4k" -c "write -P 2 1M 100k" -c "write -z 6M 1M" "$IN/s3.qcow2" >/dev/null
"$QEMU_IMG" bitmap --add "$IN/s3.qcow2" bm1
"$QEMU_IMG" bitmap --add -g 512 "$IN/s3.qcow2" a-longer-bitmap-name
"$QEMU_IMG" create -q -f qcow2 -o compat=0.10 "$IN/s2.qcow2" 10M
"$QEMU_IO" -c "write -P 1 0 4k" "$IN/s2.qcow2" >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b s3.qcow2 -F qcow2 "$IN/top.qcow2"
"$QEMU_IO" -c "write -P 5 3M 64k" "$IN/top.qcow2" >/dev/null
printf 'hi' > "$IN/odd.raw"; truncate -s 1000 "$IN/odd.raw"
truncate -s 0 "$IN/empty.raw"

# reference values from qemu-img 7.2 (also checked by "same" below)
out=$("$QIMG_AS_QEMU" measure -O qcow2 --size 10G 2>&1)
expect_eq "10G reference" "$out" "required size: 1900544
fully allocated size: 10739318784"
out=$("$QIMG_AS_QEMU" measure -O qcow2 --size 1G -o cluster_size=2M,extended_l2=on 2>&1)
expect_eq "1G 2M extended_l2 reference" "$out" "required size: 10485760
fully allocated size: 1084227584"

opts=("" cluster_size=512 cluster_size=4k cluster_size=2M extended_l2=on
      cluster_size=16k,extended_l2=on cluster_size=2M,extended_l2=on
      refcount_bits=1 refcount_bits=8 refcount_bits=64 compat=0.10 compat=1.1
      preallocation=off preallocation=metadata preallocation=falloc preallocation=full
      backing_file=x,backing_fmt=raw lazy_refcounts=on compression_type=zstd
      encrypt.format=aes encryption=on)
for s in 0 1 1000 1M 10G 1T 100T 2P; do
    for o in "${opts[@]}"; do
        same "size $s ${o:-default}" measure -O qcow2 --size $s ${o:+-o $o}
        same "size $s ${o:-default} json" measure -O qcow2 --size $s ${o:+-o $o} --output=json
    done
done

for f in src.raw s3.qcow2 s2.qcow2 top.qcow2 odd.raw empty.raw; do
    for o in "" cluster_size=512 cluster_size=2M extended_l2=on compat=0.10 preallocation=full \
             preallocation=metadata backing_file=x refcount_bits=1; do
        same "source $f ${o:-default}" measure -O qcow2 ${o:+-o $o} $f
        same "source $f ${o:-default} json" measure -O qcow2 ${o:+-o $o} --output=json $f
    done
done
same "source -f raw" measure -f raw -O qcow2 s3.qcow2

# errors
for o in cluster_size=3000 cluster_size=4M cluster_size=4k,extended_l2=on compat=0.10,refcount_bits=8 \
         compat=0.9 compat=v2 refcount_bits=3 refcount_bits=128 preallocation=foo encrypt.format=luks \
         cluster_size=3000,compat=0.9 compat=0.9,refcount_bits=3 nosuch=1; do
    same "error $o" measure -O qcow2 --size 1G -o $o
done
same "error too large" measure -O qcow2 --size 3P
same "error too large 512" measure -O qcow2 --size 16T -o cluster_size=512
same "too large source ignored" measure -O qcow2 -o cluster_size=512 src.raw
