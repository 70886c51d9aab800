#!/bin/bash
# Concurrent writers into one qcow2 cluster: convert -W -m 16 into a qcow2
# with a backing file writes zero runs and data of the same 1 MiB cluster
# from different threads.  A zero write that found the rest of its cluster
# reading as zeros once turned the whole cluster into a zero cluster while
# another thread was writing data into it (about one run in seven lost data).
. "$(dirname "$0")/lib.sh"
cd "$SCRATCH" || exit 1

"$QEMU_IMG" create -q -f qcow2 base.qcow2 48M
"$QEMU_IMG" create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
cmds=()
for i in $(seq 0 47); do
    m=$((i << 20))
    # in each MiB: zeros, a little data, zeros; the backing file reads as
    # zeros, so each zero piece finds the rest of its 1 MiB cluster zero
    cmds+=(-c "write -z $m 524288"
           -c "write -P $((i + 1)) $((m + 524288 + 1024)) 4096"
           -c "write -z $((m + 589824)) 458752")
done
"$QEMU_IO" -f qcow2 "${cmds[@]}" top.qcow2 >/dev/null

bad=0
for run in $(seq 20); do
    rm -f out.qcow2
    if ! "$QIMG" convert -W -m 16 -O qcow2 -o cluster_size=1M -B base.qcow2 -F qcow2 \
            top.qcow2 out.qcow2 2>err; then
        fail "convert -W -B, run $run" "$(cat err)"
        bad=1
        break
    fi
    if ! "$QEMU_IMG" compare -q top.qcow2 out.qcow2 >/dev/null 2>&1; then
        fail "convert -W -B, run $run: differs from the source" \
            "$("$QEMU_IMG" compare top.qcow2 out.qcow2 2>&1)"
        bad=1
        break
    fi
done
[ $bad = 1 ] || pass "convert -W -m 16 -B into 1 MiB clusters: 20 runs identical to the source"
check "convert -W -B: the last output checks clean" "$QEMU_IMG" check -q out.qcow2
