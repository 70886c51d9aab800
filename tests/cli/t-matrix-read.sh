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
# figures hold what qimg writes: for --size, an empty image qemu-img creates
# with the row's options is "required" big, and one with every byte written
# by qemu-io (or made with full_alloc_opts) "fully allocated"; a converted
# copy never exceeds "required"
json_field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }
measure_beyond_qemu() {
    local name="$1: measure (beyond qemu-img)" i=$2 fm=${FMT[$2]} m src vsize full size
    size=$(measure_size "$fm") full=$(full_alloc_opts "$i")
    m=$("$QIMG_AS_QEMU" measure --output=json -O "$fm" "${CO[@]}" --size "$size")
    rm -f "$SCRATCH/m.$fm" "$SCRATCH/ms.$fm"
    "$QEMU_IMG" create -q -f "$fm" "${CO[@]}" "$SCRATCH/m.$fm" "$size"
    expect_eq "$name: --size required" "$(echo "$m" | json_field required)" "$(stat -c %s "$SCRATCH/m.$fm")"
    case $full in
    none)
        check "$name: --size required <= fully allocated" \
            test "$(echo "$m" | json_field required)" -le "$(echo "$m" | json_field fully-allocated)" ;;
    "")
        "$QEMU_IMG" create -q -f "$fm" "${CO[@]}" "$SCRATCH/ms.$fm" "$size"
        vsize=$("$QEMU_IMG" info -f "$fm" --output=json "$SCRATCH/ms.$fm" | json_field virtual-size | head -1)
        "$QEMU_IO" -f "$fm" -c "write -P 0x5a 0 $vsize" "$SCRATCH/ms.$fm" >/dev/null
        expect_eq "$name: --size fully allocated" "$(echo "$m" | json_field fully-allocated)" \
            "$(stat -c %s "$SCRATCH/ms.$fm")" ;;
    *)
        "$QEMU_IMG" create -q -f "$fm" -o "$full" "$SCRATCH/ms.$fm" "$size"
        expect_eq "$name: --size fully allocated" "$(echo "$m" | json_field fully-allocated)" \
            "$(stat -c %s "$SCRATCH/ms.$fm")" ;;
    esac
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

# measure_uncreatable LABEL ROW: qemu-img can neither create nor measure
# the format (creates_beyond_qemu); qimg's figures hold what qimg writes:
# "required" for --size is the size of a new image, "fully allocated" that
# of a copy of a disk full of data, and a copy of a source fits in required
measure_uncreatable() {
    local name="$1: measure (beyond qemu-img)" i=$2 fm=${FMT[$2]} m src size
    size=$(measure_size "$fm")
    m=$("$QIMG_AS_QEMU" measure --output=json -O "$fm" --size "$size")
    rm -f "$SCRATCH/m.$fm" "$SCRATCH/full.raw"
    "$QIMG" create -q -f "$fm" "$SCRATCH/m.$fm" "$size"
    expect_eq "$name: --size required" "$(echo "$m" | json_field required)" "$(stat -c %s "$SCRATCH/m.$fm")"
    python3 -c 'import sys; open(sys.argv[1], "wb").write(b"\x5a" * (16 << 20))' "$SCRATCH/full.raw"
    rm -f "$SCRATCH/m.$fm"
    "$QIMG" convert -O "$fm" "$SCRATCH/full.raw" "$SCRATCH/m.$fm"
    expect_eq "$name: --size fully allocated" "$(echo "$m" | json_field fully-allocated)" \
        "$(stat -c %s "$SCRATCH/m.$fm")"
    for src in "d0.raw" "a$i.$fm"; do
        m=$("$QIMG_AS_QEMU" measure --output=json -O "$fm" "$IN/$src")
        rm -f "$SCRATCH/m.$fm"
        "$QIMG" convert -O "$fm" "$IN/$src" "$SCRATCH/m.$fm"
        check "$name: $src: a copy fits in required" \
            test "$(stat -c %s "$SCRATCH/m.$fm")" -le "$(echo "$m" | json_field required)"
    done
}

