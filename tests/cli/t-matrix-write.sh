#!/bin/bash
# Generic writing tests over every row of tests/cli/matrix.tbl (a format
# and create options): convert from every row to raw, to itself and to the
# first qcow2 row, from raw to every row (plain and compressed), a backing
# chain flattened and converted with -B, resize (grow, shrink refused
# without --shrink, shrink).  qemu-img and qimg run on copies of the same
# fixtures with stdout, stderr and exit code compared; the file qimg writes
# must be qemu's byte for byte (or, compressed, hold the same guest data)
# and pass qemu-img check.  A new format joins by a line in the table.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/matrix.sh"

# same_result NAME FILE ROW: after `same`, FILE (of row ROW's format) as
# both tools left it: byte for byte the same, or (IDENTICAL=0, and rows
# whose files differ at random: random_bytes) the same guest data;
# qemu-img check of qimg's file as of a clean image
same_result() {
    local name=$1 file=$2 row=$3 fm=${FMT[$3]} SEC
    local r=$SCRATCH/run.ref/work/$file n=$SCRATCH/run.new/work/$file
    [ "$(cat "$SCRATCH/run.ref/rc")" = 0 ] || return 0   # an error: `same` compared it
    [ -f "$n" ] || { fail "$name: result" "qimg left no $file"; return 0; }
    sec "$row"
    if [ "${IDENTICAL:-1}" = 1 ] && ! random_bytes "$row"; then
        if same_bytes "$fm" "$r" "$n"; then pass "$name: same file"
        else fail "$name: same file" "$(cmp "$r" "$n" 2>&1 | head -1)"; fi
    else
        local out
        if out=$("$QEMU_IMG" compare "${SEC[@]}" -U -f "$fm" -F "$fm" "$(img "$row" "$r")" "$(img "$row" "$n")" 2>&1); then pass "$name: guest data"
        else fail "$name: guest data" "$out"; fi
    fi
    expect_eq "$name: qemu-img check (exit code)" \
        "$("$QEMU_IMG" check "${SEC[@]}" -f "$fm" "$(img "$row" "$n")" >/dev/null 2>&1; echo $?)" "${CHECK_RC[row]}"
}

# convert_uncreatable NAME I J [options]: qemu-img cannot write row J's
# format (creates_beyond_qemu): qimg's copy holds a<I>'s guest data for
# qemu-img; what qimg cannot do either (compression) both tools refuse
convert_uncreatable() {
    local name=$1 i=$2 j=$3 o=out.${FMT[$3]} out; shift 3
    run_in_copy ref "$QEMU_IMG" convert "${SEC[@]}" "$@" -f "${FMT[$i]}" -O "${FMT[$j]}" "${CO[@]}" "$(img "$i" "a$i.${FMT[$i]}")" "$o"
    run_in_copy new "$QIMG_AS_QEMU" convert "${SEC[@]}" "$@" -f "${FMT[$i]}" -O "${FMT[$j]}" "${CO[@]}" "$(img "$i" "a$i.${FMT[$i]}")" "$o"
    if [[ " $* " == *" -c "* ]]; then
        expect_eq "$name (beyond qemu-img): both refuse" \
            "$(cat "$SCRATCH/run.ref/rc"):$(cat "$SCRATCH/run.new/rc")" 1:1
        return
    fi
    expect_eq "$name (beyond qemu-img): qemu-img refuses, qimg writes" \
        "$(cat "$SCRATCH/run.ref/rc"):$(cat "$SCRATCH/run.new/rc")" 1:0
    if out=$("$QEMU_IMG" compare "${SEC[@]}" -U -f "${FMT[$i]}" -F "${FMT[$j]}" "$(img "$i" "$IN/a$i.${FMT[$i]}")" \
             "$SCRATCH/run.new/work/$o" 2>&1); then pass "$name (beyond qemu-img): guest data"
    else fail "$name (beyond qemu-img): guest data" "$out"; fi
}

