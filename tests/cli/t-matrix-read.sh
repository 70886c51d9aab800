#!/bin/bash
# Generic read-only tests over every row of tests/cli/matrix.tbl (a format
# and create options): info, map, check (human and json), snapshot -l,
# compare, measure (for a size, for a source), and with a backing layer
# where the format has one; qemu-img and qimg read the very same fixtures
# and must print and exit alike.  A new format joins by a line in the table.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/matrix.sh"

rm -rf "${IN:?}" && ln -s "$FIX" "$IN"   # same_ro reads $IN: the fixtures
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
    same_ro "$L: measure --size" measure -O "$fm" "${CO[@]}" --size 1G
    same_ro "$L: measure --size json" measure --output=json -O "$fm" "${CO[@]}" --size 3G
    same_ro "$L: measure of a raw image" measure -O "$fm" "${CO[@]}" -f raw d0.raw
    same_ro "$L: measure of itself json" measure --output=json -O "$fm" "${CO[@]}" "$a"
    [ "${BACKING[i]}" = 1 ] || continue
    t=top$i.$fm
    same_ro "$L: info backing chain" info --backing-chain "$t"
    same_ro "$L: info backing chain json" info --backing-chain --output=json "$t"
    same_ro "$L: map with backing" map "$t"
    same_ro "$L: map with backing json" map --output=json "$t"
    same_ro "$L: check with backing json" check --output=json "$t"
    same_ro "$L: compare with backing" compare "$t" "top$i.raw"
    same_ro "$L: measure with backing" measure -O "$fm" "${CO[@]}" "$t"
done
rm -f "$IN"
