#!/bin/bash
# Behaviours of convert, create, compare, map and dd that qemu-img 7.2's own
# test suite checks (issue 13), each run side by side with qemu-img.
. "$(dirname "$0")/lib.sh"

# ---- convert -B / -o backing_file: the target's backing format must be
# given (qemu-img 7.2 does not probe it), and one source only
fresh
truncate -s 4M "$IN/o.raw"
mk base.qcow2 4M
mk old.qcow2 8M
i=0
while IFS= read -r args; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    same "convert backing $i: $args" convert $args
done <<'EOF'
-O qcow2 -B o.raw o.raw t.qcow2
-O qcow2 -B o.raw -F raw o.raw t.qcow2
-O qcow2 -B base.qcow2 o.raw t.qcow2
-O qcow2 -B base.qcow2 -F qcow2 o.raw t.qcow2
-O qcow2 -o backing_fmt=qcow2 -B base.qcow2 o.raw t.qcow2
-O qcow2 -o backing_file=base.qcow2 o.raw t.qcow2
-O qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 o.raw t.qcow2
-O qcow2 -B base.qcow2 -o backing_file=base.qcow2 o.raw t.qcow2
-O qcow2 -B base.qcow2 -o backing_fmt=raw -F qcow2 o.raw t.qcow2
-O qcow2 -B base.qcow2 o.raw o.raw t.qcow2
-O qcow2 -B base.qcow2 -F qcow2 o.raw o.raw t.qcow2
-O qcow2 -o backing_file=base.qcow2 o.raw o.raw t.qcow2
-O raw -B base.qcow2 o.raw t.raw
-O raw -B base.qcow2 -F qcow2 o.raw t.raw
-O qcow2 -F qcow2 o.raw t.qcow2
-n -O qcow2 -B base.qcow2 o.raw o.raw old.qcow2
-n -O qcow2 -B base.qcow2 --target-is-zero o.raw o.raw old.qcow2
-O qcow2 -B base.qcow2 -F qcow2 -c o.raw t.qcow2
EOF
same "convert -B without -F: qemu-img refuses" convert -O qcow2 -B base.qcow2 o.raw t.qcow2
ref_rc "convert -B without -F: qemu-img refuses" 1
same "convert -B with two sources: qemu-img refuses" \
    convert -O qcow2 -B base.qcow2 -F qcow2 o.raw o.raw t.qcow2
ref_rc "convert -B with two sources: qemu-img refuses" 1

# ---- convert -o size=: the sources' size wins, as in qemu-img (a bad value still fails)
for sz in 10M 512k; do
    same "convert -o size=$sz" convert -O qcow2 -o size=$sz o.raw t.qcow2
    ref_rc "convert -o size=$sz" 0
    expect_eq "convert -o size=$sz: the source's size" \
        "$("$QEMU_IMG" info --output=json "$SCRATCH/run.new/work/t.qcow2" | grep '"virtual-size"')" \
        "$("$QEMU_IMG" info --output=json "$SCRATCH/run.ref/work/t.qcow2" | grep '"virtual-size"')"
done
same "convert -o size=abc" convert -O qcow2 -o size=abc o.raw t.qcow2
ref_rc "convert -o size=abc" 1

# ---- create -b without -F: the "Detected format of FMT." hint has no newline
same "create -b qcow2 without -F" create -f qcow2 -b base.qcow2 t.qcow2
ref_rc "create -b qcow2 without -F" 1
expect_eq "create -b without -F: the hint ends the output without a newline" \
    "$(tail -c 6 "$SCRATCH/run.new/err")" "qcow2."
same "create -q -b raw without -F" create -q -f qcow2 -b o.raw t.qcow2 1M
same "create -b missing file" create -f qcow2 -b nosuch.qcow2 t.qcow2
same "create -o backing_file without a format" create -f qcow2 -o backing_file=base.qcow2 t.qcow2

# ---- compare: "Warning: Image size mismatch!" is printed once the common
# part compared equal, also when reading the rest of the larger image fails
fresh
mk big.qcow2 1G
mk empty.qcow2 0
mk small.qcow2 1M
qw big.qcow2 "write -P 102 512 512"
printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce = "off"\n' >"$IN/bd.conf"
same_ro "compare: error past the common part" compare blkdebug:bd.conf:big.qcow2 empty.qcow2
expect_eq "compare: error past the common part: warning on stdout" \
    "$(cat "$SCRATCH/ro.new/out")" "Warning: Image size mismatch!"