# convert_lacking NAME I J [options]: qemu-img does not know row I's or row
# J's format (qemu_lacks_format) and refuses the conversion.  To a cow
# qimg needs a backing file (and no compression): both refuse; qimg then
# writes one over the cow fixture's backing file (-B), which uml_moo
# merges into a<I>'s guest data.  From a cow qimg writes what qemu-img
# reads as a<I>'s guest data (raw: byte for byte) and checks clean
convert_lacking() {
    local name="$1 (beyond qemu-img)" i=$2 j=$3 o=out.${FMT[$3]} out n; shift 3
    n=$SCRATCH/run.new/work/$o
    run_in_copy ref "$QEMU_IMG" convert "$@" -f "${FMT[$i]}" -O "${FMT[$j]}" "${CO[@]}" "a$i.${FMT[$i]}" "$o"
    run_in_copy new "$QIMG_AS_QEMU" convert "$@" -f "${FMT[$i]}" -O "${FMT[$j]}" "${CO[@]}" "a$i.${FMT[$i]}" "$o"
    if qemu_lacks_format "${FMT[$j]}"; then
        expect_eq "$name: both refuse" "$(cat "$SCRATCH/run.ref/rc"):$(cat "$SCRATCH/run.new/rc")" 1:1
        [[ " $* " == *" -c "* ]] && return
        rm -f "$n"
        "$QIMG_AS_QEMU" convert -f "${FMT[$i]}" -O "${FMT[$j]}" -B "${COW_BASE[$j]}" -F raw "$IN/a$i.${FMT[$i]}" "$n" ||
            { fail "$name: qimg writes with -B"; return; }
        independent_raw "${FMT[$j]}" "$n" "$SCRATCH/moo.raw"
        check "$name: with -B, read by $(native_tool "${FMT[$j]}" | cut -d' ' -f2)" cmp "$SCRATCH/moo.raw" "$FIX/d$i.raw"
        rm -f "$SCRATCH/back.raw"
        "$QIMG" convert -O raw "$n" "$SCRATCH/back.raw" || fail "$name: with -B, read by qimg"
        check "$name: with -B, read by qimg" cmp "$SCRATCH/back.raw" "$FIX/d$i.raw"
        return
    fi
    expect_eq "$name: qemu-img refuses, qimg writes" "$(cat "$SCRATCH/run.ref/rc"):$(cat "$SCRATCH/run.new/rc")" 1:0
    if out=$("$QEMU_IMG" compare -f "${FMT[$j]}" -F raw "$n" "$FIX/d$i.raw" 2>&1); then pass "$name: guest data"
    else fail "$name: guest data" "$out"; fi
    if [ "${FMT[$j]}" = raw ]; then check "$name: byte for byte" cmp "$n" "$FIX/d$i.raw"; fi
    expect_eq "$name: qemu-img check (exit code)" \
        "$("$QEMU_IMG" check -f "${FMT[$j]}" "$n" >/dev/null 2>&1; echo $?)" "${CHECK_RC[j]}"
}

# convert I J [options]: a<I> to row J's format and options
convert_rows() {
    local i=$1 j=$2; shift 2
    local name="convert $* $(label "$i") to $(label "$j")" o=out.${FMT[$j]}
    co "$j"
    sec "$i" "$j"
    use "a$i.${FMT[$i]}"
    if creates_beyond_qemu "${FMT[$j]}"; then
        convert_uncreatable "$name" "$i" "$j" "$@"
        return
    fi
    if qemu_lacks_format "${FMT[$i]}" || qemu_lacks_format "${FMT[$j]}"; then
        convert_lacking "$name" "$i" "$j" "$@"
        return
    fi
    same "$name" convert "${SEC[@]}" "$@" -f "${FMT[$i]}" -O "${FMT[$j]}" "${CO[@]}" "$(img "$i" "a$i.${FMT[$i]}")" "$o"
    same_result "$name" "$o" "$j"
}

# convert_compressed_exit I: raw to row I compressed where qemu-img exits 1
# after writing the image (compress_exits_1_in_qemu): qimg exits 0 and
# both files hold the guest data
convert_compressed_exit() {
    local i=$1 name="convert -c $(label 0) to $(label "$1")" o=out.${FMT[$1]} out
    co "$i"
    sec "$i"
    use a0.raw
    run_in_copy ref "$QEMU_IMG" convert "${SEC[@]}" -c -f raw -O "${FMT[$i]}" "${CO[@]}" a0.raw "$o"
    run_in_copy new "$QIMG_AS_QEMU" convert "${SEC[@]}" -c -f raw -O "${FMT[$i]}" "${CO[@]}" a0.raw "$o"
    expect_eq "$name: qemu-img exits 1, qimg 0" \
        "$(cat "$SCRATCH/run.ref/rc"):$(cat "$SCRATCH/run.new/rc")" 1:0
    if out=$("$QEMU_IMG" compare "${SEC[@]}" -U -f "${FMT[$i]}" -F "${FMT[$i]}" "$(img "$i" "$SCRATCH/run.ref/work/$o")" \
             "$(img "$i" "$SCRATCH/run.new/work/$o")" 2>&1); then pass "$name: guest data"
    else fail "$name: guest data" "$out"; fi
}

Q=""   # the first qcow2 row: every format converts to and from it
for i in $ROWS; do [ "${FMT[$i]}" = qcow2 ] && { Q=$i; break; }; done
for i in $ROWS; do
    [ -f "$FIX/a$i.${FMT[$i]}" ] || continue
    targets=$(printf '%s\n' 0 "$i" $Q | sort -un)
    for j in $targets; do convert_rows "$i" "$j"; done
    [ "$i" = 0 ] || convert_rows 0 "$i"
    [ -n "$Q" ] && [ "$i" != "$Q" ] && convert_rows "$Q" "$i"
    if compress_exits_1_in_qemu "${FMT[$i]}"; then convert_compressed_exit "$i"
    else IDENTICAL=0 convert_rows 0 "$i" -c; fi
done