# map_beyond_qemu LABEL IMAGE RAW: every range qimg's map calls zero
# reads as zeros, every range with an offset holds the guest's bytes there,
# and the ranges cover the disk once, in order
map_beyond_qemu() {
    "$QIMG" map --output=json "$IN/$2" >"$SCRATCH/map.json" || { fail "$1: map (beyond qemu-img)"; return; }
    check "$1: map (beyond qemu-img) agrees with the data" python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
raw = open(sys.argv[2], "rb").read()
img = open(sys.argv[3], "rb")
pos = 0
for e in m:
    assert e["start"] == pos, e
    chunk = raw[e["start"]:e["start"] + e["length"]]
    if e["zero"]:
        assert chunk == bytes(len(chunk)), e
    if "offset" in e and not e["zero"]:
        img.seek(e["offset"])
        assert img.read(e["length"]) == chunk, e
    pos += e["length"]
assert pos == len(raw)
' "$SCRATCH/map.json" "$IN/$3" "$IN/$2"
}

# same_as_merge NAME: qemu-img runs REF (on uml_moo's merges ma<i>,
# mb<i>), qimg NEW (on the cow files themselves), both in $IN: the same
# stdout, stderr and exit code
same_as_merge() {
    local name=$1 a=$SCRATCH/ro.ref b=$SCRATCH/ro.new
    mkdir -p "$a" "$b"
    (cd "$IN" && "$QEMU_IMG" "${REF[@]}" >"$a/out" 2>"$a/err"; echo $? >"$a/rc")
    (cd "$IN" && "$QIMG_AS_QEMU" "${NEW[@]}" >"$b/out" 2>"$b/err"; echo $? >"$b/rc")
    judge_runs "$name (qemu-img on the merge: ${REF[*]})" "$a" "$b" "${NEW[@]}"
}
# map_by_depth NAME MAP-JSON IMAGE BACKING RAW: the ranges of qimg's json
# map cover the disk once, in order; zero ranges read as zeros, data
# ranges hold RAW's bytes at their offset in IMAGE (depth 0) or in its
# BACKING file (depth 1)
map_by_depth() {
    check "$1" python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
raw = open(sys.argv[4], "rb").read()
files = [open(sys.argv[2], "rb"), open(sys.argv[3], "rb")]
pos = 0
for e in m:
    assert e["start"] == pos and e["present"], e
    chunk = raw[pos:pos + e["length"]]
    if e["zero"]:
        assert chunk == bytes(len(chunk)), e
    elif e["data"]:
        files[e["depth"]].seek(e["offset"])
        assert files[e["depth"]].read(e["length"]) == chunk, e
    pos += e["length"]
assert pos == len(raw), pos
' "$2" "$3" "$4" "$5"
}
# read_lacking LABEL ROW: qemu-img does not know row ROW's format
# (qemu_lacks_format): qimg's info is qemu-img's of the file as raw but
# for the format, the guest size and the backing file; its map holds the
# guest data where it says; check, snapshot -l and compare print what
# qemu-img prints for uml_moo's merges; measure -O FMT is refused by both
# tools, and a copy qimg makes fits in the size qimg measures for it
read_lacking() {
    local L=$1 i=$2 fm=${FMT[$2]} a=a$2.${FMT[$2]} want vsize base=${COW_BASE[$2]} m REF NEW
    "$QEMU_IMG" info -f "$fm" "$IN/$a" >/dev/null 2>&1
    expect_eq "$L: qemu-img does not know $fm (exit code)" $? 1
    # (one qemu-img at a time: its wrappers share their files)
    vsize=$("$QEMU_IMG" info -f raw "$IN/d$i.raw" | grep '^virtual size: ')
    want=$(cd "$IN" && "$QEMU_IMG" info -f raw "$a" | sed -e "s/^file format: raw\$/file format: $fm/" \
        -e "s/^virtual size: .*/$vsize/"
        echo "backing file: $base"; echo "backing file format: raw")
    expect_eq "$L: info (beyond qemu-img)" "$(cd "$IN" && "$QIMG_AS_QEMU" info "$a")" "$want"
    "$QEMU_IMG" info -f raw --output=json "$IN/$a" >"$SCRATCH/ref.json"
    "$QIMG_AS_QEMU" info --output=json "$IN/$a" >"$SCRATCH/new.json"
    check "$L: info json (beyond qemu-img)" python3 -c '
import json, os, sys
ref, new = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
del ref["dirty-flag"]
ref.update({"format": sys.argv[3], "virtual-size": os.path.getsize(sys.argv[4]),
            "backing-filename": sys.argv[5], "full-backing-filename": sys.argv[5],
            "backing-filename-format": "raw"})
assert new == ref, (new, ref)
' "$SCRATCH/ref.json" "$SCRATCH/new.json" "$fm" "$IN/d$i.raw" "$base"
    "$QIMG_AS_QEMU" map --output=json "$IN/$a" >"$SCRATCH/map.json" || fail "$L: map json"
    map_by_depth "$L: map json (beyond qemu-img) holds the data" "$SCRATCH/map.json" "$IN/$a" "$base" "$IN/d$i.raw"
    (cd "$IN" && "$QIMG_AS_QEMU" map "$a") >"$SCRATCH/map.txt" || fail "$L: map"
    check "$L: map (beyond qemu-img) holds the data" python3 -c '
import sys
lines = open(sys.argv[1]).read().splitlines()
raw = open(sys.argv[2], "rb").read()
assert lines[0].split() == ["Offset", "Length", "Mapped", "to", "File"] and len(lines) > 2, lines
for line in lines[1:]:
    start, length, off, name = line.split(None, 3)
    start, length, off = int(start, 16), int(length, 16), int(off, 16)
    with open(sys.argv[3] + "/" + name if name[0] != "/" else name, "rb") as f:
        f.seek(off)
        assert f.read(length) == raw[start:start + length], line
' "$SCRATCH/map.txt" "$IN/d$i.raw" "$IN"
    REF=(check -f raw "ma$i.raw") NEW=(check "$a"); same_as_merge "$L: check"
    REF=(check --output=json -f raw "ma$i.raw") NEW=(check --output=json "$a"); same_as_merge "$L: check json"
    REF=(snapshot -l "ma$i.raw") NEW=(snapshot -l "$a"); same_as_merge "$L: snapshot -l"
    REF=(compare -f raw -F raw "ma$i.raw" "d$i.raw") NEW=(compare -f "$fm" -F raw "$a" "d$i.raw")
    same_as_merge "$L: compare with its data"
    REF=(compare -f raw -F raw "ma$i.raw" "mb$i.raw") NEW=(compare "$a" "b$i.$fm")
    same_as_merge "$L: compare with a changed byte"
    # a cow's written zeros are data where the raw file has a hole: -s
    # against the raw data differs by design; against itself it must not
    REF=(compare -s -f raw -F raw "ma$i.raw" "ma$i.raw") NEW=(compare -s "$a" "$a")
    same_as_merge "$L: compare -s with itself"
    "$QEMU_IMG" measure -O "$fm" --size 1G >/dev/null 2>&1
    expect_eq "$L: measure -O $fm: both refuse" "$?:$("$QIMG_AS_QEMU" measure -O "$fm" --size 1G >/dev/null 2>&1; echo $?)" 1:1
    m=$("$QIMG_AS_QEMU" measure --output=json -O qcow2 "$IN/$a")
    rm -f "$SCRATCH/m.qcow2"
    "$QIMG" convert -O qcow2 "$IN/$a" "$SCRATCH/m.qcow2"
    check "$L: measure -O qcow2 (beyond qemu-img): a copy fits in required" \
        test "$(stat -c %s "$SCRATCH/m.qcow2")" -le "$(echo "$m" | json_field required)"
    check "$L: measure -O qcow2 (beyond qemu-img): the copy holds the data" \
        "$QEMU_IMG" compare -f qcow2 -F raw "$SCRATCH/m.qcow2" "$IN/d$i.raw"
}