same_ro "compare: error inside the common part" compare blkdebug:bd.conf:big.qcow2 small.qcow2
same_ro "compare: error inside the common part, -q" compare -q blkdebug:bd.conf:big.qcow2 big.qcow2
same_ro "compare: content mismatch past the common part" compare big.qcow2 empty.qcow2
same_ro "compare: sizes differ, -q" compare -q big.qcow2 empty.qcow2

# ---- map of a raw file whose length is not a multiple of 4 KiB (nor of
# 512): the last entries, human and json
fresh
"$QEMU_IMG" create -q -f raw "$IN/u.raw" 65537
"$QEMU_IO" -f raw -c 'discard 0 65537' "$IN/u.raw" >/dev/null
same_ro "map, raw 65537 bytes discarded, json" map --output=json u.raw
truncate --size=65537 "$IN/u.raw"
"$QEMU_IO" -f raw -c 'write 65536 1' "$IN/u.raw" >/dev/null
same_ro "map, raw one byte written past 64 KiB, json" map --output=json u.raw
same_ro "map, raw one byte written past 64 KiB, human" map u.raw
truncate --size=65537 "$IN/u.raw"
same_ro "map, raw truncated to 65537 again, json" map --output=json u.raw
expect_eq "map, raw truncated to 65537 again: the tail entry qemu-img shows" \
    "$(tail -n 1 "$SCRATCH/ro.new/out")" \
    '{ "start": 65537, "length": 511, "depth": 0, "present": true, "zero": true, "data": false, "offset": 65537}]'
for spec in "5000 0:512" "9000 4096:100" "9000 8192:100" "70000 65536:4000" "12800 0:4096"; do
    # shellcheck disable=SC2086
    set -- $spec
    rm -f "$IN/v.raw"
    truncate -s "$1" "$IN/v.raw"
    "$QEMU_IO" -f raw -c "write -P 7 ${2%:*} ${2#*:}" "$IN/v.raw" >/dev/null
    same_ro "map, raw $1 bytes, data at $2, json" map -f raw --output=json v.raw
    same_ro "map, raw $1 bytes, data at $2, human" map -f raw v.raw
done

# ---- convert --salvage through blkdebug above the format node: block
# status failures are warned about (in the counting walk and in the copy)
# and copied as data, failing sectors are warned about and copied as zeros
# bdjson FMT FILE IOTYPE@OFFSET...: a json: name with those rules
bdjson() {
    local fmt=$1 file=$2 s sep="" spec
    shift 2
    s="json:{'driver': 'blkdebug', 'image': {'driver': '$fmt', 'file': {'driver': 'file', 'filename': '$file'}}, 'inject-error': ["
    for spec in "$@"; do
        s+="$sep{'event': 'none', 'iotype': '${spec%@*}', 'errno': 5, 'sector': $((${spec#*@} / 512))}"
        sep=", "
    done
    echo "$s]}"
}
# same_target NAME: the targets both tools wrote in the last `same` read alike
same_target() {
    local a=$SCRATCH/run.ref/work/$2 b=$SCRATCH/run.new/work/$2
    if [ ! -e "$a" ] || [ ! -e "$b" ]; then
        fail "$1: both targets written"
    else
        check "$1: same content as qemu-img's" "$QEMU_IMG" compare "$a" "$b"
        [ "${3:-}" = raw ] || check "$1: check clean" "$QEMU_IMG" check -q "$b"
    fi
}
fresh
mk s.qcow2 4M
qw s.qcow2 "write -P 42 0 1M" "write -P 43 2M 512k" "write -z 3M 64k"
"$QEMU_IMG" convert -O raw "$IN/s.qcow2" "$IN/s.raw"
rules=(block-status@$((512 * 1024 + 4096)) read@$((600 * 1024))
       block-status@$((2048 * 1024 + 1024)) read@$((2048 * 1024 + 1024))
       block-status@$((1536 * 1024)) read@$((1536 * 1024)) block-status@$((3072 * 1024 + 512))
       read@$((3 * 1024 * 1024 - 512)))
for fmt in qcow2 raw; do
    J=$(bdjson "$fmt" "s.$fmt" "${rules[@]}")
    for args in "--salvage" "--salvage -O qcow2" "--salvage -q -O qcow2" "--salvage -m 1 -O qcow2" \
                "--salvage -S 0 -O qcow2"; do
        # shellcheck disable=SC2086
        same "convert $args, $fmt source: warnings" convert $args "$J" o
        ref_rc "convert $args, $fmt source" 0
        if [[ $args == *qcow2* ]]; then
            same_target "convert $args, $fmt source" o
        else
            same_target "convert $args, $fmt source" o raw
        fi
    done
    same "convert without --salvage, $fmt source: the first error" convert -O qcow2 "$J" o
    ref_rc "convert without --salvage, $fmt source" 1
