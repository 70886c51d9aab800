#!/bin/bash
# qemu-img check on qcow2: clean images of every option set, then images
# damaged on purpose (refcounts, L1/L2 entries, refcount table, COPIED
# flags, header bits, snapshots, subclusters) - human and JSON output,
# stderr lines and exit codes compared with qemu-img.
. "$(dirname "$0")/lib.sh"

# Run check human and JSON on $IN/$1 (a fresh $IN holds just that image).
both() {
    local name=$1 img=$2
    same "$name" check "$img"
    same "$name (json)" check --output=json "$img"
}


# ================================================== clean images
for o in cluster_size=512 cluster_size=4k cluster_size=64k cluster_size=2M \
         refcount_bits=1 refcount_bits=2 refcount_bits=4 refcount_bits=8 refcount_bits=16 \
         refcount_bits=32 refcount_bits=64 compat=0.10 extended_l2=on \
         extended_l2=on,cluster_size=16k lazy_refcounts=on compression_type=zstd \
         preallocation=metadata preallocation=falloc preallocation=full \
         cluster_size=4k,preallocation=metadata; do
    fresh
    mk c.qcow2 8M -o "$o"
    qw c.qcow2 "write -P 3 0 100k" "write 3M 64k" "write -z 5M 64k" "write 7M 1k" "write -P 1 6M 8k"
    both "clean $o" c.qcow2
done

fresh
mk e.qcow2 8M
both "empty image" e.qcow2
same "clean -q" check -q e.qcow2
same "clean -f qcow2" check -f qcow2 e.qcow2
same "clean -U" check -U e.qcow2

# compressed data from convert -c, fragmentation statistics
fresh
"$QEMU_IMG" create -q -f raw "$IN/d.raw" 16M
"$QEMU_IO" -f raw -c 'write -P 5 0 3M' -c 'write -P 0 4M 1M' -c 'write -P 7 9M 333k' "$IN/d.raw" >/dev/null
head -c 1M /dev/urandom | dd of="$IN/d.raw" bs=1M seek=12 conv=notrunc status=none
"$QEMU_IMG" convert -c -O qcow2 "$IN/d.raw" "$IN/z.qcow2"
"$QEMU_IMG" convert -c -O qcow2 -o compression_type=zstd,cluster_size=4k "$IN/d.raw" "$IN/zs.qcow2"
"$QEMU_IMG" convert -c -O qcow2 -o extended_l2=on "$IN/d.raw" "$IN/zx.qcow2"
rm -f "$IN/d.raw"
both "compressed (zlib)" z.qcow2
both "compressed (zstd, 4k)" zs.qcow2
both "compressed (extended L2)" zx.qcow2
qw z.qcow2 "write -P 9 64k 192k" "write -P 9 5M 64k"
both "compressed, partly rewritten" z.qcow2

# snapshots and bitmaps made by qemu-img
fresh
mk s.qcow2 16M
qw s.qcow2 "write -P 1 0 2M" "write -P 2 8M 64k"
"$QEMU_IMG" snapshot -c s1 "$IN/s.qcow2"
qw s.qcow2 "write -P 3 1M 2M"
"$QEMU_IMG" snapshot -c s2 "$IN/s.qcow2"
qw s.qcow2 "write -P 4 0 64k"
both "snapshots" s.qcow2
"$QEMU_IMG" bitmap --add "$IN/s.qcow2" b1
"$QEMU_IMG" bitmap --add -g 64k "$IN/s.qcow2" b2
"$QEMU_IMG" bitmap --add --disable "$IN/s.qcow2" b3
qw s.qcow2 "write -P 5 4M 1M"
both "snapshots and bitmaps" s.qcow2
"$QEMU_IMG" snapshot -d s1 "$IN/s.qcow2"
both "snapshot deleted" s.qcow2

# backing chain
fresh
mk base.qcow2 16M
qw base.qcow2 "write -P 1 0 4M"
mk top.qcow2 16M -b base.qcow2 -F qcow2
qw top.qcow2 "write -P 2 1M 128k" "write -z 2M 64k"
both "backing chain" top.qcow2

# external data files
fresh
mk df.qcow2 16M -o data_file=df.data
qw df.qcow2 "write -P 1 5M 128k" "write -z 8M 64k" "write -P 2 0 64k"
both "data file" df.qcow2
fresh
mk dr.qcow2 16M -o data_file=dr.data,data_file_raw=on
qw dr.qcow2 "write -P 1 5M 128k"
both "raw data file" dr.qcow2

# a huge sparse file: the check stays small and fast
fresh
mk h.qcow2 64M
qw h.qcow2 "write -P 1 0 1M"
truncate -s 1T "$IN/h.qcow2"
both "file sparse up to 1 TiB" h.qcow2

