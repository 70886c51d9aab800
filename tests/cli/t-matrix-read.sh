#!/bin/bash
# Generic read-only tests over every row of tests/cli/matrix.tbl (a format
# and create options): info, map, check (human and json), snapshot -l,
# compare, measure (for a size, for a source), and with a backing layer
# where the format has one; qemu-img and qimg read the very same fixtures
# and must print and exit alike.  A new format joins by a line in the table.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/matrix.sh"

rm -rf "${IN:?}" && ln -s "$FIX" "$IN"   # same_ro reads $IN: the fixtures
# measure_beyond_qemu LABEL ROW: qemu-img cannot measure the format; qimg's
# figures hold what qimg writes: for --size, an image qemu-img creates with
# the row's options is "required" big, and with static=on "fully allocated";
# a converted copy never exceeds "required"
json_field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }
measure_beyond_qemu() {
    local name="$1: measure (beyond qemu-img)" i=$2 fm=${FMT[$2]} m src
    m=$("$QIMG_AS_QEMU" measure --output=json -O "$fm" "${CO[@]}" --size 1G)
    rm -f "$SCRATCH/m.$fm" "$SCRATCH/ms.$fm"
    "$QEMU_IMG" create -q -f "$fm" "${CO[@]}" "$SCRATCH/m.$fm" 1G
    expect_eq "$name: --size required" "$(echo "$m" | json_field required)" "$(stat -c %s "$SCRATCH/m.$fm")"
    if [ "$fm" = vdi ]; then   # a format with a fully allocated kind to compare with
        "$QEMU_IMG" create -q -f "$fm" -o static=on "$SCRATCH/ms.$fm" 1G
        expect_eq "$name: --size fully allocated" "$(echo "$m" | json_field fully-allocated)" \
            "$(stat -c %s "$SCRATCH/ms.$fm")"
    fi
    for src in "d0.raw" "a$i.$fm"; do
        m=$("$QIMG_AS_QEMU" measure --output=json -O "$fm" "${CO[@]}" "$IN/$src")
        rm -f "$SCRATCH/m.$fm"
        "$QIMG" convert -O "$fm" "${CO[@]}" "$IN/$src" "$SCRATCH/m.$fm"
        check "$name: $src: a copy fits in required" \
            test "$(stat -c %s "$SCRATCH/m.$fm")" -le "$(echo "$m" | json_field required)"
        check "$name: $src: required <= fully allocated" \
            test "$(echo "$m" | json_field required)" -le "$(echo "$m" | json_field fully-allocated)"
    done
}

for i in $ROWS; do
    L=$(label "$i") fm=${FMT[$i]} a=a$i.${FMT[$i]}
    [ -f "$FIX/$a" ] || continue
    same_ro "$L: info" info "$a"
    same_ro "$L: info json" info --output=json "$a"
    same_ro "$L: map" map "$a"
    same_ro "$L: map json" map --output=json "$a"
    same_ro "$L: check" check "$a"
    same_ro "$L: check json" check --output=json "$a"
    same_ro "$L: snapshot -l" snapshot -l "$a"
    same_ro "$L: compare with its data" compare -f "$fm" -F raw "$a" "d$i.raw"
    same_ro "$L: compare with a changed byte" compare "$a" "b$i.$fm"
    same_ro "$L: compare -s with its data" compare -s "$a" "d$i.raw"
    co "$i"
    if measures_beyond_qemu "$fm"; then
        measure_beyond_qemu "$L" "$i"
    else
        same_ro "$L: measure --size" measure -O "$fm" "${CO[@]}" --size 1G
        same_ro "$L: measure --size json" measure --output=json -O "$fm" "${CO[@]}" --size 3G
        same_ro "$L: measure of a raw image" measure -O "$fm" "${CO[@]}" -f raw d0.raw
        same_ro "$L: measure of itself json" measure --output=json -O "$fm" "${CO[@]}" "$a"
    fi
    [ "${BACKING[i]}" = 1 ] || continue
    t=top$i.$fm
    same_ro "$L: info backing chain" info --backing-chain "$t"
    same_ro "$L: info backing chain json" info --backing-chain --output=json "$t"
    same_ro "$L: map with backing" map "$t"
    same_ro "$L: map with backing json" map --output=json "$t"
    same_ro "$L: check with backing json" check --output=json "$t"
    same_ro "$L: compare with backing" compare "$t" "top$i.raw"
    if measures_beyond_qemu "$fm"; then
        m=$("$QIMG_AS_QEMU" measure --output=json -O "$fm" "${CO[@]}" "$IN/$t")
        rm -f "$SCRATCH/m.$fm"
        "$QIMG" convert -O "$fm" "${CO[@]}" "$IN/$t" "$SCRATCH/m.$fm"
        check "$L: measure with backing (beyond qemu-img): a copy fits" \
            test "$(stat -c %s "$SCRATCH/m.$fm")" -le "$(echo "$m" | json_field required)"
    else
        same_ro "$L: measure with backing" measure -O "$fm" "${CO[@]}" "$t"
    fi
done
rm -f "$IN"