done
J=$(bdjson qcow2 s.qcow2 "${rules[@]}")
same "convert --salvage, qcow2 source: warnings" convert --salvage -O qcow2 "$J" o
expect_eq "convert --salvage: the warnings qemu-img prints" "$(sed 's/^qemu-img: warning: //' "$SCRATCH/run.new/err")" \
"error while reading block status at offset 528384: Input/output error
error while reading block status at offset 1572864: Input/output error
error while reading block status at offset 2098176: Input/output error
error while reading block status at offset 3146240: Input/output error
error while reading block status at offset 528384: Input/output error
error while reading offset 614400: Input/output error
error while reading block status at offset 1572864: Input/output error
error while reading offset 1572864: Input/output error
error while reading block status at offset 2098176: Input/output error
error while reading offset 2098176: Input/output error
error while reading block status at offset 3146240: Input/output error"
# two sources: offsets are those in each source
same "convert --salvage, two sources" convert --salvage -O qcow2 "$J" "$(bdjson raw s.raw read@4096)" o
same_target "convert --salvage, two sources" o
# the io-level filter below a raw image: the same offsets
printf '[inject-error]\nevent = "none"\niotype = "read"\nsector = "10"\n' >"$IN/rd.conf"
same "convert --salvage, blkdebug: name" convert --salvage -f raw -O qcow2 blkdebug:rd.conf:s.raw o
same_target "convert --salvage, blkdebug: name" o

# ---- format nodes as storage: qcow2 over a raw node (qemu opens it)
fresh
mk b.qcow2 1M
qw b.qcow2 "write -P 5 0 64k"
J='json:{"driver":"qcow2","file":{"driver":"raw","file":{"driver":"file","filename":"b.qcow2"}}}'
same "convert from qcow2 over a raw node" convert -O raw "$J" o
same_target "convert from qcow2 over a raw node" o raw
same_ro "map of qcow2 over a raw node" map --output=json "$J"
# deliberate difference: an image whose backing file nests the image itself
# in format nodes makes qemu-img recurse without end; qimg refuses it
fresh
mk a.qcow2 1M
"$QEMU_IMG" rebase -u -f qcow2 -F qcow2 \
    -b 'json:{"driver":"qcow2","file":{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}}' \
    "$IN/a.qcow2"
(cd "$IN" && timeout 20 "$QIMG_AS_QEMU" convert -O raw a.qcow2 o >"$SCRATCH/nest.out" 2>&1; echo $? >"$SCRATCH/nest.rc")
expect_eq "backing file nesting the image in format nodes: refused" "$(cat "$SCRATCH/nest.rc")" 1
expect_eq "backing file nesting the image in format nodes: the message" "$(cat "$SCRATCH/nest.out")" \
    "qemu-img: Could not open 'a.qcow2': Too many format nodes nested in each other"

# ---- info of blkdebug above a format node: named by the image's file,
# format blkdebug, the filtered image's cluster size
fresh
mk s.qcow2 1M
printf '[inject-error]\nevent = "none"\niotype = "read"\nsector = "10"\n' >"$IN/rd.conf"
for J in "json:{'driver':'blkdebug','image':{'driver':'qcow2','file':{'driver':'file','filename':'s.qcow2'}}}" \
         "json:{'driver':'blkdebug','image':{'driver':'raw','file':{'driver':'file','filename':'s.qcow2'}}}" \
         "json:{'driver':'blkdebug','config':'rd.conf','image':{'driver':'qcow2','file':{'driver':'file','filename':'s.qcow2'}}}"; do
    same_ro "info $J" info "$J"
    same_ro "info --output=json $J" info --output=json "$J"
done
expect_eq "info of blkdebug above qcow2: the name qemu-img shows" "$(head -2 "$SCRATCH/ro.new/out" | tr '\n' '|')" \
    '{|    "virtual-size": 1048576,|'
same_ro "info of blkdebug above qcow2, human: first lines" info "json:{'driver':'blkdebug','image':{'driver':'qcow2','file':{'driver':'file','filename':'s.qcow2'}}}"
expect_eq "info of blkdebug above qcow2: named blkdebug::FILE, format blkdebug" \
    "$(head -2 "$SCRATCH/ro.new/out" | tr '\n' '|')" 'image: blkdebug::s.qcow2|file format: blkdebug|'

