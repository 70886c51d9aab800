#!/bin/bash
# convert -c writes the clusters qemu-img writes: with -S 0 every cluster is
# compressed, zeros included (a cluster of data that reads as zeros, a zero
# cluster and an unallocated one alike); by default zeros are left out.
# Compared by map (which shows compressed clusters without an offset) and
# by content.
. "$(dirname "$0")/lib.sh"
cd "$SCRATCH" || exit 1

"$QEMU_IMG" create -q -f qcow2 src.qcow2 4M
"$QEMU_IO" -f qcow2 -c 'write -P 0x41 0 300k' -c 'write -P 0 512k 128k' -c 'write -z 1M 256k' \
    -c 'write -P 0x42 2M 64k' -c 'write -P 0x43 3M 100k' src.qcow2 >/dev/null
for opts in "-c" "-c -S 0" "-c -S 0 -o cluster_size=4096" "-c -S 0 -o cluster_size=1M" \
            "-c -o compression_type=zstd -S 0" "-c -S 0 -m 1"; do
    rm -f ref.qcow2 new.qcow2
    "$QEMU_IMG" convert $opts -O qcow2 src.qcow2 ref.qcow2
    if ! "$QIMG" convert $opts -O qcow2 src.qcow2 new.qcow2 2>err; then
        fail "convert $opts" "$(cat err)"
        continue
    fi
    expect_eq "convert $opts: map as qemu-img's" \
        "$("$QEMU_IMG" map --output=json new.qcow2)" "$("$QEMU_IMG" map --output=json ref.qcow2)"
    check "convert $opts: same content" "$QEMU_IMG" compare src.qcow2 new.qcow2
    check "convert $opts: check clean" "$QEMU_IMG" check -q new.qcow2
done