for i in $ROWS; do
    L=$(label "$i") fm=${FMT[$i]}
    [ "${BACKING[i]}" = 1 ] || continue
    t=top$i.$fm
    co "$i"
    sec "$i"
    use "$t" "base$i.$fm"
    T=$(img_top "$i" "$t" "base$i.$fm")
    same "$L: convert with backing to raw" convert "${SEC[@]}" -O raw "$T" out.raw
    same_result "$L: convert with backing to raw" out.raw 0
    same "$L: convert with backing -B" convert "${SEC[@]}" -O "$fm" "${CO[@]}" -B "base$i.$fm" -F "$fm" "$T" "out.$fm"
    same_result "$L: convert with backing -B" "out.$fm" "$i"
done

# grow_beyond_qemu LABEL FILE ROW: qemu-img refuses; qimg grows a copy by
# 1 MiB, which then checks clean and reads as before plus zeros
grow_beyond_qemu() {
    local name="$1: resize +1M (beyond qemu-img)" g=$SCRATCH/grow.${FMT[$3]} fm=${FMT[$3]} out size
    cp "$IN/$2" "$g"
    size=$("$QEMU_IMG" info -f "$fm" --output=json "$g" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | head -1)
    out=$("$QIMG_AS_QEMU" resize -f "$fm" "$g" +1M 2>&1)
    expect_eq "$name" "$out" "Image resized."
    expect_eq "$name: size" "$("$QEMU_IMG" info -f "$fm" --output=json "$g" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | head -1)" \
        $(( size + (1 << 20) ))
    expect_eq "$name: qemu-img check (exit code)" \
        "$("$QEMU_IMG" check -f "$fm" "$g" >/dev/null 2>&1; echo $?)" "${CHECK_RC[$3]}"
    if out=$("$QEMU_IMG" compare -f "$fm" -F raw "$g" "$FIX/d$3.raw" 2>&1); then pass "$name: guest data"
    else fail "$name: guest data" "$out"; fi
}

# shrink_beyond_qemu LABEL FILE ROW SIZE: qemu-img refuses; qimg shrinks a
# copy, which checks clean and reads as the first SIZE bytes of its data
shrink_beyond_qemu() {
    local name="$1: resize --shrink to $4 (beyond qemu-img)" g=$SCRATCH/shrink.${FMT[$3]} fm=${FMT[$3]} out
    cp "$IN/$2" "$g"
    out=$("$QIMG_AS_QEMU" resize -f "$fm" --shrink "$g" "$4" 2>&1)
    expect_eq "$name" "$out" "Image resized."
    "$QEMU_IMG" convert -f raw -O raw "$FIX/d$3.raw" "$SCRATCH/shrunk.raw"
    "$QIMG" resize -q -f raw --shrink "$SCRATCH/shrunk.raw" "$4"
    expect_eq "$name: qemu-img check (exit code)" \
        "$("$QEMU_IMG" check -f "$fm" "$g" >/dev/null 2>&1; echo $?)" "${CHECK_RC[$3]}"
    expect_eq "$name: size" "$("$QEMU_IMG" info -f "$fm" --output=json "$g" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | head -1)" \
        "$(stat -c %s "$SCRATCH/shrunk.raw")"
    if out=$("$QEMU_IMG" compare -f "$fm" -F raw "$g" "$SCRATCH/shrunk.raw" 2>&1); then pass "$name: guest data"
    else fail "$name: guest data" "$out"; fi
}

for i in $ROWS; do
    L=$(label "$i") fm=${FMT[$i]} a=a$i.${FMT[$i]}
    [ -f "$FIX/$a" ] || continue
    use "$a"
    sec "$i"
    A=$(img "$i" "$a")
    if creates_beyond_qemu "$fm" || qemu_lacks_format "$fm"; then
        # qemu-img opens the format read-only (or not at all); qimg cannot
        # resize it
        for size in +1M 2M; do
            run_in_copy ref "$QEMU_IMG" resize -f "$fm" "$A" "$size"
            run_in_copy new "$QIMG_AS_QEMU" resize -f "$fm" "$A" "$size"
            expect_eq "$L: resize $size: both refuse" "$(cat "$SCRATCH/run.ref/rc"):$(cat "$SCRATCH/run.new/rc")" 1:1
            check "$L: resize $size: the image is unchanged" cmp -s "$SCRATCH/run.new/work/$a" "$IN/$a"
        done
        continue
    fi
    if grows_beyond_qemu "$fm"; then
        grow_beyond_qemu "$L" "$a" "$i"
    else
        same "$L: resize +1M" resize "${SEC[@]}" -f "$fm" "$A" +1M
        same_result "$L: resize +1M" "$a" "$i"
    fi
    same "$L: resize to 2M without --shrink" resize "${SEC[@]}" -f "$fm" "$A" 2M
    if shrinks_beyond_qemu "$fm"; then
        shrink_beyond_qemu "$L" "$a" "$i" 3M
        shrink_beyond_qemu "$L" "$a" "$i" 1000k
        continue
    fi
    same "$L: resize --shrink to 3M" resize "${SEC[@]}" -f "$fm" --shrink "$A" 3M
    same_result "$L: resize --shrink to 3M" "$a" "$i"
    same "$L: resize --shrink to 1000k" resize "${SEC[@]}" -f "$fm" --shrink "$A" 1000k
    same_result "$L: resize --shrink to 1000k" "$a" "$i"
done