# ================================================== damaged images
# Base (mkbase, lib.sh): 64 KiB clusters, reftable, refblock, L1, L2, data.
damage() {   # damage NAME RC COMMANDS: fresh base, run COMMANDS, compare
    mkbase
    eval "$3"
    both "$1" b.qcow2
    ref_rc "$1" "$2"
}

damage "refcount too high" 2 'poke16 "$B" $((REFB + 2 * DC)) 2'
damage "refcount too low" 2 'poke16 "$B" $((REFB + 2 * DC)) 0'
damage "refcount of the header 0" 2 'poke16 "$B" "$REFB" 0'
damage "refcount of the refcount block 2" 3 'poke16 "$B" $((REFB + 2 * (REFB >> 16))) 2'
damage "refcount of the L1 table 0" 2 'poke16 "$B" $((REFB + 2 * (L1 >> 16))) 0'
damage "leaked cluster" 3 'truncate -s +128k "$B"; poke16 "$B" $((REFB + 2 * 23)) 1; poke16 "$B" $((REFB + 2 * 24)) 3'
damage "leak past the end of the file" 0 'poke16 "$B" $((REFB + 2 * 30)) 1'
damage "zeroed refcount block" 2 'dd if=/dev/zero of="$B" bs=64k seek=$((REFB >> 16)) count=1 conv=notrunc status=none'
damage "two L2 entries share a cluster" 2 'poke64 "$B" $((L2 + 8)) $((COPIED | D0))'
damage "L2 entry past EOF" 2 'poke64 "$B" "$L2" $((COPIED | 0x10000000))'
damage "L2 entry just past EOF" 2 'poke64 "$B" "$L2" $((COPIED | 0x170000))'
damage "L2 entry unaligned" 2 'poke64 "$B" "$L2" $((COPIED | D0 | 0x200))'
damage "L2 entry reserved bits" 2 'poke64 "$B" $((L2 + 24)) $((COPIED | D0 + 0x30000 | 2))'
damage "COPIED missing on data" 2 'poke64 "$B" "$L2" "$D0"'
damage "COPIED missing on L1" 2 'poke64 "$B" "$L1" "$L2"'
damage "COPIED set on shared data" 2 'poke16 "$B" $((REFB + 2 * DC)) 2; poke16 "$B" $((REFB + 2 * 23)) 0'
damage "L1 entry reserved bits" 2 'poke64 "$B" "$L1" $((COPIED | (1 << 56) | L2))'
damage "L1 entry unaligned" 2 'poke64 "$B" "$L1" $((COPIED | L2 | 0x200))'
damage "L1 entry past EOF" 2 'poke64 "$B" "$L1" $((COPIED | 0x9000000))'
damage "L1 entry without table" 2 'poke64 "$B" "$L1" "$COPIED"'
damage "preallocated zero cluster" 2 'poke64 "$B" $((L2 + 24)) $((D0 + 0x30000 | 1))'
damage "preallocated zero cluster unaligned" 2 'poke64 "$B" $((L2 + 24)) $((D0 + 0x30200 | 1))'
damage "compressed entry over a data cluster" 0 'poke64 "$B" $((L2 + 24)) $(((1 << 62) | D0 + 0x30000))'
damage "compressed entry shares a data cluster" 2 'poke64 "$B" $((L2 + 24)) $(((1 << 62) | D0 + 0x20100))'
damage "compressed entry with COPIED" 2 'poke64 "$B" $((L2 + 24)) $(((3 << 62) | 0x80000))'
damage "compressed entry past EOF" 2 'poke64 "$B" $((L2 + 24)) $(((1 << 62) | (0x3fff << 48) | 0xf0000))'
damage "refcount block unaligned" 1 'poke64 "$B" "$REFT" $((REFB | 0x200))'
damage "refcount table reserved bits" 2 'poke64 "$B" "$REFT" $((REFB | 1))'
damage "refcount block outside the image" 2 'poke64 "$B" $((REFT + 8)) 0x7000000'
damage "refcount block on a data cluster" 2 'poke64 "$B" $((REFT + 8)) "$D0"'
damage "corrupt bit" 0 'poke64 "$B" 72 2'
damage "dirty bit" 0 'poke64 "$B" 72 1'

# dirty bit with stale refcounts: lazy refcounts, killed writer
fresh
mk lazy.qcow2 8M -o lazy_refcounts=on
"$QEMU_IO" -c 'write -P 1 0 1M' -c 'write 4M 64k' -c 'sigraise 9' "$IN/lazy.qcow2" >/dev/null 2>&1
expect_eq "lazy image is dirty" "$(($(peek64 "$IN/lazy.qcow2" 72) & 1))" 1
both "dirty bit, stale refcounts" lazy.qcow2

