#!/bin/bash
# convert's zero detection (-S) and its alignment (-S rounded down to a power
# of two, at most a 2 MiB unit): for random sources
# with data and zeros at odd offsets, the target qimg writes maps exactly as
# qemu-img's (qcow2 with 512-byte, 4 KiB and 64 KiB clusters, extended L2,
# and raw), for several -S values.
. "$(dirname "$0")/lib.sh"
need_cmd python3
Q=$QEMU_IMG
cd "$SCRATCH" || exit 1
for seed in 1 2 3 4; do
    rm -f s.raw
    "$Q" create -q -f raw s.raw 3M
    python3 -c "
import random
r = random.Random($seed)
for _ in range(12):
    off = r.randrange(0, 3 * 1024 * 1024 - 70000)
    n = r.choice([1, 100, 512, 1000, 3072, 4096, 5000, 8192, 20000, 65536])
    if r.random() < 0.3:
        print('write -z %d %d' % (off // 512 * 512, max(512, n // 512 * 512)))
    else:
        print('write -P %d %d %d' % (r.randrange(1, 255), off, n))
" | "$QEMU_IO" -f raw s.raw >/dev/null
    for S in 512 3k 4k 64k; do
        for o in "-O qcow2 -o cluster_size=512" "-O qcow2 -o cluster_size=4k" "-O qcow2" \
                 "-O qcow2 -o extended_l2=on" "-O raw"; do
            rm -f a b
            # shellcheck disable=SC2086
            "$Q" convert -S $S $o s.raw a && "$QIMG" convert -S $S $o s.raw b
            expect_eq "seed $seed -S $S $o: map as qemu-img's" \
                "$("$Q" map --output=json b)" "$("$Q" map --output=json a)"
            check "seed $seed -S $S $o: same content" "$Q" compare -f raw s.raw b
        done
    done
done

# -S above 4 KiB aligns to -S itself (qemu-iotests 122's "Non-zero -S"):
# 1 KiB clusters, data at 0, 8k and 17k among written zeros
rm -f s.qcow2
"$Q" create -q -f qcow2 -o cluster_size=1k s.qcow2 64M
for c in "write -P 0 0 64k" "write 0 1k" "write 8k 1k" "write 17k 1k" "write -P 0 65k 1k"; do
    "$QEMU_IO" -c "$c" s.qcow2 >/dev/null
done
for S in 8k 16k 1M; do
    rm -f a b
    "$Q" convert -O qcow2 -o cluster_size=1k -S $S s.qcow2 a &&
        "$QIMG" convert -O qcow2 -o cluster_size=1k -S $S s.qcow2 b
    expect_eq "122's source, -S $S: map as qemu-img's" \
        "$("$Q" map --output=json b)" "$("$Q" map --output=json a)"
done