for i in $ROWS; do
    L=$(label "$i") fm=${FMT[$i]} a=a$i.${FMT[$i]}
    [ -f "$FIX/$a" ] || continue
    qemu_lacks_format "$fm" && { read_lacking "$L" "$i"; continue; }
    sec "$i"
    A=$(img "$i" "$a") B=$(img "$i" "b$i.$fm")
    PF=() PF2=()
    if probes_beyond_qemu "$i"; then
        PF=(-f "$fm") PF2=(-F "$fm")
        expect_eq "$L: probed as $fm (beyond qemu-img)" \
            "$("$QIMG" info "$IN/$a" | sed -n 's/^file format: //p')" "$fm"
    fi
    # info reads no guest data: opened without the secret by its name
    same_ro "$L: info" info "${PF[@]}" "$a"
    same_ro "$L: info json" info "${PF[@]}" --output=json "$a"
    if maps_beyond_qemu "$fm"; then
        map_beyond_qemu "$L" "$a" "d$i.raw"
    else
        same_ro "$L: map" map "${SEC[@]}" "${PF[@]}" "$A"
        same_ro "$L: map json" map "${SEC[@]}" "${PF[@]}" --output=json "$A"
    fi
    same_ro "$L: check" check "${SEC[@]}" "${PF[@]}" "$A"
    same_ro "$L: check json" check "${SEC[@]}" "${PF[@]}" --output=json "$A"
    if [ ${#PF[@]} = 0 ]; then same_ro "$L: snapshot -l" snapshot -l "${SEC[@]}" "$A"
    else same_ro "$L: snapshot -l" snapshot -l --image-opts "driver=$fm,file.filename=$a"; fi
    same_ro "$L: compare with its data" compare "${SEC[@]}" -f "$fm" -F raw "$A" "d$i.raw"
    same_ro "$L: compare with a changed byte" compare "${SEC[@]}" "${PF[@]}" "${PF2[@]}" "$A" "$B"
    if maps_beyond_qemu "$fm"; then
        # qemu-img finds a mismatch at 0 (all data); qimg where raw's holes
        # and the image's zeros first differ: the same verdict
        "$QIMG" compare -s "$IN/$a" "$IN/d$i.raw" >/dev/null 2>&1
        expect_eq "$L: compare -s with its data (exit code)" $? \
            "$("$QEMU_IMG" compare -s "$IN/$a" "$IN/d$i.raw" >/dev/null 2>&1; echo $?)"
    else
        same_ro "$L: compare -s with its data" compare "${SEC[@]}" "${PF[@]}" -s "$A" "d$i.raw"
    fi
    co "$i"
    if creates_beyond_qemu "$fm"; then
        measure_uncreatable "$L" "$i"
    elif measures_beyond_qemu "$fm"; then
        measure_beyond_qemu "$L" "$i"
    else
        same_ro "$L: measure --size" measure "${SEC[@]}" -O "$fm" "${CO[@]}" --size 1G
        same_ro "$L: measure --size json" measure "${SEC[@]}" --output=json -O "$fm" "${CO[@]}" --size 3G
        same_ro "$L: measure of a raw image" measure "${SEC[@]}" -O "$fm" "${CO[@]}" -f raw d0.raw
        same_ro "$L: measure of itself json" measure "${SEC[@]}" --output=json -O "$fm" "${CO[@]}" "$A"
    fi
    [ "${BACKING[i]}" = 1 ] || continue
    same_ro "$L: info backing chain" info --backing-chain "top$i.$fm"
    same_ro "$L: info backing chain json" info --backing-chain --output=json "top$i.$fm"
    t=$(img_top "$i" "top$i.$fm" "base$i.$fm")
    same_ro "$L: map with backing" map "${SEC[@]}" "$t"
    same_ro "$L: map with backing json" map "${SEC[@]}" --output=json "$t"
    same_ro "$L: check with backing json" check "${SEC[@]}" --output=json "$t"
    same_ro "$L: compare with backing" compare "${SEC[@]}" "$t" "top$i.raw"
    if measures_beyond_qemu "$fm"; then
        T=$(img_top "$i" "$IN/top$i.$fm" "$IN/base$i.$fm")
        m=$("$QIMG_AS_QEMU" measure "${SEC[@]}" --output=json -O "$fm" "${CO[@]}" "$T")
        rm -f "$SCRATCH/m.$fm"
        "$QIMG" convert "${SEC[@]}" -O "$fm" "${CO[@]}" "$T" "$SCRATCH/m.$fm"
        check "$L: measure with backing (beyond qemu-img): a copy fits" \
            test "$(stat -c %s "$SCRATCH/m.$fm")" -le "$(echo "$m" | json_field required)"
    else
        same_ro "$L: measure with backing" measure "${SEC[@]}" -O "$fm" "${CO[@]}" "$t"
    fi
done
rm -f "$IN"
