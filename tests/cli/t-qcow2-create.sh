#!/bin/bash
# qemu-img create -f qcow2: the "Formatting" line and every error as qemu
# prints them, and the image files themselves compared byte for byte with
# qemu-img's (plus allocation, map, info and a clean qemu-img check).
. "$(dirname "$0")/lib.sh"

"$QEMU_IMG" create -q -f raw "$IN/base.raw" 1M
"$QEMU_IMG" create -q -f qcow2 "$IN/base.qcow2" 2M

# Compare a file that both runs of the last "same" produced.
same_bytes() {
    local name=$1 file=$2
    local a=$SCRATCH/run.ref/work/$file b=$SCRATCH/run.new/work/$file
    if [ ! -e "$a" ] || [ ! -e "$b" ]; then
        fail "$name" "missing: $(ls "$a" "$b" 2>&1 | tr '\n' ' ')"
        return
    fi
    if ! cmp -s "$a" "$b" || [ "$(stat -c %s "$a")" != "$(stat -c %s "$b")" ]; then
        fail "$name" "$(cmp "$a" "$b" 2>&1 | head -1)" "sizes $(stat -c %s "$a") $(stat -c %s "$b")"
        return
    fi
    pass "$name"
}

# The qcow2 image of the last "same": bytes, map (data/zero/offsets, which
# also shows preallocation), info, and qemu-img check on qimg's image.
same_image() {
    local name=$1 file=${2:-t.qcow2}
    local a=$SCRATCH/run.ref/work b=$SCRATCH/run.new/work
    same_bytes "$name: bytes" "$file"
    local ma mb ia ib
    ma=$(cd "$a" && "$QEMU_IMG" map --output=json "$file" 2>&1)
    mb=$(cd "$b" && "$QEMU_IMG" map --output=json "$file" 2>&1)
    expect_eq "$name: map" "$mb" "$ma"
    # actual-size depends on the host's block allocation: not compared
    ia=$(cd "$a" && "$QEMU_IMG" info --output=json "$file" 2>&1 | grep -v '"actual-size"')
    ib=$(cd "$b" && "$QEMU_IMG" info --output=json "$file" 2>&1 | grep -v '"actual-size"')
    expect_eq "$name: info" "$ib" "$ia"
    if [ -n "${NOCHECK:-}" ]; then
        :   # the backing file does not exist: check cannot open the image
    elif (cd "$b" && "$QEMU_IMG" check -q "$file" >/dev/null 2>&1); then
        pass "$name: qemu-img check"
    else
        fail "$name: qemu-img check" "$(cd "$b" && "$QEMU_IMG" check "$file" 2>&1 | head -5)"
    fi
}

create_same() {
    local name=$1; shift
    same "$name" create -f qcow2 "$@"
    [ "$(cat "$SCRATCH/run.ref/rc")" = 0 ] && same_image "$name"
}

# ---- layouts: sizes x cluster sizes (L1 and refcount table growth) ----
for c in 512 4k 64k 2M; do
    for s in 0 1000 1M 64M 1G 100G 16T; do
        create_same "cluster $c size $s" -o cluster_size=$c t.qcow2 $s
    done
done

# ---- refcount widths, including sub-byte ones and table growth ----
for rb in 1 2 4 8 16 32 64; do
    create_same "refcount_bits $rb" -o refcount_bits=$rb t.qcow2 1G
    create_same "refcount_bits $rb cluster 512" -o refcount_bits=$rb,cluster_size=512 t.qcow2 5G
    create_same "refcount_bits $rb metadata" -o refcount_bits=$rb,cluster_size=4k,preallocation=metadata t.qcow2 20M
done

# ---- preallocation ----
for p in off metadata falloc full; do
    for c in 512 4k 64k 2M; do
        for s in 0 1000 3M; do
            create_same "prealloc $p cluster $c size $s" -o preallocation=$p,cluster_size=$c t.qcow2 $s
        done
    done
    create_same "prealloc $p 64M" -o preallocation=$p t.qcow2 64M
    create_same "prealloc $p extended_l2" -o preallocation=$p,extended_l2=on t.qcow2 3000000
    create_same "prealloc $p extended_l2 2M" -o preallocation=$p,extended_l2=on,cluster_size=2M t.qcow2 5M
    create_same "prealloc $p extended_l2 backing" -o preallocation=$p,extended_l2=on -b base.raw -F raw t.qcow2
