#!/bin/bash
# convert -D (qimg's diff images): chains of 1 to 5 layers, each built with
# `convert -D previous-layer` from a source that changes between steps
# (data written, overwritten, zeroed, discarded).  Each layer must read
# exactly as its source (qemu-img compare), pass qemu-img check, hold no
# more data than qemu-img's recipe (create -b SOURCE, then safe rebase onto
# the previous layer), and the top converted to raw must give back the last
# source byte for byte.
. "$(dirname "$0")/lib.sh"
need_cmd python3
Q=$QEMU_IMG
D=$SCRATCH/diff
mkdir -p "$D"

# Bytes held as data by the top image of a chain (depth 0, data).
top_data_bytes() {
    "$Q" map --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))'
}

# The source: 8 MiB raw with patterns, holes and zeros.
make_source() {
    local f=$1
    "$Q" create -q -f raw "$f" 8M
    "$QEMU_IO" -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 2M 1536k" \
        -c "write -P 0x33 5M 300k" -c "write -P 0x44 7M 4097" "$f" >/dev/null
}

# Step i's change to the source.
change_source() {
    local f=$1 i=$2
    case $i in
    1) "$QEMU_IO" -f raw -c "write -P 0x55 256k 64k" -c "write -P 0x56 6M 100k" "$f" ;;
    2) "$QEMU_IO" -f raw -c "write -z 2M 512k" -c "write -P 0x57 4M 7000" "$f" ;;
    3) "$QEMU_IO" -f raw -c "discard 5M 300k" -c "write -P 0x11 256k 64k" "$f" ;;
    4) "$QEMU_IO" -f raw -c "write -P 0x58 0 8M" "$f" ;;
    5) "$QEMU_IO" -f raw -c "write -z 0 3M" -c "write -P 0x59 8322k 10" "$f" ;;
    esac >/dev/null
}

run_chain() {
    local depth=$1 opts=$2 tag=$3
    local dir=$D/$tag
    rm -rf "$dir" && mkdir -p "$dir" && cd "$dir" || return
    make_source src.raw
    "$Q" convert -q -f raw -O qcow2 src.raw l0.qcow2
    for i in $(seq 1 "$depth"); do
        change_source src.raw "$i"
        local prev=l$((i - 1)).qcow2 cur=l$i.qcow2
        # shellcheck disable=SC2086
        if ! "$QIMG" convert -D "$prev" -F qcow2 -f raw -O qcow2 $opts src.raw "$cur"; then
            fail "$tag layer $i: convert -D"
            continue
        fi
        check "$tag layer $i: identical to its source" "$Q" compare -f raw -F qcow2 src.raw "$cur"
        check "$tag layer $i: qemu-img check clean" "$Q" check -q "$cur"
        expect_eq "$tag layer $i: backing file" \
            "$("$Q" info --output=json "$cur" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["backing-filename"], d["backing-filename-format"])')" \
            "$prev qcow2"
        # qemu-img's recipe for the same layer
        "$Q" create -q -f qcow2 -b src.raw -F raw "r$i.qcow2"
        "$Q" rebase -q -b "$prev" -F qcow2 "r$i.qcow2"
        local ours theirs
        ours=$(top_data_bytes "$cur")
        theirs=$(top_data_bytes "r$i.qcow2")
        if [ "$ours" -le "$theirs" ]; then
            pass "$tag layer $i: $ours data bytes <= recipe's $theirs"
        else
            fail "$tag layer $i: $ours data bytes > recipe's $theirs"
        fi
    done
    "$Q" convert -q -O raw "l$depth.qcow2" restored.raw
    check "$tag: top restores the last source byte for byte" cmp src.raw restored.raw
    cd "$SCRATCH" || return
}

for depth in 1 2 3 4 5; do
    run_chain "$depth" "" "depth$depth"
done
run_chain 3 "-c" "compressed"
run_chain 2 "-o compat=0.10" "v2"
run_chain 2 "-o cluster_size=4k" "4k"
run_chain 2 "-o extended_l2=on" "extl2"
run_chain 2 "-m 1" "one-thread"

# Unchanged source: the overlay holds nothing.
cd "$D" || exit 1
make_source same.raw
"$Q" convert -q -f raw -O qcow2 same.raw same-base.qcow2
"$QIMG" convert -D same-base.qcow2 -f raw -O qcow2 same.raw same-top.qcow2
expect_eq "unchanged source: no data in the overlay" "$(top_data_bytes same-top.qcow2)" 0
expect_eq "without -F the base's format is probed and recorded" \
    "$("$Q" info --output=json same-top.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename-format"])')" \
    qcow2

# A raw base, a source in qcow2 with its own backing file, relative names
# resolved from the target's directory.
mkdir -p sub
"$Q" create -q -f raw sub/base.raw 8M
"$QEMU_IO" -f raw -c "write -P 0x61 0 2M" sub/base.raw >/dev/null
"$Q" create -q -f qcow2 -b base.raw -F raw sub/src.qcow2
"$QEMU_IO" -f qcow2 -c "write -P 0x62 1M 64k" -c "write -z 0 64k" sub/src.qcow2 >/dev/null
"$QIMG" convert -D base.raw -F raw -O qcow2 sub/src.qcow2 sub/top.qcow2
check "relative base from the target's directory: identical" "$Q" compare sub/src.qcow2 sub/top.qcow2
check "relative base: check clean" "$Q" check -q sub/top.qcow2
expect_eq "relative base: only the two changed clusters" "$("$Q" map --output=json sub/top.qcow2 |
    python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"]==0))')" 131072

# Base smaller than the source: the tail reads as zeros through the overlay.
"$Q" create -q -f qcow2 small.qcow2 1M
"$QEMU_IO" -f qcow2 -c "write -P 0x11 0 1M" small.qcow2 >/dev/null
"$QIMG" convert -D small.qcow2 -F qcow2 -f raw -O qcow2 same.raw grown.qcow2
check "base smaller than the source: identical" "$Q" compare -f raw -F qcow2 same.raw grown.qcow2
check "base smaller than the source: check clean" "$Q" check -q grown.qcow2

# Progress with -p ends at 100%.
out=$("$QIMG" convert -p -D same-base.qcow2 -f raw -O qcow2 same.raw prog.qcow2 | tr '\r' '\n' | grep -c '100.00/100%')
if [ "$out" -ge 1 ]; then pass "-p reaches 100%"; else fail "-p reaches 100%"; fi

# Refusals.
check_fail "-D with -B refused" "$QIMG" convert -D same-base.qcow2 -B same-base.qcow2 -O qcow2 same.raw x1.qcow2
check_fail "-D with -n refused" "$QIMG" convert -n -D same-base.qcow2 -O qcow2 same.raw same-top.qcow2
check_fail "-D with two sources refused" "$QIMG" convert -D same-base.qcow2 -O qcow2 same.raw same.raw x2.qcow2
check_fail "-D with a missing base refused" "$QIMG" convert -D nowhere.qcow2 -O qcow2 same.raw x3.qcow2
check_fail "-D into raw refused" "$QIMG" convert -D same-base.qcow2 -O raw same.raw x4.raw
[ ! -e x1.qcow2 ] && [ ! -e x3.qcow2 ] && [ ! -e x4.raw ] && pass "refusals leave no target" ||
    fail "refusals leave no target"
