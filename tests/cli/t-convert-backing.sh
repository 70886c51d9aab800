#!/bin/bash
# convert -c -B: a compressed target cluster is written whole, so one that
# mixes zeros of the source's top layer with parts its backing file provides
# must be copied as data (it was once written as a zero cluster, losing the
# backing part); and a short last cluster is copied even where the backing
# file would provide it, as qemu-img does.
. "$(dirname "$0")/lib.sh"
cd "$SCRATCH" || exit 1

"$QEMU_IMG" create -q -f qcow2 base.qcow2 1M
"$QEMU_IO" -f qcow2 -c 'write -P 0x61 0 1M' base.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 top.qcow2
"$QEMU_IO" -f qcow2 -c 'write -z 138752 4096' -c 'write -P 0x62 300000 5000' \
    -c 'write -z 589824 65536' top.qcow2 >/dev/null
for opts in "-c" "-c -S 0" "-c -o cluster_size=4096" ""; do
    rm -f out.qcow2
    if "$QIMG" convert $opts -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 out.qcow2 2>err; then
        check "-B with zeros and backing parts in one cluster ($opts): same content" \
            "$QEMU_IMG" compare top.qcow2 out.qcow2
        check "-B with zeros and backing parts in one cluster ($opts): check clean" \
            "$QEMU_IMG" check -q out.qcow2
    else
        fail "-B with zeros and backing parts in one cluster ($opts): convert" "$(cat err)"
    fi
done

# a short last cluster that only an intermediate layer holds
"$QEMU_IMG" create -q -f qcow2 l0.qcow2 $(((1 << 20) + 3584))
"$QEMU_IMG" create -q -f qcow2 -b l0.qcow2 -F qcow2 l1.qcow2
"$QEMU_IO" -f qcow2 -c 'write -P 0x71 1044480 8704' l1.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b l1.qcow2 -F qcow2 l2.qcow2
rm -f ref.qcow2 out.qcow2
"$QEMU_IMG" convert -c -O qcow2 -o cluster_size=4096 -B l0.qcow2 -F qcow2 l2.qcow2 ref.qcow2
check "-c -B, short last cluster: convert" \
    "$QIMG" convert -c -O qcow2 -o cluster_size=4096 -B l0.qcow2 -F qcow2 l2.qcow2 out.qcow2
check "-c -B, short last cluster: same content as qemu-img's" "$QEMU_IMG" compare ref.qcow2 out.qcow2

# zeros across a cluster boundary, without a whole cluster between, over a
# backing file with data: both pieces must read as zeros (the second one
# was once left to the backing file)
"$QEMU_IMG" create -q -f qcow2 zb.qcow2 1M
"$QEMU_IO" -f qcow2 -c 'write -P 0xc3 0 1M' zb.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4096 -b zb.qcow2 -F qcow2 zt.qcow2
"$QEMU_IO" -f qcow2 -c 'write -P 0 897024 73728' -c 'write -P 0x55 970752 4096' zt.qcow2 >/dev/null
for o in "" "-o extended_l2=on" "-o compat=0.10"; do
    rm -f out.qcow2
    if "$QIMG" convert -m 1 -O qcow2 $o -B zb.qcow2 -F qcow2 zt.qcow2 out.qcow2 2>err; then
        check "zeros across a cluster boundary over a backing file ($o): same content" \
            "$QEMU_IMG" compare zt.qcow2 out.qcow2
    else
        fail "zeros across a cluster boundary over a backing file ($o): convert" "$(cat err)"
    fi
done

# -n into an existing overlay without -B: its backing file is written over
# (zeros too), so the target reads as the source, as qemu-img does
# (qemu-iotests 122 "-n to an empty image with a backing file"); before, the
# backing file's data showed through where the source reads zeros.
cd "$SCRATCH" || exit 1
"$QEMU_IMG" create -q -f qcow2 nb-base.qcow2 8M
"$QEMU_IO" -c "write -P 0x11 0 8M" nb-base.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 nb-src.qcow2 8M
"$QEMU_IO" -c "write -P 0x22 1M 64k" -c "write -z 3M 64k" nb-src.qcow2 >/dev/null
for compat in 1.1 0.10; do
    for tool in qemu "$QIMG"; do
        t=nb-$compat-$(basename "$tool").qcow2
        "$QEMU_IMG" create -q -f qcow2 -o compat=$compat -b nb-base.qcow2 -F qcow2 "$t" 8M
        [ "$tool" = qemu ] && tool=$QEMU_IMG
        "$tool" convert -O qcow2 -n nb-src.qcow2 "$t"
    done
    check "-n into an overlay (compat=$compat): reads as the source" \
        "$QEMU_IMG" compare nb-src.qcow2 "nb-$compat-qimg.qcow2"
    expect_eq "-n into an overlay (compat=$compat): map as qemu-img's" \
        "$("$QEMU_IMG" map --output=json "nb-$compat-qimg.qcow2")" \
        "$("$QEMU_IMG" map --output=json "nb-$compat-qemu.qcow2")"
done