done
# metadata preallocation big enough to need more refcount blocks and a
# larger refcount table
create_same "prealloc metadata 512 clusters" -o preallocation=metadata,cluster_size=512 t.qcow2 40M
create_same "prealloc falloc 512 clusters" -o preallocation=falloc,cluster_size=512 t.qcow2 40M

# ---- other options ----
for v in 0.10 v2 1.1 v3; do
    create_same "compat $v" -o compat=$v t.qcow2 1M
    create_same "compat $v backing" -o compat=$v -b base.raw -F raw t.qcow2
done
create_same "lazy_refcounts" -o lazy_refcounts=on t.qcow2 1M
create_same "lazy_refcounts off" -o lazy_refcounts=off t.qcow2 1M
create_same "zstd" -o compression_type=zstd t.qcow2 1M
create_same "zlib" -o compression_type=zlib t.qcow2 1M
create_same "extended_l2" -o extended_l2=on t.qcow2 1G
create_same "extended_l2 16k" -o extended_l2=on,cluster_size=16k t.qcow2 1G
create_same "backing qcow2" -b base.qcow2 -F qcow2 t.qcow2
create_same "backing with size" -b base.raw -F raw t.qcow2 5M
NOCHECK=1 create_same "backing -u" -u -b missing.qcow2 -F qcow2 t.qcow2 1M
create_same "backing small cluster" -o cluster_size=512 -b base.raw -F raw t.qcow2
create_same "backing -o" -o backing_file=base.raw,backing_fmt=raw t.qcow2
create_same "everything" -o lazy_refcounts=on,compression_type=zstd,extended_l2=on,refcount_bits=64,cluster_size=32k t.qcow2 10M
create_same "size from -o" -o size=3M t.qcow2
create_same "existing file replaced" t.qcow2 1M
name=$(printf 'b%.0s' $(seq 1 881))
NOCHECK=1 create_same "backing name fills cluster 1024" -o cluster_size=1024 -u -b "$name" -F raw t.qcow2 1M
NOCHECK=1 create_same "backing name 1023" -u -b "$(printf 'b%.0s' $(seq 1 1023))" -F raw t.qcow2 1M

# the feature name table: v3 with clusters above 4 KiB only
for c in 512 2k 4k 8k; do
    create_same "feature table cluster $c" -o cluster_size=$c t.qcow2 1M
done

# ---- external data files ----
for p in off metadata falloc full; do
    for s in 0 1000 1M; do
        create_same "data_file prealloc $p size $s" -o data_file=d.raw,preallocation=$p t.qcow2 $s
        [ "$(cat "$SCRATCH/run.ref/rc")" = 0 ] && same_bytes "data_file prealloc $p size $s: data file" d.raw
        create_same "data_file_raw prealloc $p size $s" -o data_file=d.raw,data_file_raw=on,preallocation=$p t.qcow2 $s
        [ "$(cat "$SCRATCH/run.ref/rc")" = 0 ] && same_bytes "data_file_raw prealloc $p size $s: data file" d.raw
    done
done
create_same "data_file extended_l2" -o data_file=d.raw,data_file_raw=on,extended_l2=on t.qcow2 3000000
create_same "data_file small cluster" -o data_file=d.raw,cluster_size=512 t.qcow2 1M

# ---- the Formatting line for every option ----
same "formatting all options" create -f qcow2 -o compat=1.1,data_file=d.raw,preallocation=metadata,lazy_refcounts=on,refcount_bits=16,compression_type=zlib,extended_l2=on,cluster_size=65536,nocow=on,extent_size_hint=1M -b base.raw -F raw t.qcow2 1M
same "formatting data_file_raw" create -f qcow2 -o data_file=d.raw,data_file_raw=on t.qcow2 1M
same "formatting -o help" create -f qcow2 -o help
same "formatting -o help with file" create -f qcow2 -o help t.qcow2
same "formatting cluster size 2M" create -f qcow2 -o cluster_size=2M t.qcow2 1G
same "formatting encryption=off" create -f qcow2 -o encryption=off t.qcow2 1M