# ---- convert -B: ranges that read as zeros in the source and in the
# backing file are written as qemu-img writes them (zero clusters where
# the source's top layer holds zeros; unallocated where it holds nothing)
fresh
mk base.qcow2 4M -o cluster_size=4096
qw base.qcow2 "write -P 1 0 1M" "write -z 1M 256k" "write -P 0 3M 128k"
mk top.qcow2 4M -b base.qcow2 -F qcow2
qw top.qcow2 "write -z 0 64k" "write -z 2M 512k" "write -P 2 3M 64k" "write -P 0 1536k 128k" \
    "write -P 0 128k 64k" "write -z 1M 4k" "discard 3200k 64k"
"$QEMU_IMG" convert -O raw "$IN/top.qcow2" "$IN/src.raw"
for src in top.qcow2 src.raw; do
    for opt in "" "-S 0" "-o cluster_size=4096" "-c"; do
        # shellcheck disable=SC2086
        same "convert $opt -B, zeros in $src and backing" convert -O qcow2 $opt -B base.qcow2 -F qcow2 "$src" o
        same_target "convert $opt -B, zeros in $src and backing" o
        expect_eq "convert $opt -B, zeros in $src and backing: map as qemu-img's" \
            "$("$QEMU_IMG" map --output=json "$SCRATCH/run.new/work/o" | sed 's/"offset": [0-9]*/O/')" \
            "$("$QEMU_IMG" map --output=json "$SCRATCH/run.ref/work/o" | sed 's/"offset": [0-9]*/O/')"
    done
done

# ---- clusters freed by zero writes are discarded in the file below, as
# qemu-img's convert target and commit chain are opened with discard=unmap:
# the files are byte for byte qemu-img's (the old data does not stay)
fresh
mk full.qcow2 4M
qw full.qcow2 "write -P 5 0 4M"
"$QEMU_IMG" create -q -f raw "$IN/zero.raw" 4M
same "convert -n of zeros over allocated clusters" convert -n -O qcow2 zero.raw full.qcow2
expect_eq "convert -n of zeros over allocated clusters: file as qemu-img's" \
    "$(sha "$SCRATCH/run.new/work/full.qcow2")" "$(sha "$SCRATCH/run.ref/work/full.qcow2")"
mk top.qcow2 4M -b full.qcow2 -F qcow2
qw top.qcow2 "write -z 0 2M" "write -P 6 3M 64k"
same "commit of zero clusters over allocated base clusters" commit top.qcow2
expect_eq "commit of zero clusters: base file as qemu-img's" \
    "$(sha "$SCRATCH/run.new/work/full.qcow2")" "$(sha "$SCRATCH/run.ref/work/full.qcow2")"

# ---- a target that is one of the sources, or that another process uses:
# qemu-img's creation fails on the lock its sources hold (they refuse other
# writers) and the source is left as it was; qimg the same (it writes under
# a temporary name, so without the lock it would silently replace it)
fresh
"$QEMU_IMG" create -q -f raw "$IN/s1.raw" 1M
qio "$IN/s1.raw" "write -P 1 0 1M"
"$QEMU_IMG" create -q -f raw "$IN/s2.raw" 1M
mk q.qcow2 1M
same "convert onto its first source (concatenating)" convert -O raw s1.raw s2.raw s1.raw
expect_eq "convert onto its first source: the source unchanged" \
    "$(sha "$SCRATCH/run.new/work/s1.raw")" "$(sha "$IN/s1.raw")"
same "convert raw onto its own source as qcow2" convert -O qcow2 s1.raw s1.raw
same "convert qcow2 onto itself" convert -O qcow2 q.qcow2 q.qcow2
same "convert -n onto its own source" convert -n -O raw s1.raw s1.raw
same "convert -U onto another image" convert -U -O raw s1.raw s2.raw
same "convert onto an existing, unused image" convert -O raw s2.raw s1.raw
# another process writing a qcow2 target (a running VM: qemu-io here)
"$QEMU_IO" -f qcow2 -c 'sleep 5000' "$IN/q.qcow2" >/dev/null 2>&1 &
holder=$!
for _ in $(seq 50); do grep -q ":$(stat -c %i "$IN/q.qcow2") " /proc/locks && break; sleep 0.1; done
(cd "$IN" && "$QEMU_IMG" convert -O qcow2 s1.raw q.qcow2; echo "rc=$?") >"$SCRATCH/held.ref" 2>&1
(cd "$IN" && "$QIMG_AS_QEMU" convert -O qcow2 s1.raw q.qcow2; echo "rc=$?") >"$SCRATCH/held.new" 2>&1
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
expect_eq "convert onto an image a VM is using: qemu-img's refusal" \
    "$(cat "$SCRATCH/held.new")" "$(cat "$SCRATCH/held.ref")"
check_fail "convert onto an image a VM is using: refused" grep -q '^rc=0' "$SCRATCH/held.new"
