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
# both tools left it: byte for byte the same, or (IDENTICAL=0) the same
# guest data; qemu-img check of qimg's file as of a clean image
same_result() {
    local name=$1 file=$2 row=$3 fm=${FMT[$3]}
    local r=$SCRATCH/run.ref/work/$file n=$SCRATCH/run.new/work/$file
    [ "$(cat "$SCRATCH/run.ref/rc")" = 0 ] || return 0   # an error: `same` compared it
    [ -f "$n" ] || { fail "$name: result" "qimg left no $file"; return 0; }
    if [ "${IDENTICAL:-1}" = 1 ]; then
        if same_bytes "$fm" "$r" "$n"; then pass "$name: same file"
        else fail "$name: same file" "$(cmp "$r" "$n" 2>&1 | head -1)"; fi
    else
        local out
        if out=$("$QEMU_IMG" compare -U -f "$fm" -F "$fm" "$r" "$n" 2>&1); then pass "$name: guest data"
        else fail "$name: guest data" "$out"; fi
    fi
    expect_eq "$name: qemu-img check (exit code)" \
        "$("$QEMU_IMG" check -f "$fm" "$n" >/dev/null 2>&1; echo $?)" "${CHECK_RC[row]}"
}

# convert I J [options]: a<I> to row J's format and options
convert_rows() {
    local i=$1 j=$2; shift 2
    local name="convert $* $(label "$i") to $(label "$j")" o=out.${FMT[$j]}
    co "$j"
    use "a$i.${FMT[$i]}"
    same "$name" convert "$@" -f "${FMT[$i]}" -O "${FMT[$j]}" "${CO[@]}" "a$i.${FMT[$i]}" "$o"
    same_result "$name" "$o" "$j"
}

Q=""   # the first qcow2 row: every format converts to and from it
for i in $ROWS; do [ "${FMT[$i]}" = qcow2 ] && { Q=$i; break; }; done
for i in $ROWS; do
    [ -f "$FIX/a$i.${FMT[$i]}" ] || continue
    targets=$(printf '%s\n' 0 "$i" $Q | sort -un)
    for j in $targets; do convert_rows "$i" "$j"; done
    [ "$i" = 0 ] || convert_rows 0 "$i"
    [ -n "$Q" ] && [ "$i" != "$Q" ] && convert_rows "$Q" "$i"
    IDENTICAL=0 convert_rows 0 "$i" -c
done

for i in $ROWS; do
    L=$(label "$i") fm=${FMT[$i]}
    [ "${BACKING[i]}" = 1 ] || continue
    t=top$i.$fm
    co "$i"
    use "$t" "base$i.$fm"
    same "$L: convert with backing to raw" convert -O raw "$t" out.raw
    same_result "$L: convert with backing to raw" out.raw 0
    same "$L: convert with backing -B" convert -O "$fm" "${CO[@]}" -B "base$i.$fm" -F "$fm" "$t" "out.$fm"
    same_result "$L: convert with backing -B" "out.$fm" "$i"
done

# grow_beyond_qemu LABEL FILE ROW: qemu-img refuses; qimg grows a copy by
# 1 MiB, which then checks clean and reads as before plus zeros
grow_beyond_qemu() {
    local name="$1: resize +1M (beyond qemu-img)" g=$SCRATCH/grow.${FMT[$3]} out
    cp "$IN/$2" "$g"
    out=$("$QIMG_AS_QEMU" resize -f "${FMT[$3]}" "$g" +1M 2>&1)
    expect_eq "$name" "$out" "Image resized."
    expect_eq "$name: size" "$("$QEMU_IMG" info --output=json "$g" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | head -1)" \
        $(( (4 + 1) << 20 ))
    expect_eq "$name: qemu-img check (exit code)" \
        "$("$QEMU_IMG" check -f "${FMT[$3]}" "$g" >/dev/null 2>&1; echo $?)" "${CHECK_RC[$3]}"
    if out=$("$QEMU_IMG" compare -f "${FMT[$3]}" -F raw "$g" "$FIX/d$3.raw" 2>&1); then pass "$name: guest data"
    else fail "$name: guest data" "$out"; fi
}

for i in $ROWS; do
    L=$(label "$i") fm=${FMT[$i]} a=a$i.${FMT[$i]}
    [ -f "$FIX/$a" ] || continue
    use "$a"
    if grows_beyond_qemu "$fm"; then
        grow_beyond_qemu "$L" "$a" "$i"
    else
        same "$L: resize +1M" resize -f "$fm" "$a" +1M
        same_result "$L: resize +1M" "$a" "$i"
    fi
    same "$L: resize to 2M without --shrink" resize -f "$fm" "$a" 2M
    same "$L: resize --shrink to 3M" resize -f "$fm" --shrink "$a" 3M
    same_result "$L: resize --shrink to 3M" "$a" "$i"
    same "$L: resize --shrink to 1000k" resize -f "$fm" --shrink "$a" 1000k
    same_result "$L: resize --shrink to 1000k" "$a" "$i"
done