# ---- errors, each exactly as qemu-img prints it ----
err() { same "error: $1" create -f qcow2 "${@:2}"; }
err "lazy_refcounts compat=0.10" -o compat=0.10,lazy_refcounts=on t.qcow2 1M
err "refcount_bits=8 compat=0.10" -o compat=0.10,refcount_bits=8 t.qcow2 1M
err "refcount_bits=8 compat=v2" -o compat=v2,refcount_bits=8 t.qcow2 1M
err "bad compat" -o compat=0.9 t.qcow2 1M
err "extended_l2 cluster 4k" -o cluster_size=4k,extended_l2=on t.qcow2 1M
err "extended_l2 cluster 8k" -o cluster_size=8k,extended_l2=on t.qcow2 1M
err "extended_l2 compat=0.10" -o compat=0.10,extended_l2=on t.qcow2 1M
err "extended_l2 compat before cluster size" -o compat=0.10,extended_l2=on,cluster_size=3000 t.qcow2 1M
err "cluster size before lazy refcounts" -o cluster_size=3000,lazy_refcounts=on,compat=0.10 t.qcow2 1M
for p in metadata falloc full; do
    err "backing + preallocation $p" -o preallocation=$p -b base.raw -F raw t.qcow2 1M
done
err "data_file_raw without data_file" -o data_file_raw=on t.qcow2 1M
err "data_file_raw with backing" -o data_file=d.raw,data_file_raw=on -b base.raw -F raw t.qcow2 1M
err "data_file compat=0.10" -o data_file=d.raw,compat=0.10 t.qcow2 1M
err "data_file_raw compat=0.10" -o data_file=d.raw,data_file_raw=on,compat=0.10 t.qcow2 1M
err "data_file in missing dir" -o data_file=nodir/d.raw t.qcow2 1M
for c in 3000 4M 256 0 1k1 100000; do
    err "cluster_size $c" -o cluster_size=$c t.qcow2 1M
done
for rb in 0 3 128 12; do
    err "refcount_bits $rb" -o refcount_bits=$rb t.qcow2 1M
done
err "refcount_bits bad width before version" -o refcount_bits=3,compat=0.10 t.qcow2 1M
err "zstd compat=0.10" -o compression_type=zstd,compat=0.10 t.qcow2 1M
err "bad compression type" -o compression_type=lz4 t.qcow2 1M
err "bad preallocation" -o preallocation=foo t.qcow2 1M
err "enum errors in order" -o compat=0.9,preallocation=foo,compression_type=lz4 t.qcow2 1M
err "preallocation before compression" -o preallocation=foo,compression_type=lz4 t.qcow2 1M
err "backing_fmt without backing" -F raw t.qcow2 1M
err "backing_fmt -o without backing" -o backing_fmt=raw t.qcow2 1M
err "bad backing format -u" -u -b x -F foo t.qcow2 1M
err "backing without format" -u -b x t.qcow2 1M
err "too large default cluster" t.qcow2 3P
err "too large cluster 512" -o cluster_size=512 t.qcow2 16T
err "too large cluster 2M" -o cluster_size=2M t.qcow2 8000P
err "backing name too long" -u -b "$(printf 'b%.0s' $(seq 1 1024))" -F raw t.qcow2 1M
err "backing name does not fit" -o cluster_size=1024 -u -b "$(printf 'b%.0s' $(seq 1 1023))" -F raw t.qcow2 1M
# encryption: option checks as qemu; creating one needs a secret
err "encryption=on" -o encryption=on t.qcow2 1M
err "encryption=off" -o encryption=off t.qcow2 1M
err "encrypt.format=aes" -o encrypt.format=aes t.qcow2 1M
err "encrypt.format=luks" -o encrypt.format=luks t.qcow2 1M
err "encrypt.format=foo" -o encrypt.format=foo t.qcow2 1M
err "encryption alias twice" -o encryption=on,encrypt.format=luks t.qcow2 1M
err "encrypt option without format" -o encrypt.cipher-alg=aes-256 t.qcow2 1M
err "encrypt missing secret object" -o encrypt.format=luks,encrypt.key-secret=sec0 t.qcow2 1M
err "encryption after lazy refcounts" -o encryption=on,compat=0.10,lazy_refcounts=on t.qcow2 1M
err "encrypt.format after version" -o encrypt.format=foo,compat=0.9 t.qcow2 1M
# nothing is left behind after an error
same "no file after error" create -f qcow2 -o compat=0.10,lazy_refcounts=on,data_file=d.raw t.qcow2 1M
if [ ! -e "$SCRATCH/run.new/work/t.qcow2" ] && [ ! -e "$SCRATCH/run.new/work/d.raw" ]; then
    pass "no file after error: nothing created"
else
    fail "no file after error: nothing created" "$(ls "$SCRATCH/run.new/work")"
fi