# 1-bit refcounts: a second reference overflows
fresh
mk r1.qcow2 8M -o refcount_bits=1
qw r1.qcow2 "write -P 1 0 128k"
L1=$(peek64 "$IN/r1.qcow2" 40); L2=$(($(peek64 "$IN/r1.qcow2" "$L1") & MASK))
poke64 "$IN/r1.qcow2" $((L2 + 16)) "$(peek64 "$IN/r1.qcow2" "$L2")"
both "refcount overflow (1 bit)" r1.qcow2

# extended L2 entries (mkx, lib.sh): subcluster bitmaps
xdamage() { mkx; eval "$3"; both "$1" x.qcow2; ref_rc "$1" "$2"; }
xdamage "extended L2 clean" 0 true
xdamage "subcluster allocated and zero" 2 'poke64 "$X" $((XL2 + 8)) 0x3ffffffff'
xdamage "unallocated cluster with bitmap" 2 'poke64 "$X" $((XL2 + 40)) 1'
xdamage "compressed cluster with bitmap" 2 'poke64 "$X" "$XL2" $(((1 << 62) | XD0))'
xdamage "extended L2 data unaligned" 2 'poke64 "$X" "$XL2" $((COPIED | XD0 | 0x200))'
xdamage "extended L2 zero cluster unaligned" 2 'poke64 "$X" "$XL2" $((COPIED | XD0 | 0x200)); poke64 "$X" $((XL2 + 8)) 0x300000000'

# snapshots (mks, lib.sh): entries pointing at bad L1 tables, refcounts of shared clusters
sdamage() { mks; eval "$3"; both "$1" s.qcow2; ref_rc "$1" "$2"; }
sdamage "snapshot clean" 0 true
sdamage "snapshot L1 unaligned" 2 'poke64 "$S" "$SN" $((SL1 | 0x200))'
sdamage "snapshot L1 too large" 2 'poke32 "$S" $((SN + 8)) 0x4000001'
sdamage "snapshot L1 past EOF" 2 'poke64 "$S" "$SN" 0x9000000'
sdamage "snapshot L1 entry cleared" 3 'poke64 "$S" "$SL1" 0'
sdamage "snapshot entry incomplete" 2 'poke32 "$S" $((SN + 36)) 8; poke16 "$S" $((SN + 12)) 17'
sdamage "shared cluster refcount 1" 2 'REFB=$(($(peek64 "$S" "$(peek64 "$S" 48)") & MASK)); poke16 "$S" $((REFB + 2 * 6)) 1'

# bitmaps: directory, tables and their data clusters are counted
bitmap_dir() {   # offset of the bitmap directory, from the header extension
    local o t l
    o=$(peek32 "$1" 100)
    while :; do
        t=$(peek32 "$1" "$o"); l=$(peek32 "$1" $((o + 4)))
        [ "$t" = 0 ] && { echo 0; return; }
        [ "$t" = $((0x23852875)) ] && { peek64 "$1" $((o + 24)); return; }
        o=$((o + 8 + (l + 7) / 8 * 8))
    done
}
mkb() {
    fresh
    mk bm.qcow2 64M
    "$QEMU_IMG" bitmap --add "$IN/bm.qcow2" b1 || fail "bitmap --add"
    qw bm.qcow2 "write 0 64k" "write 32M 1M"
    BM=$IN/bm.qcow2
    # bitmaps extension: directory offset, first entry's table, its first entry
    BDIR=$(bitmap_dir "$BM")
    BTAB=$(peek64 "$BM" "$BDIR")
    BDATA=$(peek64 "$BM" "$BTAB")
    BREFB=$(($(peek64 "$BM" "$(peek64 "$BM" 48)") & MASK))
}
bdamage() { mkb; eval "$3"; both "$1" bm.qcow2; ref_rc "$1" "$2"; }
bdamage "bitmap clean" 0 true
bdamage "bitmap data on a data cluster" 2 'poke64 "$BM" "$BTAB" 0x50000'
bdamage "bitmap data past EOF" 2 'poke64 "$BM" "$BTAB" 0x9000000'
bdamage "bitmap data all ones" 3 'poke64 "$BM" "$BTAB" 1'
bdamage "bitmap data refcount 0" 2 'poke16 "$BM" $((BREFB + 2 * (BDATA >> 16))) 0'
bdamage "bitmap table refcount 0" 2 'poke16 "$BM" $((BREFB + 2 * (BTAB >> 16))) 0'
bdamage "bitmap directory refcount 2" 3 'poke16 "$BM" $((BREFB + 2 * (BDIR >> 16))) 2'

# ================================================== memory bound
# qemu needs memory for every cluster of the file; qimg only where
# something points.  512-byte clusters, file sparse up to 64 GiB.
fresh
mk m.qcow2 1M -o cluster_size=512
qw m.qcow2 "write 0 4k"
truncate -s 64G "$IN/m.qcow2"
out=$(cd "$IN" && QIMG_MEM_BUDGET=8M "$QIMG_AS_QEMU" check m.qcow2 2>&1)
expect_eq "sparse 64 GiB file within an 8 MiB budget" "$(echo "$out" | head -1)" \
    "No errors were found on the image."
