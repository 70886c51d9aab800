#!/bin/bash
# glance and nova run "qemu-img info" under prlimit (1 GiB of address
# space, 2 s of CPU): info of any hostile header must finish within that,
# with a clear error or a normal answer, never a crash.
. "$(dirname "$0")/lib.sh"
need_cmd prlimit

base=$IN/base.qcow2
"$QEMU_IMG" create -q -f qcow2 "$base" 64M
"$QEMU_IO" -c 'write -P 7 0 1M' "$base" >/dev/null

# patch BYTES (hex, no spaces) at OFFSET into a copy named NAME
patch() {
    local name=$1 off=$2 hex=$3
    cp "$base" "$IN/$name"
    printf "$(echo "$hex" | sed 's/../\\x&/g')" | dd of="$IN/$name" bs=1 seek=$off conv=notrunc status=none
}
patch huge-size.qcow2      24 7fffffffffffffff          # virtual size 8 EiB
patch huge-l1.qcow2        36 7fffffff                  # l1_size
patch l1-past-eof.qcow2    40 00ffffffffff0000          # l1_table_offset
patch huge-reftable.qcow2  56 7fffffff                  # refcount_table_clusters
patch many-snapshots.qcow2 60 7fffffff                  # nb_snapshots
patch snap-past-eof.qcow2  60 00000001                  # with offset below
printf '\x00\xff\xff\xff\xff\xff\x00\x00' | dd of="$IN/snap-past-eof.qcow2" bs=1 seek=64 conv=notrunc status=none
patch cluster-bits.qcow2   20 0000003f                  # cluster_bits 63
patch backing-name.qcow2   8  0000000000000200ffffffff  # backing name offset, length 4 GiB
head -c 512 /dev/urandom > "$IN/noise.bin"
printf 'QFI\xfb\x00\x00\x00\x03' | cat - /dev/zero | head -c 4096 > "$IN/zero-header.qcow2"

for f in "$IN"/*; do
    name=$(basename "$f")
    for out in human json; do
        prlimit --as=1073741824 --cpu=2 "$QIMG" info --output=$out "$f" >"$SCRATCH/out" 2>"$SCRATCH/err"
        rc=$?
        if [ $rc -le 1 ]; then
            pass "info $out of $name within 1 GiB / 2 s (rc $rc)"
        else
            fail "info $out of $name within 1 GiB / 2 s" "rc $rc" "$(head -3 "$SCRATCH/err")"
        fi
        if [ $rc = 1 ] && [ ! -s "$SCRATCH/err" ]; then
            fail "info $out of $name says why it failed"
        fi
    done
done

# output does not depend on the locale
"$QIMG" info --output=json "$base" > "$SCRATCH/c"
LC_ALL=de_DE.UTF-8 LANG=de_DE.UTF-8 LC_NUMERIC=de_DE.UTF-8 "$QIMG" info --output=json "$base" > "$SCRATCH/de"
if cmp -s "$SCRATCH/c" "$SCRATCH/de"; then pass "locale-independent output"; else fail "locale-independent output"; fi