# references spread over the whole file exceed a tiny budget: a clear error
L1=$(peek64 "$IN/m.qcow2" 40); L2=$(($(peek64 "$IN/m.qcow2" "$L1") & MASK))
for i in 1 2 3 4 5 6 7 8; do poke64 "$IN/m.qcow2" $((L2 + 8 * (20 + i))) $((COPIED | i << 32)); done
# (a byte per cluster: the 9 chunks of 64 KiB need 576 KiB)
out=$(cd "$IN" && QIMG_MEM_BUDGET=256K "$QIMG_AS_QEMU" check m.qcow2 2>&1 >/dev/null); rc=$?
expect_eq "over the budget: message" "$out" \
    "qcow2 check: refcount check table exceeds the memory budget (262144 bytes)
qemu-img: Check failed: Cannot allocate memory"
expect_eq "over the budget: exit code" "$rc" 1
# the same references within 1 MiB are counted (a byte per cluster), and
# reported as qemu-img reports them
QIMG_MEM_BUDGET=1M same "spread references within a 1 MiB budget" check m.qcow2
ref_rc "spread references within a 1 MiB budget" 2

# ================================================== refcounts from 255 up
# qimg counts references in a byte per cluster; counts from 255 up are kept
# apart.  Clusters shared by 300 snapshots (refcount 301), clean, then one with
# its stored refcount one too low and one too high, and repaired.
fresh
mk r.qcow2 4M
qw r.qcow2 "write -P 7 0 3M"   # 48 clusters shared: the table of big counts grows
for ((i = 1; i <= 300; i++)); do
    "$QEMU_IMG" snapshot -c "s$i" "$IN/r.qcow2" || { fail "snapshot s$i"; break; }
done
R=$IN/r.qcow2
R_REFB=$(($(peek64 "$R" "$(peek64 "$R" 48)") & MASK))
R_L2=$(($(peek64 "$R" "$(peek64 "$R" 40)") & MASK))
R_DC=$((($(peek64 "$R" "$R_L2") & MASK) >> 16))
cp "$R" "$SCRATCH/r300.qcow2"
both "300 snapshots share a cluster" r.qcow2
ref_rc "300 snapshots share a cluster" 0
for stored in 300 302 255 254 256 511; do
    fresh r300
    poke16 "$IN/t.qcow2" $((R_REFB + 2 * R_DC)) $stored
    both "shared by 301, stored $stored" t.qcow2
    ref_rc "shared by 301, stored $stored" $([ $stored -lt 301 ] && echo 2 || echo 3)
    same "shared by 301, stored $stored: -r all" check -r all t.qcow2
done
# the refcount block lost: -r all rebuilds the refcounts, 301 included
fresh r300
poke64 "$IN/t.qcow2" "$(peek64 "$IN/t.qcow2" 48)" 0
same "shared by 301, refcount block lost: -r all" check -r all t.qcow2
ref_rc "shared by 301, refcount block lost: -r all" 0
cmp -s "$SCRATCH/run.ref/work/t.qcow2" "$SCRATCH/run.new/work/t.qcow2"
expect_eq "shared by 301, refcount block lost: the rebuilt image as qemu-img's" "$?" 0
# qimg's repair, checked by qemu-img
fresh r300
poke16 "$IN/t.qcow2" $((R_REFB + 2 * R_DC)) 300
"$QIMG_AS_QEMU" check -q -r all "$IN/t.qcow2" >/dev/null 2>&1
"$QEMU_IMG" check "$IN/t.qcow2" >/dev/null 2>&1
expect_eq "shared by 301, stored 300: qimg's repair checks clean" "$?" 0
expect_eq "shared by 301: refcount after qimg's repair" "$(od -An -tu2 --endian=big -j $((R_REFB + 2 * R_DC)) -N 2 "$IN/t.qcow2" | tr -d ' ')" 301

# 8-bit refcounts: 300 L2 entries naming one cluster overflow at 255
fresh
mk o.qcow2 32M -o refcount_bits=8
qw o.qcow2 "write -P 7 0 64k"
O=$IN/o.qcow2
O_L2=$(($(peek64 "$O" "$(peek64 "$O" 40)") & MASK))
O_D0=$(($(peek64 "$O" "$O_L2") & MASK))
for ((i = 1; i < 300; i++)); do be64 "$O_D0"; done | poke "$O" $((O_L2 + 8))
both "refcount_bits=8, 300 references to a cluster" o.qcow2
ref_rc "refcount_bits=8, 300 references to a cluster" 2
